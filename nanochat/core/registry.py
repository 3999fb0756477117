"""The registry: component specs collected plugin by plugin, and name resolution.

Every component is reachable as ``plugin/name``; a short ``name`` works while exactly one plugin
provides it. Unknown names fail with close matches; ambiguous ones name every provider.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pluggy

from nanochat.core import plugins as plugin_loading
from nanochat.core.components import COMPONENT_KINDS, ComponentSpec, Preset
from nanochat.core.errors import AmbiguousComponentError, UnknownComponentError, UsageError

REGISTRATION_HOOKS: dict[str, str] = {
    "model": "nanochat_register_models",
    "tokenizer": "nanochat_register_tokenizers",
    "dataset": "nanochat_register_datasets",
    "stage": "nanochat_register_stages",
    "eval": "nanochat_register_evals",
    "server": "nanochat_register_servers",
    "tool": "nanochat_register_tools",
    "logger": "nanochat_register_loggers",
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
    """Plugins loaded into a pluggy manager, and the components and presets they registered."""

    def __init__(self, manager: pluggy.PluginManager, plugins: list[plugin_loading.PluginInfo]):
        self.manager = manager
        self.plugins = plugins
        self._by_kind: dict[str, list[Resolved]] = {}
        self._presets: dict[str, tuple[str, Preset]] = {}
        self.collect()

    @classmethod
    def load(cls, plugin_options: Sequence[str] = ()) -> Registry:
        """Load plugins from entry points (honouring ``-p`` options and the environment)."""
        manager = plugin_loading.create_plugin_manager()
        selection = plugin_loading.PluginSelection.from_options(plugin_options)
        infos = plugin_loading.load_plugins(manager, selection)
        return cls(manager, infos)

    def plugin_info(self, name: str) -> plugin_loading.PluginInfo | None:
        """The info of plugin ``name``, if known."""
        return next((p for p in self.plugins if p.name == name), None)

    def collect(self) -> None:
        """(Re)call the registration hooks, plugin by plugin, and index the results."""
        self._by_kind = {kind: [] for kind in COMPONENT_KINDS}
        for info in self.plugins:
            info.components = []
        for kind, hook_name in REGISTRATION_HOOKS.items():
            caller = getattr(self.manager.hook, hook_name)
            for impl in caller.get_hookimpls():
                for spec in impl.function() or []:
                    if spec.kind != kind:
                        raise UsageError(
                            f"plugin {impl.plugin_name!r} returned a {spec.kind} spec "
                            f"from {hook_name}"
                        )
                    self._by_kind[kind].append(Resolved(impl.plugin_name, spec))
                    info = self.plugin_info(impl.plugin_name)
                    if info is not None:
                        info.components.append(f"{kind}:{spec.name}")
        self._presets = {}
        for impl in self.manager.hook.nanochat_register_presets.get_hookimpls():
            for preset in impl.function() or []:
                self._presets.setdefault(preset.name, (impl.plugin_name, preset))

    def register(self, plugin: object, name: str) -> None:
        """Register a plugin object in code (tests, notebooks) and re-collect components."""
        self.manager.register(plugin, name=name)
        info = plugin_loading.PluginInfo(
            name=name,
            distribution=None,
            version=None,
            builtin=False,
            status="loaded",
            hooks=plugin_loading.hook_names(plugin),
        )
        self.plugins.append(info)
        self.collect()

    def unregister(self, name: str) -> None:
        """Remove a plugin registered with :meth:`register` and re-collect components."""
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
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        message = f"unknown {kind} {name!r}"
        if close:
            message += f"; did you mean: {', '.join(close)}?"
        message += f" (run `nanochat list {kind}s` to see them all"
        failed = [p.name for p in self.plugins if p.status == "failed"]
        if failed:
            message += f"; plugins that failed to load: {', '.join(failed)}"
        return message + ")"

    def create(self, kind: str, name: str, options: Any = None) -> Any:
        """Create component ``name`` of ``kind`` with ``options`` (defaults when ``None``)."""
        resolved = self.resolve(kind, name)
        factory = resolved.spec.load_factory()
        return factory(resolved.spec.options() if options is None else options)

    def presets(self) -> dict[str, tuple[str, Preset]]:
        """Preset name to (plugin, preset)."""
        return dict(self._presets)

    def preset(self, name: str) -> Preset:
        """The preset ``name``, or a usage error listing the known ones."""
        if name not in self._presets:
            known = ", ".join(sorted(self._presets)) or "none"
            raise UsageError(f"unknown preset {name!r}; known presets: {known}")
        return self._presets[name][1]


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
