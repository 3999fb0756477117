"""Running a pipeline of stages in a run directory, skipping finished ones and resuming.

``nanochat run tokenizer pretrain eval:bpb --run demo`` resolves each name, writes
``pipeline.json`` (names, options, plugin versions, git commit) and runs the stages in order. A
stage is finished when its folder holds ``done.json``; finished stages are skipped on re-runs,
and an interrupted stage resumes from the checkpoints it left in its folder.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanochat.core import config as cfg
from nanochat.core.checkpoint import CheckpointManager, read_json, write_json_atomic
from nanochat.core.errors import StageError, UsageError
from nanochat.core.registry import Registry, Resolved

logger = logging.getLogger(__name__)

DONE_FILE = "done.json"
PIPELINE_FILE = "pipeline.json"
DEFAULT_LOGGERS = ("console", "jsonl")
DEFAULT_MODEL = "gpt"
DEFAULT_TOKENIZER = "rustbpe"
EVAL_PREFIX = "eval:"


def nanochat_home() -> Path:
    """``$NANOCHAT_HOME``, default ``~/.cache/nanochat``."""
    return Path(os.environ.get("NANOCHAT_HOME") or Path.home() / ".cache" / "nanochat")


def run_directory(run_name: str) -> Path:
    """The folder of run ``run_name``: ``$NANOCHAT_HOME/runs/<name>``.

    Raises:
        UsageError: an invalid run name (see :func:`nanochat.core.config.check_run_name`).
    """
    return nanochat_home() / "runs" / cfg.check_run_name(run_name)


def git_commit() -> str | None:
    """The git commit of the nanochat source tree (with ``-dirty`` if modified), if any."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = "-dirty" if status.returncode == 0 and status.stdout.strip() else ""
        return commit.stdout.strip() + dirty
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class StageEntry:
    """One entry of the pipeline: a stage, or an evaluator run as a stage (``eval:NAME``)."""

    label: str
    kind: str
    resolved: Resolved
    options: Any

    @property
    def scope(self) -> str:
        """The ``-o`` scope and folder name: the short name (``eval-NAME`` for evals)."""
        return ("eval-" if self.kind == "eval" else "") + self.resolved.spec.name


@dataclass
class RunPlan:
    """A resolved pipeline: every component, with its final options."""

    run_name: str
    stages: list[StageEntry]
    model: Resolved | None
    model_options: Any
    tokenizer: Resolved | None
    tokenizer_options: Any
    loggers: list[tuple[Resolved, Any]]
    preset: str | None = None
    overrides: list[str] = field(default_factory=list)
    device: str = "auto"

    def describe(self, registry: Registry) -> dict[str, Any]:
        """The JSON of ``pipeline.json``."""

        def component(resolved: Resolved | None, options: Any) -> dict[str, Any] | None:
            if resolved is None:
                return None
            return {
                "name": resolved.spec.name,
                "plugin": resolved.plugin,
                "qualified_name": resolved.qualified_name,
                "options": cfg.options_to_dict(options),
            }

        used = {e.resolved.plugin for e in self.stages} | {r.plugin for r, _ in self.loggers}
        used |= {r.plugin for r in (self.model, self.tokenizer) if r is not None}
        return {
            "run": self.run_name,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "stages": [
                {"label": e.label, "kind": e.kind, **(component(e.resolved, e.options) or {})}
                for e in self.stages
            ],
            "model": component(self.model, self.model_options),
            "tokenizer": component(self.tokenizer, self.tokenizer_options),
            "loggers": [r.spec.name for r, _ in self.loggers],
            "preset": self.preset,
            "overrides": list(self.overrides),
            "device": self.device,
            "plugins": {
                p.name: {"distribution": p.distribution, "version": p.version}
                for p in registry.plugins
                if p.name in used
            },
            "git_commit": git_commit(),
        }


