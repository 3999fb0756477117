"""The bounds one calculator evaluation runs under, and the error it stops with."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from fractions import Fraction


class CalcError(Exception):
    """An expression the calculator refuses or cannot evaluate (the text is shown to the model)."""


@dataclass
class Limits:
    """Bounds of one evaluation; create one per call so that the deadline starts then.

    Attributes:
        max_depth: deepest nesting of parentheses, signs and powers.
        max_digits: most decimal digits of any numerator or denominator.
        max_exponent: largest exponent magnitude (bases 0, 1 and -1 excepted).
        timeout_s: seconds from creation until :meth:`tick` raises.
    """

    max_depth: int
    max_digits: int
    max_exponent: int
    timeout_s: float
    deadline: float = field(init=False)
    max_bits: int = field(init=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout_s
        self.max_bits = math.ceil(self.max_digits * math.log2(10))

    def tick(self) -> None:
        """Raise when the evaluation has run past its deadline.

        Raises:
            CalcError: the time is up.
        """
        if time.monotonic() > self.deadline:
            raise CalcError("took too long")

    def bounded(self, value: Fraction) -> Fraction:
        """Return ``value`` when its numerator and denominator fit in ``max_digits`` digits.

        Args:
            value: a result just computed.

        Returns:
            ``value`` itself.

        Raises:
            CalcError: the number is too large (or too finely divided).
        """
        bits = max(value.numerator.bit_length(), value.denominator.bit_length())
        if bits > self.max_bits:
            raise CalcError(f"result too large (more than {self.max_digits} digits)")
        return value
