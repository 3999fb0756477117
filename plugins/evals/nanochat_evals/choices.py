"""The multiple-choice evaluator: accuracy on any ``choices`` dataset (MMLU, ARC, HellaSwag).

Two ways to ask the model, one per kind of model:

* ``letters`` (chat models, nanochat's way): the question and its options, lettered, go in one
  user message (:func:`letter_question`), rendered for the assistant's reply; the prediction is
  the option letter with the highest log-probability as the reply's first token, among the
  letters of that question's options.
* ``continuation`` (base models): each option is scored as a continuation of
  ``"<question>\\nAnswer:"`` (or of the context itself for completion sets like HellaSwag);
  the prediction is the option with the highest log-likelihood per token.

``auto`` picks ``letters`` when the scored checkpoint comes from a stage that produces a chat
model and ``continuation`` otherwise. Accuracy is reported micro (over questions) and macro
(the mean of per-subject accuracies), each with its standard error; per-subject accuracies go to
``<label>_<dataset>_<split>_subjects.json`` and every question's scores and prediction to
``<label>_<dataset>_<split>.jsonl`` in the evaluator's folder. Under torchrun each rank scores
every ``world_size``-th question and the rows are gathered.
"""

from __future__ import annotations

import difflib
import math
import random
import string
from collections.abc import Sequence
from typing import Any

from nanochat.core import special_tokens as st
from nanochat.core.conversation import render_for_completion
from nanochat.core.data import Choice, resolve_split
from nanochat.core.errors import UsageError
from nanochat.core.likelihood import Autocast, next_token_logprobs, score_continuations
from nanochat.core.progress import Progress
from nanochat.core.rollouts import binomial_stderr
from nanochat_evals.common import (
    checkpoint_label,
    dataset_label,
    gather,
    write_json,
    write_jsonl,
)
from nanochat_evals.options import ChoicesEvalOptions

LETTERS = string.ascii_uppercase
CHUNK = 64  # questions scored between progress updates
LIMIT_SEED = 1337  # which questions ``limit`` keeps (the same ones every time)


def letter_question(item: Choice) -> str:
    """The user message of the ``letters`` method: the question, one ``- option=LETTER`` line
    per option, and the instruction to answer with a letter."""
    lines = [f"Multiple Choice question: {item.question}"]
    lines += [f"- {option}={LETTERS[i]}" for i, option in enumerate(item.options)]
    return "\n".join(lines) + "\n\nRespond only with the letter of the correct answer."


def continuation_context(item: Choice) -> str:
    """What each option continues in the ``continuation`` method."""
    if item.meta.get("style") == "completion":
        return item.question
    return f"{item.question}\nAnswer:"


def continuation_pairs(tokenizer: Any, item: Choice) -> list[tuple[list[int], list[int]]]:
    """``(context ids, option ids)`` per option: ``<|bos|>`` + the context, and ``" " + option``
    encoded on its own (the same split lm-evaluation-harness makes)."""
    context = [tokenizer.special_tokens[st.BOS], *tokenizer.encode(continuation_context(item))]
    return [(context, tokenizer.encode(" " + option)) for option in item.options]


def letter_ids(tokenizer: Any, count: int) -> list[int]:
    """The token id of each of the first ``count`` letters.

    Raises:
        UsageError: a letter is not one token of this tokenizer.
    """
    ids = []
    for letter in LETTERS[:count]:
        encoded = tokenizer.encode(letter)
        if len(encoded) != 1:
            raise UsageError(
                f"the letter {letter!r} is {len(encoded)} tokens for this tokenizer; use "
                "method=continuation"
            )
        ids.append(encoded[0])
    return ids


def select_subjects(items: list[Choice], subjects: str, dataset: str) -> list[Choice]:
    """The items of the comma-separated ``subjects`` (all items when empty).

    Raises:
        UsageError: a subject the dataset does not have (close matches are named).
    """
    wanted = [s.strip() for s in subjects.split(",") if s.strip()]
    if not wanted:
        return items
    known = sorted({item.subject for item in items})
    for subject in wanted:
        if subject not in known:
            close = difflib.get_close_matches(subject, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"{dataset} has no subject {subject!r}{hint}")
    keep = set(wanted)
    return [item for item in items if item.subject in keep]


def summarize(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, float], dict[str, Any]]:
    """Micro and macro accuracy with standard errors, how many prompts were cut on the left to
    fit the model's context (``prompts_cut``), and the per-subject table.

    The macro standard error combines the subjects' binomial errors as independent:
    ``sqrt(sum se_s^2) / S``.
    """
    by_subject: dict[str, list[float]] = {}
    for row in rows:
        by_subject.setdefault(row["subject"], []).append(float(row["correct"]))
    n = len(rows)
    accuracy = sum(float(r["correct"]) for r in rows) / n
    table = {}
    for subject, marks in sorted(by_subject.items()):
        share = sum(marks) / len(marks)
        table[subject] = {
            "accuracy": share,
            "stderr": binomial_stderr(share, len(marks)),
            "questions": len(marks),
        }
    shares = [t["accuracy"] for t in table.values()]
    errors = [t["stderr"] for t in table.values()]
    macro = sum(shares) / len(shares)
    metrics = {
        "accuracy": accuracy,
        "stderr": binomial_stderr(accuracy, n),
        "macro_accuracy": macro,
        "macro_accuracy_stderr": math.sqrt(sum(e * e for e in errors)) / len(errors),
        "examples": float(n),
        "subjects": float(len(table)),
        "prompts_cut": float(sum(bool(r.get("prompt_cut")) for r in rows)),
    }
    return metrics, table


