"""Sampling a ``problems`` dataset through the engine and scoring it: one path for the GSM8K
evaluator, the held-out pass@1 of `rl`, and the on-policy samples of `rl` and `dpo`.

Each problem's prompt is rendered for completion (:func:`~nanochat.core.conversation.
render_for_completion`); its ``k`` samples share one prefill in the :class:`~nanochat.core.
engine.Engine`, tools (the calculator) on; each sample's text - every generated token decoded,
tool calls and the tool output the engine forced in included, exactly what the model saw - is
scored with the problem's own reward (:meth:`~nanochat.core.data.Problem.reward`).

Seeds: sample ``j`` of the problem with global index ``i`` is drawn with seed
``seed + i * k + j``, so the samples do not depend on how problems are batched or split over
ranks. A prompt that leaves no room for an answer in the context is not sampled; it scores 0
and is counted (``prompt_too_long``).

Accuracy is pass@k: the share of problems with at least one sample of reward 1 (with ``k = 1``
that is pass@1). Its standard error is the binomial one, ``sqrt(p (1 - p) / n)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nanochat.core.components import Tokenizer, Tool
from nanochat.core.conversation import ConversationTooLong, render_for_completion
from nanochat.core.data import Problem
from nanochat.core.engine import Completion, Engine, Request, SamplingParams
from nanochat.core.models import Model

FINISH_PROMPT_TOO_LONG = "prompt_too_long"
#: The fewest answer tokens a prompt must leave room for in the context.
MIN_ANSWER_TOKENS = 1


@dataclass
class Rollout:
    """One sampled completion of a problem.

    Attributes:
        tokens: the generated ids (sampled and forced), in order.
        forced: per id, whether the engine forced it (tool output) instead of sampling it.
        text: ``tokenizer.decode(tokens)``.
        finish: why it stopped (``stop``, ``length``, ``context``, ``prompt_too_long``).
        reward: the problem's reward of ``text``.
    """

    tokens: list[int]
    forced: list[bool]
    text: str
    finish: str | None
    reward: float

    @property
    def sampled_tokens(self) -> int:
        """How many ids the model chose itself."""
        return len(self.forced) - sum(self.forced)

    @property
    def correct(self) -> bool:
        """Whether the reward is full marks."""
        return self.reward >= 1.0


@dataclass
class ProblemRollouts:
    """A problem, its rendered prompt and its samples.

    Attributes:
        index: the problem's global index (its seeds derive from it).
        problem: the problem.
        prompt: the prompt ids (empty when the prompt does not fit the context).
        rollouts: the samples, in order.
    """

    index: int
    problem: Problem
    prompt: list[int]
    rollouts: list[Rollout] = field(default_factory=list)

    @property
    def rewards(self) -> list[float]:
        """The samples' rewards."""
        return [r.reward for r in self.rollouts]

    @property
    def solved(self) -> bool:
        """Whether any sample is correct (pass@k of this problem)."""
        return any(r.correct for r in self.rollouts)


def score_completion(problem: Problem, tokenizer: Tokenizer, tokens: Sequence[int]) -> float:
    """The reward of a completion given as ids: the problem's reward of their decoded text.

    The evaluator, ``rl`` and the reference-solution check all score through this.
    """
    return float(problem.reward(tokenizer.decode(list(tokens))))


def make_engine(
    model: Model,
    tokenizer: Tokenizer,
    slots: int,
    max_len: int,
    tools: Mapping[str, Tool] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> Engine:
    """An engine of ``slots`` rows of ``max_len`` ids for sampling problems."""
    return Engine(
        model, tokenizer, slots=slots, max_len=max_len, tools=tools or {}, autocast=autocast
    )


def sample_problems(
    engine: Engine,
    problems: Sequence[Problem],
    indices: Sequence[int],
    samples: int,
    params: SamplingParams,
    seed: int = 0,
) -> list[ProblemRollouts]:
    """Render, sample ``samples`` completions of each problem and score them.

    Args:
        engine: the engine (its tokenizer renders and decodes; its slots batch the samples).
        problems: the problems.
        indices: each problem's global index (seeds: see the module docstring).
        samples: completions per problem (sharing the prompt's prefill).
        params: sampling settings; ``max_tokens`` is cut to what the context leaves.
        seed: base seed.

    Returns:
        One :class:`ProblemRollouts` per problem, in order.
    """
    if len(problems) != len(indices):
        raise ValueError(f"{len(problems)} problems but {len(indices)} indices")
    tokenizer = engine.tokenizer
    max_len = engine.cache.max_len
    out: list[ProblemRollouts] = []
    requests: list[Request] = []
    owners: list[ProblemRollouts] = []
    for problem, index in zip(problems, indices, strict=True):
        try:
            prompt = render_for_completion(
                tokenizer, problem.prompt, max_tokens=max_len - MIN_ANSWER_TOKENS
            )
        except ConversationTooLong:
            prompt = []
        item = ProblemRollouts(index, problem, prompt)
        out.append(item)
        if not prompt:
            item.rollouts = [
                Rollout([], [], "", FINISH_PROMPT_TOO_LONG, 0.0) for _ in range(samples)
            ]
            continue
        budget = min(params.max_tokens, max_len - len(prompt))
        request_params = SamplingParams(
            max_tokens=budget,
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            seed=seed + index * samples,
            stop_tokens=params.stop_tokens,
        )
        requests.append(Request(prompt, request_params, samples=samples, id=index))
        owners.append(item)
    completions: list[list[Completion]] = engine.complete(requests) if requests else []
    for item, done in zip(owners, completions, strict=True):
        for completion in done:
            text = tokenizer.decode(completion.tokens)
            reward = score_completion(item.problem, tokenizer, completion.tokens)
            item.rollouts.append(
                Rollout(completion.tokens, completion.forced, text, completion.finish, reward)
            )
    return out


def pass_rates(results: Sequence[ProblemRollouts]) -> dict[str, float]:
    """Accuracy (pass@k), its standard error, and sample-level statistics.

    Returns:
        ``accuracy`` (share of problems solved by any sample), ``stderr``, ``pass@1`` (mean
        correctness of single samples), ``reward`` (mean reward of the samples), ``problems``,
        ``samples`` (per problem), ``mean_tokens`` (generated ids per sample) and
        ``prompt_too_long`` (problems not sampled).
    """
    n = len(results)
    rollouts = [r for item in results for r in item.rollouts]
    accuracy = sum(item.solved for item in results) / n if n else float("nan")
    return {
        "accuracy": accuracy,
        "stderr": binomial_stderr(accuracy, n),
        "pass@1": sum(r.correct for r in rollouts) / len(rollouts) if rollouts else float("nan"),
        "reward": sum(r.reward for r in rollouts) / len(rollouts) if rollouts else float("nan"),
        "problems": float(n),
        "samples": float(len(rollouts) / n) if n else 0.0,
        "mean_tokens": (sum(len(r.tokens) for r in rollouts) / len(rollouts)) if rollouts else 0.0,
        "prompt_too_long": float(sum(not item.prompt for item in results)),
    }


def binomial_stderr(p: float, n: int) -> float:
    """``sqrt(p (1 - p) / n)``, the standard error of a share ``p`` of ``n`` trials."""
    if n <= 0 or math.isnan(p):
        return float("nan")
    return math.sqrt(max(0.0, p * (1.0 - p)) / n)
