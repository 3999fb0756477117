"""The hooks of nanochat: every contract between the core and a plugin.

Registration hooks are called once, when the registry is built, and return a list of
:class:`~nanochat.core.components.ComponentSpec` (or presets); the core calls them plugin by
plugin so that it knows which plugin gave each component. Broadcast hooks are called on every
plugin while a run goes on; their return values are ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from nanochat.core.components import ComponentSpec, Preset

PROJECT_NAME = "nanochat"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def nanochat_register_models() -> list[ComponentSpec]:
    """Return the model specs this plugin provides (kind ``model``).

    Called once when the registry is built. A model factory takes the model's options
    dataclass and returns a :class:`~nanochat.core.models.ModelFactory`.
    """
    return []


@hookspec
def nanochat_register_tokenizers() -> list[ComponentSpec]:
    """Return the tokenizer specs this plugin provides (kind ``tokenizer``).

    Called once when the registry is built. A tokenizer factory takes the options dataclass and
    returns a :class:`~nanochat.core.components.TokenizerFactory` (train or load).
    """
    return []


@hookspec
def nanochat_register_datasets() -> list[ComponentSpec]:
    """Return the dataset specs this plugin provides (kind ``dataset``).

    Called once when the registry is built. ``spec.extra["data_kind"]`` says which of the five
    dataset kinds (``text``, ``chat``, ``problems``, ``preferences``, ``choices``) it yields.
    """
    return []


@hookspec
def nanochat_register_stages() -> list[ComponentSpec]:
    """Return the training-stage specs this plugin provides (kind ``stage``).

    Called once when the registry is built. A stage factory takes the options dataclass and
    returns a :class:`~nanochat.core.components.Stage`.
    """
    return []


@hookspec
def nanochat_register_evals() -> list[ComponentSpec]:
    """Return the evaluator specs this plugin provides (kind ``eval``).

    Called once when the registry is built. An eval factory takes the options dataclass and
    returns an :class:`~nanochat.core.components.Evaluator`.
    """
    return []


@hookspec
def nanochat_register_servers() -> list[ComponentSpec]:
    """Return the server specs this plugin provides (kind ``server``).

    Called once when the registry is built. A server factory takes the options dataclass and
    returns a :class:`~nanochat.core.components.Server`.
    """
    return []


@hookspec
def nanochat_register_tools() -> list[ComponentSpec]:
    """Return the tool specs this plugin provides (kind ``tool``), e.g. a calculator.

    Called once when the registry is built. A tool factory takes the options dataclass and
    returns a :class:`~nanochat.core.components.Tool`.
    """
    return []


@hookspec
def nanochat_register_loggers() -> list[ComponentSpec]:
    """Return the metric-logger specs this plugin provides (kind ``logger``).

    Called once when the registry is built. A logger factory takes the options dataclass and
    returns a :class:`~nanochat.core.components.MetricLogger`.
    """
    return []


@hookspec
def nanochat_register_templates() -> list[ComponentSpec]:
    """Return the datagen template specs this plugin provides (kind ``template``).

    Called once when the registry is built. ``nanochat datagen TEMPLATE`` creates one: the
    factory takes the options dataclass (set with ``-o KEY=VALUE``) and returns a
    :class:`~nanochat.core.datagen.DatagenTemplate` (which prompts to send a teacher, and how its
    answers are checked and turned into records).
    """
    return []


@hookspec
def nanochat_register_presets() -> list[Preset]:
    """Return named presets (bundles of ``-o`` overrides) this plugin contributes.

    Called once when the registry is built; ``--preset NAME`` applies one before the user's own
    ``-o`` overrides.
    """
    return []


@hookspec
def nanochat_register_commands(cli: click.Group) -> None:
    """Add extra click commands or groups to the ``nanochat`` command line.

    Called once when the CLI is built, after plugins are loaded. Keep imports inside the command
    functions so that ``nanochat --help`` stays fast and does not import torch.
    """


@hookspec
def nanochat_stage_start(run: Any, stage: str) -> None:
    """Called on every plugin just before a stage of a run starts (not when it is skipped).

    ``run`` is the :class:`~nanochat.core.pipeline.RunContext` of that stage.
    """


@hookspec
def nanochat_stage_end(run: Any, stage: str, result: dict[str, Any]) -> None:
    """Called on every plugin after a stage finished successfully, with the stage's result."""


@hookspec
def nanochat_metrics(run_name: str, record: dict[str, Any]) -> None:
    """Called on every plugin with each metric record a run emits (after the loggers got it)."""


HOOK_NAMES: tuple[str, ...] = (
    "nanochat_register_models",
    "nanochat_register_tokenizers",
    "nanochat_register_datasets",
    "nanochat_register_stages",
    "nanochat_register_evals",
    "nanochat_register_servers",
    "nanochat_register_tools",
    "nanochat_register_loggers",
    "nanochat_register_templates",
    "nanochat_register_presets",
    "nanochat_register_commands",
    "nanochat_stage_start",
    "nanochat_stage_end",
    "nanochat_metrics",
)
