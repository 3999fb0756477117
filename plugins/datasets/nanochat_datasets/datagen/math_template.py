"""The ``math-word-problems`` datagen template: word problems whose every step the calculator
checks.

Each job asks for a problem on a seeded topic, character and number of steps, answered as one
JSON object::

    {"problem": "...", "steps": [{"text": "...", "expression": "12*7", "result": 84}, ...],
     "answer": 84}

The calculator tool evaluates every ``expression``; a step whose ``result`` differs, or an
``answer`` that is not the last step's value, rejects the problem. A kept record is a
conversation whose assistant message calls the calculator for each step (the chat schema's
``python`` / ``python_output`` parts), plus GSM8K-style ``question`` / ``answer`` fields
(``... <<12*7=84>>84 ... #### 84``), so ``gsm8k:FILE`` reads the same file as problems.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from nanochat.core.data import DataError, Part, python_output_part, python_part, text_part
from nanochat.core.datagen import DatagenJob, Rejected, TeacherReply
from nanochat_datasets.datagen.options import MathTemplateOptions

TOPICS = (
    "baking cookies for a school fair",
    "saving pocket money",
    "a train journey",
    "planting a vegetable garden",
    "a football tournament",
    "buying school supplies",
    "a library's new books",
    "feeding animals on a farm",
    "a bicycle race",
    "packing boxes in a warehouse",
)
NAMES = ("Amara", "Bruno", "Chloe", "Dev", "Elena", "Femi", "Grace", "Hiro", "Ines", "Jonas")
FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:/\d+)?$")
SYSTEM = (
    "You write grade-school math word problems with worked solutions. Reply with one JSON "
    'object and nothing else: {"problem": "the problem text", "steps": [{"text": "what this '
    'step works out", "expression": "arithmetic with + - * / ** and parentheses only", '
    '"result": number}], "answer": number}. Every expression must evaluate exactly to its '
    "result, and the answer is the last step's result."
)


def as_fraction(value: Any) -> Fraction | None:
    """A number (JSON number or numeric text such as ``"84"``, ``"2.5"``, ``"1/3"``) exactly,
    or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(value).limit_denominator(10**9) if value == value else None
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        if NUMBER.match(text):
            return Fraction(text)
    return None


def _close(a: Fraction, b: Fraction) -> bool:
    """Equal, allowing the rounding of a printed decimal (1e-9 relative)."""
    scale = max(Fraction(1), abs(a), abs(b))
    return a == b or abs(a - b) <= scale / 10**9


def _extract_json(text: str) -> Any:
    body = FENCE.sub("", text.strip())
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise Rejected("not-json", "no JSON object in the answer")
    try:
        return json.loads(body[start : end + 1])
    except ValueError:
        raise Rejected("not-json", "the JSON object does not parse") from None


