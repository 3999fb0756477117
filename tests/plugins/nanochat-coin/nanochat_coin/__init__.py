"""nanochat-coin: a problems dataset whose reward is a coin flip on the answer's length."""
