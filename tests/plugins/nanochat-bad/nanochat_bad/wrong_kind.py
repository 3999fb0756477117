"""A stage hook that returns an eval spec."""

from nanochat.core.components import ComponentSpec
from nanochat.core.hookspecs import hookimpl


@hookimpl
def nanochat_register_stages():
    """Return the wrong kind."""
    return [ComponentSpec("eval", "sneaky", "nanochat_bad.wrong_kind:nothing", "wrong kind")]
