"""``arithmetic``: synthetic multi-step word problems whose worked answers call the calculator.

With ``bare_fraction`` > 0, that share of the problems are bare questions instead ("What is
12 * 7?", "Compute 45 - 18."), answered with one calculator call.

Problem ``i`` of a split is generated from its own seeded random generator, so the data is the
same on every machine and any problem can be rebuilt alone. A tiny model can learn these on a
CPU, which makes them the RL and SFT data of CPU-scale runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from nanochat.core.data import (
    DataError,
    ListDataset,
    Part,
    Problem,
    python_output_part,
    python_part,
    text_part,
)
from nanochat_datasets.gsm8k import gsm8k_reward
from nanochat_datasets.options import ArithmeticOptions

NAMES = ("Ava", "Ben", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade")
THINGS = ("apples", "marbles", "stickers", "books", "coins", "pencils", "shells", "cards")


@dataclass(frozen=True)
class Step:
    """One operation of a problem: the sentence that tells it and the arithmetic it means."""

    sentence: str
    op: str
    operand: int


def _step(rng: random.Random, value: int, name: str, thing: str, ops: str, top: int) -> Step:
    choices = [op for op in ops if op != "-" or value > 1]
    divisors = [d for d in range(2, 10) if value % d == 0 and value > d]
    if "/" in choices and not divisors:
        choices.remove("/")
    op = rng.choice(choices or ["+"])
    if op == "+":
        n = rng.randint(1, top)
        return Step(f"{name} gets {n} more {thing}.", op, n)
    if op == "-":
        n = rng.randint(1, value - 1)
        return Step(f"{name} gives away {n} {thing}.", op, n)
    if op == "*":
        n = rng.randint(2, 5)
        return Step(f"Then {name} ends up with {n} times as many {thing}.", op, n)
    n = rng.choice(divisors)
    return Step(f"{name} splits the {thing} into {n} equal piles and keeps one pile.", op, n)


def _apply(value: int, step: Step) -> int:
    if step.op == "+":
        return value + step.operand
    if step.op == "-":
        return value - step.operand
    if step.op == "*":
        return value * step.operand
    return value // step.operand


# How a bare question is asked: (template, spoken name of each operation).
BARE_TEMPLATES = (
    "What is {a} {op} {b}?",
    "What is {a}{op}{b}?",
    "Compute {a} {op} {b}.",
    "{a} {op} {b} = ?",
    "{a}{op}{b}=?",
)
SPOKEN = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}


def bare_operand(rng: random.Random, top: int) -> int:
    """A number in ``[1, top]``: half the time one digit, else uniform. People ask "12 * 7" as
    often as "12 * 74"; a uniform draw up to 100 would make one-digit numbers one in eleven."""
    if rng.random() < 0.5:
        return rng.randint(1, min(9, top))
    return rng.randint(1, top)


def make_bare_problem(rng: random.Random, options: ArithmeticOptions) -> Problem:
    """A bare question on two numbers ("What is 12 * 7?") answered with one calculator call."""
    op = rng.choice(options.operations)
    a, b = bare_operand(rng, options.max_value), bare_operand(rng, options.max_value)
    if op == "-" and b > a:
        a, b = b, a
    if op == "/":
        b = rng.randint(2, 9)
        a = b * rng.randint(1, max(1, options.max_value // b))
    result = _apply(a, Step("", op, b))
    if rng.random() < 0.25:
        question = f"What is {a} {SPOKEN[op]} {b}?"
    else:
        question = rng.choice(BARE_TEMPLATES).format(a=a, op=op, b=b)
    parts: list[Part] = [
        text_part(f"{a} {op} {b} = "),
        python_part(f"{a}{op}{b}"),
        python_output_part(str(result)),
        text_part(f"{result}.\n#### {result}"),
    ]
    return Problem(
        prompt=[{"role": "user", "content": question}],
        answer=str(result),
        solution={"role": "assistant", "content": parts},
        grader=gsm8k_reward,
        meta={"steps": 1},
    )


def make_problem(rng: random.Random, options: ArithmeticOptions) -> Problem:
    """One problem with its worked answer (text, calculator call, output, ... ``#### N``): a
    word problem, or with probability ``bare_fraction`` a bare question."""
    # drawn only when asked for, so bare_fraction=0 keeps every problem of earlier versions
    if options.bare_fraction > 0 and rng.random() < options.bare_fraction:
        return make_bare_problem(rng, options)
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    value = rng.randint(2, max(2, options.max_value))
    sentences = [f"{name} has {value} {thing}."]
    parts: list[Part] = []
    for _ in range(rng.randint(options.min_steps, options.max_steps)):
        step = _step(rng, value, name, thing, options.operations, options.max_value)
        after = _apply(value, step)
        sentences.append(step.sentence)
        parts.append(text_part(f"{value} {step.op} {step.operand} = "))
        parts.append(python_part(f"{value}{step.op}{step.operand}"))
        parts.append(python_output_part(str(after)))
        parts.append(text_part(f"{after} {thing}.\n"))
        value = after
    sentences.append(f"How many {thing} does {name} have now?")
    parts.append(text_part(f"#### {value}"))
    return Problem(
        prompt=[{"role": "user", "content": " ".join(sentences)}],
        answer=str(value),
        solution={"role": "assistant", "content": parts},
        grader=gsm8k_reward,
        meta={"steps": (len(parts) - 1) // 4},
    )


class Arithmetic(ListDataset):
    """Seeded arithmetic word problems (``problems``; seen as ``chat`` in chat mixtures)."""

    kind = "problems"
    split_names = ("train", "val")

    def __init__(self, options: ArithmeticOptions):
        super().__init__()
        if not 1 <= options.min_steps <= options.max_steps:
            raise DataError("arithmetic: need 1 <= min_steps <= max_steps")
        if not options.operations or set(options.operations) - set("+-*/"):
            raise DataError("arithmetic: operations must be made of + - * /")
        self.name = "arithmetic"
        self.options = options

    def load_split(self, split: str) -> list[Problem]:
        """``train_size`` or ``val_size`` problems, problem ``i`` from seed ``(seed, split, i)``."""
        size = self.options.train_size if split == "train" else self.options.val_size
        seed = self.options.seed
        return [
            make_problem(random.Random(f"{seed}:{split}:{i}"), self.options) for i in range(size)
        ]


def arithmetic(options: ArithmeticOptions) -> Arithmetic:
    """Factory of ``arithmetic``."""
    return Arithmetic(options)