def _resolve_or_default(
    registry: Registry, kind: str, name: str | None, default: str
) -> Resolved | None:
    """The named component; else the default one, else the only one, else None (checked when a
    stage asks for it)."""
    if name is not None:
        return registry.resolve(kind, name)
    try:
        return registry.resolve(kind, default)
    except UsageError:
        items = registry.components(kind)
        return items[0] if len(items) == 1 else None


def plan_run(
    registry: Registry,
    stage_names: Sequence[str],
    run_name: str,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    model: str | None = None,
    tokenizer: str | None = None,
    loggers: Sequence[str] = (),
    device: str = "auto",
) -> RunPlan:
    """Resolve stage names, components and options into a :class:`RunPlan`.

    Raises:
        UsageError: an unknown or ambiguous name, a bad override, or a duplicated stage.
    """
    if not stage_names:
        raise UsageError("no stage given; e.g. `nanochat run tokenizer pretrain --run demo`")
    preset_obj = registry.preset(preset) if preset else None
    defaults = dict(preset_obj.defaults) if preset_obj else {}
    entries: list[StageEntry] = []
    for label in stage_names:
        if label.startswith(EVAL_PREFIX):
            resolved = registry.resolve("eval", label[len(EVAL_PREFIX) :])
            kind = "eval"
        else:
            resolved = registry.resolve("stage", label)
            kind = "stage"
        entry = StageEntry(label, kind, resolved, resolved.spec.options())
        if any(e.scope == entry.scope for e in entries):
            raise UsageError(f"stage {label!r} appears twice in the pipeline")
        entries.append(entry)
    model_r = _resolve_or_default(registry, "model", model or defaults.get("model"), DEFAULT_MODEL)
    tok_r = _resolve_or_default(
        registry, "tokenizer", tokenizer or defaults.get("tokenizer"), DEFAULT_TOKENIZER
    )
    logger_names = list(dict.fromkeys([*DEFAULT_LOGGERS, *loggers]))
    logger_rs = [registry.resolve("logger", name) for name in logger_names]

    # A scope may name several option sets (the `tokenizer` stage and the tokenizer component);
    # a key goes to the first one that has it.
    scoped: dict[str, list[list[Any]]] = {}

    def add_scope(scope: str, options: Any) -> list[Any]:
        slot = [options]
        scoped.setdefault(scope, []).append(slot)
        return slot

    stage_slots = [add_scope(e.scope, e.options) for e in entries]
    model_slot = add_scope("model", model_r.spec.options()) if model_r else [None]
    tok_slot = add_scope("tokenizer", tok_r.spec.options()) if tok_r else [None]
    logger_slots = [add_scope(r.spec.name, r.spec.options()) for r in logger_rs]

    triples: list[tuple[str, str, Any]] = []
    if preset_obj:
        for target, value in preset_obj.overrides.items():
            scope, _, key = target.partition(".")
            if scope in scoped:
                triples.append((scope, key, value))
    triples += [cfg.parse_override(text) for text in overrides]
    # Options of stages that are not in this run are still checked, then left unused, so one
    # command line can be reused for parts of a pipeline.
    for kind, prefix in (("stage", ""), ("eval", "eval-")):
        for item in registry.components(kind):
            scope = prefix + item.spec.name
            in_run = any(e.scope == scope for e in entries)
            if not in_run and any(t[0] == scope for t in triples):
                add_scope(scope, item.spec.options())
    for scope, values in cfg.group_overrides(triples, scoped).items():
        slots = scoped[scope]
        for key, value in values.items():
            slot = next((s for s in slots if key in cfg.option_fields(type(s[0]))), slots[0])
            slot[0] = cfg.apply_overrides(slot[0], {key: value}, scope)
    for entry, slot in zip(entries, stage_slots, strict=True):
        entry.options = slot[0]
    return RunPlan(
        run_name=run_name,
        stages=entries,
        model=model_r,
        model_options=model_slot[0],
        tokenizer=tok_r,
        tokenizer_options=tok_slot[0],
        loggers=[(r, slot[0]) for r, slot in zip(logger_rs, logger_slots, strict=True)],
        preset=preset,
        overrides=list(overrides),
        device=device,
    )


