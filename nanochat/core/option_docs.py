"""What a component's options are, for people: types, defaults, allowed values and docs.

``nanochat show KIND NAME`` prints :func:`describe_component`. A field's one-line doc comes from
its :func:`nanochat.core.config.option` metadata, else from the ``Attributes:`` section of the
options dataclass's docstring (or of a base class's). :func:`validate_plan` checks every final
option set of a planned run against the declared ranges.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from typing import TYPE_CHECKING, Any

from nanochat.core import config as cfg

if TYPE_CHECKING:
    from nanochat.core.plan import RunPlan
    from nanochat.core.registry import Registry, Resolved

_ATTRIBUTE_LINE = re.compile(r"(\w+)(?:\s*\([^)]*\))?\s*:\s*(.*)")


def docstring_attributes(docstring: str | None) -> dict[str, str]:
    """The ``name: text`` entries of a Google-style ``Attributes:`` section, one line each.

    Continuation lines (indented deeper than the entry) are joined to their entry.
    """
    if not docstring:
        return {}
    lines = inspect.cleandoc(docstring).splitlines()
    docs: dict[str, str] = {}
    inside = False
    entry_indent: int | None = None
    current: str | None = None
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not inside:
            inside = stripped == "Attributes:"
            continue
        if not stripped:
            current = None
            continue
        if entry_indent is None:
            entry_indent = indent
        if indent < entry_indent:
            break
        match = _ATTRIBUTE_LINE.fullmatch(stripped)
        if indent == entry_indent and match:
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif indent > entry_indent and current is not None:
            docs[current] = f"{docs[current]} {stripped}".strip()
        else:
            break
    return docs


def field_docs(options_type: type) -> dict[str, str]:
    """Field name to one-line doc (empty when undocumented) of an options dataclass.

    The :func:`~nanochat.core.config.option` ``doc`` wins; else the first class in the MRO whose
    docstring's ``Attributes:`` section names the field.
    """
    sections = [docstring_attributes(klass.__doc__) for klass in options_type.__mro__]
    docs: dict[str, str] = {}
    for f in dataclasses.fields(options_type):
        doc = cfg.option_spec(options_type, f.name).doc
        if not doc:
            doc = next((s[f.name] for s in sections if s.get(f.name)), "")
        docs[f.name] = doc
    return docs


def type_name(tp: Any) -> str:
    """A type hint as written in source: ``int``, ``int | None``, ``list[str]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in typing.get_args(tp)) + "]"
    if origin is not None:
        args = ", ".join(type_name(arg) for arg in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def describe_options(options_type: type) -> list[dict[str, Any]]:
    """One dict per field: ``name``, ``type``, ``default``, ``range`` and ``doc``.

    ``range`` is the declared allowed values in words (``>= 0``), empty when none is declared.
    """
    hints = cfg.option_fields(options_type)
    docs = field_docs(options_type)
    return [
        {
            "name": f.name,
            "type": type_name(hints[f.name]),
            "default": _default(f),
            "range": cfg.option_spec(options_type, f.name).describe(),
            "doc": docs[f.name],
        }
        for f in dataclasses.fields(options_type)
    ]


def option_scope(kind: str, name: str) -> str | None:
    """The ``-o`` scope of a component's options, or None when ``-o`` cannot set them."""
    if kind == "stage":
        return name
    if kind == "eval":
        return f"eval-{name}"
    if kind in ("model", "tokenizer"):
        return kind
    if kind in ("logger", "template"):
        return name
    return None


def describe_component(registry: Registry, resolved: Resolved) -> dict[str, Any]:
    """Everything ``nanochat show`` prints about one component, JSON-friendly."""
    spec = resolved.spec
    plugin = next((p for p in registry.plugins if p.name == resolved.plugin), None)
    return {
        "kind": spec.kind,
        "name": spec.name,
        "qualified_name": resolved.qualified_name,
        "plugin": resolved.plugin,
        "plugin_version": plugin.version if plugin else None,
        "summary": spec.summary,
        "factory": spec.factory,
        "options_class": f"{spec.options.__module__}.{spec.options.__qualname__}",
        "scope": option_scope(spec.kind, spec.name),
        "extra": dict(spec.extra),
        "options": describe_options(spec.options),
    }


def format_component(info: dict[str, Any]) -> list[str]:
    """The lines ``nanochat show`` prints for :func:`describe_component` output."""
    version = f" {info['plugin_version']}" if info["plugin_version"] else ""
    lines = [
        f"{info['kind']} {info['qualified_name']}",
        f"  summary: {info['summary'] or '-'}",
        f"  plugin:  {info['plugin']}{version}",
        f"  factory: {info['factory']}",
    ]
    lines += [f"  {key}: {value}" for key, value in sorted(info["extra"].items())]
    options = info["options"]
    if not options:
        lines.append("  options: none")
        return lines
    how = f"; set with -o {info['scope']}.KEY=VALUE" if info["scope"] else ""
    lines.append(f"  options ({info['options_class'].rsplit('.', 1)[-1]}{how}):")
    width = max(len(o["name"]) for o in options)
    type_width = max(len(o["type"]) for o in options)
    for o in options:
        allowed = f"  [{o['range']}]" if o["range"] else ""
        lines.append(
            f"    {o['name']:<{width}}  {o['type']:<{type_width}}  = {o['default']!r}{allowed}"
        )
        if o["doc"]:
            lines.append(f"    {'':<{width}}  {o['doc']}")
    return lines


def validate_plan(plan: RunPlan) -> None:
    """Check a planned run before it writes anything: its name and every final option set.

    Raises:
        UsageError: a bad run name, or an option outside its declared range (one line naming
            ``scope.key`` and the range).
    """
    cfg.check_run_name(plan.run_name)
    for entry in plan.stages:
        cfg.validate_options(entry.options, entry.scope)
    if plan.model is not None:
        cfg.validate_options(plan.model_options, "model")
    if plan.tokenizer is not None:
        cfg.validate_options(plan.tokenizer_options, "tokenizer")
    for resolved, options in plan.loggers:
        cfg.validate_options(options, resolved.spec.name)
    for name, options in plan.dataset_options.items():
        cfg.validate_options(options, name)
    for scope, by_name in plan.stage_dataset_options.items():
        for name, options in by_name.items():
            cfg.validate_options(options, f"{scope}.{name}")
