"""Options: ``-o scope.key=value`` overrides applied to options dataclasses, with type checking.

A scope is a stage name in the pipeline (``pretrain``), or ``model``, ``tokenizer`` or a logger
name. Values arrive as strings from the command line (or as Python values from presets) and are
converted to the field's declared type; a wrong type is a one-line usage error.

Options dataclasses declare each field's allowed values with :func:`option` (a
``dataclasses.field`` carrying an :class:`OptionSpec`); :func:`validate_options` checks a final
options instance against them (and refuses NaN and infinities everywhere unless a field allows
them), so a bad value is a one-line usage error before a run writes anything.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from nanochat.core.errors import UsageError, did_you_mean

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

#: The key of a field's ``metadata`` under which :func:`option` stores its :class:`OptionSpec`.
OPTION_METADATA_KEY = "nanochat.option"

RUN_NAME_MAX_LENGTH = 100
_RUN_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """What values a field of an options dataclass accepts, and its one-line doc.

    Attributes:
        doc: one line for ``nanochat show`` (else the class docstring's ``Attributes:`` entry).
        ge: the value must be ``>=`` this (numbers; every item of a list or tuple).
        gt: the value must be ``>`` this.
        le: the value must be ``<=`` this.
        lt: the value must be ``<`` this.
        choices: the value must be one of these.
        allow_nonfinite: accept NaN and infinities (refused by default).
    """

    doc: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    allow_nonfinite: bool = False

    def describe(self) -> str:
        """The allowed values in words, e.g. ``>= 0``, ``0 <= x <= 1``, ``one of: a, b``.

        An empty string when nothing is declared.
        """
        parts: list[str] = []
        if self.choices is not None:
            parts.append("one of: " + ", ".join(str(c) if c != "" else "''" for c in self.choices))
        low = ("<=", self.ge) if self.ge is not None else ("<", self.gt)
        high = ("<=", self.le) if self.le is not None else ("<", self.lt)
        if low[1] is not None and high[1] is not None:
            parts.append(f"{_number_text(low[1])} {low[0]} x {high[0]} {_number_text(high[1])}")
        elif low[1] is not None:
            parts.append(f"{low[0].replace('<', '>')} {_number_text(low[1])}")
        elif high[1] is not None:
            parts.append(f"{high[0]} {_number_text(high[1])}")
        return "; ".join(parts)


def _number_text(value: float) -> str:
    """A bound as typed: ``0``, ``0.5``, ``1_000_000``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return f"{value:_}" if isinstance(value, int) and abs(value) >= 100_000 else str(value)


_NO_SPEC = OptionSpec()


def option(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Callable[[], Any] | None = None,
    doc: str = "",
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    allow_nonfinite: bool = False,
) -> Any:
    """A dataclass field of an options dataclass, with its allowed values and one-line doc.

    ``max_steps: int = option(0, ge=0, doc="0: derived from the data")`` declares that
    ``pretrain.max_steps`` takes integers ``>= 0``. :func:`validate_options` enforces the
    declaration and ``nanochat show`` prints it. NaN and infinities are refused unless
    ``allow_nonfinite`` is set.

    Args:
        default: the default value (give this or ``default_factory``).
        default_factory: a callable making the default (for lists and other mutable values).
        doc: one line describing the option.
        ge: inclusive lower bound.
        gt: exclusive lower bound.
        le: inclusive upper bound.
        lt: exclusive upper bound.
        choices: the allowed values.
        allow_nonfinite: accept NaN and infinities.

    Returns:
        A ``dataclasses.field`` whose metadata holds the :class:`OptionSpec`.
    """
    spec = OptionSpec(
        doc=doc,
        ge=ge,
        gt=gt,
        le=le,
        lt=lt,
        choices=tuple(choices) if choices is not None else None,
        allow_nonfinite=allow_nonfinite,
    )
    metadata = {OPTION_METADATA_KEY: spec}
    if default_factory is not None:
        if default is not dataclasses.MISSING:
            raise ValueError("give option() a default or a default_factory, not both")
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_spec(options_type: type, name: str) -> OptionSpec:
    """The :class:`OptionSpec` of field ``name`` (an empty spec when it declares none)."""
    for f in dataclasses.fields(options_type):
        if f.name == name:
            spec = f.metadata.get(OPTION_METADATA_KEY)
            return spec if isinstance(spec, OptionSpec) else _NO_SPEC
    raise KeyError(name)


def _check_value(value: Any, spec: OptionSpec, where: str) -> None:
    """Raise a usage error when one scalar ``value`` breaks ``spec``."""
    allowed = spec.describe()
    if spec.choices is not None and value not in spec.choices:
        raise UsageError(f"{where}={value!r} is not allowed: expected {allowed}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value) and not spec.allow_nonfinite:
        expected = f"a finite number ({allowed})" if allowed else "a finite number"
        raise UsageError(f"{where}={value} is not allowed: expected {expected}")
    low_ok = (spec.ge is None or value >= spec.ge) and (spec.gt is None or value > spec.gt)
    high_ok = (spec.le is None or value <= spec.le) and (spec.lt is None or value < spec.lt)
    if not (low_ok and high_ok):
        raise UsageError(f"{where}={value} is out of range: expected {allowed}")


def _check_items(value: Any, spec: OptionSpec, where: str) -> None:
    """Check ``value``, or each item of a list or tuple ``value``, against ``spec``."""
    for item in value if isinstance(value, list | tuple) else [value]:
        _check_value(item, spec, where)


def validate_options(options: Any, scope: str) -> None:
    """Check every field of the dataclass ``options`` against its declared :func:`option` spec.

    Numbers must lie in their declared bounds, values with ``choices`` must be one of them, and
    floats must be finite unless the field allows otherwise (this applies to fields declared
    without :func:`option` too). Items of list and tuple values are checked one by one;
    ``None`` is accepted where the type allows it.

    Args:
        options: an options dataclass instance (the final options of a component).
        scope: the ``-o`` scope its values are set under, used in messages (``pretrain``).

    Raises:
        UsageError: one line naming ``scope.field``, the value and the allowed range.
    """
    for f in dataclasses.fields(options):
        spec = f.metadata.get(OPTION_METADATA_KEY)
        spec = spec if isinstance(spec, OptionSpec) else _NO_SPEC
        value = getattr(options, f.name)
        if value is None:
            continue
        _check_items(value, spec, f"option {scope}.{f.name}")


def check_run_name(run_name: str) -> str:
    """Return ``run_name`` if it is a valid run name, else raise a usage error.

    A run name is a folder name: letters, digits, ``-``, ``_`` and ``.``, not starting with
    ``.``, at most :data:`RUN_NAME_MAX_LENGTH` characters.

    Raises:
        UsageError: the name breaks that rule (the message states it).
    """
    if len(run_name) <= RUN_NAME_MAX_LENGTH and _RUN_NAME.fullmatch(run_name):
        return run_name
    raise UsageError(
        f"invalid run name {run_name!r}: use letters, digits, '-', '_' or '.', not starting "
        f"with '.', at most {RUN_NAME_MAX_LENGTH} characters"
    )


def parse_override(text: str) -> tuple[str, str, str]:
    """Split ``scope.key=value`` into its three parts.

    Raises:
        UsageError: the text is not of that form.
    """
    target, sep, value = text.partition("=")
    scope, dot, key = target.strip().partition(".")
    if not sep or not dot or not scope or not key:
        raise UsageError(
            f"bad override {text!r}: expected SCOPE.KEY=VALUE, e.g. pretrain.max_steps=100"
        )
    return scope, key, value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def convert_value(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (a string from the CLI, or a Python value) to type ``tp``.

    Raises:
        UsageError: the value cannot be read as ``tp``; the message names ``where`` and the type.
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or str(value).lower() in {"none", "null", ""}):
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert_value(value, arg, where)
            except UsageError as exc:
                errors.append(str(exc))
        names = " or ".join(_type_name(a) for a in args)
        raise UsageError(f"{where}: expected {names}, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if str(value) == str(choice):
                return choice
        raise UsageError(f"{where}: expected one of {', '.join(map(str, choices))}, got {value!r}")
    if origin in (list, tuple) or tp in (list, tuple):
        args = typing.get_args(tp)
        item_type = args[0] if args else str
        items = (
            value
            if isinstance(value, list | tuple)
            else [v for v in str(value).split(",") if v.strip()]
        )
        converted = [
            convert_value(v.strip() if isinstance(v, str) else v, item_type, where) for v in items
        ]
        return converted if (origin or tp) is list else tuple(converted)
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise UsageError(f"{where}: expected bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UsageError(f"{where}: expected int, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            try:
                as_float = float(str(value))
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
            raise UsageError(f"{where}: expected int, got {value!r}") from None
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value))
        except ValueError:
            raise UsageError(f"{where}: expected float, got {value!r}") from None
    if tp is str:
        return str(value)
    if tp is Any:
        return value
    raise UsageError(f"{where}: options of type {_type_name(tp)} cannot be set from the CLI")


def option_fields(options_type: type) -> dict[str, Any]:
    """Field name to resolved type hint of an options dataclass."""
    hints = typing.get_type_hints(options_type)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(options_type)}


def apply_overrides(options: Any, overrides: Mapping[str, Any], scope: str) -> Any:
    """A copy of the dataclass ``options`` with ``overrides`` (key -> value) applied and checked.

    Each value is converted to the field's type and checked against its declared range (see
    :func:`option`), so a bad value fails here even for a scope that is not part of the run.

    Raises:
        UsageError: an unknown key (close matches listed), a value of the wrong type, or one
            outside its declared range.
    """
    fields = option_fields(type(options))
    changes = {}
    for key, raw in overrides.items():
        if key not in fields:
            hint = did_you_mean(key, fields)
            known = ", ".join(fields) or "none"
            raise UsageError(f"unknown option {scope}.{key}{hint} (options of {scope}: {known})")
        value = convert_value(raw, fields[key], f"option {scope}.{key}")
        if value is not None:
            _check_items(value, option_spec(type(options), key), f"option {scope}.{key}")
        changes[key] = value
    return dataclasses.replace(options, **changes)


def group_overrides(
    items: Iterable[tuple[str, str, Any]], known_scopes: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Group ``(scope, key, value)`` triples by scope; reject scopes that match nothing.

    Raises:
        UsageError: a scope that names no stage or component of this run.
    """
    known = list(known_scopes)
    grouped: dict[str, dict[str, Any]] = {}
    for scope, key, value in items:
        if scope not in known:
            hint = did_you_mean(scope, known)
            raise UsageError(
                f"override {scope}.{key}: {scope!r} is not part of this run{hint} "
                f"(scopes: {', '.join(known)})"
            )
        grouped.setdefault(scope, {})[key] = value
    return grouped


def options_to_dict(options: Any) -> dict[str, Any]:
    """A JSON-friendly dict of an options dataclass."""
    return dataclasses.asdict(options)


def options_from_dict(options_type: type, values: Mapping[str, Any]) -> Any:
    """Rebuild an options dataclass from :func:`options_to_dict` output (unknown keys ignored)."""
    fields = option_fields(options_type)
    kwargs = {
        k: convert_value(v, fields[k], f"{options_type.__name__}.{k}")
        for k, v in values.items()
        if k in fields
    }
    return options_type(**kwargs)
