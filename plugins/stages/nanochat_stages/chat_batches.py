"""Training batches of conversations for `midtrain` (packed) and `sft` (padded).

Both read a ``chat`` dataset (or mixture) through :class:`ConversationStream`: this rank's share
of the train split, epoch after epoch with a new shuffle seed, each conversation rendered by
:mod:`nanochat.core.conversation`. Conversations longer than the context are truncated or
dropped, and counted; ones left with no assistant token to learn are skipped, and counted too.
Targets are ``-1`` wherever the mask is 0 (user turns, tool output, padding).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from nanochat.core.conversation import Rendered, render_conversation, training_pair
from nanochat.core.data import Conversation, DataError
from nanochat.core.special_tokens import ASSISTANT_END, BOS
from nanochat_stages.packing import BestFitPacker


class ConversationStream:
    """Endless rendered conversations of one rank, with a resumable position.

    Args:
        dataset: a ``chat`` dataset.
        tokenizer: the run's tokenizer.
        max_tokens: ids per conversation at most (the context plus one).
        overflow: ``"truncate"`` longer conversations or ``"drop"`` them.
        rank, world_size: this process's share.
        seed: shuffle seed of epoch 0 (epoch ``e`` uses ``seed + e``).
        state: a state from :meth:`state` to resume from.
    """

    def __init__(
        self,
        dataset: Any,
        tokenizer: Any,
        max_tokens: int,
        overflow: str = "truncate",
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        state: dict[str, Any] | None = None,
    ):
        if overflow not in ("truncate", "drop"):
            raise DataError(f"overflow must be 'truncate' or 'drop', not {overflow!r}")
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overflow = overflow
        self.rank, self.world_size, self.seed = rank, world_size, seed
        state = state or {}
        self.epoch = int(state.get("epoch", 0))
        self.cursor = state.get("cursor")
        self.counts = dict(state.get("counts", {"used": 0, "truncated": 0, "dropped": 0}))
        self._iter: Any = None

    def _open(self) -> None:
        self._iter = self.dataset.iter(
            "train",
            rank=self.rank,
            world_size=self.world_size,
            seed=self.seed + self.epoch,
            cursor=self.cursor,
        )

    def _next_raw(self) -> Any:
        for _ in range(2):
            if self._iter is None:
                self._open()
            for item, cursor in self._iter:
                self.cursor = cursor
                return item
            if self.cursor is None:
                raise DataError(f"{self.dataset.name}: rank {self.rank} has no conversations")
            self.epoch, self.cursor, self._iter = self.epoch + 1, None, None
        raise DataError(f"{self.dataset.name}: an epoch of rank {self.rank} was empty")

    def next(self) -> Rendered:
        """The next usable rendered conversation."""
        for _ in range(100_000):
            rendered = render_conversation(self.tokenizer, self._next_raw())
            if len(rendered) > self.max_tokens:
                if self.overflow == "drop":
                    self.counts["dropped"] += 1
                    continue
                cut = len(rendered) - self.max_tokens
                rendered = Rendered(
                    rendered.ids[: self.max_tokens], rendered.mask[: self.max_tokens], cut
                )
                self.counts["truncated"] += 1
            if not any(rendered.mask[1:]):
                self.counts["dropped"] += 1
                continue
            self.counts["used"] += 1
            return rendered
        raise DataError(f"{self.dataset.name}: no conversation fits {self.max_tokens} tokens")

    def state(self) -> dict[str, Any]:
        """Epoch, dataset cursor and counts (plain Python values)."""
        return {"epoch": self.epoch, "cursor": self.cursor, "counts": dict(self.counts)}


def conversation_shape(conversation: Conversation) -> tuple[int, int]:
    """``(characters of text, special tokens)`` of a conversation, without tokenizing it.

    The specials are ``<|bos|>``, a start and an end token per message and per tool part (a
    system message merged into the first user turn is counted as its own message).
    """
    chars, specials = 0, 1
    for message in conversation:
        content = message["content"]
        specials += 2
        if isinstance(content, str):
            chars += len(content)
            continue
        for part in content:
            chars += len(part["text"])
            specials += 0 if part["type"] == "text" else 2
    return chars, specials


def count_chat_tokens(
    dataset: Any, tokenizer: Any, max_tokens: int, sample: int = 1000, split: str = "train"
) -> tuple[int, int]:
    """``(conversations, tokens)`` in one pass over ``split``, tokenizing only a sample.

    The first ``sample`` conversations (in a seeded shuffled order, so every part of a mixture
    is represented) are rendered exactly; the tokens of the rest are estimated from their
    characters at the sample's tokens per character, plus their special tokens, each capped at
    ``max_tokens`` like the training stream does. A split of at most ``sample`` conversations is
    counted exactly. The pass streams: no list of the items is built.

    Args:
        dataset: a ``chat`` dataset.
        tokenizer: the run's tokenizer.
        max_tokens: ids per conversation at most (the context plus one).
        sample: how many conversations to render exactly.
        split: the split to count.
    """
    conversations = tokens = sample_chars = sample_text_tokens = 0
    per_char = 0.0
    for conversation, _ in dataset.iter(split, seed=0):
        conversations += 1
        chars, specials = conversation_shape(conversation)
        if conversations <= sample:
            rendered = len(render_conversation(tokenizer, conversation))
            tokens += min(rendered, max_tokens)
            sample_chars += chars
            sample_text_tokens += max(0, rendered - specials)
            per_char = sample_text_tokens / sample_chars if sample_chars else 0.0
        else:
            tokens += min(max_tokens, specials + math.ceil(chars * per_char))
    return conversations, tokens


def _pair_tensors(ids: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.from_numpy(ids[:, :-1].copy())
    targets = torch.from_numpy(np.where(mask[:, 1:] == 1, ids[:, 1:], -1))
    return inputs, targets


class PackedChatBatches:
    """Whole conversations best-fit packed into rows of ``row_len`` ids; the rest is padding.

    Ids and mask travel through the packer together as ``id * 2 + mask``.
    """

    def __init__(
        self, stream: ConversationStream, rows: int, row_len: int, buffer: int, state: Any = None
    ):
        self.stream = stream
        self.rows = rows
        pad = int(stream.tokenizer.special_tokens[BOS]) * 2
        self.packer = BestFitPacker(row_len, self._next_doc, buffer, pad=pad)
        if state:
            self.packer.load_state(state["packer"])

    def _next_doc(self) -> np.ndarray:
        rendered = self.stream.next()
        return np.asarray(rendered.ids, dtype=np.int64) * 2 + np.asarray(rendered.mask)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` of ``rows`` packed rows."""
        packed = self.packer.next_batch(self.rows)
        return _pair_tensors(packed >> 1, packed & 1)

    def state(self) -> dict[str, Any]:
        """Stream position and buffered conversations."""
        buffer = [torch.from_numpy(np.asarray(d)) for d in self.packer.state()["buffer"]]
        return {"stream": self.stream.state(), "packer": {"buffer": buffer}}

    def stats(self) -> dict[str, int]:
        """How many conversations were used, truncated and dropped on this rank."""
        return {f"conversations_{k}": v for k, v in self.stream.counts.items()}

    def close(self) -> None:
        """Nothing runs in the background."""


