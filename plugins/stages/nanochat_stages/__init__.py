"""nanochat-stages: the built-in training stages, as a plugin distribution."""
