"""A hook name with a typo."""

from nanochat.core.hookspecs import hookimpl


@hookimpl
def nanochat_register_stage():
    """Misspelt: the hook is nanochat_register_stages."""
    return []
