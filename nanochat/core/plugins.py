"""Loading plugins: our own loop over the ``nanochat`` entry points, one status per plugin.

A plugin that fails to import is recorded as ``failed`` with its exception and one warning line
goes to stderr; everything else keeps working. ``NANOCHAT_STRICT_PLUGINS=1`` makes such a failure
raise instead. ``NANOCHAT_DISABLE_PLUGIN_AUTOLOAD=1`` loads only the built-in distributions;
``-p NAME`` enables one plugin and ``-p no:NAME`` blocks one.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from nanochat.core import hookspecs
from nanochat.core.errors import PluginLoadError, UsageError, did_you_mean

ENTRY_POINT_GROUP = "nanochat"
BUILTIN_DISTRIBUTIONS = frozenset(
    {"nanochat", "nanochat-stages", "nanochat-datasets", "nanochat-evals"}
)
ENV_DISABLE_AUTOLOAD = "NANOCHAT_DISABLE_PLUGIN_AUTOLOAD"
ENV_STRICT = "NANOCHAT_STRICT_PLUGINS"


@dataclass
class PluginInfo:
    """What the core knows about one plugin (an entry point, or an object registered in code)."""

    name: str
    distribution: str | None
    version: str | None
    builtin: bool
    status: str  # loaded | failed | blocked | not-loaded
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used by ``nanochat plugins --json``."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "status": self.status,
            "hooks": sorted(self.hooks),
            "components": sorted(self.components),
            "error": self.error,
        }


def env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is set to a true-ish value."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class PluginSelection:
    """Which plugins to enable or block, from ``-p`` options and the environment."""

    enabled: frozenset[str] = frozenset()
    blocked: frozenset[str] = frozenset()
    autoload: bool = True
    strict: bool = False

    @classmethod
    def from_options(cls, options: Sequence[str] = ()) -> PluginSelection:
        """Build from ``-p NAME`` / ``-p no:NAME`` values and the environment variables."""
        enabled, blocked = set(), set()
        for option in options:
            if option.startswith("no:"):
                blocked.add(option[3:])
                enabled.discard(option[3:])
            else:
                enabled.add(option)
                blocked.discard(option)
        return cls(
            enabled=frozenset(enabled),
            blocked=frozenset(blocked),
            autoload=not env_flag(ENV_DISABLE_AUTOLOAD),
            strict=env_flag(ENV_STRICT),
        )


def create_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with nanochat's hookspecs and no plugin loaded."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    return manager


def hook_names(plugin: object) -> list[str]:
    """Names of the ``@hookimpl``-marked ``nanochat_*`` functions of ``plugin``."""
    names = []
    for name in dir(plugin):
        if not name.startswith("nanochat_"):
            continue
        function = getattr(plugin, name, None)
        if callable(function) and is_hookimpl(function):
            names.append(name)
    return names


def is_hookimpl(function: object) -> bool:
    """Whether ``function`` carries nanochat's ``@hookimpl`` marker."""
    return hasattr(function, f"{hookspecs.PROJECT_NAME}_impl")


def _entry_point_info(ep: EntryPoint) -> tuple[str | None, str | None]:
    dist = ep.dist
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def discover_entry_points() -> list[EntryPoint]:
    """Every entry point of group ``nanochat``, once per name (first on ``sys.path`` wins)."""
    seen: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        seen.setdefault(ep.name, ep)
    return sorted(seen.values(), key=lambda ep: ep.name)


def plugin_failure(
    info: PluginInfo, where: str, exc: BaseException, selection: PluginSelection
) -> None:
    """Mark ``info`` failed because of ``exc`` (raised in ``where``); warn, or raise if strict.

    Raises:
        PluginLoadError: ``selection.strict`` is set.
    """
    message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0] if str(exc) else ""
    message = message or type(exc).__name__
    info.status = "failed"
    info.error = f"{where}: {message}" if where else message
    if selection.strict:
        raise PluginLoadError(f"plugin {info.name!r} failed: {info.error}") from None
    print(
        f"nanochat: warning: plugin {info.name!r} failed ({info.error}); it is skipped",
        file=sys.stderr,
    )


def unknown_hooks(plugin: object) -> list[str]:
    """``nanochat_*`` attributes of ``plugin`` that name no hook (typos), with suggestions."""
    known = set(hookspecs.HOOK_NAMES)
    problems = []
    for name in hook_names(plugin):
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            problems.append(f"{name}" + (f" (did you mean {close[0]}?)" if close else ""))
    return problems


def load_plugins(
    manager: pluggy.PluginManager,
    selection: PluginSelection,
    eps: Iterable[EntryPoint] | None = None,
) -> list[PluginInfo]:
    """Load each entry point allowed by ``selection`` into ``manager``; return every plugin's info.

    A plugin whose import raises anything (``SystemExit`` included; ``KeyboardInterrupt`` is
    passed on), that implements a hook no spec names, or whose hooks take arguments the spec
    does not give, is marked ``failed`` with its error and is not registered.

    Raises:
        PluginLoadError: a plugin failed and ``selection.strict`` is set.
        UsageError: ``-p NAME`` names no installed plugin.
    """
    found = discover_entry_points() if eps is None else list(eps)
    names = [ep.name for ep in found]
    for wanted in sorted(selection.enabled | selection.blocked):
        if wanted not in names:
            hint = did_you_mean(wanted, names)
            raise UsageError(
                f"-p {wanted}: no installed plugin is called {wanted!r}{hint} "
                "(`nanochat plugins --all` lists them)"
            )
    infos: list[PluginInfo] = []
    for ep in found:
        distribution, version = _entry_point_info(ep)
        builtin = (distribution or ep.name) in BUILTIN_DISTRIBUTIONS
        info = PluginInfo(ep.name, distribution, version, builtin, status="not-loaded")
        infos.append(info)
        if ep.name in selection.blocked:
            info.status = "blocked"
            manager.set_blocked(ep.name)
            continue
        if not (builtin or selection.autoload or ep.name in selection.enabled):
            continue
        try:
            plugin = ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a plugin's import failure must be isolated
            plugin_failure(info, "import", exc, selection)
            continue
        register_checked(manager, plugin, info, selection)
    return infos


def register_checked(
    manager: pluggy.PluginManager, plugin: object, info: PluginInfo, selection: PluginSelection
) -> bool:
    """Register ``plugin`` as ``info.name`` after checking its hooks; on a problem mark it failed.

    Returns:
        Whether the plugin is now registered.
    """
    typos = unknown_hooks(plugin)
    if typos:
        plugin_failure(info, "", ValueError(f"unknown hook {', '.join(typos)}"), selection)
        return False
    try:
        register_plugin(manager, plugin, info.name)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - pluggy's validation errors, a raising __init__
        plugin_failure(info, "register", exc, selection)
        return False
    info.status = "loaded"
    info.hooks = hook_names(plugin)
    return True


def register_plugin(manager: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Register a loaded plugin object (module or instance) under ``name``."""
    if isinstance(plugin, ModuleType) or not isinstance(plugin, type):
        manager.register(plugin, name=name)
    else:
        manager.register(plugin(), name=name)


def load_module_plugin(name: str) -> ModuleType:
    """Import a plugin module by dotted name (used for plugins registered in code)."""
    return importlib.import_module(name)
