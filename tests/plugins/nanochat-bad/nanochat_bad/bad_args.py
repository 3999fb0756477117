"""A hook implementation asking for an argument the hook does not give."""

from nanochat.core.hookspecs import hookimpl


@hookimpl
def nanochat_stage_start(run, stage, colour):
    """Wrong arguments."""
