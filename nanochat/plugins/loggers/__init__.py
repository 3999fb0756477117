"""Built-in metric loggers: console, JSONL, wandb."""
