"""A plugin package that fails to import."""
