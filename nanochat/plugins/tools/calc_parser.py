"""The calculator's recursive-descent evaluator, with Python's precedence and exact numbers.

Grammar (values are :class:`fractions.Fraction`, so ``0.1 + 0.2`` is exactly ``0.3``)::

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := ("+" | "-") unary | power
    power   := primary ("**" unary)?          # right-associative; -2**2 == -4
    primary := NUMBER | "(" expr ")" | STRING "." "count" "(" STRING ")"

No names, calls, attributes or other syntax exist. Every recursion passes through ``unary``,
which counts the depth, so nesting is bounded before Python's stack is; every loop checks the
deadline and every result its size.
"""

from __future__ import annotations

from fractions import Fraction

from nanochat.plugins.tools.calc_lexer import Token, tokenize
from nanochat.plugins.tools.calc_limits import CalcError, Limits

STRING_USE = 'a string may only be used as "text".count("x")'


def evaluate(text: str, limits: Limits) -> Fraction:
    """Evaluate the expression ``text`` exactly.

    Args:
        text: the expression.
        limits: the bounds to run under.

    Returns:
        The exact value.

    Raises:
        CalcError: the expression is not allowed, malformed, or breaks a bound.
    """
    tokens = tokenize(text, limits)
    if not tokens:
        raise CalcError("empty expression")
    return _Parser(tokens, limits).parse()


class _Parser:
    """Evaluates a token list while parsing it (no tree is built)."""

    def __init__(self, tokens: list[Token], limits: Limits) -> None:
        self.tokens = tokens
        self.limits = limits
        self.pos = 0
        self.depth = 0

    def parse(self) -> Fraction:
        value = self.expr()
        if self.pos < len(self.tokens):
            raise self.unexpected()
        return value

    # --- helpers ---------------------------------------------------------------------------

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def peek_op(self, *ops: str) -> str | None:
        token = self.peek()
        if token is not None and token.kind == "op" and token.text in ops:
            return token.text
        return None

    def unexpected(self) -> CalcError:
        token = self.peek()
        if token is None:
            return CalcError("unexpected end of expression")
        if token.kind == "name":
            return CalcError(f"names are not allowed: {token.describe()}")
        return CalcError(f"unexpected {token.describe()}")

    def expect_op(self, op: str, context: str) -> None:
        if self.peek_op(op) is None:
            raise CalcError(context)
        self.pos += 1

    # --- grammar ---------------------------------------------------------------------------

    def expr(self) -> Fraction:
        value = self.term()
        while (op := self.peek_op("+", "-")) is not None:
            self.limits.tick()
            self.pos += 1
            right = self.term()
            value = self.limits.bounded(value + right if op == "+" else value - right)
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while (op := self.peek_op("*", "/")) is not None:
            self.limits.tick()
            self.pos += 1
            right = self.unary()
            if op == "*":
                value = self.limits.bounded(value * right)
            elif right == 0:
                raise CalcError("division by zero")
            else:
                value = self.limits.bounded(value / right)
        return value

    def unary(self) -> Fraction:
        self.limits.tick()
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise CalcError(f"expression nested too deeply (at most {self.limits.max_depth})")
        try:
            op = self.peek_op("+", "-")
            if op is None:
                return self.power()
            self.pos += 1
            value = self.unary()
            return -value if op == "-" else value
        finally:
            self.depth -= 1

    def power(self) -> Fraction:
        base = self.primary()
        if self.peek_op("**") is None:
            return base
        self.pos += 1
        exponent = self.unary()
        return self.raise_to(base, exponent)

    def primary(self) -> Fraction:
        token = self.peek()
        if token is None:
            raise self.unexpected()
        if token.kind == "num":
            self.pos += 1
            return token.number
        if token.kind == "str":
            return self.count()
        if token.kind == "op" and token.text == "(":
            self.pos += 1
            value = self.expr()
            self.expect_op(")", f"missing ')' for the '(' at position {token.pos}")
            return value
        raise self.unexpected()

    def count(self) -> Fraction:
        """``"text".count("x")``: the number of non-overlapping occurrences, as in Python."""
        haystack = self.tokens[self.pos].string
        self.pos += 1
        self.expect_op(".", STRING_USE)
        name = self.peek()
        if name is None or name.kind != "name" or name.text != "count":
            raise CalcError(f"{STRING_USE}; .count is the only method")
        self.pos += 1
        self.expect_op("(", STRING_USE)
        needle = self.peek()
        if needle is None or needle.kind != "str":
            raise CalcError(".count takes one string literal")
        self.pos += 1
        self.expect_op(")", ".count takes exactly one argument")
        return Fraction(haystack.count(needle.string))

    def raise_to(self, base: Fraction, exponent: Fraction) -> Fraction:
        """``base ** exponent`` for a whole exponent, refused before it could grow too large."""
        if exponent.denominator != 1:
            raise CalcError("exponents must be whole numbers")
        power = exponent.numerator
        if base == 0:
            if power < 0:
                raise CalcError("division by zero")
            return Fraction(1 if power == 0 else 0)
        if base in (1, -1):
            return Fraction(1) if base == 1 or power % 2 == 0 else Fraction(-1)
        if abs(power) > self.limits.max_exponent:
            raise CalcError(f"exponent too large (at most {self.limits.max_exponent})")
        bits = max(base.numerator.bit_length(), base.denominator.bit_length())
        if (bits - 1) * abs(power) > self.limits.max_bits:
            raise CalcError(f"result too large (more than {self.limits.max_digits} digits)")
        return self.limits.bounded(base**power)
