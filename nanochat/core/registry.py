"""The registry: component specs collected plugin by plugin, and name resolution.

Every component is reachable as ``plugin/name``; a short ``name`` works while exactly one plugin
provides it. Unknown names fail with close matches; ambiguous ones name every provider.
"""

from __future__ import annotations

import difflib
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pluggy

from nanochat.core import plugins as plugin_loading
from nanochat.core.components import COMPONENT_KINDS, ComponentSpec, Preset
from nanochat.core.errors import (
    AmbiguousComponentError,
    ComponentLoadError,
    PluginLoadError,
    UnknownComponentError,
    UsageError,
    did_you_mean,
)

REGISTRATION_HOOKS: dict[str, str] = {
    "model": "nanochat_register_models",
    "tokenizer": "nanochat_register_tokenizers",
    "dataset": "nanochat_register_datasets",
    "stage": "nanochat_register_stages",
    "eval": "nanochat_register_evals",
    "server": "nanochat_register_servers",
    "tool": "nanochat_register_tools",
    "logger": "nanochat_register_loggers",
    "template": "nanochat_register_templates",
}

KIND_PLURALS: dict[str, str] = {
    "models": "model",
    "tokenizers": "tokenizer",
    "datasets": "dataset",
    "stages": "stage",
    "evals": "eval",
    "servers": "server",
    "tools": "tool",
    "loggers": "logger",
    "templates": "template",
}


@dataclass(frozen=True)
class Resolved:
    """A spec together with the plugin that provides it."""

    plugin: str
    spec: ComponentSpec

    @property
    def qualified_name(self) -> str:
        """``plugin/name``, the name that always resolves."""
        return f"{self.plugin}/{self.spec.name}"


def normalize_kind(kind: str) -> str:
    """Accept ``stage`` or ``stages``; raise a usage error for anything else."""
    kind = KIND_PLURALS.get(kind, kind)
    if kind not in COMPONENT_KINDS:
        choices = ", ".join(sorted(KIND_PLURALS))
        raise UsageError(f"unknown component kind {kind!r}; choose one of: {choices}")
    return kind


