"""Planning a run: stage names, components and options resolved into a :class:`RunPlan`.

Options are applied in this order: the component's defaults, the preset, the overrides the run
recorded from earlier commands, this command's ``-o`` overrides. Model and tokenizer plugins
come from this command's ``--model`` / ``--tokenizer``, else from the run's record, else from
the preset, else from the caller's defaults (the CLI's), else the only one installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nanochat.core import config as cfg
from nanochat.core.config import check_run_name
from nanochat.core.errors import UnknownComponentError, UsageError, did_you_mean
from nanochat.core.option_docs import validate_plan
from nanochat.core.registry import Registry, Resolved
from nanochat.core.rundir import git_commit, now, read_run_record, run_directory

EVAL_PREFIX = "eval:"
ALWAYS_ON_LOGGERS = ("console", "jsonl")


@dataclass
class StageEntry:
    """One entry of the pipeline: a stage, or an evaluator run as a stage (``eval:NAME``).

    ``scope`` is its folder and ``-o`` scope: the short name (``eval-NAME`` for evals), or
    ``plugin--name`` when several plugins give that short name, so two stages never share one.
    """

    label: str
    kind: str
    resolved: Resolved
    options: Any
    scope: str = ""

    @property
    def produces(self) -> tuple[str, ...]:
        """What the stage leaves for later ones (``model``, ``tokenizer``), from its spec."""
        return tuple(self.resolved.spec.produces)


def stage_scope(registry: Registry, kind: str, resolved: Resolved) -> str:
    """The folder and ``-o`` scope of a stage or eval (see :class:`StageEntry`)."""
    prefix = "eval-" if kind == "eval" else ""
    name = resolved.spec.name
    if name in registry.ambiguous_names(kind):
        return f"{prefix}{resolved.plugin}--{name}"
    return prefix + name


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
    new_overrides: list[str] = field(default_factory=list)
    device: str = "auto"
    model_explicit: bool = False
    tokenizer_explicit: bool = False
    dataset_options: dict[str, Any] = field(default_factory=dict)
    stage_dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def datasets_for(self, scope: str) -> dict[str, Any]:
        """Dataset options (by ``plugin/name``) as the stage of ``scope`` sees them: the run's,
        with that stage's own (``-o STAGE.DATASET.KEY=VALUE``) in their place."""
        return {**self.dataset_options, **self.stage_dataset_options.get(scope, {})}

    def describe(self, registry: Registry) -> dict[str, Any]:
        """This command's part of the run record (see ``rundir.append_run_record``)."""

        def component(resolved: Resolved | None, options: Any) -> dict[str, Any] | None:
            if resolved is None:
                return None
            info = registry.plugin_info(resolved.plugin)
            return {
                "name": resolved.spec.name,
                "plugin": resolved.plugin,
                "qualified_name": resolved.qualified_name,
                "version": info.version if info else None,
                "options": cfg.options_to_dict(options),
            }

        used = {e.resolved.plugin for e in self.stages} | {r.plugin for r, _ in self.loggers}
        used |= {r.plugin for r in (self.model, self.tokenizer) if r is not None}
        return {
            "run": self.run_name,
            "time": now(),
            "labels": [e.label for e in self.stages],
            "stages": [
                {
                    "label": e.label,
                    "kind": e.kind,
                    "scope": e.scope,
                    "produces": list(e.produces),
                    **(component(e.resolved, e.options) or {}),
                }
                for e in self.stages
            ],
            "model": component(self.model, self.model_options),
            "tokenizer": component(self.tokenizer, self.tokenizer_options),
            "loggers": [r.spec.name for r, _ in self.loggers],
            "preset": self.preset,
            "overrides": list(self.overrides),
            "new_overrides": list(self.new_overrides),
            "device": self.device,
            "datasets": {
                name: cfg.options_to_dict(options) for name, options in self.dataset_options.items()
            },
            "stage_datasets": {
                scope: {name: cfg.options_to_dict(o) for name, o in options.items()}
                for scope, options in self.stage_dataset_options.items()
            },
            "plugins": {
                p.name: {"distribution": p.distribution, "version": p.version}
                for p in registry.plugins
                if p.name in used
            },
            "git_commit": git_commit(),
        }


