"""Options of the built-in tools (kept apart so listing them imports nothing else)."""

from __future__ import annotations

from dataclasses import dataclass

from nanochat.core.config import option


@dataclass
class CalculatorOptions:
    """Options of the calculator tool.

    Attributes:
        max_input_chars: longer expressions are refused unread.
        max_depth: deepest nesting of parentheses, signs and powers.
        max_digits: most decimal digits of any number met while evaluating (numerator and
            denominator alike).
        max_exponent: largest magnitude of an exponent (``2**N``) other than of 0, 1 and -1.
        precision: significant digits a result keeps beyond its integer digits (1/3 is
            0.333333333333 with 12); shorter decimals are exact.
        timeout_s: seconds one evaluation may take before it stops with an error.
    """

    max_input_chars: int = option(1000, ge=1, le=1_000_000)
    max_depth: int = option(100, ge=1, le=100)
    max_digits: int = option(1000, ge=1, le=4000)
    max_exponent: int = option(10_000, ge=1, le=1_000_000)
    precision: int = option(12, ge=1, le=100)
    timeout_s: float = option(0.25, gt=0, le=10)
