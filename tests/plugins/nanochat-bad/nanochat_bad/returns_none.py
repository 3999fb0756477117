"""A registration hook that returns None."""

from nanochat.core.hookspecs import hookimpl


@hookimpl
def nanochat_register_stages():
    """Forget to return."""
