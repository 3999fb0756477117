"""The report card of a run: ``report.md`` with the environment, every stage's cost and results,
a summary table (one column per model stage) and plots.

Everything comes from what the run already records — ``pipeline.json``, ``metrics.jsonl`` and
each stage's ``done.json`` — so a report can be written for any run, finished or not, and again
at any time. Nothing here knows the built-in stages: a stage's column header is the
``report_label`` its spec puts in ``extra`` (``BASE``, ``MID``…), else its name in capitals; the
table's rows are the metrics evaluators and stages report.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from nanochat.core.checkpoint import read_json
from nanochat.core.errors import UsageError
from nanochat.core.registry import Registry
from nanochat.core.rundir import DONE_FILE, git_commit, read_run_record

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"
PLOTS_DIR = "report"
# Metrics a stage reports about its own model that belong in the summary table, with their
# row names; evaluators' metrics are added as "<eval> <metric>".
STAGE_ROWS: Mapping[str, str] = {
    "val_bpb": "validation bits/byte",
    "val_loss": "validation loss (nats/token)",
}


@dataclass
class StageReport:
    """What the run records of one stage or evaluator."""

    scope: str
    kind: str
    plugin: str
    label: str
    produces: list[str]
    status: str = "not started"
    options: dict[str, Any] = field(default_factory=dict)
    headline: tuple[str, ...] = ()  # an evaluator's table rows (spec extra ``report_metrics``)
    row_names: dict[str, str] = field(default_factory=dict)  # spec extra ``report_rows``
    seconds: float | None = None
    tokens: float | None = None
    params: float | None = None
    flops: float | None = None
    result: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (a line cut short by a crash is skipped)."""
    if not path.is_file():
        return []
    records = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def finite_number(value: Any) -> float | None:
    """``value`` as a float if it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _wall_seconds(records: list[dict[str, Any]]) -> float | None:
    """Seconds the stage ran: from each ``start`` record to its ``end`` record, or to its last
    record when interrupted (a later run's ``skipped`` record and the gaps do not count)."""
    total, start, last = 0.0, None, None
    for record in records:
        when, event = finite_number(record.get("time")), record.get("event")
        if when is None:
            continue
        if event in ("start", "skipped") and start is not None and last is not None:
            total += last - start
            start = None
        if event == "start":
            start = when
        if start is not None:
            last = when
        if event == "end" and start is not None:
            total += when - start
            start = None
    if start is not None and last is not None:
        total += last - start
    return total if any(r.get("event") == "start" for r in records) else None


def _spec_extras(registry: Registry | None, stage: dict[str, Any]) -> dict[str, Any]:
    """``extra`` of the stage's spec (``report_label``, ``report_metrics``), if installed."""
    if registry is None:
        return {}
    kind, name = str(stage.get("kind", "stage")), str(stage.get("qualified_name", ""))
    try:
        return dict(registry.resolve(kind, name).spec.extra)
    except Exception:  # noqa: BLE001 - an uninstalled plugin keeps the plain label
        return {}


def collect_stages(
    run_dir: Path, record: dict[str, Any], registry: Registry | None
) -> list[StageReport]:
    """One :class:`StageReport` per stage and evaluator of the run, in the run's order."""
    metrics = read_metrics(run_dir / "metrics.jsonl")
    stages = [s for s in record.get("stages", []) if isinstance(s, dict)]
    reports = []
    for stage in stages:
        scope = str(stage.get("scope") or stage.get("label"))
        rows = [r for r in metrics if r.get("stage") == scope]
        extras = _spec_extras(registry, stage)
        report = StageReport(
            scope=scope,
            kind=str(stage.get("kind", "stage")),
            plugin=str(stage.get("qualified_name", "?")),
            label=str(extras.get("report_label", scope.upper())),
            headline=tuple(extras.get("report_metrics", ())),
            row_names={str(k): str(v) for k, v in dict(extras.get("report_rows", {})).items()},
            produces=list(stage.get("produces", [])),
            records=rows,
            options=dict(stage.get("options") or {}),
        )
        done_path = run_dir / scope / DONE_FILE
        if done_path.is_file():
            done = read_json(done_path, "stage record")
            report.status = "finished"
            report.result = done.get("result", {}) if isinstance(done, dict) else {}
        elif rows:
            report.status = "unfinished"
        report.seconds = finite_number(report.result.get("seconds")) or _wall_seconds(rows)
        plan = next((r for r in rows if r.get("event") == "plan"), {})
        progress = [r for r in rows if finite_number(r.get("tokens")) is not None and "loss" in r]
        report.tokens = finite_number(report.result.get("tokens")) or (
            finite_number(progress[-1]["tokens"]) if progress else None
        )
        params = report.result.get("params", plan.get("params"))
        report.params = finite_number(params)
        flops_per_token = finite_number(plan.get("flops_per_token"))
        if flops_per_token is not None and report.tokens is not None:
            report.flops = flops_per_token * report.tokens
        reports.append(report)
    known = {r.scope for r in reports}
    for scope in dict.fromkeys(str(r.get("stage")) for r in metrics if "scored" in r):
        if scope not in known:  # `nanochat eval NAME --run ...` outside a pipeline
            rows = [r for r in metrics if r.get("stage") == scope]
            name = scope.removeprefix("eval-")
            extras = _spec_extras(registry, {"kind": "eval", "qualified_name": name})
            reports.append(StageReport(scope, "eval", scope, scope.upper(), [], "standalone"))
            reports[-1].records = rows
            reports[-1].headline = tuple(extras.get("report_metrics", ()))
            reports[-1].row_names = {
                str(k): str(v) for k, v in extras.get("report_rows", {}).items()
            }
    return reports


# Evaluator outputs that describe the measurement rather than the model (not table rows).
COUNT_KEYS = frozenset({"tokens", "problems", "samples", "seconds", "examples"})


def _row_name(evaluator: str, key: str, dataset: Any, given: str | None = None) -> str:
    """A metric's row: the evaluator's own name for it (``report_rows``, where ``{dataset}``
    stands for its dataset option) or ``"<evaluator> <metric>"``; a dataset other than the
    evaluator's namesake is added in brackets unless the given name shows it."""
    shown = isinstance(dataset, str) and dataset and dataset != evaluator
    if given is not None:
        name = given.replace("{dataset}", str(dataset or evaluator))
        return f"{name} ({dataset})" if shown and "{dataset}" not in given else name
    name = evaluator if key == evaluator else f"{evaluator} {key}"
    return f"{name} ({dataset})" if shown else name


def summary_table(
    stages: list[StageReport],
) -> tuple[list[str], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """The card: ``(columns, rows, errors)``. Columns are model stages (by label, in run
    order); ``rows[name][column]`` a metric's value and ``errors`` its standard error if known.

    A stage's own validation metrics go in its column; an evaluator's result goes in the column
    of the stage whose checkpoint it scored (the newest such result wins). Counts (problems,
    tokens) are left out; an evaluator whose spec lists ``report_metrics`` gives only those.
    """
    by_scope = {s.scope: s for s in stages}
    columns = [s.label for s in stages if "model" in s.produces]
    rows: dict[str, dict[str, float]] = {}
    errors: dict[str, dict[str, float]] = {}

    def put(row: str, scope: str, value: float | None, error: float | None = None) -> None:
        stage = by_scope.get(scope)
        if stage is not None and value is not None and "model" in stage.produces:
            rows.setdefault(row, {})[stage.label] = value
            if error is not None:
                errors.setdefault(row, {})[stage.label] = error

    for stage in stages:
        if stage.kind == "stage":
            for key, row in STAGE_ROWS.items():
                put(row, stage.scope, finite_number(stage.result.get(key)))
            continue
        name = stage.scope.removeprefix("eval-")
        for record in stage.records:
            scored = record.get("scored")
            if not isinstance(scored, str):
                continue
            for key, value in record.items():
                skip = key in ("time", "stage", "scored", "event") or key.endswith("stderr")
                if skip or key in COUNT_KEYS or (stage.headline and key not in stage.headline):
                    continue
                error = record.get(f"{key}_stderr")
                if key == "accuracy":
                    error = record.get("stderr", error)
                given = stage.row_names.get(key)
                row = _row_name(name, key, stage.options.get("dataset"), given)
                put(row, scored.split("/")[0], finite_number(value), finite_number(error))
    return columns, rows, errors


def environment() -> dict[str, str]:
    """Hardware and software of the machine writing the report."""
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu cores": str(os.cpu_count()),
        "git commit": git_commit() or "unknown",
    }
    for dist in ("nanochat", "nanochat-stages", "nanochat-datasets", "nanochat-evals", "torch"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            env["gpus"] = f"{len(names)} x {names[0]}"
        else:
            env["gpus"] = "none"
    except ImportError:
        pass
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1e6 and abs(value) < 1e12:
        for unit, size in (("B", 1e9), ("M", 1e6)):
            if abs(value) >= size:
                return f"{value / size:.3g}{unit}"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3g}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_report(
    run_name: str,
    record: dict[str, Any],
    stages: list[StageReport],
    plots: list[Path],
    env: Mapping[str, str],
) -> str:
    """The markdown text of the report (plots are linked relative to the run folder)."""
    generated = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    finished = sum(s.status == "finished" for s in stages)
    total_seconds = sum(s.seconds or 0.0 for s in stages)
    lines = [
        f"# nanochat report: run `{run_name}`",
        "",
        f"Generated {generated}. Run created {record.get('created', '?')}; preset "
        f"`{record.get('preset') or 'none'}`; model `{record.get('model', {}).get('name', '?')}`, "
        f"tokenizer `{record.get('tokenizer', {}).get('name', '?')}`. {finished} of "
        f"{len(stages)} stages finished; {_duration(total_seconds)} of stage time.",
        "",
        "## Summary",
        "",
    ]
    columns, rows, errors = summary_table(stages)

    def cell(row: str, column: str) -> str:
        value, error = rows[row].get(column), errors.get(row, {}).get(column)
        return _fmt(value) + ("" if error is None else f" ± {_fmt(error, 2)}")

    if columns and rows:
        lines += _table(["metric", *columns], ([r, *(cell(r, c) for c in columns)] for r in rows))
    else:
        lines.append("No model stage has reported a metric yet.")
    lines += ["", "## Stages", ""]
    lines += _table(
        ["stage", "plugin", "status", "wall time", "tokens", "params", "FLOPs"],
        (
            [
                f"`{s.scope}`",
                s.plugin,
                s.status,
                _duration(s.seconds),
                _fmt(s.tokens),
                _fmt(s.params),
                "—" if s.flops is None else f"{s.flops:.3g}",
            ]
            for s in stages
        ),
    )
    for stage in stages:
        scalars = {k: v for k, v in stage.result.items() if finite_number(v) is not None}
        if scalars:
            lines += [
                "",
                f"**{stage.scope}**: "
                + ", ".join(f"{k} {_fmt(finite_number(v))}" for k, v in sorted(scalars.items())),
            ]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}]({PLOTS_DIR}/{p.name})" for p in plots]
    lines += ["", "## Environment", ""]
    lines += _table(["", ""], ([k, v] for k, v in env.items()))
    lines += ["", "## Commands", ""]
    for command in record.get("commands", []):
        labels = " ".join(command.get("labels", []))
        extra = " ".join(f"-o {o}" for o in command.get("new_overrides", []))
        preset = f" --preset {command['preset']}" if command.get("preset") else ""
        lines.append(f"- {command.get('time', '?')}: `{f'{labels}{preset} {extra}'.strip()}`")
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, registry: Registry | None = None) -> Path:
    """Write ``report.md`` and its plots into ``run_dir``; return the report's path.

    Raises:
        UsageError: ``run_dir`` holds no run record.
    """
    from nanochat.core.report_plots import draw_plots

    record = read_run_record(run_dir)
    if record is None:
        raise UsageError(f"{run_dir} holds no run (no pipeline.json)")
    stages = collect_stages(run_dir, record, registry)
    plots = draw_plots(stages, run_dir / PLOTS_DIR)
    text = render_report(str(record.get("run", run_dir.name)), record, stages, plots, environment())
    path = run_dir / REPORT_FILE
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