class RunContext:
    """What a stage sees of its run: folders, options, components, runtime, metrics.

    Stages read earlier stages' artifacts through this object (``tokenizer_dir``,
    ``stage_checkpoints("pretrain")``), never by building paths themselves.
    """

    def __init__(
        self,
        plan: RunPlan,
        registry: Registry,
        run_dir: Path,
        entry: StageEntry,
        metrics: Any,
        runtime: Any = None,
    ):
        self.plan = plan
        self.registry = registry
        self.run_dir = run_dir
        self.entry = entry
        self.metrics = metrics
        self._runtime = runtime

    @property
    def run_name(self) -> str:
        """The run's name."""
        return self.plan.run_name

    @property
    def stage_name(self) -> str:
        """This stage's folder and ``-o`` scope name."""
        return self.entry.scope

    @property
    def options(self) -> Any:
        """This stage's options dataclass, overrides applied."""
        return self.entry.options

    @property
    def stage_dir(self) -> Path:
        """This stage's own folder (created on first use)."""
        path = self.run_dir / self.stage_name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def tokenizer_dir(self) -> Path:
        """Where the run's tokenizer lives."""
        return self.run_dir / "tokenizer"

    @property
    def runtime(self) -> Any:
        """The :class:`~nanochat.core.runtime.Runtime` (created on first use; imports torch)."""
        if self._runtime is None:
            from nanochat.core.runtime import init_runtime

            self._runtime = init_runtime(self.plan.device)
        return self._runtime

    @property
    def is_main(self) -> bool:
        """True on the process that writes shared files (rank 0)."""
        return self._runtime is None or self._runtime.is_main

    @property
    def checkpoints(self) -> CheckpointManager:
        """This stage's checkpoints."""
        return CheckpointManager(self.stage_dir / "checkpoints")

    def stage_checkpoints(self, stage: str) -> CheckpointManager:
        """The checkpoints of another stage of this run (by its scope name)."""
        return CheckpointManager(self.run_dir / stage / "checkpoints")

    def stage_finished(self, stage: str) -> bool:
        """Whether stage ``stage`` of this run has finished."""
        return (self.run_dir / stage / DONE_FILE).is_file()

    def model_factory(self) -> Any:
        """The selected model plugin's factory, created with the run's model options.

        Raises:
            StageError: no model plugin is installed or selected.
        """
        if self.plan.model is None:
            raise StageError("no model plugin is selected or installed; pass --model NAME")
        return self.plan.model.spec.load_factory()(self.plan.model_options)

    def tokenizer_factory(self) -> Any:
        """The selected tokenizer plugin's factory, created with the run's tokenizer options.

        Raises:
            StageError: no tokenizer plugin is installed or selected.
        """
        if self.plan.tokenizer is None:
            raise StageError("no tokenizer plugin is selected or installed; pass --tokenizer NAME")
        return self.plan.tokenizer.spec.load_factory()(self.plan.tokenizer_options)

    def load_tokenizer(self) -> Any:
        """The run's trained tokenizer.

        Raises:
            StageError: the run has no tokenizer yet.
        """
        if not self.tokenizer_dir.is_dir():
            raise StageError(
                f"run {self.run_name!r} has no tokenizer yet; run the `tokenizer` stage first"
            )
        return self.tokenizer_factory().load(self.tokenizer_dir)

    def log(self, **record: Any) -> None:
        """Emit a metric record tagged with this stage."""
        self.metrics.log({"stage": self.stage_name, **record})


def open_metrics(plan: RunPlan, registry: Registry, main: bool) -> Any:
    """The run's metrics fan-out: the plan's loggers on the main process, none elsewhere."""
    from nanochat.core.metrics import Metrics

    loggers = [r.spec.load_factory()(options) for r, options in plan.loggers] if main else []
    return Metrics(plan.run_name, loggers, registry.manager.hook, enabled=main)