def _split_stage_dataset_overrides(
    registry: Registry, triples: list[tuple[str, str, Any]]
) -> tuple[list[tuple[str, str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    """Take ``STAGE.DATASET.KEY=VALUE`` overrides out of ``triples``: a dataset option for one
    stage or eval only (``-o rl.arithmetic.max_value=300``), keyed by (the stage's scope, the
    dataset's ``plugin/name``); later overrides win.

    Raises:
        UsageError: the part before the dataset is not a stage or eval, or a stage's dotted
            key names no dataset.
    """
    datasets = {
        n: item.qualified_name
        for item in registry.components("dataset")
        for n in (item.spec.name, item.qualified_name)
    }
    stage_scopes: dict[str, str] = {}
    for kind in ("stage", "eval"):
        for item in registry.components(kind):
            scope = stage_scope(registry, kind, item)
            prefix = EVAL_PREFIX if kind == "eval" else ""
            for alias in (scope, prefix + item.qualified_name):
                stage_scopes[alias] = scope
    rest: list[tuple[str, str, Any]] = []
    per_stage: dict[tuple[str, str], dict[str, Any]] = {}
    for scope, key, value in triples:
        dataset, dot, dataset_key = key.partition(".")
        if not dot or scope in datasets:  # SCOPE.KEY, or a dataset's own KEY (checked later)
            rest.append((scope, key, value))
        elif scope not in stage_scopes and dataset in datasets:
            raise UsageError(
                f"bad override {scope}.{key}: a dataset option ({dataset}.{dataset_key}) can be "
                "given for one stage or eval (e.g. rl.arithmetic.max_value=300), and "
                f"{scope!r} is neither"
            )
        elif scope not in stage_scopes:  # left to the scope's own check
            rest.append((scope, key, value))
        elif dataset not in datasets:
            raise UsageError(
                f"bad override {scope}.{key}: no dataset is named {dataset!r}"
                f"{did_you_mean(dataset, datasets, cutoff=0.6)} "
                f"(`{scope}.DATASET.KEY=VALUE` sets a dataset option for {scope} only)"
            )
        else:
            per_stage.setdefault((stage_scopes[scope], datasets[dataset]), {})[dataset_key] = value
    return rest, per_stage


def _choose(
    registry: Registry,
    kind: str,
    explicit: str | None,
    recorded: Mapping[str, Any] | None,
    fallbacks: Sequence[str | None],
) -> Resolved | None:
    """The component of ``kind`` by the precedence in this module's docstring."""
    if explicit is not None:
        return registry.resolve(kind, explicit)
    if recorded:
        name = str(recorded.get("qualified_name") or recorded.get("name"))
        try:
            return registry.resolve(kind, name)
        except UnknownComponentError:
            raise UsageError(
                f"this run was made with {kind} {name!r}, which is not installed now; install "
                f"its plugin or pass --{kind} NAME"
            ) from None
    for fallback in fallbacks:
        if fallback is None:
            continue
        try:
            return registry.resolve(kind, fallback)
        except UsageError:
            continue
    items = registry.components(kind)
    return items[0] if len(items) == 1 else None


def merge_overrides(earlier: Sequence[str], later: Sequence[str]) -> list[str]:
    """``earlier + later`` where a later ``scope.key`` replaces an earlier one."""
    keys = {text.partition("=")[0] for text in later}
    return [t for t in earlier if t.partition("=")[0] not in keys] + list(later)


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
    defaults: Mapping[str, str] | None = None,
    require_stages: bool = True,
) -> RunPlan:
    """Resolve stage names, components and options into a :class:`RunPlan`.

    Args:
        registry: the loaded plugins.
        stage_names: stage names, ``plugin/name`` or ``eval:NAME``.
        run_name: the run (its record, if any, supplies what this command does not say).
        preset: a preset name; default: the one the run recorded.
        overrides: ``scope.key=value`` strings.
        model: a model plugin name; see the module docstring for the fallbacks.
        tokenizer: a tokenizer plugin name.
        loggers: extra logger names (console and jsonl are always on).
        device: ``auto``, ``cuda``, ``mps`` or ``cpu``.
        defaults: last-resort component names by kind (``{"model": "gpt"}``), from the caller.
        require_stages: False to plan the use of a run without stages (``chat``, ``serve``).

    Raises:
        UsageError: an unknown or ambiguous name, a bad override, or a duplicated stage.
    """
    check_run_name(run_name)
    if not stage_names and require_stages:
        raise UsageError("no stage given; e.g. `nanochat run tokenizer pretrain --run demo`")
    parsed_new = [cfg.parse_override(text) for text in overrides]
    record = read_run_record(run_directory(run_name)) or {}
    preset = preset or record.get("preset")
    preset_obj = registry.preset(preset) if preset else None
    preset_defaults = dict(preset_obj.defaults) if preset_obj else {}
    entries: list[StageEntry] = []
    for label in stage_names:
        kind = "eval" if label.startswith(EVAL_PREFIX) else "stage"
        name = label[len(EVAL_PREFIX) :] if kind == "eval" else label
        resolved = registry.resolve(kind, name)
        if kind == "stage" and any(e.resolved == resolved for e in entries):
            raise UsageError(f"stage {label!r} appears twice in the pipeline")
        scope = stage_scope(registry, kind, resolved)
        entries.append(StageEntry(label, kind, resolved, resolved.spec.options(), scope))
    fallback = dict(defaults or {})
    model_r = _choose(
        registry,
        "model",
        model,
        record.get("model"),
        [preset_defaults.get("model"), fallback.get("model")],
    )
    tok_r = _choose(
        registry,
        "tokenizer",
        tokenizer,
        record.get("tokenizer"),
        [preset_defaults.get("tokenizer"), fallback.get("tokenizer")],
    )
    logger_names = list(dict.fromkeys([*ALWAYS_ON_LOGGERS, *loggers]))
    logger_rs = [registry.resolve("logger", name) for name in logger_names]

    # A scope may name several option sets (the `tokenizer` stage and the tokenizer component);
    # a key goes to the first one that has it. A stage is also reachable as `plugin/name`.
    scoped: dict[str, list[list[Any]]] = {}

    def add_scope(scope: str, options: Any, *aliases: str) -> list[Any]:
        slot = [options]
        for name in (scope, *aliases):
            scoped.setdefault(name, []).append(slot)
        return slot

    slot_of: dict[tuple[str, str], list[Any]] = {}  # an eval run twice has one set of options
    for e in entries:
        if (e.kind, e.resolved.qualified_name) not in slot_of:
            alias = ("eval:" if e.kind == "eval" else "") + e.resolved.qualified_name
            slot_of[(e.kind, e.resolved.qualified_name)] = add_scope(e.scope, e.options, alias)
    stage_slots = [slot_of[(e.kind, e.resolved.qualified_name)] for e in entries]
    model_slot = add_scope("model", model_r.spec.options()) if model_r else [None]
    tok_slot = add_scope("tokenizer", tok_r.spec.options()) if tok_r else [None]
    logger_slots = [add_scope(r.spec.name, r.spec.options()) for r in logger_rs]

    inherited = [str(t) for t in record.get("overrides", [])]
    all_overrides = merge_overrides(inherited, list(overrides))
    triples: list[tuple[str, str, Any]] = []
    if preset_obj:
        # A preset sets options of components this run may not use; those are left out. Dataset
        # scopes count as used: whichever stage reads that dataset takes them.
        datasets = {
            n for d in registry.components("dataset") for n in (d.spec.name, d.qualified_name)
        }
        for target, value in preset_obj.overrides.items():
            scope, _, key = target.partition(".")
            if scope in scoped or scope in datasets:
                triples.append((scope, key, value))
    triples += [cfg.parse_override(text) for text in inherited] + parsed_new
    triples, per_stage = _split_stage_dataset_overrides(registry, triples)
    # Options of stages that are not in this run are still checked, then left unused, so one
    # command line can be reused for parts of a pipeline.
    in_run = {(e.kind, e.resolved.qualified_name) for e in entries}
    for kind in ("stage", "eval"):
        for item in registry.components(kind):
            scope = stage_scope(registry, kind, item)
            if (kind, item.qualified_name) not in in_run and any(t[0] == scope for t in triples):
                add_scope(scope, item.spec.options())
    # Datasets take options like any component: `-o demo-text.val_fraction=0.1` (or
    # `plugin/name.key=...`), for every use of that dataset in the run.
    dataset_slots: dict[str, list[Any]] = {}
    for item in registry.components("dataset"):
        names = [item.spec.name, item.qualified_name]
        named = any(t[0] in names for t in triples)
        if named and item.spec.name not in scoped:
            dataset_slots[item.qualified_name] = add_scope(
                item.spec.name, item.spec.options(), item.qualified_name
            )
        elif named and item.qualified_name not in scoped:
            dataset_slots[item.qualified_name] = add_scope(item.qualified_name, item.spec.options())
    for scope, values in cfg.group_overrides(triples, scoped).items():
        slots = scoped[scope]
        for key, value in values.items():
            slot = next((s for s in slots if key in cfg.option_fields(type(s[0]))), slots[0])
            slot[0] = cfg.apply_overrides(slot[0], {key: value}, scope)
    for entry, slot in zip(entries, stage_slots, strict=True):
        entry.options = slot[0]
    run_wide = {name: slot[0] for name, slot in dataset_slots.items()}
    stage_datasets: dict[str, dict[str, Any]] = {}
    for (scope, dataset), values in per_stage.items():
        spec = registry.resolve("dataset", dataset).spec
        base = run_wide.get(dataset, spec.options())
        where = f"{scope}.{spec.name}"
        stage_datasets.setdefault(scope, {})[dataset] = cfg.apply_overrides(base, values, where)
    plan = RunPlan(
        run_name=run_name,
        stages=entries,
        model=model_r,
        model_options=model_slot[0],
        tokenizer=tok_r,
        tokenizer_options=tok_slot[0],
        loggers=[(r, slot[0]) for r, slot in zip(logger_rs, logger_slots, strict=True)],
        preset=preset,
        overrides=all_overrides,
        new_overrides=list(overrides),
        device=device,
        model_explicit=model is not None,
        tokenizer_explicit=tokenizer is not None,
        dataset_options=run_wide,
        stage_dataset_options=stage_datasets,
    )
    validate_plan(plan)
    return plan
