"""Broken plugins, one module each."""
