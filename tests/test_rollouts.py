"""Sampling and scoring problems through the engine (the path of the GSM8K eval and `rl`), and
the GSM8K reference solutions through the same extraction (Must-show 4 of issue 14)."""

from __future__ import annotations

import random

import pytest
import torch
from nanochat_datasets.arithmetic import make_problem
from nanochat_datasets.gsm8k import Gsm8k
from nanochat_datasets.options import ArithmeticOptions, Gsm8kOptions
from test_engine import ScriptedModel

from nanochat.core import special_tokens as st
from nanochat.core.conversation import render_conversation, render_for_completion
from nanochat.core.engine import SamplingParams
from nanochat.core.registry import Registry
from nanochat.core.rollouts import (
    FINISH_PROMPT_TOO_LONG,
    ProblemRollouts,
    Rollout,
    binomial_stderr,
    make_engine,
    pass_rates,
    sample_problems,
    score_completion,
)
from nanochat.plugins.gpt.factory import GPTFactory
from nanochat.plugins.gpt.options import GPTOptions

TEXTS = ["Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18 every day. " * 4] * 30


@pytest.fixture(scope="module")
def tokenizer():
    factory = Registry.load().create("tokenizer", "rustbpe")
    return factory.train(TEXTS, 400, list(st.SPECIAL_TOKENS))


@pytest.fixture(scope="module")
def calculator():
    return {"calculator": Registry.load().create("tool", "calculator")}


def reference_completion(tokenizer, problem) -> tuple[list[int], list[int]]:
    """The prompt ids and the ids of the reference solution that follow them."""
    prompt = render_for_completion(tokenizer, problem.prompt)
    whole = render_conversation(tokenizer, problem.conversation()).ids
    assert whole[: len(prompt)] == prompt
    return prompt, whole[len(prompt) :]


# ---------------------------------------------------------------- Must-show 4


def test_gsm8k_reference_solutions_score_100_percent(tokenizer) -> None:
    """Every bundled GSM8K test problem's reference solution, rendered to the ids a model would
    produce (calculator calls and outputs included) and decoded, scores 1 through the reward
    the evaluator uses; a wrong final number scores 0."""
    problems = Gsm8k(Gsm8kOptions(source="bundled")).items("test")
    assert len(problems) == 1319
    scores, wrong = [], []
    for problem in problems:
        _, completion = reference_completion(tokenizer, problem)
        scores.append(score_completion(problem, tokenizer, completion))
        bad = tokenizer.decode(completion).rsplit("####", 1)[0] + f"#### {problem.answer}1"
        wrong.append(score_completion(problem, tokenizer, tokenizer.encode(bad)))
    assert sum(scores) == len(problems)
    assert sum(wrong) == 0


# ---------------------------------------------------------------- engine, calculator, reward


def arithmetic_problems(n: int):
    options = ArithmeticOptions(max_steps=2)
    return [make_problem(random.Random(f"t:{i}"), options) for i in range(n)]


def test_a_model_writing_the_reference_solution_is_rewarded(tokenizer, calculator) -> None:
    """The engine runs the calculator calls of the answer and forces their outputs; the sample's
    text is scored by the problem's reward, and the forced flags mark the outputs exactly."""
    problem = arithmetic_problems(1)[0]
    prompt, completion = reference_completion(tokenizer, problem)
    model = ScriptedModel(tokenizer.vocab_size, len(prompt), completion)
    engine = make_engine(model, tokenizer, slots=2, max_len=256, tools=calculator)
    [item] = sample_problems(engine, [problem], [0], 2, SamplingParams(max_tokens=200))
    assert item.prompt == prompt
    for rollout in item.rollouts:
        assert rollout.tokens == completion
        assert rollout.reward == 1.0 and rollout.correct and rollout.finish == "stop"
        rendered = render_conversation(tokenizer, problem.conversation())
        # forced exactly where the chat template masks tool output
        outputs = [m == 0 for m in rendered.mask[len(prompt) :]]
        assert rollout.forced == outputs
        assert any(rollout.forced)
    assert item.solved and pass_rates([item])["accuracy"] == 1.0


