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
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

if TYPE_CHECKING:
    from nanochat.core.checkpoint import CheckpointManager
    from nanochat.core.models import Model, ModelFactory
    from nanochat.core.registry import Registry
    from nanochat.core.runtime import Runtime

COMPONENT_KINDS: tuple[str, ...] = (
    "model",
    "tokenizer",
    "dataset",
    "stage",
    "eval",
    "server",
    "tool",
    "logger",
    "template",
)


ARTIFACT_KINDS: tuple[str, ...] = ("model", "chat", "tokenizer")


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
        produces: what a stage leaves in the run for later stages and commands: ``"model"``
            (checkpoints holding a model: "the newest model of a run" is looked for among the
            stages that declare it), ``"chat"`` (that model follows the chat format: what
            ``nanochat chat`` and the server look for) and/or ``"tokenizer"``.
    """

    kind: str
    name: str
    factory: str
    summary: str = ""
    options: type = NoOptions
    extra: Mapping[str, Any] = field(default_factory=dict)
    produces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in COMPONENT_KINDS:
            raise ValueError(f"unknown component kind {self.kind!r}; expected {COMPONENT_KINDS}")
        if "/" in self.name or ":" in self.name or not self.name:
            raise ValueError(f"invalid component name {self.name!r}: no '/' or ':' allowed")
        if ":" not in self.factory:
            raise ValueError(f"factory {self.factory!r} must be 'module:attr'")
        if not isinstance(self.options, type) or not dataclasses.is_dataclass(self.options):
            raise ValueError(f"options of {self.kind}:{self.name} must be a dataclass type")
        unknown = [p for p in self.produces if p not in ARTIFACT_KINDS]
        if isinstance(self.produces, str) or unknown:
            raise ValueError(
                f"produces of {self.kind}:{self.name} must be a tuple of {ARTIFACT_KINDS}"
            )

    def load_factory(self) -> Callable[..., Any]:
        """Import and return the factory callable (this is where heavy imports happen).

        Raises:
            ComponentLoadError: the module cannot be imported or has no such attribute.
        """
        from nanochat.core.errors import ComponentLoadError

        module_name, _, attr = self.factory.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except ImportError as exc:
            raise ComponentLoadError(
                f"{self.kind} {self.name!r}: cannot import its factory {self.factory!r} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        except AttributeError:
            raise ComponentLoadError(
                f"{self.kind} {self.name!r}: factory {self.factory!r} does not exist"
            ) from None
        if not callable(obj):
            raise ComponentLoadError(f"{self.kind} {self.name!r}: {self.factory!r} is not callable")
        return cast(Callable[..., Any], obj)


@dataclass(frozen=True)
class Preset:
    """A named bundle of overrides (``stage.key -> value``) that ``--preset`` applies.

    ``overrides`` keys are ``scope.key`` as with ``-o``; ``defaults`` may set ``model`` or
    ``tokenizer`` to choose components. ``stages`` is the pipeline ``nanochat speedrun`` runs
    with this preset (stage names and ``eval:NAME`` as on ``nanochat run``), and ``estimates``
    the seconds each of them takes on the hardware the preset is for (for the time left).
    """

    name: str
    summary: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, str] = field(default_factory=dict)
    stages: tuple[str, ...] = ()
    estimates: Mapping[str, float] = field(default_factory=dict)


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


class RunContext(Protocol):
    """What a stage, an evaluator or a server sees of its run (the core's context implements it).

    Components read earlier artifacts through it (the tokenizer, the newest model, another
    stage's checkpoints) and never build paths into the run themselves.
    """

    evaluated_checkpoint: Any
    """While an evaluator runs: the checkpoint whose model it was given (else None)."""

    @property
    def run_name(self) -> str:
        """The run's name."""
        ...

    @property
    def run_dir(self) -> Path:
        """The run's folder."""
        ...

    @property
    def stage_name(self) -> str:
        """This component's folder and ``-o`` scope in the run."""
        ...

    @property
    def stage_dir(self) -> Path:
        """This component's own folder (created on first use)."""
        ...

    @property
    def options(self) -> Any:
        """This component's options dataclass, overrides applied."""
        ...

    @property
    def registry(self) -> Registry:
        """The registry (to open datasets or other components by name)."""
        ...

    @property
    def runtime(self) -> Runtime:
        """Device, dtype and process group (created on first use; imports torch)."""
        ...

    @property
    def is_main(self) -> bool:
        """True on the process that writes shared files (rank 0)."""
        ...

    @property
    def checkpoints(self) -> CheckpointManager:
        """This component's own checkpoints."""
        ...

    def stage_checkpoints(self, stage: str) -> CheckpointManager:
        """The checkpoints of another stage of the run (by its scope name)."""
        ...

    def stage_finished(self, stage: str) -> bool:
        """Whether stage ``stage`` of this run has finished."""
        ...

    def tokenizer_factory(self) -> TokenizerFactory:
        """The run's tokenizer plugin (to train a tokenizer)."""
        ...

    def save_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Save ``tokenizer`` as the run's tokenizer, recording the plugin that made it."""
        ...

    def load_tokenizer(self) -> Tokenizer:
        """The run's trained tokenizer, loaded by the plugin that made it."""
        ...

    def model_factory(self, checkpoint: Any = None) -> ModelFactory:
        """The model plugin that made ``checkpoint``, else the run's (to build and optimize)."""
        ...

    def model_record(self) -> dict[str, Any]:
        """What a checkpoint must record of the model plugin: name, plugin and version."""
        ...

    def load_model(self, checkpoint: Any) -> Model:
        """The model saved in ``checkpoint``, built by the plugin recorded in it (CPU)."""
        ...

    def newest_model_checkpoint(self, artifact: str = "model", stages: Any = None) -> Any:
        """The newest checkpoint of the run's stages that produce ``artifact`` (``model`` or
        ``chat``), or of the stage scopes ``stages``."""
        ...

    def choose_checkpoint(self, source: str | None, artifact: str = "chat") -> Any:
        """The newest ``artifact`` checkpoint, or the newest checkpoint of the model stage that
        ``source`` names (a scope or a unique prefix: ``sft``, ``mid``)."""
        ...

    def open_dataset(self, ref: str, kind: str | None = None) -> Any:
        """The dataset ``ref`` names, with the run's ``-o DATASET.KEY=...`` options applied."""
        ...

    def log(self, **record: Any) -> None:
        """Emit a metric record tagged with this component's stage."""
        ...


class Stage(Protocol):
    """A training stage: reads earlier artifacts from the run context, writes its own."""

    def run(self, ctx: RunContext) -> dict[str, Any]:
        """Run (or resume) the stage; return a JSON-serialisable summary of its result."""
        ...


class Evaluator(Protocol):
    """Computes metrics of a model; ``requires_model = False`` for model-free evals."""

    requires_model: bool

    def evaluate(self, ctx: RunContext, model: Model | None) -> dict[str, float]:
        """Return metric name to value (``model`` is the run's newest model, on the CPU)."""
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
