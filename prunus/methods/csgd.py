"""Placeholder: filled in by the csgd work."""
