"""The `bpb` evaluator: bits per byte of the run's newest model on a text split."""

from __future__ import annotations

from typing import Any

import torch

from nanochat.core.evaluation import evaluate_bpb, text_eval_batches
from nanochat_evals.options import BpbOptions


class BitsPerByte:
    """Evaluates bits per byte with the run's tokenizer (special tokens carry no bytes)."""

    requires_model = True

    def __init__(self, options: BpbOptions):
        self.options = options

    def evaluate(self, ctx: Any, model: Any) -> dict[str, float]:
        """``{"bpb": value, "tokens": evaluated targets}``."""
        o, rt = self.options, ctx.runtime
        tokenizer = ctx.load_tokenizer()
        model = model.to(rt.device).eval()
        seq_len = int(model.sequence_len)
        dataset = ctx.open_dataset(o.dataset, kind="text")
        batches = text_eval_batches(
            dataset,
            tokenizer,
            seq_len,
            o.device_batch_size,
            o.tokens,
            rt.device,
            o.split,
            rt.rank,
            rt.world_size,
        )
        token_bytes = torch.tensor(tokenizer.token_bytes(), dtype=torch.long, device=rt.device)
        bpb = evaluate_bpb(model, batches, token_bytes, rt, "eval bpb")
        tokens = sum(targets.numel() for _, targets in batches) * rt.world_size
        return {"bpb": bpb, "tokens": float(tokens)}
