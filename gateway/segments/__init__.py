"""Segments (placeholder until the package lands)."""
