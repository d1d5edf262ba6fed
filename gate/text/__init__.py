"""Prompt screening and enrolled-name matching."""
