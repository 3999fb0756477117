"""A spec whose factory string is not module:attr."""

from nanochat.core.components import ComponentSpec
from nanochat.core.hookspecs import hookimpl


@hookimpl
def nanochat_register_stages():
    """Return an invalid factory string."""
    return [ComponentSpec("stage", "nofactory", "not-a-factory-string", "broken")]