def _row(index: int, item: Choice, scores: list[float], extra: dict[str, Any]) -> dict[str, Any]:
    prediction = max(range(len(scores)), key=lambda i: scores[i])
    return {
        "index": index,
        "subject": item.subject,
        "question": item.question,
        "options": list(item.options),
        "answer": item.answer,
        "prediction": prediction,
        "correct": prediction == item.answer,
        "scores": scores,
        **extra,
    }


def score_questions(
    model: Any,
    tokenizer: Any,
    method: str,
    questions: Sequence[tuple[int, Choice]],
    batch_size: int = 16,
    autocast: Autocast | None = None,
) -> list[dict[str, Any]]:
    """One row per ``(index, question)``: each option's score, the prediction (the highest
    score; ties go to the first option) and whether it is right.

    ``letters`` scores are the log-probabilities of the option letters as the assistant's first
    token; ``continuation`` scores are each option's log-likelihood per token (the row also
    holds the sums, ``logprobs``, and the lengths, ``tokens``).
    """
    rows = []
    if method == "letters":
        widest = max(len(item.options) for _, item in questions)
        candidates = letter_ids(tokenizer, widest)
        prompts = [
            render_for_completion(tokenizer, [{"role": "user", "content": letter_question(c)}])
            for _, c in questions
        ]
        window = int(model.sequence_len)
        scores = next_token_logprobs(
            model, prompts, candidates, batch_size=batch_size, autocast=autocast
        )
        for (index, item), prompt, logprobs in zip(questions, prompts, scores, strict=True):
            extra: dict[str, Any] = {
                "prompt_tokens": len(prompt),
                "prompt_cut": len(prompt) > window,
            }
            rows.append(_row(index, item, logprobs[: len(item.options)], extra))
        return rows
    pairs = [p for _, item in questions for p in continuation_pairs(tokenizer, item)]
    scored = score_continuations(model, pairs, batch_size=batch_size, autocast=autocast)
    window = int(model.sequence_len)
    at = 0
    for index, item in questions:
        mine = scored[at : at + len(item.options)]
        cut = any(len(c) + len(o) > window + 1 for c, o in pairs[at : at + len(item.options)])
        at += len(item.options)
        extra = {
            "logprobs": [x.logprob for x in mine],
            "tokens": [x.tokens for x in mine],
            "prompt_cut": cut,
        }
        rows.append(_row(index, item, [s.mean for s in mine], extra))
    return rows


class MultipleChoiceEval:
    """Accuracy on a ``choices`` dataset, by option letters (chat) or continuations (base)."""

    requires_model = True

    def __init__(self, options: ChoicesEvalOptions):
        self.options = options

    def method(self, ctx: Any) -> str:
        """The method to use: the option, or for ``auto`` the kind of model scored."""
        if self.options.method != "auto":
            return self.options.method
        checkpoint = ctx.evaluated_checkpoint
        stage = checkpoint.path.parent.parent.name if checkpoint is not None else ""
        return "letters" if stage in ctx.model_stages("chat") else "continuation"

    def evaluate(self, ctx: Any, model: Any) -> dict[str, Any]:
        """Accuracy (micro, macro) with standard errors; writes per-question and per-subject
        files."""
        o, rt = self.options, ctx.runtime
        tokenizer = ctx.load_tokenizer()
        model = model.to(rt.device).eval()
        dataset = ctx.open_dataset(o.dataset, kind="choices")
        if getattr(dataset, "kind", None) != "choices":
            raise UsageError(f"{o.dataset} is a {dataset.kind} dataset, not a choices dataset")
        split = resolve_split(o.split, dataset.splits(), o.dataset)
        items = [item for item, _ in dataset.iter(split, shuffle=False)]
        items = select_subjects(items, o.subjects, o.dataset)
        if not items:
            raise UsageError(f"{o.dataset} has no {split} questions to evaluate")
        chosen = list(range(len(items)))
        if 0 < o.limit < len(items):  # a fixed sample: stored order is often by subject
            chosen = sorted(random.Random(LIMIT_SEED).sample(chosen, o.limit))
        method = self.method(ctx)
        mine = chosen[rt.rank :: rt.world_size]
        rows: list[dict[str, Any]] = []
        with Progress(len(mine), f"eval {o.dataset}", "questions", enabled=rt.is_main) as bar:
            for start in range(0, len(mine), CHUNK):
                part = mine[start : start + CHUNK]
                batch = [(i, items[i]) for i in part]
                rows += score_questions(model, tokenizer, method, batch, o.batch_size, rt.autocast)
                bar.update(len(part))
        rows = sorted(gather(rt, rows), key=lambda r: r["index"])
        metrics, table = summarize(rows)
        stem = f"{checkpoint_label(ctx)}_{dataset_label(o.dataset)}_{split}"
        path = ctx.stage_dir / f"{stem}.jsonl"
        subjects_path = ctx.stage_dir / f"{stem}_subjects.json"
        if rt.is_main:
            write_jsonl(path, rows)
            write_json(subjects_path, table)
        return {**metrics, "method": method, "items": str(path), "by_subject": str(subjects_path)}
