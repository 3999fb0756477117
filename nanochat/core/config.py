"""Options: ``-o scope.key=value`` overrides applied to options dataclasses, with type checking.

A scope is a stage name in the pipeline (``pretrain``), or ``model``, ``tokenizer`` or a logger
name. Values arrive as strings from the command line (or as Python values from presets) and are
converted to the field's declared type; a wrong type is a one-line usage error.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from nanochat.core.errors import UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_override(text: str) -> tuple[str, str, str]:
    """Split ``scope.key=value`` into its three parts.

    Raises:
        UsageError: the text is not of that form.
    """
    target, sep, value = text.partition("=")
    scope, dot, key = target.strip().partition(".")
    if not sep or not dot or not scope or not key:
        raise UsageError(
            f"bad override {text!r}: expected SCOPE.KEY=VALUE, e.g. pretrain.steps=100"
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

    Raises:
        UsageError: an unknown key (close matches listed) or a value of the wrong type.
    """
    fields = option_fields(type(options))
    changes = {}
    for key, raw in overrides.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.5)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            known = ", ".join(fields) or "none"
            raise UsageError(f"unknown option {scope}.{key}{hint} (options of {scope}: {known})")
        changes[key] = convert_value(raw, fields[key], f"option {scope}.{key}")
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
            close = difflib.get_close_matches(scope, known, n=3, cutoff=0.5)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
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
