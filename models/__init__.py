"""LungFuse models package."""
