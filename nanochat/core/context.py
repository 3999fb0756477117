"""The run context: what a stage, evaluator or server sees of its run (the core's
:class:`~nanochat.core.components.RunContext`).

It hands out the run's artifacts by what made them, never by built-in names: the tokenizer is
loaded by the plugin recorded when it was saved; a checkpoint's model is built by the model
plugin recorded in the checkpoint; "the newest model of a run" is the newest checkpoint among
the stages whose specs declare ``produces=("model",)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanochat.core.checkpoint import Checkpoint, CheckpointManager, read_json, write_json_atomic
from nanochat.core.components import Tokenizer, TokenizerFactory
from nanochat.core.data import Dataset
from nanochat.core.errors import StageError, UnknownComponentError, UsageError
from nanochat.core.plan import RunPlan, StageEntry
from nanochat.core.registry import Registry, Resolved, create_component
from nanochat.core.rundir import DONE_FILE, read_run_record

if TYPE_CHECKING:
    from nanochat.core.metrics import Metrics
    from nanochat.core.models import Model, ModelFactory
    from nanochat.core.runtime import Runtime

TOKENIZER_DIR = "tokenizer"
MADE_BY_FILE = "made_by.json"


class RunContext:
    """The context of one stage (or evaluator) of a run.

    Args:
        plan: the run's plan.
        registry: the loaded plugins.
        run_dir: the run's folder.
        entry: the stage this context is for.
        metrics: where :meth:`log` sends records.
        runtime: an existing runtime (under torchrun), else one is created on first use.
    """

    def __init__(
        self,
        plan: RunPlan,
        registry: Registry,
        run_dir: Path,
        entry: StageEntry | None,
        metrics: Metrics,
        runtime: Runtime | None = None,
    ):
        self.plan = plan
        self._registry = registry
        self._run_dir = run_dir
        self.entry = entry
        self.metrics = metrics
        self._runtime = runtime
        self.evaluated_checkpoint: Checkpoint | None = None  # set while an evaluator runs

    @property
    def registry(self) -> Registry:
        """The loaded plugins."""
        return self._registry

    @property
    def run_name(self) -> str:
        """The run's name."""
        return self.plan.run_name

    @property
    def run_dir(self) -> Path:
        """The run's folder."""
        return self._run_dir

    @property
    def stage_name(self) -> str:
        """This stage's folder and ``-o`` scope name (``run`` for a context of no stage)."""
        return self.entry.scope if self.entry is not None else "run"

    @property
    def options(self) -> Any:
        """This stage's options dataclass, overrides applied (None without a stage)."""
        return self.entry.options if self.entry is not None else None

    @property
    def stage_dir(self) -> Path:
        """This stage's own folder (created on first use)."""
        path = self.run_dir / self.stage_name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def runtime(self) -> Runtime:
        """The runtime (created on first use; imports torch)."""
        if self._runtime is None:
            from nanochat.core.runtime import init_runtime

            self._runtime = init_runtime(self.plan.device)
        return self._runtime

    @property
    def runtime_if_created(self) -> Runtime | None:
        """The runtime if some stage created one, without creating it."""
        return self._runtime

    @property
    def is_main(self) -> bool:
        """True on the process that writes shared files (rank 0)."""
        return self._runtime is None or self._runtime.is_main

    @property
    def checkpoints(self) -> CheckpointManager:
        """This stage's checkpoints."""
        return CheckpointManager(self.stage_dir / "checkpoints")

    def stage_checkpoints(self, stage: str) -> CheckpointManager:
        """The checkpoints of another stage of this run (by its scope name)."""
        return CheckpointManager(self.run_dir / stage / "checkpoints")

    def stage_finished(self, stage: str) -> bool:
        """Whether stage ``stage`` of this run has finished."""
        return (self.run_dir / stage / DONE_FILE).is_file()

    def open_dataset(self, ref: str, kind: str | None = None) -> Dataset:
        """The dataset (or mixture) ``ref`` names, with the run's ``-o DATASET.KEY=...``
        options applied, and this stage's own ``-o STAGE.DATASET.KEY=...`` in their place.

        Raises:
            DataError: a malformed reference or a dataset of the wrong kind.
        """
        from nanochat.core.data_refs import open_dataset

        return open_dataset(
            ref, self.registry, kind=kind, dataset_options=self.plan.datasets_for(self.stage_name)
        )

    def log(self, **record: Any) -> None:
        """Emit a metric record tagged with this stage."""
        self.metrics.log({"stage": self.stage_name, **record})

    # --- the tokenizer -------------------------------------------------------------------

    def _component_record(self, resolved: Resolved) -> dict[str, Any]:
        info = self.registry.plugin_info(resolved.plugin)
        return {
            "name": resolved.spec.name,
            "plugin": resolved.plugin,
            "qualified_name": resolved.qualified_name,
            "version": info.version if info else None,
        }

    def tokenizer_factory(self) -> TokenizerFactory:
        """The run's tokenizer plugin, created with the run's tokenizer options.

        Raises:
            StageError: no tokenizer plugin is installed or selected.
        """
        if self.plan.tokenizer is None:
            raise StageError("no tokenizer plugin is selected or installed; pass --tokenizer NAME")
        factory: TokenizerFactory = create_component(
            self.plan.tokenizer, self.plan.tokenizer_options
        )
        return factory

    def save_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Save ``tokenizer`` as the run's tokenizer and record the plugin that made it."""
        if self.plan.tokenizer is None:
            raise StageError("no tokenizer plugin is selected or installed; pass --tokenizer NAME")
        directory = self.run_dir / TOKENIZER_DIR
        directory.mkdir(parents=True, exist_ok=True)
        tokenizer.save(directory)
        write_json_atomic(directory / MADE_BY_FILE, self._component_record(self.plan.tokenizer))

    def tokenizer_record(self) -> dict[str, Any] | None:
        """Which plugin made the run's tokenizer (None if the run has no tokenizer yet)."""
        path = self.run_dir / TOKENIZER_DIR / MADE_BY_FILE
        if path.is_file():
            record: dict[str, Any] = read_json(path, "tokenizer record")
            return record
        if (self.run_dir / TOKENIZER_DIR).is_dir() and self.plan.tokenizer is not None:
            return self._component_record(self.plan.tokenizer)
        return None

    def load_tokenizer(self) -> Tokenizer:
        """The run's trained tokenizer, loaded by the plugin that made it.

        Raises:
            StageError: the run has no tokenizer yet, its plugin is missing, or ``--tokenizer``
                names another plugin than the one that made it.
        """
        record = self.tokenizer_record()
        if record is None:
            raise StageError(
                f"run {self.run_name!r} has no tokenizer yet; run the `tokenizer` stage first"
            )
        resolved = self._recorded(
            "tokenizer", record, self.plan.tokenizer, self.plan.tokenizer_explicit, "tokenizer"
        )
        options = self.plan.tokenizer_options if resolved == self.plan.tokenizer else None
        factory: TokenizerFactory = create_component(resolved, options)
        return factory.load(self.run_dir / TOKENIZER_DIR)

    def _recorded(
        self,
        kind: str,
        record: dict[str, Any],
        chosen: Resolved | None,
        explicit: bool,
        what: str,
    ) -> Resolved:
        """The component a record names; an explicit choice that differs is an error."""
        name = str(record.get("qualified_name") or record.get("name"))
        try:
            resolved = self.registry.resolve(kind, name)
        except UnknownComponentError:
            version = record.get("version")
            made = f"{name}" + (f" {version}" if version else "")
            raise StageError(
                f"the {what} of run {self.run_name!r} was made by {kind} plugin {made}, which is "
                "not installed"
            ) from None
        if explicit and chosen is not None and chosen != resolved:
            raise StageError(
                f"--{kind} {chosen.qualified_name} does not match the {what} of run "
                f"{self.run_name!r}, made by {resolved.qualified_name}; drop --{kind} or use "
                "a new run"
            )
        return resolved

    # --- models --------------------------------------------------------------------------

    def model_factory(self, checkpoint: Checkpoint | None = None) -> ModelFactory:
        """The model plugin that made ``checkpoint`` (its record), else the run's model plugin;
        created with the run's model options when it is the run's plugin.

        Raises:
            StageError: no model plugin is installed or selected, the recorded one is missing,
                or ``--model`` names another one than the checkpoint records.
        """
        record = checkpoint.meta.get("model") if checkpoint is not None else None
        if isinstance(record, dict) and checkpoint is not None:
            what = f"checkpoint {checkpoint.path.parent.parent.name}/{checkpoint.path.name}"
            resolved = self._recorded(
                "model", record, self.plan.model, self.plan.model_explicit, what
            )
        elif self.plan.model is not None:
            resolved = self.plan.model
        else:
            raise StageError("no model plugin is selected or installed; pass --model NAME")
        options = self.plan.model_options if resolved == self.plan.model else None
        factory: ModelFactory = create_component(resolved, options)
        return factory

    def model_record(self) -> dict[str, Any]:
        """The model plugin and tokenizer plugin a checkpoint made now must record."""
        if self.plan.model is None:
            raise StageError("no model plugin is selected or installed; pass --model NAME")
        return {
            "model": self._component_record(self.plan.model),
            "tokenizer": self.tokenizer_record(),
        }

    def load_model(self, checkpoint: Checkpoint) -> Model:
        """The model saved in ``checkpoint`` (on the CPU), built by the plugin it records.

        Raises:
            StageError: the recorded plugin is missing, or ``--model`` names another one.
        """
        meta = checkpoint.meta
        if "model_config" not in meta:
            raise StageError(f"checkpoint {checkpoint.path} holds no model (no model_config)")
        factory = self.model_factory(checkpoint)
        model = factory.build(meta["model_config"])
        model.load_state_dict(checkpoint.model_state())
        return model

    def model_stages(self, artifact: str = "model") -> list[str]:
        """Scopes of this run's stages that produce ``artifact`` (``model`` or ``chat``), from
        the plan and the run record."""
        scopes = [e.scope for e in self.plan.stages if artifact in e.produces]
        record = read_run_record(self.run_dir) or {}
        for stage in record.get("stages", []):
            if artifact in stage.get("produces", []) and stage.get("scope") not in scopes:
                scopes.append(stage["scope"])
        return scopes

    def newest_model_checkpoint(
        self, artifact: str = "model", stages: list[str] | None = None
    ) -> Checkpoint:
        """The newest checkpoint (by when it was written) of the stages that produce
        ``artifact`` (or of ``stages``).

        Raises:
            StageError: no such stage of the run has a checkpoint.
        """
        found: list[tuple[int, Checkpoint]] = []
        for scope in self.model_stages(artifact) if stages is None else stages:
            manager = self.stage_checkpoints(scope)
            checkpoint = manager.latest()
            if checkpoint is not None:
                written = (checkpoint.path / "meta.json").stat().st_mtime_ns
                found.append((written, checkpoint))
        if not found:
            if artifact == "chat":
                raise StageError(
                    f"run {self.run_name!r} has no chat model yet; run a chat stage (e.g. "
                    "`midtrain` or `sft`) first, or choose a stage with --source"
                )
            raise StageError(
                f"run {self.run_name!r} has no model checkpoint yet; run a training stage "
                "(e.g. `pretrain`) first"
            )
        return max(found, key=lambda pair: pair[0])[1]

    def choose_checkpoint(self, source: str | None, artifact: str = "chat") -> Checkpoint:
        """The newest ``artifact`` checkpoint, or the newest checkpoint of the model stage that
        ``source`` names (a scope or a unique prefix: ``sft``, ``mid``).

        Raises:
            StageError: nothing matches (the message lists the run's model stages).
            UsageError: ``source`` matches several stages.
        """
        if source is None:
            return self.newest_model_checkpoint(artifact)
        stages = self.model_stages("model")
        matches = [s for s in stages if s == source] or [s for s in stages if s.startswith(source)]
        if len(matches) > 1:
            raise UsageError(f"--source {source} matches several stages: {', '.join(matches)}")
        if not matches:
            known = ", ".join(stages) or "none yet"
            raise StageError(
                f"run {self.run_name!r} has no model stage {source!r} (its model stages: {known})"
            )
        return self.newest_model_checkpoint(stages=matches)

    def newest_model(self) -> Model:
        """The run's newest model (see :meth:`newest_model_checkpoint`), on the CPU."""
        return self.load_model(self.newest_model_checkpoint())
