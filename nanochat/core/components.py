"""Component specs and the contracts each kind of component implements.

A :class:`ComponentSpec` names a component and points at its factory by a ``"module:attr"``
string, so that listing components never imports heavy code (torch). The Protocols below are
what the factories return; the dataset contracts live in :mod:`nanochat.core.data`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from nanochat.core.pipeline import RunContext

COMPONENT_KINDS: tuple[str, ...] = (
    "model",
    "tokenizer",
    "dataset",
    "stage",
    "eval",
    "server",
    "tool",
    "logger",
)


@dataclass
class NoOptions:
    """Options dataclass of a component that takes none."""


@dataclass(frozen=True)
class ComponentSpec:
    """What a plugin registers: a named, lazily created component.

    Attributes:
        kind: one of :data:`COMPONENT_KINDS`.
        name: the short name users type (``pretrain``, ``gsm8k``).
        factory: ``"module:attr"`` of a callable taking an options instance.
        summary: one line for ``nanochat list``.
        options: the options dataclass (defaults are the component's defaults).
        extra: free-form facts about the component (e.g. ``{"data_kind": "chat"}``).
    """

    kind: str
    name: str
    factory: str
    summary: str = ""
    options: type = NoOptions
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in COMPONENT_KINDS:
            raise ValueError(f"unknown component kind {self.kind!r}; expected {COMPONENT_KINDS}")
        if "/" in self.name or ":" in self.name or not self.name:
            raise ValueError(f"invalid component name {self.name!r}: no '/' or ':' allowed")
        if ":" not in self.factory:
            raise ValueError(f"factory {self.factory!r} must be 'module:attr'")
        if not dataclasses.is_dataclass(self.options):
            raise ValueError(f"options of {self.kind}:{self.name} must be a dataclass type")

    def load_factory(self) -> Callable[..., Any]:
        """Import and return the factory callable (this is where heavy imports happen)."""
        module_name, _, attr = self.factory.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


@dataclass(frozen=True)
class Preset:
    """A named bundle of overrides (``stage.key -> value``) that ``--preset`` applies.

    ``overrides`` keys are ``scope.key`` as with ``-o``; ``defaults`` may set ``model`` or
    ``tokenizer`` to choose components.
    """

    name: str
    summary: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class Tokenizer(Protocol):
    """A trained tokenizer: text to ids and back, with named special tokens."""

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        ...

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token name (e.g. ``<|bos|>``) to id."""
        ...

    def encode(self, text: str, allowed_special: str | set[str] | None = None) -> list[int]:
        """Encode one text; special tokens are ids only if allowed (``"all"`` or a set)."""
        ...

    def encode_batch(
        self, texts: list[str], allowed_special: str | set[str] | None = None
    ) -> list[list[int]]:
        """Encode many texts (in parallel where the implementation can)."""
        ...

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text (invalid UTF-8 replaced)."""
        ...

    def token_bytes(self) -> list[int]:
        """Byte length of every id; 0 for special tokens (for bits per byte)."""
        ...

    def save(self, directory: Path) -> None:
        """Write the tokenizer into ``directory``."""
        ...


class TokenizerFactory(Protocol):
    """What a tokenizer spec's factory returns: a way to train and to load tokenizers."""

    def train(
        self,
        texts: Iterable[str],
        vocab_size: int,
        special_tokens: list[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> Tokenizer:
        """Train a tokenizer on ``texts`` up to ``vocab_size`` ids (specials included)."""
        ...

    def load(self, directory: Path) -> Tokenizer:
        """Load a tokenizer saved by :meth:`Tokenizer.save`."""
        ...


class ModelFactory(Protocol):
    """What a model spec's factory returns: builds models from a JSON-serialisable config."""

    def config(self, vocab_size: int) -> dict[str, Any]:
        """The JSON-serialisable config of a model of these options and vocab size."""
        ...

    def build(self, config: dict[str, Any]) -> torch.nn.Module:
        """A new model from ``config`` (as stored in checkpoints)."""
        ...


class Stage(Protocol):
    """A training stage: reads earlier artifacts from the run context, writes its own."""

    def run(self, ctx: RunContext) -> dict[str, Any]:
        """Run (or resume) the stage; return a JSON-serialisable summary of its result."""
        ...


class Evaluator(Protocol):
    """Computes metrics of a model; ``requires_model = False`` for model-free evals."""

    requires_model: bool

    def evaluate(self, ctx: RunContext, model: Any) -> dict[str, float]:
        """Return metric name to value."""
        ...


class Server(Protocol):
    """Serves a run's model (e.g. an HTTP chat server)."""

    def serve(self, ctx: RunContext) -> None:
        """Serve until stopped."""
        ...


class Tool(Protocol):
    """A tool the model can call from generated text (calculator, python)."""

    name: str
    start_token: str
    end_token: str

    def run(self, text: str) -> str:
        """Execute the call safely and return its output as text."""
        ...


class MetricLogger(Protocol):
    """Receives metric records of a run."""

    def start(self, run_dir: Path, run_name: str, config: dict[str, Any]) -> None:
        """Called once before the first record."""
        ...

    def log(self, record: dict[str, Any]) -> None:
        """Receive one record: ``{"stage": ..., "step": ..., "metric": value, ...}``."""
        ...

    def finish(self) -> None:
        """Flush and close."""
        ...
