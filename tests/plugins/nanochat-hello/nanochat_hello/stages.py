"""The components of nanochat-hello."""

from __future__ import annotations

import json
import time
from typing import Any

from nanochat_hello.options import AllReduceOptions, CountOptions, HelloEvalOptions, HelloOptions


class HelloStage:
    """Writes ``hello.txt`` and appends to ``hello-runs.log`` each time it really runs."""

    def __init__(self, options: HelloOptions):
        self.options = options

    def run(self, ctx: Any) -> dict[str, Any]:
        """Write the greeting."""
        text = " ".join([self.options.greeting] * self.options.times)
        if ctx.is_main:
            (ctx.stage_dir / "hello.txt").write_text(text + "\n")
            with open(ctx.run_dir / "hello-runs.log", "a", encoding="utf-8") as handle:
                handle.write("ran\n")
        ctx.log(event="greeted", length=len(text))
        return {"greeting": text}


class CountStage:
    """Counts to ``steps``, one checkpoint per step; resumes from the newest checkpoint."""

    def __init__(self, options: CountOptions):
        self.options = options

    def run(self, ctx: Any) -> dict[str, Any]:
        """Count, resuming where an interrupted run stopped."""
        import torch

        latest = ctx.checkpoints.latest()
        start = 0 if latest is None else latest.step + 1
        total = torch.zeros(()) if latest is None else latest.model_state()["total"]
        with open(ctx.stage_dir / "starts.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"start": start}) + "\n")
        for step in range(start, self.options.steps):
            total = total + 1
            time.sleep(self.options.sleep)
            ctx.checkpoints.save(
                step, {"total": total}, meta={"kind": "count"}, loop_state={"step": step}
            )
            ctx.log(step=step, total=float(total))
        return {"total": float(total), "resumed_from": start}


class AllReduceStage:
    """Sums rank+1 over all processes; rank 0 alone writes the answer."""

    def __init__(self, options: AllReduceOptions):
        self.options = options

    def run(self, ctx: Any) -> dict[str, Any]:
        """All-reduce and write ``allreduce.json`` on the main process."""
        import torch

        runtime = ctx.runtime
        value = torch.tensor([float(runtime.rank + 1) * self.options.scale])
        runtime.all_reduce_sum(value)
        (ctx.stage_dir.parent / f"rank{runtime.rank}.seen").write_text("x")
        if ctx.is_main:
            (ctx.stage_dir / "allreduce.json").write_text(
                json.dumps({"sum": value.item(), "world_size": runtime.world_size})
            )
        return {"sum": value.item(), "world_size": runtime.world_size}


class HelloEval:
    """Scores the greeting length (a model-free evaluator)."""

    requires_model = False

    def __init__(self, options: HelloEvalOptions):
        self.options = options

    def evaluate(self, ctx: Any, model: Any) -> dict[str, float]:
        """Length of ``hello.txt`` plus the bonus."""
        text = (ctx.run_dir / "hello" / "hello.txt").read_text().strip()
        return {"greeting_length": float(len(text)) + self.options.bonus}
