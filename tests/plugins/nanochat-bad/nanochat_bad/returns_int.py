"""A registration hook that returns 42."""

from nanochat.core.hookspecs import hookimpl


@hookimpl
def nanochat_register_evals():
    """Return a number."""
    return 42
