"""LungFuse pipelines package."""
