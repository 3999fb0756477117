"""Metrics computed the same way everywhere: bits per byte of a language model.

Bits per byte divides the summed cross-entropy (in bits) of every predicted token by the number
of UTF-8 bytes those tokens stand for, so tokenizers of different vocabularies compare fairly.
Special tokens (0 bytes) and ignored targets (``-1``) count neither loss nor bytes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch

from nanochat.core.components import Tokenizer
from nanochat.core.data import DataError, Dataset
from nanochat.core.models import Model
from nanochat.core.progress import Progress
from nanochat.core.runtime import Runtime
from nanochat.core.special_tokens import BOS


def bpb_sums(
    per_token_loss: torch.Tensor, targets: torch.Tensor, token_bytes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of loss in nats, sum of bytes)`` over the targets that stand for bytes.

    Args:
        per_token_loss: cross-entropy of each target, in nats (any shape matching ``targets``).
        targets: target ids, ``-1`` where ignored.
        token_bytes: byte length of every id (0 for special tokens), 1-D.
    """
    flat_targets = targets.reshape(-1)
    valid = flat_targets >= 0
    n_bytes = torch.where(valid, token_bytes.to(flat_targets.device)[flat_targets.clamp(min=0)], 0)
    counted = n_bytes > 0
    loss = torch.where(counted, per_token_loss.reshape(-1).float(), 0.0).sum()
    return loss.double(), n_bytes.sum().double()


@torch.no_grad()
def evaluate_bpb(
    model: Model,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    token_bytes: torch.Tensor,
    runtime: Runtime | None = None,
    desc: str = "bits per byte",
) -> float:
    """Bits per byte of ``model`` on ``batches`` of ``(inputs, targets)``, summed over ranks.

    The model is called as ``model(inputs, targets, loss_reduction="none")`` and must return
    the per-target loss in nats.
    """
    total_loss = torch.zeros((), dtype=torch.float64)
    total_bytes = torch.zeros((), dtype=torch.float64)
    batches = list(batches)
    main = runtime is None or runtime.is_main
    with Progress(len(batches), desc, "batches", enabled=main) as bar:
        for inputs, targets in batches:
            with runtime.autocast() if runtime is not None else contextlib.nullcontext():
                loss = model(inputs, targets, loss_reduction="none")
            loss_sum, byte_sum = bpb_sums(loss, targets, token_bytes)
            total_loss += loss_sum.cpu()
            total_bytes += byte_sum.cpu()
            bar.update(1)
    if runtime is not None and runtime.distributed:
        pair = torch.stack([total_loss, total_bytes]).to(runtime.device)
        runtime.all_reduce_sum(pair)
        total_loss, total_bytes = pair[0].cpu(), pair[1].cpu()
    if total_bytes.item() == 0:
        return float("nan")
    return total_loss.item() / (math.log(2) * total_bytes.item())


def text_eval_batches(
    dataset: Dataset,
    tokenizer: Tokenizer,
    seq_len: int,
    batch_size: int,
    max_tokens: int,
    device: torch.device | str = "cpu",
    split: str = "val",
    rank: int = 0,
    world_size: int = 1,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed evaluation batches from a text split: documents in stored order, each prefixed by
    ``<|bos|>``, concatenated and cut into rows of ``seq_len + 1`` ids; this rank's share of
    ``max_tokens`` targets in total.
    """
    bos = tokenizer.special_tokens[BOS]
    per_rank = max(seq_len, max_tokens // world_size)
    rows_needed = -(-per_rank // seq_len)
    stream: list[int] = []
    texts: list[str] = []
    row_len = seq_len + 1
    iterator = dataset.iter(split, rank=rank, world_size=world_size, shuffle=False)
    for text, _cursor in iterator:
        texts.append(text)
        if len(texts) >= 64:
            for ids in tokenizer.encode_batch(texts):
                stream += [bos, *ids]
            texts = []
            if len(stream) >= rows_needed * row_len:
                break
    if texts:
        for ids in tokenizer.encode_batch(texts):
            stream += [bos, *ids]
    rows = min(rows_needed, len(stream) // row_len)
    if rows == 0:
        name = getattr(dataset, "name", "dataset")
        raise DataError(
            f"{name}: the {split!r} split has fewer than {row_len} tokens for rank {rank}; "
            "bits per byte cannot be measured"
        )
    data = torch.tensor(stream[: rows * row_len], dtype=torch.long).view(rows, row_len)
    batches = []
    for start in range(0, rows, batch_size):
        chunk = data[start : start + batch_size].to(device)
        batches.append((chunk[:, :-1], chunk[:, 1:]))
    return batches
