"""Running a planned pipeline in its run directory: skip finished stages, resume the rest.

A stage is finished when its folder holds ``done.json``; finished stages are skipped on re-runs
(an evaluator run as a stage runs again when a newer model exists than the one it scored), and an
interrupted stage resumes from the checkpoints it left. Broadcast hooks that raise are reported
and the run carries on (see :meth:`Registry.call_isolated`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanochat.core import config as cfg
from nanochat.core.checkpoint import read_json, write_json_atomic
from nanochat.core.context import RunContext
from nanochat.core.errors import UsageError
from nanochat.core.plan import RunPlan, StageEntry
from nanochat.core.registry import Registry, create_component
from nanochat.core.rundir import DONE_FILE, RunLock, append_run_record, now, run_directory

if TYPE_CHECKING:
    from nanochat.core.metrics import Metrics
    from nanochat.core.runtime import Runtime

logger = logging.getLogger(__name__)


def open_metrics(plan: RunPlan, registry: Registry, main: bool) -> Metrics:
    """The run's metrics fan-out: the plan's loggers on the main process, none elsewhere."""
    from nanochat.core.metrics import Metrics

    loggers = [create_component(r, options) for r, options in plan.loggers] if main else []
    return Metrics(
        plan.run_name,
        loggers,
        lambda record: registry.call_isolated(
            "nanochat_metrics", run_name=plan.run_name, record=record
        ),
        enabled=main,
    )


def model_source(plan: RunPlan, index: int) -> str | None:
    """The stage whose model the evaluator at ``plan.stages[index]`` scores: the nearest
    model-producing stage before it (None: the run's newest model). ``midtrain eval:x sft
    eval:x`` scores midtrain's model, then sft's, also when resumed after both trained."""
    before = plan.stages[:index]
    producers = [e.scope for e in before if e.kind == "stage" and "model" in e.produces]
    return producers[-1] if producers else None


def _scored_checkpoint(ctx: RunContext, source: str | None) -> str | None:
    """For an evaluator of a model: which checkpoint it would score now (its path)."""
    try:
        return str(ctx.choose_checkpoint(source, "model").path)
    except Exception:  # noqa: BLE001 - no model yet: the evaluator will say so when it runs
        return None


def scored_done_file(checkpoint: str) -> str:
    """The record of an evaluation of ``checkpoint``, beside ``done.json``: one per model stage,
    so a pipeline can evaluate after several stages (``midtrain eval:x sft eval:x``)."""
    return f"done-{Path(checkpoint).parent.parent.name}.json"


def _finished_record(
    ctx: RunContext, entry: StageEntry, source: str | None
) -> dict[str, Any] | None:
    """``done.json`` of ``entry`` if it finished already (None otherwise); an evaluator of a
    model counts as finished only for the checkpoint that is the run's newest now."""
    folder = ctx.run_dir / entry.scope
    newest = _scored_checkpoint(ctx, source) if entry.kind == "eval" else None
    paths = [folder / DONE_FILE]
    if newest is not None:
        paths.insert(0, folder / scored_done_file(newest))
    for done_path in paths:
        if not done_path.is_file():
            continue
        done: dict[str, Any] = read_json(done_path, "stage record")
        scored = done.get("checkpoint")
        if entry.kind == "eval" and scored is not None and scored != newest:
            continue
        return done
    return None


def run_pipeline(
    plan: RunPlan, registry: Registry, runtime: Runtime | None = None
) -> dict[str, dict[str, Any]]:
    """Run every unfinished stage of ``plan`` in order; return each stage's result.

    ``runtime`` is created lazily by the first stage that asks for it.
    """
    run_dir = run_directory(plan.run_name)
    main = runtime is None or runtime.is_main
    lock = RunLock(run_dir, "nanochat run " + " ".join(e.label for e in plan.stages))
    if main:
        lock.acquire()
    try:
        description = plan.describe(registry)
        if main:
            append_run_record(run_dir, description)
        if runtime is not None:
            runtime.barrier()
        metrics = open_metrics(plan, registry, main)
        results: dict[str, dict[str, Any]] = {}
        try:
            metrics.start(run_dir, description)
            for index, entry in enumerate(plan.stages, start=1):
                ctx = RunContext(plan, registry, run_dir, entry, metrics, runtime)
                position = (index, len(plan.stages))
                source = model_source(plan, index - 1) if entry.kind == "eval" else None
                results[entry.scope] = _run_stage(ctx, entry, registry, position, source)
                runtime = ctx.runtime_if_created or runtime
        finally:
            metrics.finish()
    finally:
        lock.release()
    return results


def _run_stage(
    ctx: RunContext,
    entry: StageEntry,
    registry: Registry,
    position: tuple[int, int],
    source: str | None = None,
) -> dict[str, Any]:
    done_path = ctx.run_dir / entry.scope / DONE_FILE
    done = _finished_record(ctx, entry, source)
    runtime = ctx.runtime_if_created
    if runtime is not None:
        # every rank decided from the same files; nobody writes before all have looked
        runtime.barrier()
    if done is not None:
        if done.get("options") != cfg.options_to_dict(entry.options):
            logger.warning(
                "stage %s finished earlier with other options; delete %s to redo it",
                entry.scope,
                done_path.parent,
            )
        ctx.log(event="skipped", reason="finished")
        result: dict[str, Any] = done.get("result", {})
        return result
    registry.call_isolated("nanochat_stage_start", run=ctx, stage=entry.scope)
    ctx.log(event="start", index=position[0], count=position[1])
    result, scored = _run_entry(ctx, source)
    runtime = ctx.runtime_if_created
    if runtime is None or runtime.is_main:
        (ctx.run_dir / entry.scope).mkdir(parents=True, exist_ok=True)
        done = {
            "result": result,
            "options": cfg.options_to_dict(entry.options),
            "plugin": entry.resolved.qualified_name,
            "produces": list(entry.produces),
            "checkpoint": scored,
            "finished": now(),
        }
        if scored is not None:
            write_json_atomic(done_path.parent / scored_done_file(scored), done)
        write_json_atomic(done_path, done)
    if runtime is not None:
        runtime.barrier()
    ctx.log(event="end", **_scalars(result))
    registry.call_isolated("nanochat_stage_end", run=ctx, stage=entry.scope, result=result)
    return result


def _scalars(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if isinstance(v, int | float | str | bool)}


def _run_entry(ctx: RunContext, source: str | None = None) -> tuple[dict[str, Any], str | None]:
    """Run the stage or evaluator; return its result and the checkpoint it scored (if any).

    An evaluator of a model scores the run's newest model, or the newest checkpoint of the
    stage ``source`` names; the checkpoint is ``ctx.evaluated_checkpoint`` while it runs.
    """
    entry = ctx.entry
    assert entry is not None  # pipelines give every context its stage
    component = create_component(entry.resolved, ctx.options)
    if entry.kind == "stage":
        result: dict[str, Any] = component.run(ctx) or {}
        return result, None
    model, scored = None, None
    if getattr(component, "requires_model", True):
        checkpoint = ctx.choose_checkpoint(source, "model")
        model, scored = ctx.load_model(checkpoint), str(checkpoint.path)
        ctx.evaluated_checkpoint = checkpoint
    metrics = component.evaluate(ctx, model)
    if scored is None:
        ctx.log(**metrics)
    else:  # which model stage and step were scored: the report's columns come from this
        ctx.log(**metrics, scored=f"{Path(scored).parent.parent.name}/{Path(scored).name}")
    return dict(metrics), scored


def run_eval(
    plan: RunPlan,
    registry: Registry,
    runtime: Runtime | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Run the single evaluator of ``plan`` on its existing run (nothing is marked done), on the
    run's newest model or the newest checkpoint of the stage ``source`` names.

    Raises:
        UsageError: the run does not exist.
    """
    run_dir = run_directory(plan.run_name)
    if not run_dir.is_dir():
        raise UsageError(f"run {plan.run_name!r} does not exist in {run_dir.parent}")
    main = runtime is None or runtime.is_main
    metrics = open_metrics(plan, registry, main)
    try:
        metrics.start(run_dir, plan.describe(registry))
        ctx = RunContext(plan, registry, run_dir, plan.stages[0], metrics, runtime)
        return _run_entry(ctx, source)[0]
    finally:
        metrics.finish()
