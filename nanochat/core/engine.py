"""The generation engine: one path for chat, evals, RL and the server.

The engine holds one generation cache of ``slots`` rows (see :class:`~nanochat.core.models.
GenerationCache`). A request is admitted into free rows (its prompt is prefilled once; its
extra samples copy that row), then every :meth:`Engine.step` runs one decode step for all busy
rows together: one forward pass over the rows' last tokens, one vectorised sampling call
(:mod:`nanochat.core.sampling`), and per row: stop tokens, token budgets, the context limit,
and tool calls. A row that finishes frees its slot at once, and new requests can be admitted
between steps while the other rows keep decoding (continuous batching).

Tools: when a row emits a tool's start token, the ids up to its end token are the call; the
engine runs the tool on their text and forces ``<|output_start|> result <|output_end|>`` into
the row, one token per step, without sampling them.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nanochat.core import special_tokens as st
from nanochat.core.components import Tokenizer, Tool
from nanochat.core.models import GenerationCache, Model
from nanochat.core.sampling import sample_tokens
from nanochat.core.streaming import TextStream

FINISH_STOP = "stop"  # a stop token (<|assistant_end|>, <|bos|>) or a stop sequence
FINISH_LENGTH = "length"  # the request's token budget
FINISH_CONTEXT = "context"  # the model's context (the cache row is full)


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples.

    Attributes:
        max_tokens: most tokens to generate (forced tool output included).
        temperature: 0 for greedy decoding.
        top_k: keep the k most likely ids (0 or None: off).
        top_p: keep the most likely ids up to this probability (1 or None: off).
        seed: sampling seed; None draws one. Sample ``i`` of a request uses ``seed + i``.
        stop_tokens: ids that end the row (None: ``<|assistant_end|>`` and ``<|bos|>``).
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop_tokens: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, not {self.max_tokens}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, not {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")


@dataclass
class Request:
    """A prompt to continue ``samples`` times (the samples share the prompt's prefill)."""

    prompt: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    samples: int = 1
    id: Any = None


@dataclass(frozen=True)
class Event:
    """One new token of one sample of a request (``finish`` set on its last token).

    ``text`` is the newly complete text (never a broken UTF-8 character); ``forced`` marks tool
    output the engine inserted.
    """

    request: Request
    sample: int
    token: int | None
    text: str
    forced: bool = False
    finish: str | None = None


@dataclass
class Completion:
    """Everything one sample generated."""

    tokens: list[int] = field(default_factory=list)
    text: str = ""
    forced: list[bool] = field(default_factory=list)
    finish: str | None = None


@dataclass
class _Row:
    """The state of one busy slot."""

    request: Request
    sample: int
    seed: int
    stream: TextStream
    produced: int = 0
    last: int = 0
    position: int = 0  # tokens its cache row holds
    forced: deque[int] = field(default_factory=deque)
    tool_call: list[int] | None = None
    tool: Tool | None = None


class Engine:
    """Batched, streaming generation from any model that implements the contract.

    Args:
        model: the model, on its device, in eval mode.
        tokenizer: the run's tokenizer.
        slots: rows of the cache (requests' samples decoding at once).
        max_len: tokens one row can hold (default: the model's context).
        tools: tools by name (their start/end tokens must be special tokens of the tokenizer).
        autocast: a context manager factory for the forward passes (bf16 on CUDA).
        seed: seeds requests that give none.
    """

    def __init__(
        self,
        model: Model,
        tokenizer: Tokenizer,
        slots: int = 8,
        max_len: int | None = None,
        tools: Mapping[str, Tool] | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        seed: int = 0,
    ) -> None:
        if slots < 1:
            raise ValueError(f"an engine needs at least one slot, not {slots}")
        self.model = model
        self.tokenizer = tokenizer
        self.cache: GenerationCache = model.new_cache(slots, max_len)
        self.device = next(iter(model.parameters())).device
        self.autocast = autocast or contextlib.nullcontext
        special = tokenizer.special_tokens
        self.default_stops = tuple(special[t] for t in (st.ASSISTANT_END, st.BOS) if t in special)
        self._tools: dict[int, tuple[int, Tool]] = {}
        for tool in (tools or {}).values():
            if tool.start_token in special and tool.end_token in special:
                self._tools[special[tool.start_token]] = (special[tool.end_token], tool)
        self._output = (special.get(st.OUTPUT_START), special.get(st.OUTPUT_END))
        self._rows: dict[int, _Row] = {}
        self._waiting: deque[Request] = deque()
        self._seeds = itertools.count(seed * 1_000_003 + 1)

    # --- slots and admission -------------------------------------------------------------

    @property
    def slots(self) -> int:
        """Rows of the cache."""
        return self.cache.batch_size

    @property
    def free_slots(self) -> int:
        """Rows not decoding anything now."""
        return self.slots - len(self._rows)

    @property
    def busy(self) -> bool:
        """Whether rows are decoding or requests wait for rows."""
        return bool(self._rows or self._waiting)

    @property
    def waiting(self) -> int:
        """Requests submitted but not admitted yet."""
        return len(self._waiting)

    def check(self, request: Request) -> None:
        """Raise ``ValueError`` for a request that can never run here (clear message)."""
        if not request.prompt:
            raise ValueError("a prompt needs at least one token")
        if request.samples < 1:
            raise ValueError(f"samples must be at least 1, not {request.samples}")
        if request.samples > self.slots:
            raise ValueError(f"{request.samples} samples do not fit {self.slots} slots")
        room = self.cache.max_len - 1
        if len(request.prompt) > room:
            raise ValueError(
                f"the prompt has {len(request.prompt)} tokens but the model's context holds "
                f"{self.cache.max_len} (at most {room} for the prompt)"
            )
        vocab = self.tokenizer.vocab_size
        if min(request.prompt) < 0 or max(request.prompt) >= vocab:
            raise ValueError(f"prompt ids must be in [0, {vocab})")

    def submit(self, request: Request) -> None:
        """Queue ``request``; it is admitted when enough slots are free (see :meth:`step`)."""
        self.check(request)
        self._waiting.append(request)

    def cancel(self, request: Request) -> bool:
        """Drop ``request`` at once: out of the waiting queue, or every row of it freed.

        Nothing more is emitted for it; the freed slots take new requests at the next step.

        Returns:
            Whether the request was waiting or decoding here.
        """
        waiting = len(self._waiting)
        self._waiting = deque(r for r in self._waiting if r is not request)
        slots = [s for s, row in self._rows.items() if row.request is request]
        for slot in slots:
            del self._rows[slot]
        return bool(slots) or len(self._waiting) < waiting

    @torch.no_grad()
    def _admit(self) -> list[Event]:
        """Prefill waiting requests into free slots (first come, first served)."""
        events: list[Event] = []
        while self._waiting and self._waiting[0].samples <= self.free_slots:
            request = self._waiting.popleft()
            free = [s for s in range(self.slots) if s not in self._rows][: request.samples]
            self.cache.reset(free)
            prompt = torch.tensor([request.prompt], dtype=torch.long, device=self.device)
            with self.autocast():
                logits = self.model.forward_cached(prompt, self.cache, rows=self._index(free[:1]))
            if len(free) > 1:
                self.cache.copy_rows(free[0], free[1:])
            base = request.params.seed
            if base is None:
                base = next(self._seeds)
            for i, slot in enumerate(free):
                self._rows[slot] = _Row(
                    request, i, base + i, TextStream(self.tokenizer), position=len(request.prompt)
                )
            events += self._advance(free, logits[:, -1].expand(len(free), -1))
        return events

    def _index(self, slots: Sequence[int]) -> torch.Tensor | None:
        """The rows argument of ``forward_cached``: None when it is every row in order."""
        if len(slots) == self.slots and list(slots) == list(range(self.slots)):
            return None
        return torch.tensor(list(slots), dtype=torch.long, device=self.device)

    # --- decoding ------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> list[Event]:
        """Admit what fits, then one decode step for every busy row; the new events."""
        events = self._admit()
        slots = sorted(self._rows)
        if not slots:
            return events
        last = torch.tensor([[self._rows[s].last] for s in slots], device=self.device)
        with self.autocast():
            logits = self.model.forward_cached(last, self.cache, rows=self._index(slots))
        for slot in slots:
            self._rows[slot].position += 1
        return events + self._advance(slots, logits[:, -1])

    def _advance(self, slots: list[int], logits: torch.Tensor) -> list[Event]:
        """Choose each row's next token (forced or sampled) and settle finished rows."""
        rows = [self._rows[s] for s in slots]
        params = [r.request.params for r in rows]
        device = logits.device
        if all(p.temperature <= 0 for p in params):
            sampled = torch.argmax(logits.float(), dim=-1).tolist()
        else:
            sampled = sample_tokens(
                logits,
                torch.tensor([p.temperature for p in params], device=device),
                torch.tensor([p.top_k or 0 for p in params], device=device),
                torch.tensor([1.0 if p.top_p is None else p.top_p for p in params]).to(device),
                torch.tensor([r.seed for r in rows], dtype=torch.long, device=device),
                torch.tensor([r.produced for r in rows], dtype=torch.long, device=device),
            ).tolist()
        events = []
        for slot, row, token in zip(slots, rows, sampled, strict=True):
            forced = bool(row.forced)
            if forced:
                token = row.forced.popleft()
            events.append(self._emit(slot, row, int(token), forced))
        return events

    def _emit(self, slot: int, row: _Row, token: int, forced: bool) -> Event:
        """Record ``token`` for ``row``; run tools; decide whether the row is finished."""
        row.produced += 1
        row.last = token
        params = row.request.params
        stops = self.default_stops if params.stop_tokens is None else params.stop_tokens
        finish = None
        if not forced:
            self._track_tool(row, token)
        if token in stops and not forced:
            finish = FINISH_STOP
        elif row.produced >= params.max_tokens:
            finish = FINISH_LENGTH
        elif row.position >= self.cache.max_len:  # no room to feed this token back
            finish = FINISH_CONTEXT
        text = row.stream.push(token)
        if finish is not None:
            text += row.stream.flush()
            del self._rows[slot]
        return Event(row.request, row.sample, token, text, forced, finish)

    def _track_tool(self, row: _Row, token: int) -> None:
        """Collect a tool call's ids; at its end token, queue the tool's output as forced ids."""
        if row.tool_call is None:
            if token in self._tools:
                row.tool_call, row.tool = [], self._tools[token][1]
            return
        assert row.tool is not None
        end = self.tokenizer.special_tokens[row.tool.end_token]
        if token != end:
            row.tool_call.append(token)
            return
        call = self.tokenizer.decode(row.tool_call)
        row.tool_call, tool, row.tool = None, row.tool, None
        try:
            result = tool.run(call)
        except Exception as exc:  # noqa: BLE001 - a tool must never take the engine down
            result = f"error: {type(exc).__name__}"
        start, stop = self._output
        ids = self.tokenizer.encode(str(result))
        if start is not None and stop is not None:
            ids = [start, *ids, stop]
        row.forced.extend(ids)

    # --- whole requests ------------------------------------------------------------------

    def generate(self, requests: Iterable[Request]) -> Iterator[Event]:
        """Run ``requests`` to completion, yielding events as they come (continuous batching:
        a request starts as soon as slots free up)."""
        for request in requests:
            self.submit(request)
        while self.busy:
            yield from self.step()

    def complete(self, requests: Sequence[Request]) -> list[list[Completion]]:
        """Every sample of every request, in order: ``result[i][j]`` is request i's sample j."""
        results = [[Completion() for _ in range(r.samples)] for r in requests]
        where = {id(r): i for i, r in enumerate(requests)}
        for event in self.generate(requests):
            done = results[where[id(event.request)]][event.sample]
            if event.token is not None:
                done.tokens.append(event.token)
                done.forced.append(event.forced)
            done.text += event.text
            done.finish = event.finish or done.finish
        return results
