"""Contract checks a plugin author can run against their own components (see the tests)."""
