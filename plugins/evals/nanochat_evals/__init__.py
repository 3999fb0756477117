"""nanochat-evals: the built-in evaluators, as a plugin distribution."""
