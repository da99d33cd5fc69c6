"""LungFuse app package."""
