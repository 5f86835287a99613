"""Placeholder: filled in by the sfp work."""
