"""The calculator tool: exact arithmetic and ``"text".count("x")``, with its own parser.

The model writes an expression between ``<|python_start|>`` and ``<|python_end|>``; the engine
passes the text in between to :meth:`Calculator.run` and shows the answer to the model. The
expression is never given to ``eval``: :mod:`nanochat.plugins.tools.calc_parser` understands
numbers, ``+ - * / **`` (also ``×`` and ``÷``), parentheses and ``.count`` on string literals,
and nothing else. Failures come back as text starting with ``error:``; ``run`` never raises.
"""

from __future__ import annotations

from nanochat.core.special_tokens import PYTHON_END, PYTHON_START
from nanochat.plugins.tools.calc_format import format_number
from nanochat.plugins.tools.calc_limits import CalcError, Limits
from nanochat.plugins.tools.calc_parser import evaluate
from nanochat.plugins.tools.options import CalculatorOptions


class Calculator:
    """A :class:`~nanochat.core.components.Tool` evaluating arithmetic safely.

    Attributes:
        name: ``"calculator"``.
        start_token: the special token that opens a call (``<|python_start|>``).
        end_token: the special token that closes it (``<|python_end|>``).
        options: the bounds and output precision.
    """

    name = "calculator"
    start_token = PYTHON_START
    end_token = PYTHON_END

    def __init__(self, options: CalculatorOptions | None = None) -> None:
        """Create the tool.

        Args:
            options: the calculator's options; defaults when ``None``.
        """
        self.options = options if options is not None else CalculatorOptions()

    def run(self, text: str) -> str:
        """Evaluate the expression ``text`` and return its value, or an error text.

        Args:
            text: what the model wrote between the start and end tokens.

        Returns:
            The result (``"5"``, ``"2.5"``) or ``"error: ..."``; never raises.
        """
        opts = self.options
        if not isinstance(text, str):
            return "error: the expression must be text"
        if len(text) > opts.max_input_chars:
            return f"error: input too long ({len(text)} characters, at most {opts.max_input_chars})"
        limits = Limits(
            max_depth=opts.max_depth,
            max_digits=opts.max_digits,
            max_exponent=opts.max_exponent,
            timeout_s=opts.timeout_s,
        )
        try:
            return format_number(evaluate(text, limits), opts.precision)
        except CalcError as exc:
            return f"error: {exc}"
        except RecursionError:
            return "error: expression nested too deeply"
        except Exception as exc:  # a bug must not reach the model's caller as an exception
            return f"error: cannot evaluate ({type(exc).__name__})"
