"""A broadcast hook that raises during a run."""

from nanochat.core.hookspecs import hookimpl


@hookimpl
def nanochat_stage_start(run, stage):
    """Raise on every stage start."""
    raise RuntimeError("observer tripped")
