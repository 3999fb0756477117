"""The `gsm8k` evaluator: accuracy of a chat model on a ``problems`` dataset (GSM8K by default).

Each problem is rendered for completion and answered through the engine with the calculator on
(:mod:`nanochat.core.rollouts`, the same path as `rl`'s held-out pass@1); each answer's text is
scored with the dataset's own reward (for GSM8K: the number after the last ``####`` equals
the reference). With ``samples = k`` a problem counts as solved when any of its ``k`` answers
is right (pass@k; greedy ``k = 1`` is plain accuracy). Accuracy comes with its binomial
standard error. Every problem's answers and scores are written, one JSON line per problem, to
``eval-gsm8k/<stage>_<step>_<dataset>_<split>.jsonl`` in the run.

Under torchrun each rank answers every ``world_size``-th problem; rank 0 gathers and writes.
"""

from __future__ import annotations

from typing import Any

import torch

from nanochat.core.data import message_text, resolve_split, take
from nanochat.core.engine import SamplingParams
from nanochat.core.errors import UsageError
from nanochat.core.progress import Progress
from nanochat.core.registry import create_component
from nanochat.core.rollouts import (
    ProblemRollouts,
    binomial_stderr,
    make_engine,
    sample_problems,
)
from nanochat_evals.common import checkpoint_label, gather, write_jsonl
from nanochat_evals.options import Gsm8kEvalOptions

PROBLEMS_PER_SLOT = 4  # problems handed to the engine at once, per slot (progress granularity)


def problem_record(item: ProblemRollouts) -> dict[str, Any]:
    """One jsonl line: the question, the reference answer, every completion and its score."""
    user = [m for m in item.problem.prompt if m["role"] == "user"]
    return {
        "index": item.index,
        "question": message_text(user[-1]) if user else "",
        "answer": item.problem.answer,
        "score": 1.0 if item.solved else 0.0,
        "completions": [
            {"text": r.text, "reward": r.reward, "finish": r.finish, "tokens": len(r.tokens)}
            for r in item.rollouts
        ],
    }


class Gsm8kEval:
    """Scores a chat model's answers to a problems dataset (pass@k with the calculator on)."""

    requires_model = True

    def __init__(self, options: Gsm8kEvalOptions):
        self.options = options

    def evaluate(self, ctx: Any, model: Any) -> dict[str, Any]:
        """Accuracy, its standard error and sample statistics; writes the per-problem jsonl."""
        o, rt = self.options, ctx.runtime
        if o.samples > 1 and o.temperature <= 0:
            raise UsageError(
                f"{ctx.stage_name}.samples={o.samples} needs a temperature above 0 (greedy "
                f"answers are all the same): add -o {ctx.stage_name}.temperature=1.0"
            )
        tokenizer = ctx.load_tokenizer()
        model = model.to(rt.device).eval()
        dataset = ctx.open_dataset(o.dataset, kind="problems")
        split = resolve_split(o.split, dataset.splits(), o.dataset)
        stream = dataset.iter(split, shuffle=False)
        problems = take(stream, o.limit) if o.limit else [item for item, _ in stream]
        if not problems:
            raise UsageError(f"{o.dataset} has no {split} problems to evaluate")
        indices = list(range(len(problems)))[rt.rank :: rt.world_size]
        tools = {r.spec.name: create_component(r) for r in ctx.registry.components("tool")}
        slots = max(o.samples, min(o.slots, o.samples * len(indices) or 1))
        engine = make_engine(
            model, tokenizer, slots, int(model.sequence_len), tools, autocast=rt.autocast
        )
        params = SamplingParams(
            max_tokens=o.max_new_tokens, temperature=o.temperature, top_k=o.top_k or None
        )
        chunk = max(1, slots // o.samples) * PROBLEMS_PER_SLOT
        results: list[ProblemRollouts] = []
        with Progress(len(indices), f"eval {o.dataset}", "problems", enabled=rt.is_main) as bar:
            for start in range(0, len(indices), chunk):
                part = indices[start : start + chunk]
                batch = [problems[i] for i in part]
                results += sample_problems(engine, batch, part, o.samples, params, o.seed)
                bar.update(len(part))
        rows = sorted(gather(rt, [problem_record(r) for r in results]), key=lambda r: r["index"])
        metrics = self._metrics(rt, results)
        label = checkpoint_label(ctx)
        path = ctx.stage_dir / f"{label}_{o.dataset.replace('/', '-')}_{split}.jsonl"
        if rt.is_main:
            write_jsonl(path, rows)
        return {**metrics, "completions": str(path)}

    def _metrics(self, runtime: Any, results: list[ProblemRollouts]) -> dict[str, float]:
        """Pass rates over every rank's problems."""
        counts = [
            float(len(results)),
            float(sum(r.solved for r in results)),
            float(sum(r.correct for item in results for r in item.rollouts)),
            float(sum(len(item.rollouts) for item in results)),
            float(sum(len(r.tokens) for item in results for r in item.rollouts)),
            float(sum(not item.prompt for item in results)),
        ]
        if runtime.distributed:
            tensor = torch.tensor(counts, dtype=torch.float64, device=runtime.device)
            counts = runtime.all_reduce_sum(tensor).tolist()
        problems, solved, correct, samples, tokens, too_long = counts
        accuracy = solved / problems
        k = self.options.samples
        return {
            "accuracy": accuracy,
            "stderr": binomial_stderr(accuracy, int(problems)),
            f"pass@{k}": accuracy,
            "pass@1": correct / samples,
            "problems": problems,
            "samples": float(k),
            "mean_tokens": tokens / samples,
            "prompt_too_long": too_long,
        }
