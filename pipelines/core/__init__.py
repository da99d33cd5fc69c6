"""Shared domain types, errors, coded vocabularies, geometry and resource paths."""
