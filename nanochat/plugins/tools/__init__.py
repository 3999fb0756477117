"""Built-in tools the model can call while it generates (the calculator)."""