def run_pipeline(
    plan: RunPlan, registry: Registry, runtime: Any = None
) -> dict[str, dict[str, Any]]:
    """Run every unfinished stage of ``plan`` in order; return each stage's result.

    ``runtime`` is created lazily by the first stage that asks for it.
    """
    run_dir = run_directory(plan.run_name)
    description = plan.describe(registry)
    main = runtime is None or runtime.is_main
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / PIPELINE_FILE, description)
    metrics = open_metrics(plan, registry, main)
    results: dict[str, dict[str, Any]] = {}
    # Every rank decides what to skip from the same snapshot, taken before any rank can write.
    finished = {e.scope for e in plan.stages if (run_dir / e.scope / DONE_FILE).is_file()}
    if runtime is not None:
        runtime.barrier()
    try:
        metrics.start(run_dir, description)
        for entry in plan.stages:
            ctx = RunContext(plan, registry, run_dir, entry, metrics, runtime)
            done_path = run_dir / entry.scope / DONE_FILE
            if entry.scope in finished:
                done = read_json(done_path, "stage record")
                if done.get("options") != cfg.options_to_dict(entry.options):
                    logger.warning(
                        "stage %s finished earlier with other options; delete %s to redo it",
                        entry.scope,
                        done_path.parent,
                    )
                results[entry.scope] = done.get("result", {})
                metrics.log({"stage": entry.scope, "event": "skipped", "reason": "finished"})
                continue
            registry.manager.hook.nanochat_stage_start(run=ctx, stage=entry.scope)
            metrics.log({"stage": entry.scope, "event": "start"})
            result = _run_entry(ctx) or {}
            runtime = ctx._runtime or runtime
            if runtime is None or runtime.is_main:
                (run_dir / entry.scope).mkdir(parents=True, exist_ok=True)
                write_json_atomic(
                    done_path,
                    {
                        "result": result,
                        "options": cfg.options_to_dict(entry.options),
                        "plugin": entry.resolved.qualified_name,
                        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                    },
                )
            if runtime is not None:
                runtime.barrier()
            metrics.log({"stage": entry.scope, "event": "end", **_scalars(result)})
            registry.manager.hook.nanochat_stage_end(run=ctx, stage=entry.scope, result=result)
            results[entry.scope] = result
    finally:
        metrics.finish()
    return results


def _scalars(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if isinstance(v, int | float | str | bool)}


def _run_entry(ctx: RunContext) -> dict[str, Any]:
    component = ctx.entry.resolved.spec.load_factory()(ctx.options)
    if ctx.entry.kind == "stage":
        return component.run(ctx)
    model = None
    if getattr(component, "requires_model", True):
        model = load_latest_model(ctx)
    metrics = component.evaluate(ctx, model)
    ctx.log(**metrics)
    return dict(metrics)


MODEL_STAGE_ORDER = ("rl", "dpo", "sft", "midtrain", "pretrain")


def load_latest_model(ctx: RunContext, stages: Sequence[str] = MODEL_STAGE_ORDER) -> Any:
    """The newest model of the run: the last checkpoint of the latest training stage present.

    Raises:
        StageError: the run has no model checkpoint.
    """
    for stage in stages:
        manager = ctx.stage_checkpoints(stage)
        if manager.steps():
            checkpoint = manager.load()
            factory = ctx.model_factory()
            model = factory.build(checkpoint.meta["model_config"])
            model.load_state_dict(checkpoint.model_state())
            return model
    raise StageError(f"run {ctx.run_name!r} has no model checkpoint yet; run `pretrain` first")


def run_eval(plan: RunPlan, registry: Registry, runtime: Any = None) -> dict[str, Any]:
    """Run the single evaluator of ``plan`` on its existing run (nothing is marked done).

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
        return _run_entry(ctx)
    finally:
        metrics.finish()
