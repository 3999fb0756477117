"""The generation engine: cached decoding equals naive decoding, per-request seeded sampling,
continuous batching into freed slots, context limits, and forced tool output."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from nanochat.core import special_tokens as st
from nanochat.core.engine import (
    FINISH_CONTEXT,
    FINISH_LENGTH,
    FINISH_STOP,
    Engine,
    Request,
    SamplingParams,
)
from nanochat.core.registry import Registry
from nanochat.core.sampling import filter_logits
from nanochat.plugins.gpt.factory import GPTFactory
from nanochat.plugins.gpt.options import GPTOptions

TEXTS = ["The quick brown fox jumps over the lazy dog. 123 + 456 = 579. " * 5] * 20


@pytest.fixture(scope="module")
def tokenizer():
    factory = Registry.load().create("tokenizer", "rustbpe")
    return factory.train(TEXTS, 300, list(st.SPECIAL_TOKENS))


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    factory = GPTFactory(GPTOptions(depth=2, aspect_ratio=32, head_dim=16, sequence_len=32))
    model = factory.build(factory.config(tokenizer.vocab_size))
    with torch.no_grad():  # a random model whose outputs depend on the input
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.1)
    return model.eval()


def naive_greedy(model, prompt: list[int], steps: int, stops: Sequence[int]) -> list[int]:
    """Recompute the whole prefix every step, no cache."""
    ids, out = list(prompt), []
    for _ in range(steps):
        with torch.no_grad():
            token = int(model(torch.tensor([ids]))[0, -1].argmax())
        out.append(token)
        ids.append(token)
        if token in stops:
            break
    return out


def prompts(tokenizer) -> list[list[int]]:
    bos = tokenizer.special_tokens[st.BOS]
    texts = ["The", "The quick brown", "fox jumps over the lazy", "123 +", "dog. 123 + 456 ="]
    return [[bos, *tokenizer.encode(t)] for t in texts]


def test_cached_greedy_equals_naive_for_prompts_of_different_lengths(model, tokenizer) -> None:
    engine = Engine(model, tokenizer, slots=8)
    requests = [Request(p, SamplingParams(max_tokens=12)) for p in prompts(tokenizer)]
    results = engine.complete(requests)
    for request, [result] in zip(requests, results, strict=True):
        expected = naive_greedy(model, request.prompt, 12, engine.default_stops)
        assert result.tokens == expected
        assert result.finish in (FINISH_LENGTH, FINISH_STOP)
    assert engine.free_slots == 8 and not engine.busy


def test_rows_admitted_into_freed_slots_decode_the_same(model, tokenizer) -> None:
    """Two slots, five requests of different budgets: later ones start mid-way in freed rows."""
    engine = Engine(model, tokenizer, slots=2)
    budgets = [3, 9, 5, 7, 2]
    requests = [
        Request(p, SamplingParams(max_tokens=n, stop_tokens=()))
        for p, n in zip(prompts(tokenizer), budgets, strict=True)
    ]
    order = []
    for event in engine.generate(requests):
        assert engine.free_slots >= 0
        if event.finish:
            order.append(requests.index(event.request))
    assert order[0] == 0  # the shortest of the first two finished first and freed its slot
    results = Engine(model, tokenizer, slots=2).complete(requests)
    for request, [result] in zip(requests, results, strict=True):
        assert result.tokens == naive_greedy(model, request.prompt, request.params.max_tokens, ())
        assert result.finish == FINISH_LENGTH


def test_cancel_frees_the_rows_at_once_and_others_decode_the_same(model, tokenizer) -> None:
    """A request cancelled mid-way (a client gone) frees its slots before the next step; one
    cancelled while waiting never starts; the other rows decode as if nothing happened."""
    engine = Engine(model, tokenizer, slots=3)
    params = SamplingParams(max_tokens=10, stop_tokens=())
    keep, drop, queued = (Request(p, params) for p in prompts(tokenizer)[:3])
    many = Request(prompts(tokenizer)[3], params, samples=2)
    for request in (keep, drop, many, queued):
        engine.submit(request)
    seen: dict[int, list[int]] = {}
    for _ in range(3):
        for event in engine.step():
            seen.setdefault(id(event.request), []).append(int(event.token or 0))
    assert engine.free_slots == 1 and engine.waiting == 2  # `many` needs two slots
    dropped = len(seen[id(drop)])
    assert engine.cancel(drop) and engine.free_slots == 2
    assert not engine.cancel(drop)  # already gone
    assert engine.cancel(queued) and engine.waiting == 1
    while engine.busy:
        for event in engine.step():
            assert event.request not in (drop, queued)
            seen.setdefault(id(event.request), []).append(int(event.token or 0))
    assert len(seen[id(drop)]) == dropped and id(queued) not in seen
    assert seen[id(keep)] == naive_greedy(model, keep.prompt, 10, ())
    assert engine.free_slots == 3 and not engine.busy
    engine.submit(many)
    next(iter(engine.step()))
    assert engine.cancel(many) and engine.free_slots == 3  # both samples' rows


def sampled(engine: Engine, requests: list[Request]) -> list[list[int]]:
    return [[s.tokens for s in samples][0] for samples in engine.complete(requests)]


def test_a_seeded_request_samples_the_same_alone_and_in_a_batch(model, tokenizer) -> None:
    params = SamplingParams(max_tokens=10, temperature=1.0, top_k=50, top_p=0.95, seed=7)
    target = Request(prompts(tokenizer)[2], params)
    alone = sampled(Engine(model, tokenizer, slots=1), [target])[0]
    others = [
        Request(p, SamplingParams(max_tokens=8, temperature=0.8, seed=i))
        for i, p in enumerate(prompts(tokenizer))
    ]
    batched = sampled(Engine(model, tokenizer, slots=4), [others[0], target, *others[1:]])[1]
    assert alone == batched
    other_seed = Request(target.prompt, SamplingParams(**{**params.__dict__, "seed": 8}))
    assert sampled(Engine(model, tokenizer, slots=1), [other_seed])[0] != alone


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_tokens=10, temperature=0.0, seed=3),
        SamplingParams(max_tokens=10, temperature=1.5, top_k=1, seed=3),
        SamplingParams(max_tokens=10, temperature=1.0, top_p=1e-6, seed=3),
    ],
)
def test_greedy_equivalents(model, tokenizer, params: SamplingParams) -> None:
    prompt = prompts(tokenizer)[1]
    [tokens] = sampled(Engine(model, tokenizer, slots=2), [Request(prompt, params)])
    assert tokens == naive_greedy(model, prompt, 10, Engine(model, tokenizer).default_stops)


def test_many_samples_share_one_prefill_and_differ(model, tokenizer) -> None:
    engine = Engine(model, tokenizer, slots=4)
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=11, stop_tokens=())
    [samples] = engine.complete([Request(prompts(tokenizer)[0], params, samples=4)])
    assert len({tuple(s.tokens) for s in samples}) > 1
    # sample i is the request with seed + i run alone
    for i, sample in enumerate(samples):
        alone = Request(
            prompts(tokenizer)[0], SamplingParams(**{**params.__dict__, "seed": 11 + i})
        )
        assert sampled(Engine(model, tokenizer, slots=1), [alone])[0] == sample.tokens


TOP_P_TABLE = [
    # probabilities, top_p, ids kept
    ([0.5, 0.3, 0.15, 0.05], 0.5, {0}),
    ([0.5, 0.3, 0.15, 0.05], 0.6, {0, 1}),
    ([0.5, 0.3, 0.15, 0.05], 0.8, {0, 1}),
    ([0.5, 0.3, 0.15, 0.05], 0.81, {0, 1, 2}),
    ([0.5, 0.3, 0.15, 0.05], 1.0, {0, 1, 2, 3}),
    ([0.05, 0.15, 0.3, 0.5], 0.7, {2, 3}),
    ([0.25, 0.25, 0.25, 0.25], 0.3, {0, 1}),
]


@pytest.mark.parametrize(("probs", "top_p", "kept"), TOP_P_TABLE)
def test_top_p_keeps_the_smallest_set_reaching_p(probs, top_p, kept) -> None:
    logits = torch.log(torch.tensor([probs]))
    out = filter_logits(logits, torch.tensor([0]), torch.tensor([top_p]))
    got = {i for i, v in enumerate(out[0].tolist()) if v != float("-inf")}
    if probs == [0.25, 0.25, 0.25, 0.25]:
        assert len(got) == 2  # ties: any two of the four
    else:
        assert got == kept


def test_top_k_keeps_k_ids() -> None:
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [1.0, 4.0, 3.0, 2.0]])
    out = filter_logits(logits, torch.tensor([2, 0]), torch.tensor([1.0, 1.0]))
    assert torch.isinf(out[0]).tolist() == [True, False, False, True]
    assert not torch.isinf(out[1]).any()


def test_context_limit(model, tokenizer) -> None:
    engine = Engine(model, tokenizer, slots=2, max_len=16)
    with pytest.raises(
        ValueError, match="the prompt has 20 tokens but the model's context holds 16"
    ):
        engine.submit(Request([1] * 20))
    prompt = prompts(tokenizer)[3]
    [[result]] = engine.complete([Request(prompt, SamplingParams(max_tokens=100, stop_tokens=()))])
    assert result.finish == FINISH_CONTEXT
    assert len(prompt) + len(result.tokens) == 16 + 1  # the last token is emitted, not fed back


class ScriptedCache:
    """A generation cache of rows that only count tokens."""

    def __init__(self, batch_size: int, max_len: int) -> None:
        self._positions = torch.zeros(batch_size, dtype=torch.long)
        self._max_len = max_len

    @property
    def batch_size(self) -> int:
        return int(self._positions.numel())

    @property
    def max_len(self) -> int:
        return self._max_len

    @property
    def positions(self) -> torch.Tensor:
        return self._positions

    def reset(self, rows=None) -> None:
        self._positions[slice(None) if rows is None else list(rows)] = 0

    def copy_rows(self, source: int, targets) -> None:
        self._positions[list(targets)] = int(self._positions[source])


class ScriptedModel(torch.nn.Module):
    """A model that emits a fixed script after the prompt (same for every row)."""

    def __init__(self, vocab: int, prompt_len: int, script: list[int]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.prompt_len, self.script = vocab, prompt_len, script
        self.seen: list[list[int]] = []

    sequence_len = 64
    max_context = 64

    def new_cache(self, batch_size: int, max_len: int | None = None) -> ScriptedCache:
        return ScriptedCache(batch_size, max_len or 64)

    def forward_cached(self, idx, cache, rows=None):
        rows = torch.arange(cache.batch_size) if rows is None else rows
        self.seen.append(idx[:, -1].tolist())
        cache._positions[rows] += idx.size(1)
        logits = torch.full((idx.size(0), idx.size(1), self.vocab), -10.0)
        for line, row in enumerate(rows.tolist()):
            step = int(cache.positions[row]) - self.prompt_len
            logits[line, -1, self.script[min(step, len(self.script) - 1)]] = 10.0
        return logits


def test_the_calculator_runs_inside_the_engine(tokenizer) -> None:
    special = tokenizer.special_tokens
    call = tokenizer.encode("(2+3)*4")
    script = [special[st.PYTHON_START], *call, special[st.PYTHON_END]]
    script += [5] * 20 + [special[st.ASSISTANT_END]]
    prompt = [special[st.BOS], 7, 8]
    model = ScriptedModel(tokenizer.vocab_size, len(prompt), script)
    tools = {"calculator": Registry.load().create("tool", "calculator")}
    engine = Engine(model, tokenizer, slots=1, tools=tools)
    [[result]] = engine.complete([Request(prompt, SamplingParams(max_tokens=40))])
    assert "<|python_start|>(2+3)*4<|python_end|><|output_start|>20<|output_end|>" in result.text


def test_a_tool_call_forces_its_output(tokenizer) -> None:
    special = tokenizer.special_tokens
    call = tokenizer.encode("6*7")
    script = [special[st.PYTHON_START], *call, special[st.PYTHON_END]]
    script += [5] * 20 + [special[st.ASSISTANT_END]]

    class Times:
        name, start_token, end_token = "times", st.PYTHON_START, st.PYTHON_END

        def run(self, text: str) -> str:
            a, b = text.split("*")
            return str(int(a) * int(b))

    prompt = [special[st.BOS], 7, 8]
    model = ScriptedModel(tokenizer.vocab_size, len(prompt), script)
    engine = Engine(model, tokenizer, slots=1, tools={"times": Times()})
    [[result]] = engine.complete([Request(prompt, SamplingParams(max_tokens=40))])
    answer = tokenizer.encode("42")
    n = len(script) - 21  # the call, up to <|python_end|>
    expected_forced = [special[st.OUTPUT_START], *answer, special[st.OUTPUT_END]]
    assert result.tokens[:n] == script[:n]
    assert result.tokens[n : n + len(expected_forced)] == expected_forced
    assert result.forced[n : n + len(expected_forced)] == [True] * len(expected_forced)
    assert not any(result.forced[:n])
    assert "<|output_start|>42<|output_end|>" in result.text
    assert result.finish == FINISH_STOP

    class Broken(Times):
        def run(self, text: str) -> str:
            raise RuntimeError("boom")

    model = ScriptedModel(tokenizer.vocab_size, len(prompt), script)
    engine = Engine(model, tokenizer, slots=1, tools={"times": Broken()})
    [[result]] = engine.complete([Request(prompt, SamplingParams(max_tokens=40))])
    assert "<|output_start|>error: RuntimeError<|output_end|>" in result.text