class MathWordProblems:
    """Calculator-checked word problems (records for SFT, and problems for ``gsm8k:FILE``)."""

    data_kind = "problems"

    def __init__(self, options: MathTemplateOptions) -> None:
        if not 1 <= options.min_steps <= options.max_steps:
            raise DataError("math-word-problems: need 1 <= min_steps <= max_steps")
        self.options = options
        self._calculator: Any = None

    @property
    def calculator(self) -> Any:
        """The tool that checks the steps (created from the registry on first use)."""
        if self._calculator is None:
            from nanochat.core.registry import get_registry

            self._calculator = get_registry().create("tool", self.options.calculator)
        return self._calculator

    def make_job(self, seed: int, index: int) -> DatagenJob:
        """A seeded topic, character and step count."""
        rng = random.Random(f"math-word-problems:{seed}:{index}")
        topic, name = rng.choice(TOPICS), rng.choice(NAMES)
        steps = rng.randint(self.options.min_steps, self.options.max_steps)
        user = (
            f"Write a word problem about {topic} featuring {name}, solved in {steps} steps, "
            f"using whole numbers no larger than {self.options.max_value} to start with."
        )
        return DatagenJob(
            key=f"math-word-problems-s{seed}-{index:07d}",
            index=index,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
            params={"temperature": self.options.temperature, "max_tokens": self.options.max_tokens},
            meta={"topic": topic, "name": name, "steps": steps},
        )

    def _steps(self, data: dict[str, Any]) -> list[tuple[str, str, str]]:
        steps = data.get("steps")
        if not isinstance(steps, list) or not 1 <= len(steps) <= self.options.max_steps:
            raise Rejected("bad-schema", f"steps must be a list of 1 to {self.options.max_steps}")
        checked = []
        for number, step in enumerate(steps, 1):
            if not isinstance(step, dict):
                raise Rejected("bad-schema", f"step {number} is not an object")
            text, expr = step.get("text"), step.get("expression")
            if not isinstance(text, str) or not isinstance(expr, str) or not expr.strip():
                raise Rejected("bad-schema", f"step {number} needs text and expression strings")
            if any(mark in expr for mark in ("<<", ">>", "=")):
                raise Rejected("bad-schema", f"step {number}: the expression holds = or << >>")
            claimed = as_fraction(step.get("result"))
            if claimed is None:
                raise Rejected("bad-schema", f"step {number}: result is not a number")
            output = self.calculator.run(expr.strip())
            value = as_fraction(output)
            if value is None:
                raise Rejected("calc-error", f"step {number}: {expr!r} -> {output}")
            if not _close(value, claimed):
                raise Rejected("wrong-step", f"step {number}: {expr} is {output}, not {claimed}")
            checked.append((text.strip(), expr.strip(), output))
        return checked

    def accept(self, job: DatagenJob, reply: TeacherReply) -> dict[str, Any]:
        """The problem with its calculator-checked solution.

        Raises:
            Rejected: ``truncated``, ``not-json``, ``bad-schema``, ``calc-error``,
                ``wrong-step`` or ``wrong-answer``.
        """
        if reply.finish_reason == "length":
            raise Rejected("truncated", "the answer was cut by max_tokens")
        data = _extract_json(reply.text if isinstance(reply.text, str) else "")
        if not isinstance(data, dict):
            raise Rejected("bad-schema", "the JSON is not an object")
        problem = data.get("problem")
        if not isinstance(problem, str) or len(problem.strip()) < 20:
            raise Rejected("bad-schema", "problem must be a text of 20 characters or more")
        if "<|" in problem or "\ufffd" in problem:
            raise Rejected("bad-schema", "the problem holds special tokens or broken text")
        steps = self._steps(data)
        answer = as_fraction(data.get("answer"))
        final = steps[-1][2]
        if answer is None or not _close(answer, as_fraction(final) or Fraction(0)):
            raise Rejected("wrong-answer", f"answer {data.get('answer')!r}, last step {final}")
        parts: list[Part] = []
        worked = []
        for text, expr, output in steps:
            parts += [
                text_part(f"{text}: {expr} = "),
                python_part(expr),
                python_output_part(output),
                text_part(f"{output}.\n"),
            ]
            worked.append(f"{text}: {expr} = <<{expr}={output}>>{output}.")
        parts.append(text_part(f"#### {final}"))
        return {
            "messages": [
                {"role": "user", "content": problem.strip()},
                {"role": "assistant", "content": parts},
            ],
            "question": problem.strip(),
            "answer": "\n".join(worked) + f"\n#### {final}",
            "meta": {"template": "math-word-problems", "topic": job.meta["topic"]},
        }

    def dedup_key(self, record: Mapping[str, Any]) -> str:
        """The problem text, normalized (the same problem twice is a duplicate)."""
        text = str(record["messages"][0]["content"]).lower()
        return " ".join(re.sub(r"[^\w\s]", " ", text).split())

    def example_reply(self, job: DatagenJob) -> str:
        """A correct two-step problem on the job's topic and character."""
        rng = random.Random(job.key)
        a, b, c = rng.randint(2, 50), rng.randint(2, 50), rng.randint(2, 9)
        name = job.meta["name"]
        return json.dumps(
            {
                "problem": f"For {job.meta['topic']}, {name} collects {a} items and then {b} "
                f"more. Later the pile grows to {c} times its size. How many items does {name} "
                "have now?",
                "steps": [
                    {"text": "Items after getting more", "expression": f"{a}+{b}", "result": a + b},
                    {
                        "text": "Times as many",
                        "expression": f"({a}+{b})*{c}",
                        "result": (a + b) * c,
                    },
                ],
                "answer": (a + b) * c,
            }
        )


def math_word_problems(options: MathTemplateOptions) -> MathWordProblems:
    """Factory of the ``math-word-problems`` template."""
    return MathWordProblems(options)
