"""Placeholder: filled in by the mfp work."""
