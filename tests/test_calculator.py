"""The calculator tool: escape attempts fail fast with an error text; arithmetic is exact."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from nanochat.core.components import Tool
from nanochat.core.registry import Registry
from nanochat.core.special_tokens import PYTHON_END, PYTHON_START
from nanochat.plugins.tools.calc_format import format_number
from nanochat.plugins.tools.calculator import Calculator
from nanochat.plugins.tools.options import CalculatorOptions

CALC = Calculator()

# (attempt, a word its error text must contain)
ESCAPES = [
    ("__import__('os')", "names are not allowed"),
    ("__import__('os').system('ls')", "names are not allowed"),
    ("().__class__", "unexpected"),
    ("().__class__.__bases__[0].__subclasses__()", "unexpected"),
    ("(1).__class__", "unexpected"),
    ("1 .real", "unexpected"),
    ("'a'.__class__", ".count is the only method"),
    ("'a'.upper()", ".count is the only method"),
    ("'a'.count", "string may only be used"),
    ("'a'.count('a', 0)", "exactly one argument"),
    ("'a'.count('a',)", "exactly one argument"),
    ("'a'.count(1)", "one string literal"),
    ("'a'.count()", "one string literal"),
    ("'a' + 'b'", "string may only be used"),
    ("'a' * 3", "string may only be used"),
    ("lambda: 1", "unexpected character ':'"),
    ("[x for x in (1, 2)]", "unexpected character '['"),
    ("{x: 1 for x in (1, 2)}", "unexpected character '{'"),
    ("{x for x in (1, 2)}", "unexpected character '{'"),
    ("(x for x in (1, 2))", "names are not allowed"),
    ("9**9**9", "exponent too large"),
    ("10**100000", "exponent too large"),
    ("(2**64)**(2**64)", "exponent too large"),
    ("2**3400", "result too large"),
    ("7**2000", "result too large"),
    ("(10**500)*(10**600)", "result too large"),
    ("0.5**4000", "result too large"),
    ("10**-1500", "result too large"),
    ("99999!", "unexpected character '!'"),
    ("factorial(10**6)", "names are not allowed"),
    ("1" * 10_000_000, "input too long"),
    ("(" * 10_000 + "1" + ")" * 10_000, "input too long"),
    ("(" * 400 + "1" + ")" * 400, "nested too deeply"),
    ("-" * 500 + "1", "nested too deeply"),
    ("2**" * 300 + "1", "nested too deeply"),
    ("x", "names are not allowed"),
    ("open", "names are not allowed"),
    ("open('/etc/passwd').read()", "names are not allowed"),
    ("f'{1+1}'", "names are not allowed"),
    ("b'a'.count(b'a')", "names are not allowed"),
    ("r'\\n'.count('n')", "names are not allowed"),
    ("'\\x41'.count('A')", "unsupported escape"),
    ("'\\u0041'.count('A')", "unsupported escape"),
    ("'\\N{DIGIT ONE}'.count('1')", "unsupported escape"),
    ("'\\101'.count('A')", "unsupported escape"),
    ("'a\\", "unterminated string"),
    ("'abc", "unterminated string"),
    ("'a\nb'.count('a')", "unterminated string"),
    ("\\\n1", "unexpected character"),
    ("ｏｐｅｎ('x')", "names are not allowed"),
    ("еval('1')", "names are not allowed"),  # a Cyrillic "е"
    ("１+１", "unexpected character"),  # fullwidth digits
    ("1 ＋ 1", "unexpected character"),  # fullwidth plus
    ("٣+1", "unexpected character"),  # an Arabic-Indic digit
    ("1\u00a0+1", "unexpected character"),  # a no-break space
    ("1; 2", "unexpected character ';'"),
    ("1 if 1 else 2", "names are not allowed"),
    ("a := 1", "unexpected character ':'"),
    ("1e400", "malformed number"),
    ("0x10", "malformed number"),
    ("1_000", "malformed number"),
    ("1j", "malformed number"),
    ("1.2.3", "malformed number"),
    ("1 // 2", "unexpected '/'"),
    ("7 % 2", "unexpected character '%'"),
    ("1 << 2", "unexpected character '<'"),
    ("(1)(2)", "unexpected '('"),
    ("1, 2", "unexpected ','"),
    ("(1, 2)", "missing ')'"),
    ("((1)", "missing ')'"),
    ("1)", "unexpected ')'"),
    ("()", "unexpected ')'"),
    ("", "empty expression"),
    ("  \n ", "empty expression"),
    ("1 +", "unexpected end"),
    ("1/0", "division by zero"),
    ("1/(2-2)", "division by zero"),
    ("0**-1", "division by zero"),
    ("2**0.5", "whole numbers"),
    ("2**(1/2)", "whole numbers"),
    ("9" * 1200, "input too long"),
]


@pytest.mark.parametrize(("attempt", "needle"), ESCAPES, ids=[f"e{i}" for i in range(len(ESCAPES))])
def test_escape_attempt_is_an_error_text_quickly(attempt: str, needle: str) -> None:
    start = time.perf_counter()
    out = CALC.run(attempt)
    elapsed = time.perf_counter() - start
    assert out.startswith("error: "), (attempt[:60], out)
    assert needle in out, (attempt[:60], out)
    assert elapsed < 0.5, (attempt[:60], elapsed)
    assert "\n" not in out and len(out) < 200


def test_the_escape_table_is_large() -> None:
    assert len(ESCAPES) >= 30


# (expression, exact answer)
ARITHMETIC = [
    ("2+3", "5"),
    ("10/4", "2.5"),
    ("1/3", "0.333333333333"),
    ("2/3", "0.666666666667"),
    ("1000000/3", "333333.333333333333"),
    ("-1/3", "-0.333333333333"),
    ("2 + 3 * 4", "14"),
    ("(2 + 3) * 4", "20"),
    ("10 - 4 - 3", "3"),
    ("100 / 10 / 5", "2"),
    ("2 ** 3 ** 2", "512"),
    ("(2 ** 3) ** 2", "64"),
    ("-2 ** 2", "-4"),
    ("(-2) ** 2", "4"),
    ("2 ** -1", "0.5"),
    ("2 ** -2 ** 2", "0.0625"),
    ("-3", "-3"),
    ("--3", "3"),
    ("-+-3", "3"),
    ("+5", "5"),
    ("3 - -3", "6"),
    ("0.1 + 0.2", "0.3"),
    ("1.5 * 4", "6"),
    (".5 + 5.", "5.5"),
    ("3.14159 * 2", "6.28318"),
    ("0.000001 * 3", "0.000003"),
    ("6 × 7", "42"),
    ("84 ÷ 2", "42"),
    ("10 − 4", "6"),
    ("2 ** 100", "1267650600228229401496703205376"),
    ("12345678901234567890 * 98765432109876543210", "1219326311370217952237463801111263526900"),
    ("(1/3) * 3", "1"),
    ("1 ** 1000000000", "1"),
    ("(-1) ** 1000000001", "-1"),
    ("0 ** 0", "1"),
    ("0 ** 5", "0"),
    ("1/(10**20)", "0.00000000000000000001"),
    ("(10**20 + 1) / 2", "50000000000000000000.5"),
    ("'strawberry'.count('r')", "3"),
    ('"strawberry".count("r")', "3"),
    ("'banana'.count('an')", "2"),
    ("'aaaa'.count('aa')", "2"),
    ("'abc'.count('')", "4"),
    ("'it\\'s'.count(\"'\")", "1"),
    ('"a\\"b\\"".count("\\"")', "2"),
    ("'a\\nb\\tc\\\\'.count('\\n') + 'a\\tb'.count('\\t')", "2"),
    ("'汉字汉'.count('汉') * 10", "20"),
    ("( 'xx'.count('x') + 1 ) ** 2", "9"),
    ("  7  \n", "7"),
]


@pytest.mark.parametrize(("expression", "expected"), ARITHMETIC)
def test_arithmetic_is_exact(expression: str, expected: str) -> None:
    assert CALC.run(expression) == expected


def test_formatting_rounds_past_the_integer_part() -> None:
    assert format_number(Fraction(1, 3), 3) == "0.333"
    assert format_number(Fraction(2, 3), 3) == "0.667"
    assert format_number(Fraction(-7, 2), 5) == "-3.5"
    assert format_number(Fraction(4, 3), 12) == "1.333333333333"
    assert format_number(Fraction(3001, 3000), 6) == "1.000333"
    assert format_number(Fraction(10**30), 2) == str(10**30)
    assert format_number(Fraction(1, 8), 1) == "0.1"  # 0.125 -> half to even on 1 digit


def test_options_change_the_bounds() -> None:
    short = Calculator(CalculatorOptions(max_input_chars=5))
    assert short.run("1+2+3") == "6"
    assert short.run("1+2+34").startswith("error: input too long")
    shallow = Calculator(CalculatorOptions(max_depth=3))
    assert shallow.run("((1))") == "1"
    assert shallow.run("(((1)))").startswith("error: expression nested too deeply")
    narrow = Calculator(CalculatorOptions(max_digits=10))
    assert narrow.run("10**9") == "1000000000"
    assert narrow.run("10**11").startswith("error: result too large")
    assert narrow.run("1" * 11).startswith("error: number too long")
    assert Calculator(CalculatorOptions(max_exponent=3)).run("2**4").startswith("error: exponent")
    assert Calculator(CalculatorOptions(max_exponent=3)).run("2**3") == "8"
    assert Calculator(CalculatorOptions(precision=3)).run("1/3") == "0.333"


def test_deep_nesting_with_a_long_input_allowed_stays_an_error_text() -> None:
    # a deadline far beyond the check, so that a loaded machine cannot turn it into "took too long"
    wide = Calculator(CalculatorOptions(max_input_chars=1_000_000, max_depth=100, timeout_s=10))
    text = "(" * 10_000 + "1" + ")" * 10_000
    start = time.perf_counter()
    out = wide.run(text)
    assert out.startswith("error: expression nested too deeply"), out
    assert time.perf_counter() - start < 2.0  # bounded, with room for a loaded CI machine
    assert wide.run("(" * 99 + "1" + ")" * 99) == "1"


def test_deadline_stops_a_long_evaluation() -> None:
    slow = Calculator(CalculatorOptions(max_input_chars=1_000_000, timeout_s=0.01))
    text = "+".join(["(1/7)"] * 60_000)
    start = time.perf_counter()
    out = slow.run(text)
    assert out == "error: took too long", out
    assert time.perf_counter() - start < 2.0  # reading 60,000 terms included, on a loaded machine


def test_run_never_raises_on_odd_input() -> None:
    assert CALC.run(None).startswith("error:")  # type: ignore[arg-type]
    assert CALC.run(b"1+1").startswith("error:")  # type: ignore[arg-type]
    assert CALC.run("\x00").startswith("error: unexpected character")


def test_registered_and_satisfies_the_tool_protocol() -> None:
    registry = Registry.load()
    tool = registry.create("tool", "calculator")
    assert isinstance(tool, Calculator)
    typed: Tool = tool
    assert typed.name == "calculator"
    assert (typed.start_token, typed.end_token) == (PYTHON_START, PYTHON_END)
    assert typed.run("6*7") == "42"
    for attribute in ("name", "start_token", "end_token", "run"):
        assert hasattr(tool, attribute)
    spec = registry.resolve("tool", "calculator").spec
    assert spec.options is CalculatorOptions
