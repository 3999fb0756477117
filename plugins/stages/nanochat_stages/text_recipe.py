"""What `pretrain` plugs into the training loop: packed text rows, bits per byte, text samples."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from nanochat.core.engine import Engine, Request, SamplingParams
from nanochat.core.errors import UsageError
from nanochat.core.evaluation import evaluate_bpb, text_eval_batches
from nanochat.core.special_tokens import BOS
from nanochat_stages.background import BackgroundBatches
from nanochat_stages.options import PretrainOptions
from nanochat_stages.packing import BestFitPacker
from nanochat_stages.token_stream import TokenStream

SAMPLE_PROMPTS = ("The", "Our nation", "In the year")


def plan_steps(options: Any, num_params: int, total_batch: int) -> int:
    """Number of optimizer steps: ``max_steps``, else tokens = ``data_param_ratio`` x params."""
    if options.max_steps > 0:
        return int(options.max_steps)
    if options.data_param_ratio <= 0:
        raise UsageError("set pretrain.max_steps or a positive pretrain.data_param_ratio")
    return max(1, math.ceil(options.data_param_ratio * num_params / total_batch))


class TextBatches:
    """Best-fit packed rows of a text dataset: every target carries a loss.

    Documents are tokenized in the :class:`TokenStream` thread and packed into rows in a second
    background thread, so the training thread only takes finished batches (in pinned memory
    when ``pin`` is set and CUDA is available, ready for ``.to(device, non_blocking=True)``).
    """

    def __init__(
        self,
        stream: TokenStream,
        rows: int,
        row_len: int,
        buffer: int,
        state: Any = None,
        pin: bool = False,
    ):
        self.stream = stream
        self.rows = rows
        self.packer = BestFitPacker(row_len, stream.next_doc, buffer)
        if state:
            self.packer.load_state(state["packer"])
        self.batches = BackgroundBatches(
            self._make_batch, self._snapshot, pin=pin, name=f"pack-rank{stream.rank}"
        )

    def _make_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = torch.from_numpy(self.packer.next_batch(self.rows))
        return batch[:, :-1], batch[:, 1:]

    def _snapshot(self) -> dict[str, Any]:
        return {"stream": self.stream.state(), "buffer": self.packer.snapshot()}

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``rows`` packed rows as ``(inputs, targets)``."""
        return self.batches.next_batch()

    def state(self) -> dict[str, Any]:
        """Dataset position and buffered documents, as of the last batch taken."""
        snapshot = self.batches.state()
        buffer = [torch.from_numpy(np.asarray(d)) for d in snapshot["buffer"]]
        return {"stream": snapshot["stream"], "packer": {"buffer": buffer}}

    def close(self) -> None:
        """Stop the packing and tokenizing threads."""
        self.stream.close()
        self.batches.close()


class TextRecipe:
    """From scratch, on a text dataset, validated by bits per byte."""

    init_from: tuple[str, ...] = ()
    eval_at_start = True

    def __init__(self, options: PretrainOptions):
        self.o = options

    def total_steps(self, loop: Any, num_params: int, total_batch: int) -> int:
        """``max_steps``, else ``data_param_ratio`` tokens per parameter."""
        return plan_steps(self.o, num_params, total_batch)

    def open_source(self, loop: Any, state: dict[str, Any] | None) -> TextBatches:
        """This rank's packed text rows."""
        o, rt = self.o, loop.rt
        self.dataset = loop.ctx.open_dataset(o.dataset, kind="text")
        stream = TokenStream(
            self.dataset,
            loop.tokenizer,
            "train",
            rt.rank,
            rt.world_size,
            seed=o.seed,
            state=state["stream"] if state else None,
            doc_cap=o.doc_cap,
        )
        pin = rt.device_type == "cuda"
        return TextBatches(
            stream, o.device_batch_size, loop.seq_len + 1, o.doc_buffer, state, pin=pin
        )

    def prepare_eval(self, loop: Any) -> None:
        """Fixed validation rows and the byte length of every token."""
        rt = loop.rt
        self.val_batches = text_eval_batches(
            self.dataset,
            loop.tokenizer,
            loop.seq_len,
            self.o.device_batch_size,
            self.o.eval_tokens,
            rt.device,
            "val",
            rt.rank,
            rt.world_size,
        )
        self.token_bytes = torch.tensor(
            loop.tokenizer.token_bytes(), dtype=torch.long, device=rt.device
        )

    def evaluate(self, loop: Any) -> dict[str, float]:
        """Validation bits per byte."""
        bpb = evaluate_bpb(
            loop.model, self.val_batches, self.token_bytes, loop.rt, f"{loop.ctx.stage_name} eval"
        )
        return {"val_bpb": bpb}

    def samples(self, loop: Any) -> list[str]:
        """Greedy continuations of a few fixed prompts (none when ``sample_tokens`` is 0)."""
        if self.o.sample_tokens < 1:
            return []
        tokenizer = loop.tokenizer
        bos = tokenizer.special_tokens[BOS]
        engine = Engine(loop.model, tokenizer, slots=len(SAMPLE_PROMPTS), autocast=loop.rt.autocast)
        params = SamplingParams(max_tokens=self.o.sample_tokens, stop_tokens=())
        requests = [Request([bos, *tokenizer.encode(p)], params) for p in SAMPLE_PROMPTS]
        results = engine.complete(requests)
        return [p + r.text for p, [r] in zip(SAMPLE_PROMPTS, results, strict=True)]
