"""Raises on import, as a plugin with a missing dependency or a bug would."""

raise RuntimeError("nanochat-broken exploded on import")
