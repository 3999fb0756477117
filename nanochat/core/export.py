"""Exporting a run's model to another tool's format (``nanochat export``).

The model plugin that made the checkpoint writes it: a factory that can export has
``export_formats()`` and ``export(model, tokenizer, fmt, out)`` (see
:class:`~nanochat.core.models.ExportingModelFactory`); the core only finds the checkpoint and
the tokenizer, and knows no format.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nanochat.core.context import RunContext
from nanochat.core.errors import UsageError
from nanochat.core.registry import Registry
from nanochat.core.rundir import run_directory


def export_run(
    registry: Registry,
    run_name: str,
    fmt: str,
    out: Path,
    source: str | None = None,
    defaults: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write the newest model of run ``run_name`` (or of stage ``source``) in format ``fmt``.

    Returns:
        The files or folders written.

    Raises:
        UsageError: no such run, or the model plugin cannot write ``fmt``.
        StageError: the run has no model checkpoint.
    """
    from nanochat.core.metrics import Metrics
    from nanochat.core.models import ExportingModelFactory
    from nanochat.core.plan import plan_run

    run_dir = run_directory(run_name)
    if not run_dir.is_dir():
        raise UsageError(f"run {run_name!r} does not exist in {run_dir.parent}")
    plan = plan_run(registry, [], run_name, device="cpu", defaults=defaults, require_stages=False)
    ctx = RunContext(plan, registry, run_dir, None, Metrics(run_name, [], enabled=False))
    checkpoint = ctx.choose_checkpoint(source, "model")
    factory = ctx.model_factory(checkpoint)
    record = checkpoint.meta.get("model") or {}
    name = record.get("qualified_name", "?") if isinstance(record, dict) else "?"
    formats = factory.export_formats() if isinstance(factory, ExportingModelFactory) else ()
    if fmt not in formats:
        can = f"it writes {', '.join(formats)}" if formats else "it cannot export"
        raise UsageError(f"the model plugin {name} has no export format {fmt!r}: {can}")
    assert isinstance(factory, ExportingModelFactory)
    model = ctx.load_model(checkpoint)
    model.eval()
    return factory.export(model, ctx.load_tokenizer(), fmt, Path(out))
