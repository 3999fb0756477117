"""``nanochat serve``: a server component given a run to serve.

The core knows nothing of HTTP: it resolves the server plugin, applies the command's options to
the server's options dataclass, builds the run's context and calls ``serve(ctx)``; the server
loads the model through :mod:`nanochat.core.chat` like ``nanochat chat`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nanochat.core import config as cfg
from nanochat.core.context import RunContext
from nanochat.core.errors import UsageError
from nanochat.core.plan import StageEntry, plan_run
from nanochat.core.registry import Registry, create_component
from nanochat.core.rundir import run_directory

SERVE_SCOPE = "serve"


def server_overrides(
    server_name: str, flags: Mapping[str, Any], overrides: Sequence[str]
) -> dict[str, Any]:
    """The server options to set: the command's flags (those given) and ``-o KEY=VALUE``.

    ``-o`` keys may carry a scope: ``serve.KEY`` or ``SERVER.KEY``.

    Raises:
        UsageError: an ``-o`` that is not ``KEY=VALUE``, or a scope that is not the server's.
    """
    values = {key: value for key, value in flags.items() if value is not None}
    for text in overrides:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-o {text!r}: expected KEY=VALUE (e.g. -o queue_size=16)")
        scope, dot, name = key.strip().rpartition(".")
        if dot and scope not in (SERVE_SCOPE, server_name, server_name.rpartition("/")[2]):
            raise UsageError(f"-o {text!r}: the scope must be {SERVE_SCOPE} (or omitted)")
        values[name if dot else key.strip()] = value
    return values


def serve_run(
    registry: Registry,
    server_name: str,
    run_name: str,
    options: Mapping[str, Any],
    device: str = "auto",
    defaults: Mapping[str, str] | None = None,
) -> None:
    """Serve run ``run_name`` with server plugin ``server_name`` until it stops.

    Args:
        registry: the loaded plugins.
        server_name: a server component name.
        run_name: the run whose model to serve.
        options: option name to value for the server's options dataclass.
        device: the plan's device (servers choose their own per worker).
        defaults: fallback component names (the CLI's).

    Raises:
        UsageError: an unknown server, a bad option, or a run that does not exist.
    """
    from nanochat.core.metrics import Metrics

    cfg.check_run_name(run_name)
    resolved = registry.resolve("server", server_name)
    server_options = cfg.apply_overrides(resolved.spec.options(), dict(options), SERVE_SCOPE)
    cfg.validate_options(server_options, SERVE_SCOPE)
    run_dir = run_directory(run_name)
    if not run_dir.is_dir():
        raise UsageError(f"run {run_name!r} does not exist in {run_dir.parent}")
    plan = plan_run(registry, [], run_name, device=device, defaults=defaults, require_stages=False)
    entry = StageEntry(SERVE_SCOPE, "server", resolved, server_options, SERVE_SCOPE)
    ctx = RunContext(plan, registry, run_dir, entry, Metrics(run_name, [], enabled=False))
    create_component(resolved, server_options).serve(ctx)
