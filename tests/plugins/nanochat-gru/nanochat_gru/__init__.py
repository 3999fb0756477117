"""nanochat-gru: a deliberately different model (a GRU) behind nanochat's model contract."""
