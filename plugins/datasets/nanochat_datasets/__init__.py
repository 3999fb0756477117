"""nanochat-datasets: the dataset plugins of nanochat (see ``plugin`` for the registrations)."""
