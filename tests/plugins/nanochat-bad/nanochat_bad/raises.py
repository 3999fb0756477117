"""A registration hook that raises."""

from nanochat.core.hookspecs import hookimpl


@hookimpl
def nanochat_register_stages():
    """Raise."""
    raise RuntimeError("bad-raises blew up while registering")
