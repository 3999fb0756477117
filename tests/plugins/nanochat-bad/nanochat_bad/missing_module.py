"""A valid spec whose factory module does not exist (found only when the stage is used)."""

from nanochat.core.components import ComponentSpec
from nanochat.core.hookspecs import hookimpl


@hookimpl
def nanochat_register_stages():
    """A stage that cannot be created."""
    return [ComponentSpec("stage", "ghost", "nanochat_bad.not_there:Ghost", "missing module")]
