"""The `core` evaluator: DCLM's CORE metric of a base model (arXiv 2406.11794), as nanochat
reports it.

The bundle (``eval_bundle``: ``core.yaml``, ``eval_meta_data.csv``, ``eval_data/*.jsonl``; fetch
it with ``nanochat data download core-bundle``) lists in-context-learning tasks of three types:

* ``multiple_choice`` (``query``, ``choices``, ``gold``): each choice continues the query; the
  prediction is the choice with the lowest mean loss per token;
* ``schema`` (``context_options``, ``continuation``, ``gold``): one continuation after each
  context; the prediction is the context under which it has the lowest mean loss;
* ``language_modeling`` (``context``, ``continuation``): right when greedy decoding would
  produce every token of the continuation.

Each example is preceded by ``num_fewshot`` solved examples of the same task (drawn with seed
``1234 + index`` among the others) joined by blank lines, and ``continuation_delimiter`` goes
between context and continuation. A task's examples are shuffled with seed 1337 first (so that
``limit`` takes a fair sample). A task's accuracy ``a`` is centred against its random baseline
``b`` (``eval_meta_data.csv``, in percent): ``(a - b) / (1 - b)``; CORE is the mean centred
accuracy over the tasks.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanochat.core import special_tokens as st
from nanochat.core.errors import UsageError
from nanochat.core.likelihood import score_continuations
from nanochat.core.progress import Progress
from nanochat.core.rundir import nanochat_home
from nanochat_evals.common import checkpoint_label, gather, write_json, write_jsonl
from nanochat_evals.options import CoreEvalOptions

TASK_TYPES = ("multiple_choice", "schema", "language_modeling")
SHUFFLE_SEED = 1337
FEWSHOT_SEED = 1234
EXAMPLES_PER_PASS = 32  # examples whose sequences are batched together


def default_bundle_dir() -> Path:
    """Where ``nanochat data download core-bundle`` unpacks the bundle."""
    return nanochat_home() / "data" / "eval_bundle"


@dataclass(frozen=True)
class CoreTask:
    """One task of the bundle: its examples, prompt settings and random baseline (0..1)."""

    label: str
    kind: str
    fewshot: int
    delimiter: str
    baseline: float
    examples: list[dict[str, Any]]


def _baselines(path: Path) -> dict[str, float]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = {}
    for row in rows:
        try:
            out[str(row["Eval Task"]).strip()] = float(row["Random baseline"]) / 100.0
        except (KeyError, TypeError, ValueError):
            raise UsageError(
                f"{path}: needs 'Eval Task' and 'Random baseline' (percent) columns"
            ) from None
    return out


def load_bundle(root: Path, only: Sequence[str] = (), limit: int = 0) -> list[CoreTask]:
    """The tasks of the bundle at ``root`` (``only`` these labels if given), each shuffled with
    seed 1337 and cut to ``limit`` examples (0: all).

    Raises:
        UsageError: no bundle there, a malformed file, or an unknown task label.
    """
    import json

    import yaml

    config_path = root / "core.yaml"
    if not config_path.is_file():
        raise UsageError(
            f"no CORE bundle at {root} (no core.yaml); fetch it with "
            "`nanochat data download core-bundle` or set eval-core.bundle=PATH"
        )
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    entries = config.get("icl_tasks") if isinstance(config, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{config_path}: no icl_tasks list")
    baselines = _baselines(root / "eval_meta_data.csv")
    labels = [str(e.get("label")) for e in entries if isinstance(e, dict)]
    for name in only:
        if name not in labels:
            known = ", ".join(labels)
            raise UsageError(f"the CORE bundle has no task {name!r}; its tasks: {known}")
    tasks = []
    for entry in entries:
        label, kind = str(entry.get("label")), str(entry.get("icl_task_type"))
        if only and label not in only:
            continue
        if kind not in TASK_TYPES:
            raise UsageError(f"{config_path}: task {label!r} has unknown type {kind!r}")
        if label not in baselines:
            raise UsageError(f"{root / 'eval_meta_data.csv'}: no random baseline for {label!r}")
        shots = entry.get("num_fewshot", 0)
        shots = int(shots[0] if isinstance(shots, list) else shots)
        data_path = root / "eval_data" / str(entry.get("dataset_uri"))
        if not data_path.is_file():
            raise UsageError(f"task {label!r}: no data file {data_path}")
        with data_path.open(encoding="utf-8") as handle:
            examples = [json.loads(line) for line in handle if line.strip()]
        random.Random(SHUFFLE_SEED).shuffle(examples)
        if limit:
            examples = examples[:limit]
        delimiter = str(entry.get("continuation_delimiter", " "))
        tasks.append(CoreTask(label, kind, shots, delimiter, baselines[label], examples))
    return tasks


def fewshot_examples(task: CoreTask, index: int) -> list[dict[str, Any]]:
    """The solved examples shown before example ``index`` (never itself)."""
    if task.fewshot <= 0:
        return []
    others = [i for i in range(len(task.examples)) if i != index]
    picked = random.Random(FEWSHOT_SEED + index).sample(others, min(task.fewshot, len(others)))
    return [task.examples[i] for i in picked]


def render_prompts(task: CoreTask, index: int) -> list[str]:
    """The prompts of example ``index``: one per choice (multiple choice), one per context
    (schema), or the prompt without and with the continuation (language modelling)."""
    item, d = task.examples[index], task.delimiter
    shots = fewshot_examples(task, index)
    if task.kind == "multiple_choice":
        head = "".join(f"{s['query']}{d}{s['choices'][s['gold']]}\n\n" for s in shots)
        return [f"{head}{item['query']}{d}{choice}" for choice in item["choices"]]
    if task.kind == "schema":
        head = "".join(
            f"{s['context_options'][s['gold']]}{d}{s['continuation']}\n\n" for s in shots
        )
        return [f"{head}{context}{d}{item['continuation']}" for context in item["context_options"]]
    head = "".join(f"{s['context'].strip()}{d}{s['continuation']}\n\n" for s in shots)
    prompt = f"{head}{item['context'].strip()}{d}"
    return [prompt.strip(), prompt + item["continuation"]]


def _common(sequences: list[list[int]], from_end: bool) -> int:
    """Length of the common prefix (or suffix) of ``sequences``."""
    shortest = min(len(s) for s in sequences)
    for n in range(shortest):
        position = -1 - n if from_end else n
        if any(s[position] != sequences[0][position] for s in sequences):
            return n
    return shortest


def scoring_pairs(task: CoreTask, tokenizer: Any, index: int) -> list[tuple[list[int], list[int]]]:
    """``(context ids, continuation ids)`` of example ``index``: prompts are encoded whole
    after ``<|bos|>`` and split where they stop sharing ids (multiple choice: after the common
    prefix; schema: before the common suffix; language modelling: after the prompt without the
    continuation)."""
    bos = tokenizer.special_tokens[st.BOS]
    encoded = [[bos, *ids] for ids in tokenizer.encode_batch(render_prompts(task, index))]
    if task.kind == "language_modeling":
        without, with_continuation = encoded
        start = min(len(without), len(with_continuation) - 1)
        return [(with_continuation[:start], with_continuation[start:])]
    if task.kind == "multiple_choice":
        start = min(_common(encoded, False), min(len(s) for s in encoded) - 1)
        return [(s[:start], s[start:]) for s in encoded]
    suffix = min(_common(encoded, True), min(len(s) for s in encoded) - 1)
    return [(s[: len(s) - suffix], s[len(s) - suffix :]) for s in encoded]


def centred(accuracy: float, baseline: float) -> float:
    """Accuracy above the random baseline, scaled so that a perfect score is 1."""
    return (accuracy - baseline) / (1.0 - baseline)


class CoreEval:
    """DCLM's CORE metric over the tasks of the bundle."""

    requires_model = True

    def __init__(self, options: CoreEvalOptions):
        self.options = options

    def evaluate(self, ctx: Any, model: Any) -> dict[str, Any]:
        """``core`` (mean centred accuracy) and per-task results (in the evaluator's folder)."""
        o, rt = self.options, ctx.runtime
        root = Path(o.bundle).expanduser() if o.bundle else default_bundle_dir()
        only = [t.strip() for t in o.tasks.split(",") if t.strip()]
        tasks = load_bundle(root, only, o.limit)
        tokenizer = ctx.load_tokenizer()
        model = model.to(rt.device).eval()
        rows: list[dict[str, Any]] = []
        total = sum(len(t.examples[rt.rank :: rt.world_size]) for t in tasks)
        with Progress(total, "eval core", "examples", enabled=rt.is_main) as bar:
            for task in tasks:
                mine = list(range(rt.rank, len(task.examples), rt.world_size))
                for start in range(0, len(mine), EXAMPLES_PER_PASS):
                    part = mine[start : start + EXAMPLES_PER_PASS]
                    rows += self._score(task, tokenizer, model, part, rt)
                    bar.update(len(part))
        rows = sorted(gather(rt, rows), key=lambda r: (r["task"], r["index"]))
        results: dict[str, dict[str, Any]] = {}
        for task in tasks:
            marks = [float(r["correct"]) for r in rows if r["task"] == task.label]
            accuracy = sum(marks) / len(marks) if marks else float("nan")
            results[task.label] = {
                "type": task.kind,
                "examples": len(marks),
                "accuracy": accuracy,
                "random_baseline": task.baseline,
                "centred": centred(accuracy, task.baseline),
            }
        core = sum(r["centred"] for r in results.values()) / len(results)
        stem = checkpoint_label(ctx)
        items_path = ctx.stage_dir / f"{stem}_core.jsonl"
        results_path = ctx.stage_dir / f"{stem}_core.json"
        if rt.is_main:
            write_jsonl(items_path, rows)
            write_json(results_path, {"core": core, "tasks": results})
        return {
            "core": core,
            "tasks": float(len(results)),
            "examples": float(len(rows)),
            "results": str(results_path),
            "items": str(items_path),
        }

    def _score(
        self, task: CoreTask, tokenizer: Any, model: Any, indices: list[int], rt: Any
    ) -> list[dict[str, Any]]:
        """One row per example of ``indices``: its decision and scores (all scored together)."""
        pairs = [scoring_pairs(task, tokenizer, index) for index in indices]
        flat = [pair for example in pairs for pair in example]
        scored = score_continuations(
            model, flat, batch_size=self.options.batch_size, autocast=rt.autocast
        )
        rows, at = [], 0
        for index, example in zip(indices, pairs, strict=True):
            mine, at = scored[at : at + len(example)], at + len(example)
            row: dict[str, Any] = {"task": task.label, "index": index}
            if task.kind == "language_modeling":
                [one] = mine
                row["correct"] = one.greedy and one.tokens == len(example[0][1])
                row["logprob"] = one.logprob
            else:
                means = [s.mean for s in mine]
                prediction = max(range(len(means)), key=lambda i: means[i])
                gold = int(task.examples[index]["gold"])
                row.update(
                    gold=gold,
                    prediction=prediction,
                    correct=prediction == gold,
                    mean_logprobs=means,
                )
            rows.append(row)
        return rows