def test_a_wrong_answer_scores_zero(tokenizer, calculator) -> None:
    problem = arithmetic_problems(1)[0]
    prompt, _ = reference_completion(tokenizer, problem)
    script = [*tokenizer.encode(f"#### {int(problem.answer) + 1}"), 4]
    model = ScriptedModel(tokenizer.vocab_size, len(prompt), script)
    engine = make_engine(model, tokenizer, slots=1, max_len=256, tools=calculator)
    [item] = sample_problems(engine, [problem], [0], 1, SamplingParams(max_tokens=50))
    assert item.rollouts[0].reward == 0.0 and not item.solved


@pytest.fixture(scope="module")
def random_model(tokenizer):
    torch.manual_seed(0)
    factory = GPTFactory(GPTOptions(depth=2, aspect_ratio=32, head_dim=16, sequence_len=160))
    model = factory.build(factory.config(tokenizer.vocab_size))
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.1)
    return model.eval()


def test_samples_depend_on_the_problem_index_not_on_batching(
    tokenizer, calculator, random_model
) -> None:
    problems = arithmetic_problems(3)
    params = SamplingParams(max_tokens=12, temperature=1.0)
    engine = make_engine(random_model, tokenizer, slots=8, max_len=160, tools=calculator)
    together = sample_problems(engine, problems, [10, 11, 12], 3, params, seed=5)
    alone = sample_problems(engine, problems[1:2], [11], 3, params, seed=5)
    assert [r.tokens for r in together[1].rollouts] == [r.tokens for r in alone[0].rollouts]
    assert len({tuple(r.tokens) for r in together[1].rollouts}) > 1  # k samples differ
    other = sample_problems(engine, problems[1:2], [12], 3, params, seed=5)
    assert [r.tokens for r in other[0].rollouts] != [r.tokens for r in alone[0].rollouts]


def test_a_prompt_that_does_not_fit_scores_zero_and_is_counted(
    tokenizer, calculator, random_model
) -> None:
    problems = arithmetic_problems(2)
    short = len(render_for_completion(tokenizer, problems[0].prompt))
    engine = make_engine(random_model, tokenizer, slots=2, max_len=short + 4, tools=calculator)
    long_problem = problems[1]
    long_problem.prompt[0]["content"] = "word " * 200
    results = sample_problems(engine, problems, [0, 1], 2, SamplingParams(max_tokens=50))
    assert results[1].prompt == []
    assert [r.finish for r in results[1].rollouts] == [FINISH_PROMPT_TOO_LONG] * 2
    assert all(len(r.tokens) <= 4 for r in results[0].rollouts)  # cut to the context
    assert pass_rates(results)["prompt_too_long"] == 1.0


def _item(rewards: list[float]) -> ProblemRollouts:
    problem = arithmetic_problems(1)[0]
    rollouts = [
        Rollout([1] * (i + 1), [False] * (i + 1), "", "stop", r) for i, r in enumerate(rewards)
    ]
    return ProblemRollouts(0, problem, [1, 2], rollouts)


@pytest.mark.parametrize(
    ("groups", "accuracy", "pass1", "tokens"),
    [
        ([[1.0], [0.0], [0.0], [1.0]], 0.5, 0.5, 1.0),
        ([[1.0, 0.0], [0.0, 0.0]], 0.5, 0.25, 1.5),
        ([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]], 2 / 3, 3 / 9, 2.0),
        ([[0.5, 0.0]], 0.0, 0.0, 1.5),  # partial credit is not a solve
    ],
)
def test_pass_rates(groups, accuracy: float, pass1: float, tokens: float) -> None:
    rates = pass_rates([_item(g) for g in groups])
    assert rates["accuracy"] == pytest.approx(accuracy)
    assert rates["pass@1"] == pytest.approx(pass1)
    assert rates["mean_tokens"] == pytest.approx(tokens)
    assert rates["problems"] == len(groups)
    n = len(groups)
    assert rates["stderr"] == pytest.approx((accuracy * (1 - accuracy) / n) ** 0.5)
    assert binomial_stderr(0.1, 100) == pytest.approx(0.03)