class Registry:
    """Plugins loaded into a pluggy manager, and the components and presets they registered.

    Precedence, the same for every kind and for presets: every provider of a short name stays
    reachable as ``plugin/name``; a short name given by one plugin resolves to it; a short name
    given by several (a built-in included) is reported by ``nanochat list`` and resolving it is
    an error naming every provider. A third-party plugin therefore never shadows a built-in:
    the user chooses one by its full name.
    """

    def __init__(
        self,
        manager: pluggy.PluginManager,
        plugins: list[plugin_loading.PluginInfo],
        selection: plugin_loading.PluginSelection | None = None,
    ):
        self.manager = manager
        self.plugins = plugins
        self.selection = selection or plugin_loading.PluginSelection()
        self._by_kind: dict[str, list[Resolved]] = {}
        self._presets: list[tuple[str, Preset]] = []
        self.collect()

    @classmethod
    def load(cls, plugin_options: Sequence[str] = ()) -> Registry:
        """Load plugins from entry points (honouring ``-p`` options and the environment)."""
        manager = plugin_loading.create_plugin_manager()
        selection = plugin_loading.PluginSelection.from_options(plugin_options)
        infos = plugin_loading.load_plugins(manager, selection)
        return cls(manager, infos, selection)

    def plugin_info(self, name: str) -> plugin_loading.PluginInfo | None:
        """The info of plugin ``name``, if known."""
        return next((p for p in self.plugins if p.name == name), None)

    def collect(self) -> None:
        """(Re)call the registration hooks, plugin by plugin, and index the results.

        A plugin whose registration hook raises or returns anything but a list of valid specs
        of the hook's kind is marked failed (with the hook and the error), unregistered, and
        contributes nothing; strict mode raises instead.
        """
        self._by_kind = {kind: [] for kind in COMPONENT_KINDS}
        self._presets = []
        for name, plugin in list(self.manager.list_name_plugin()):
            if plugin is None or self.manager.is_blocked(name):
                continue
            info = self.plugin_info(name)
            try:
                specs, presets = self._collect_plugin(plugin)
            except _HookFailure as failure:
                self.mark_failed(name, failure.error, failure.hook, collect=False)
                continue
            if info is not None:
                info.components = [f"{r.spec.kind}:{r.spec.name}" for r in specs]
            for item in specs:
                self._by_kind[item.spec.kind].append(Resolved(name, item.spec))
            self._presets += [(name, preset) for preset in presets]

    def _collect_plugin(self, plugin: object) -> tuple[list[Resolved], list[Preset]]:
        specs: list[Resolved] = []
        for kind, hook_name in REGISTRATION_HOOKS.items():
            for spec in _call_registration(plugin, hook_name, ComponentSpec):
                if spec.kind != kind:
                    error = TypeError(f"returned a {spec.kind} spec ({spec.name!r})")
                    raise _HookFailure(hook_name, error)
                specs.append(Resolved("", spec))
        presets = _call_registration(plugin, "nanochat_register_presets", Preset)
        return specs, presets

    def mark_failed(
        self, name: str, exc: BaseException, where: str = "", collect: bool = True
    ) -> None:
        """Mark plugin ``name`` failed because of ``exc`` and drop it (strict mode: raise).

        Raises:
            PluginLoadError: strict plugin loading is on.
        """
        info = self.plugin_info(name)
        if info is None:
            info = plugin_loading.PluginInfo(name, None, None, False, "loaded")
            self.plugins.append(info)
        if self.manager.has_plugin(name):
            self.manager.unregister(name=name)
        info.components = []
        plugin_loading.plugin_failure(info, where, exc, self.selection)
        if collect:
            self.collect()

    def call_isolated(self, hook_name: str, **kwargs: Any) -> None:
        """Call hook ``hook_name`` on every plugin, one at a time.

        The rule for a hook implementation that raises: the plugin is named in one warning line
        and the caller carries on (a run is not stopped by an observer); with
        ``NANOCHAT_STRICT_PLUGINS=1`` it raises :class:`PluginLoadError` naming the plugin.
        """
        for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
            args = {k: v for k, v in kwargs.items() if k in impl.argnames}
            try:
                impl.function(**args)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - isolate a plugin's broken hook
                message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
                if self.selection.strict:
                    raise PluginLoadError(
                        f"plugin {impl.plugin_name!r} failed in {hook_name}: {message}"
                    ) from exc
                print(
                    f"nanochat: warning: plugin {impl.plugin_name!r} failed in {hook_name} "
                    f"({message}); carrying on",
                    file=sys.stderr,
                )

    def register(self, plugin: object, name: str) -> None:
        """Register a plugin object in code (tests, notebooks) and re-collect components.

        A plugin with a hook no spec names, or with a broken registration hook, is recorded as
        failed like an installed one.
        """
        info = plugin_loading.PluginInfo(name, None, None, False, "not-loaded")
        self.plugins.append(info)
        plugin_loading.register_checked(self.manager, plugin, info, self.selection)
        self.collect()

    def unregister(self, name: str) -> None:
        """Remove a plugin registered with :meth:`register` and re-collect components."""
        if self.manager.has_plugin(name):
            self.manager.unregister(name=name)
        self.plugins = [p for p in self.plugins if p.name != name]
        self.collect()

    @contextmanager
    def temporary_plugin(self, plugin: object, name: str) -> Iterator[None]:
        """Register ``plugin`` for the duration of a ``with`` block."""
        self.register(plugin, name)
        try:
            yield
        finally:
            self.unregister(name)

    def components(self, kind: str) -> list[Resolved]:
        """Every component of ``kind``, in plugin order."""
        return list(self._by_kind[normalize_kind(kind)])

    def ambiguous_names(self, kind: str) -> dict[str, list[str]]:
        """Short names given by more than one plugin, with the providing plugins."""
        providers: dict[str, list[str]] = {}
        for item in self.components(kind):
            providers.setdefault(item.spec.name, []).append(item.plugin)
        return {name: plugins for name, plugins in providers.items() if len(plugins) > 1}

    def resolve(self, kind: str, name: str) -> Resolved:
        """Find the component ``name`` (short or ``plugin/name``) of ``kind``.

        Raises:
            UnknownComponentError: nothing of that name; the message lists close matches.
            AmbiguousComponentError: a short name given by several plugins.
        """
        kind = normalize_kind(kind)
        items = self._by_kind[kind]
        if "/" in name:
            plugin, _, short = name.partition("/")
            matches = [i for i in items if i.plugin == plugin and i.spec.name == short]
        else:
            matches = [i for i in items if i.spec.name == name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            providers = " and ".join(m.qualified_name for m in matches)
            raise AmbiguousComponentError(
                f"{kind} name {name!r} is ambiguous: it is provided by {providers}; "
                "use the full plugin/name"
            )
        raise UnknownComponentError(self._unknown_message(kind, name, items))

    def _unknown_message(self, kind: str, name: str, items: list[Resolved]) -> str:
        candidates = sorted({i.spec.name for i in items} | {i.qualified_name for i in items})
        message = f"unknown {kind} {name!r}" + did_you_mean(name, candidates)
        message += f" (run `nanochat list {kind}s` to see them all"
        failed = [p.name for p in self.plugins if p.status == "failed"]
        if failed:
            message += f"; plugins that failed to load: {', '.join(failed)}"
        return message + ")"

    def create(self, kind: str, name: str, options: Any = None) -> Any:
        """Create component ``name`` of ``kind`` with ``options`` (defaults when ``None``).

        Raises:
            ComponentLoadError: the factory cannot be imported or raised while creating.
        """
        resolved = self.resolve(kind, name)
        return create_component(resolved, options)

    def presets(self) -> dict[str, tuple[str, Preset]]:
        """Every preset by the name that selects it: short when unique, else ``plugin/name``."""
        counts: dict[str, int] = {}
        for _, preset in self._presets:
            counts[preset.name] = counts.get(preset.name, 0) + 1
        return {
            (preset.name if counts[preset.name] == 1 else f"{plugin}/{preset.name}"): (
                plugin,
                preset,
            )
            for plugin, preset in self._presets
        }

    def preset(self, name: str) -> Preset:
        """The preset ``name`` (short or ``plugin/name``), with the same precedence as components.

        Raises:
            UsageError: unknown (close matches listed) or ambiguous (providers named).
        """
        if "/" in name:
            plugin, _, short = name.partition("/")
            matches = [(p, x) for p, x in self._presets if p == plugin and x.name == short]
        else:
            matches = [(p, x) for p, x in self._presets if x.name == name]
        if len(matches) == 1:
            return matches[0][1]
        if len(matches) > 1:
            providers = " and ".join(f"{p}/{x.name}" for p, x in matches)
            raise AmbiguousComponentError(
                f"preset name {name!r} is ambiguous: it is provided by {providers}; "
                "use the full plugin/name"
            )
        known = sorted(self.presets())
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean: {', '.join(close)}? " if close else ""
        raise UsageError(
            f"unknown preset {name!r}; {hint}known presets: {', '.join(known) or 'none'}"
        )


class _HookFailure(Exception):
    """A plugin's hook raised or returned something invalid."""

    def __init__(self, hook: str, error: BaseException):
        super().__init__(hook)
        self.hook = hook
        self.error = error


def _call_registration(plugin: object, hook_name: str, item_type: type) -> list[Any]:
    """Call ``plugin``'s registration hook (if it has one); its result checked as a list of
    ``item_type``.

    Raises:
        _HookFailure: the hook raised (anything but KeyboardInterrupt) or returned garbage.
    """
    function = getattr(plugin, hook_name, None)
    if function is None or not plugin_loading.is_hookimpl(function):
        return []
    try:
        value = function()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - isolate a plugin's broken hook
        raise _HookFailure(hook_name, exc) from exc
    if value is None:
        raise _HookFailure(hook_name, TypeError("returned None instead of a list"))
    if not isinstance(value, list | tuple):
        error = TypeError(f"returned {type(value).__name__} instead of a list")
        raise _HookFailure(hook_name, error)
    for item in value:
        if not isinstance(item, item_type):
            error = TypeError(
                f"returned a list holding {type(item).__name__}, not {item_type.__name__}"
            )
            raise _HookFailure(hook_name, error)
    return list(value)


def create_component(resolved: Resolved, options: Any = None) -> Any:
    """Create the component of ``resolved`` with ``options`` (its defaults when None).

    Raises:
        ComponentLoadError: the factory cannot be imported (the message names the plugin).
    """
    try:
        factory = resolved.spec.load_factory()
    except ComponentLoadError as exc:
        raise ComponentLoadError(f"plugin {resolved.plugin!r}: {exc}") from exc
    return factory(resolved.spec.options() if options is None else options)


_lock = threading.Lock()
_current: Registry | None = None
_current_options: tuple[str, ...] = ()


def configure(plugin_options: Sequence[str]) -> None:
    """Set the ``-p`` options used by :func:`get_registry` (drops a registry already built)."""
    global _current, _current_options
    with _lock:
        _current_options = tuple(plugin_options)
        _current = None


def get_registry() -> Registry:
    """The process-wide registry, loading plugins on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = Registry.load(_current_options)
        return _current
