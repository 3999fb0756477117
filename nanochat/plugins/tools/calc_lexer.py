"""The calculator's tokenizer: numbers, string literals, operators and (refused later) names.

Only ASCII digits, the operators ``+ - * / ** ( ) . ,`` (with ``×``, ``÷`` and the minus sign
``−`` as spellings of ``*``, ``/`` and ``-``), quoted strings with the escapes ``\\\\ \\' \\"
\\n \\t`` and plain whitespace are understood; any other character is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from nanochat.plugins.tools.calc_limits import CalcError, Limits

DIGITS = frozenset("0123456789")
WHITESPACE = frozenset(" \t\r\n")
OPERATORS = {
    "+": "+",
    "-": "-",
    "\u2212": "-",
    "*": "*",
    "\u00d7": "*",
    "/": "/",
    "\u00f7": "/",
    "(": "(",
    ")": ")",
    ".": ".",
    ",": ",",
}
ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}


@dataclass(frozen=True)
class Token:
    """One token of an expression.

    Attributes:
        kind: ``"num"``, ``"str"``, ``"name"`` or ``"op"``.
        text: the operator (canonical spelling), the name, or the source of a literal.
        pos: where it starts in the expression.
        number: the value of a ``"num"`` token.
        string: the value of a ``"str"`` token.
    """

    kind: str
    text: str
    pos: int
    number: Fraction = Fraction(0)
    string: str = ""

    def describe(self) -> str:
        """How error messages name this token."""
        shown = self.text if len(self.text) <= 20 else self.text[:20] + "..."
        return f"{shown!r} at position {self.pos}"


def _is_name_start(ch: str) -> bool:
    return ch.isidentifier()


def _is_name_part(ch: str) -> bool:
    return ("a" + ch).isidentifier()


def tokenize(text: str, limits: Limits) -> list[Token]:
    """Split ``text`` into tokens.

    Args:
        text: the expression.
        limits: the evaluation's bounds (digits of a literal, the deadline).

    Returns:
        The tokens in order.

    Raises:
        CalcError: an unknown character, a malformed number or string, or the time is up.
    """
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        limits.tick()
        ch = text[i]
        if ch in WHITESPACE:
            i += 1
        elif ch in DIGITS or (ch == "." and i + 1 < n and text[i + 1] in DIGITS):
            token, i = _number(text, i, limits)
            tokens.append(token)
        elif ch in "'\"":
            token, i = _string(text, i, limits)
            tokens.append(token)
        elif ch == "*" and text.startswith("**", i):
            tokens.append(Token("op", "**", i))
            i += 2
        elif ch in OPERATORS:
            tokens.append(Token("op", OPERATORS[ch], i))
            i += 1
        elif _is_name_start(ch):
            start = i
            while i < n and _is_name_part(text[i]):
                i += 1
            tokens.append(Token("name", text[start:i], start))
        else:
            raise CalcError(f"unexpected character {ch!r} at position {i}")
    return tokens


def _number(text: str, start: int, limits: Limits) -> tuple[Token, int]:
    """Read ``123``, ``1.5``, ``.5`` or ``2.`` at ``start``; return it and the next position."""
    i, n = start, len(text)
    while i < n and text[i] in DIGITS:
        i += 1
    whole = text[start:i]
    fraction = ""
    if i < n and text[i] == ".":
        i += 1
        begin = i
        while i < n and text[i] in DIGITS:
            i += 1
        fraction = text[begin:i]
    if i < n and (_is_name_part(text[i]) or text[i] == "."):
        raise CalcError(f"malformed number at position {start}")
    if len(whole) + len(fraction) > limits.max_digits:
        raise CalcError(f"number too long at position {start} (at most {limits.max_digits} digits)")
    value = Fraction(int(whole + fraction or "0"), 10 ** len(fraction))
    return Token("num", text[start:i], start, number=value), i


def _string(text: str, start: int, limits: Limits) -> tuple[Token, int]:
    """Read a quoted string at ``start``; return it and the position after its closing quote."""
    quote = text[start]
    out: list[str] = []
    i, n = start + 1, len(text)
    while True:
        limits.tick()
        if i >= n or text[i] in "\r\n":
            raise CalcError(f"unterminated string at position {start}")
        ch = text[i]
        if ch == quote:
            break
        if ch == "\\":
            if i + 1 >= n:
                raise CalcError(f"unterminated string at position {start}")
            escape = text[i + 1]
            if escape not in ESCAPES:
                shown = text[i : i + 2]
                raise CalcError(f"unsupported escape {shown!r} at position {i}")
            out.append(ESCAPES[escape])
            i += 2
        else:
            out.append(ch)
            i += 1
    return Token("str", text[start : i + 1], start, string="".join(out)), i + 1
