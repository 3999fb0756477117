"""How the calculator writes an exact result: ``5``, ``2.5``, ``0.333333333333``."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction


def format_number(value: Fraction, precision: int) -> str:
    """Write ``value`` in plain decimal notation.

    Integers are written in full. Other values are rounded (half to even) to as many significant
    digits as their integer part has plus ``precision``, and trailing zeros are dropped: a short
    decimal such as ``2.5`` is exact, ``1/3`` reads ``0.333333333333`` and ``4/3`` reads
    ``1.333333333333`` with ``precision=12``.

    Args:
        value: the exact result.
        precision: significant digits kept beyond the integer digits.

    Returns:
        The number as text, without an exponent.
    """
    if value.denominator == 1:
        return str(value.numerator)
    whole = abs(value.numerator) // value.denominator
    whole_digits = len(str(whole)) if whole else 0
    with localcontext() as ctx:
        ctx.prec = whole_digits + precision
        ctx.rounding = ROUND_HALF_EVEN
        decimal = Decimal(value.numerator) / Decimal(value.denominator)
    text = format(decimal, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