def pad_rows(
    sequences: list[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of rendered ``(ids, mask)`` sequences, padded to the longest.

    Args:
        sequences: each conversation's ids and mask.
        pad_id: the input id of padding positions (their targets are ``-1``).
    """
    pairs = [training_pair(ids, mask) for ids, mask in sequences]
    width = max(len(inputs) for inputs, _ in pairs)
    inputs = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    targets = torch.full((len(pairs), width), -1, dtype=torch.long)
    for row, (x, y) in enumerate(pairs):
        inputs[row, : len(x)] = torch.tensor(x, dtype=torch.long)
        targets[row, : len(y)] = torch.tensor(y, dtype=torch.long)
    return inputs, targets


class PaddedChatBatches:
    """One conversation per row, padded to the longest of the batch, never cropped mid-way
    unless the stream truncates (and counts) it."""

    def __init__(self, stream: ConversationStream, rows: int):
        self.stream = stream
        self.rows = rows
        self.pad_id = int(stream.tokenizer.special_tokens[ASSISTANT_END])

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` of ``rows`` conversations."""
        rendered = [self.stream.next() for _ in range(self.rows)]
        return pad_rows([(r.ids, r.mask) for r in rendered], self.pad_id)

    def state(self) -> dict[str, Any]:
        """Stream position."""
        return {"stream": self.stream.state()}

    def stats(self) -> dict[str, int]:
        """How many conversations were used, truncated and dropped on this rank."""
        return {f"conversations_{k}": v for k, v in self.stream.counts.items()}

    def close(self) -> None:
        """Nothing runs in the background."""
