"""Preference pairs for `dpo`: from a ``preferences`` dataset, or sampled on-policy.

A :class:`Pair` holds two token sequences that share a prompt, each as ``(ids, mask)`` with
``mask = 1`` only on the reply's own tokens: the prompt (earlier assistant turns of a
multi-turn prompt included), tool output and padding carry no loss.

* Offline: each :class:`~nanochat.core.data.Preference` is rendered with the chat template
  (:func:`render_pair`); a pair longer than the context is dropped or its replies truncated,
  and counted.
* On-policy: the starting model samples ``k`` completions of each prompt of a ``problems``
  dataset (through the shared sampler of :mod:`nanochat_stages.policy`); a prompt with both a
  correct and a wrong completion gives a pair (:func:`pairs_from_rollouts`), kept as the exact
  sampled ids, forced tool output masked. The pairs are saved in the run as jsonl
  (:func:`save_pairs`), in a shape ``preferences-jsonl`` reads back.

:class:`PairBatches` has every rank walk the same shuffled stream of pairs, epoch after epoch,
and keep every ``world_size``-th: an optimizer step over ``N`` pairs takes the same ``N`` pairs
for any number of ranks (as long as no pair is dropped for its length), which makes 2 ranks
train like 1. It resumes from its saved position.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from nanochat.core import special_tokens as st
from nanochat.core.conversation import render_conversation, render_for_completion
from nanochat.core.data import DataError, ListDataset, Message, Part, Preference
from nanochat_stages.policy import ProblemRollouts, pad_sequences, rollout_sequence

IdsMask = tuple[list[int], list[int]]
"""A token sequence and its loss mask, ``(ids, mask)``."""


@dataclass(frozen=True)
class Pair:
    """A chosen and a rejected sequence sharing one prompt.

    Attributes:
        chosen: ``(ids, mask)`` of prompt + chosen reply, mask 1 on the reply's own tokens.
        rejected: ``(ids, mask)`` of prompt + rejected reply.
        meta: where the pair came from (problem index, rewards).
    """

    chosen: IdsMask
    rejected: IdsMask
    meta: dict[str, Any] = field(default_factory=dict)


def _reply_sequence(
    tokenizer: Any, prompt: list[Any], reply: Message, prompt_ids: list[int]
) -> IdsMask:
    rendered = render_conversation(tokenizer, [*prompt, reply])
    n = len(prompt_ids)
    if rendered.ids[:n] != prompt_ids:
        raise DataError("a reply's rendering does not start with its prompt's")
    return list(rendered.ids), [0] * n + list(rendered.mask[n:])


def _fit(sequence: IdsMask, max_tokens: int) -> IdsMask:
    ids, mask = sequence
    return ids[:max_tokens], mask[:max_tokens]


def render_pair(
    tokenizer: Any, preference: Preference, max_tokens: int, overflow: str = "drop"
) -> tuple[Pair | None, str]:
    """Render a preference to a :class:`Pair`.

    Args:
        tokenizer: the run's tokenizer.
        preference: a prompt with its chosen and rejected reply.
        max_tokens: ids per sequence at most (the context plus one).
        overflow: ``drop`` a pair with a sequence too long, or ``truncate`` its replies.

    Returns:
        ``(pair, outcome)``: outcome is ``used``, ``truncated`` or ``dropped`` (pair None: the
        prompt alone fills the context, or the pair was dropped, or a reply is left without a
        token to learn).
    """
    prompt = list(preference.prompt)
    prompt_ids = render_for_completion(tokenizer, prompt)
    chosen = _reply_sequence(tokenizer, prompt, preference.chosen, prompt_ids)
    rejected = _reply_sequence(tokenizer, prompt, preference.rejected, prompt_ids)
    outcome = "used"
    if max(len(chosen[0]), len(rejected[0])) > max_tokens:
        if overflow == "drop" or len(prompt_ids) >= max_tokens:
            return None, "dropped"
        chosen, rejected = _fit(chosen, max_tokens), _fit(rejected, max_tokens)
        outcome = "truncated"
    if not any(chosen[1][1:]) or not any(rejected[1][1:]):
        return None, "dropped"
    return Pair(chosen, rejected, dict(preference.meta)), outcome


# --- on-policy pairs -----------------------------------------------------------------------


def pairs_from_rollouts(results: Sequence[ProblemRollouts], per_prompt: int = 1) -> list[Pair]:
    """Pairs of a correct and a wrong completion of the same problem.

    Pair ``i`` of a problem is its ``i``-th wrong sample (in sampling order) against its
    ``i``-th correct one, the correct ones taken again in turn when there are fewer of them
    (a weak model's one correct answer is contrasted with several of its mistakes); at most
    ``per_prompt`` pairs per problem. A problem whose samples are all correct or all wrong
    gives none.
    """
    pairs: list[Pair] = []
    for item in results:
        if not item.prompt:
            continue
        right = [r for r in item.rollouts if r.correct]
        wrong = [r for r in item.rollouts if r.reward <= 0.0]
        if not right:
            continue
        chosen = [right[i % len(right)] for i in range(len(wrong))]
        for good, bad in list(zip(chosen, wrong, strict=True))[:per_prompt]:
            meta = {
                "index": item.index,
                "chosen_reward": good.reward,
                "rejected_reward": bad.reward,
                "prompt_ids": list(item.prompt),
                "chosen_tokens": list(good.tokens),
                "chosen_forced": list(good.forced),
                "rejected_tokens": list(bad.tokens),
                "rejected_forced": list(bad.forced),
            }
            pairs.append(
                Pair(rollout_sequence(item.prompt, good), rollout_sequence(item.prompt, bad), meta)
            )
    return pairs


def completion_message(tokenizer: Any, tokens: Sequence[int]) -> Message:
    """A sampled completion as an assistant message of the chat schema (tool calls and their
    output as parts; the closing ``<|assistant_end|>`` and anything after it dropped)."""
    specials = tokenizer.special_tokens
    opens = {
        specials.get(st.PYTHON_START): "python",
        specials.get(st.OUTPUT_START): "python_output",
    }
    closes = {specials.get(st.PYTHON_END), specials.get(st.OUTPUT_END)}
    end = specials.get(st.ASSISTANT_END)
    parts: list[Part] = []
    kind = "text"
    run: list[int] = []

    def flush() -> None:
        if run or kind != "text":
            parts.append(cast(Part, {"type": kind, "text": tokenizer.decode(run)}))

    for token in tokens:
        if token == end:
            break
        if token in opens or token in closes:
            flush()
            kind, run = opens.get(token, "text"), []
        else:
            run.append(int(token))
    flush()
    return {"role": "assistant", "content": parts or [{"type": "text", "text": ""}]}


def save_pairs(path: Path, pairs: Sequence[Pair], problems: dict[int, Any], tokenizer: Any) -> None:
    """Write on-policy pairs as jsonl (atomically): ``prompt``, ``chosen``, ``rejected`` as
    messages (readable by ``preferences-jsonl``), the answer, rewards and the exact ids."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        for pair in pairs:
            meta = pair.meta
            problem = problems[meta["index"]]
            record = {
                "prompt": problem.prompt,
                "chosen": completion_message(tokenizer, meta["chosen_tokens"]),
                "rejected": completion_message(tokenizer, meta["rejected_tokens"]),
                "answer": problem.answer,
                **meta,
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def load_pairs(path: Path) -> list[Pair]:
    """The pairs :func:`save_pairs` wrote, rebuilt from their exact ids.

    Raises:
        DataError: the file is missing or a line is not such a record.
    """
    from nanochat.core.rollouts import Rollout

    if not path.is_file():
        raise DataError(
            f"{path} is missing, so the stage cannot resume on the same pairs; delete "
            f"{path.parent} to start it over"
        )
    pairs = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                meta = {k: v for k, v in json.loads(line).items() if k in _META_KEYS}
                prompt = meta["prompt_ids"]
                sides = [
                    rollout_sequence(
                        prompt,
                        Rollout(meta[f"{s}_tokens"], meta[f"{s}_forced"], "", None, 0.0),
                    )
                    for s in ("chosen", "rejected")
                ]
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{path} line {number}: not a saved pair ({exc})") from None
            pairs.append(Pair(sides[0], sides[1], meta))
    return pairs


_META_KEYS = (
    "index",
    "chosen_reward",
    "rejected_reward",
    "prompt_ids",
    "chosen_tokens",
    "chosen_forced",
    "rejected_tokens",
    "rejected_forced",
)


class PairList(ListDataset):
    """Ready pairs as a one-split dataset."""

    kind = "preferences"
    split_names = ("train",)

    def __init__(self, pairs: list[Pair], name: str = "on-policy pairs"):
        super().__init__()
        self.pairs = pairs
        self.name = name

    def load_split(self, split: str) -> list[Pair]:
        """All the pairs."""
        return self.pairs


# --- the training stream -------------------------------------------------------------------


class PairBatches:
    """Endless micro-batches of ``rows`` pairs of one rank, resumable (see the module doc).

    ``next_batch`` returns ``(inputs, targets)`` of ``2 * rows`` sequences: the chosen ones
    first, then the rejected ones in the same order; targets are ``-1`` where no loss is taken.

    Args:
        dataset: a ``preferences`` dataset, or a :class:`PairList`.
        tokenizer: the run's tokenizer.
        max_tokens: ids per sequence at most (the context plus one).
        rows: pairs per micro-batch.
        pad: input id of padding.
        overflow: ``drop`` or ``truncate`` a pair too long (see :func:`render_pair`).
        rank, world_size: this process's share.
        seed: shuffle seed of epoch 0 (epoch ``e`` uses ``seed + e``).
        state: a state from :meth:`state` to resume from.
    """

    def __init__(
        self,
        dataset: Any,
        tokenizer: Any,
        max_tokens: int,
        rows: int,
        pad: int,
        overflow: str = "drop",
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        state: dict[str, Any] | None = None,
    ):
        self.dataset, self.tokenizer = dataset, tokenizer
        self.max_tokens, self.rows, self.pad, self.overflow = max_tokens, rows, pad, overflow
        self.rank, self.world_size, self.seed = rank, world_size, seed
        state = state or {}
        self.epoch = int(state.get("epoch", 0))
        self.cursor = state.get("cursor")
        self.position = int(state.get("position", 0))  # items of the global stream passed
        self.counts = dict(state.get("counts", {"used": 0, "truncated": 0, "dropped": 0}))
        self._iter: Iterator[tuple[Any, Any]] | None = None

    def _next_global(self) -> Any:
        """The next item of the one stream every rank walks (epoch after epoch)."""
        for _ in range(2):
            if self._iter is None:
                self._iter = self.dataset.iter(
                    "train", seed=self.seed + self.epoch, cursor=self.cursor
                )
            for item, cursor in self._iter:
                self.cursor = cursor
                return item
            if self.cursor is None:
                raise DataError(f"{self.dataset.name}: the train split has no pairs")
            self.epoch, self.cursor, self._iter = self.epoch + 1, None, None
        raise DataError(f"{self.dataset.name}: an epoch was empty")

    def _next_item(self) -> Any:
        """This rank's next item: every ``world_size``-th of the global stream."""
        while True:
            item = self._next_global()
            self.position += 1
            if (self.position - 1) % self.world_size == self.rank:
                return item

    def next_pair(self) -> Pair:
        """The next usable pair of this rank."""
        for _ in range(100_000):
            item = self._next_item()
            if isinstance(item, Pair):
                pair: Pair | None = item
                outcome = "used"
            else:
                pair, outcome = render_pair(self.tokenizer, item, self.max_tokens, self.overflow)
            if pair is None:
                self.counts["dropped"] += 1
                continue
            self.counts["used"] += 1
            if outcome == "truncated":
                self.counts["truncated"] += 1
            return pair
        raise DataError(f"{self.dataset.name}: no pair fits {self.max_tokens} tokens")

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` of ``rows`` chosen then ``rows`` rejected sequences."""
        pairs = [self.next_pair() for _ in range(self.rows)]
        batch = pad_sequences([p.chosen for p in pairs] + [p.rejected for p in pairs], self.pad)
        return batch.inputs, batch.targets

    def state(self) -> dict[str, Any]:
        """Epoch, dataset cursor, global position and counts (plain Python values)."""
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "position": self.position,
            "counts": dict(self.counts),
        }

    def stats(self) -> dict[str, int]:
        """Pairs used, truncated and dropped on this rank."""
        return {f"pairs_{k}": v for k, v in self.counts.items()}

    def close(self) -> None:
        """Nothing runs in the background."""
