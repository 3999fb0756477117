"""The ``nanochat data`` commands: ``download fineweb`` and ``show``."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import click

from nanochat.core.data import Choice, Message, Preference, Problem, message_text
from nanochat.core.errors import NanochatError, UsageError
from nanochat_datasets.options import (
    FINEWEB_MAX_SHARD,
    default_fineweb_dir,
    default_fineweb_url,
)

TEXT_PREVIEW = 600


@click.group()
def data() -> None:
    """Download and inspect datasets (`nanochat list datasets` lists them)."""


@data.group()
def download() -> None:
    """Download a dataset's files."""


@download.command("fineweb")
@click.option(
    "-n",
    "--num-shards",
    "count",
    type=int,
    default=8,
    show_default=True,
    help="Shards to download, from the first (the last one present is validation).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Target folder [default: $NANOCHAT_HOME/data/fineweb].",
)
@click.option("-w", "--workers", type=int, default=4, show_default=True, help="Parallel downloads.")
@click.option("--retries", type=int, default=5, show_default=True, help="Attempts per shard.")
@click.option(
    "--backoff",
    type=float,
    default=1.0,
    show_default=True,
    help="First retry delay in seconds (doubled each retry).",
)
@click.option("--base-url", default=None, help="Shard folder URL [env NANOCHAT_FINEWEB_URL].")
def download_fineweb(
    count: int,
    directory: Path | None,
    workers: int,
    retries: int,
    backoff: float,
    base_url: str | None,
) -> None:
    """Download FineWeb-Edu shards 0..N-1 (skips shards already present)."""
    from nanochat.core.progress import Progress
    from nanochat_datasets.download import download_shards, shard_name

    if not 1 <= count <= FINEWEB_MAX_SHARD + 1:
        raise UsageError(f"-n must be between 1 and {FINEWEB_MAX_SHARD + 1}, not {count}")
    target = directory or Path(default_fineweb_dir())
    url = base_url or default_fineweb_url()
    present = sum((target / shard_name(i)).exists() for i in range(count))
    with Progress(count, "download fineweb", "shards", initial=present) as bar:
        report = download_shards(
            target,
            count,
            url,
            workers=workers,
            retries=retries,
            backoff=backoff,
            on_done=lambda name: bar.update(1, last=name),
        )
    click.echo(
        f"{target}: {len(report.fetched)} downloaded, {len(report.skipped)} already "
        f"present, {len(report.failed)} failed"
    )
    if report.failed:
        first, reason = next(iter(sorted(report.failed.items())))
        raise NanochatError(
            f"{len(report.failed)} shard(s) failed to download, e.g. {first}: {reason}"
        )


@download.command("core-bundle")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data folder to unpack eval_bundle/ into [default: $NANOCHAT_HOME/data].",
)
@click.option("--url", default=None, help="The bundle's URL [env NANOCHAT_CORE_BUNDLE_URL].")
@click.option("--retries", type=int, default=3, show_default=True, help="Download attempts.")
@click.option("--force", is_flag=True, help="Download again even if the bundle is there.")
def download_core_bundle_command(
    directory: Path | None, url: str | None, retries: int, force: bool
) -> None:
    """Download the CORE evaluation bundle (eval_bundle.zip) for `nanochat eval core`."""
    from nanochat_datasets.core_bundle import download_core_bundle

    if retries < 1:
        raise UsageError(f"--retries must be at least 1, not {retries}")
    target, fetched = download_core_bundle(directory, url, retries=retries, force=force)
    tasks = sum(1 for _ in (target / "eval_data").rglob("*.jsonl"))
    state = "downloaded" if fetched else "already present (--force downloads it again)"
    click.echo(f"{target}: {state}; {tasks} task files")


def clip(text: str, limit: int = TEXT_PREVIEW) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was when cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} … ({len(text):,} characters)"


def _message_lines(message: Message) -> str:
    body = clip(message_text(message))
    return textwrap.indent(body, "    ").lstrip() if body else ""


def format_item(item: Any) -> str:
    """A readable rendering of one dataset item of any kind; every long field is cut to
    :data:`TEXT_PREVIEW` characters (with its full length shown)."""
    if isinstance(item, str):
        return clip(item)
    if isinstance(item, Problem):
        lines = [f"{m['role']}: {_message_lines(m)}" for m in item.prompt]
        if item.solution is not None:
            lines.append(f"solution: {_message_lines(item.solution)}")
        lines.append(f"answer: {clip(item.answer)}")
        return "\n".join(lines)
    if isinstance(item, Choice):
        lines = [f"subject: {item.subject}"] if item.subject else []
        lines.append(f"question: {clip(item.question)}")
        for i, option in enumerate(item.options):
            mark = "*" if i == item.answer else " "
            lines.append(f" {mark} {chr(ord('A') + i)}. {clip(option)}")
        return "\n".join(lines)
    if isinstance(item, Preference):
        lines = [f"{m['role']}: {_message_lines(m)}" for m in item.prompt]
        lines.append(f"chosen: {_message_lines(item.chosen)}")
        lines.append(f"rejected: {_message_lines(item.rejected)}")
        return "\n".join(lines)
    return "\n".join(f"{m['role']}: {_message_lines(m)}" for m in item)


@data.command("show")
@click.argument("name")
@click.option("--split", default="train", show_default=True, help="train, val or test.")
@click.option("-n", "count", type=int, default=3, show_default=True, help="Examples to print.")
@click.option("--seed", type=int, default=0, show_default=True, help="Shuffle seed.")
@click.option("--no-shuffle", is_flag=True, help="Show the first items in stored order.")
def show(name: str, split: str, count: int, seed: int, no_shuffle: bool) -> None:
    """Print a few examples of dataset NAME (a name, name:PATH, or a mixture)."""
    from nanochat.core.data_refs import open_dataset

    dataset = open_dataset(name)
    shown = 0
    for item, _ in dataset.iter(split, seed=seed, shuffle=not no_shuffle):
        if shown >= count:
            break
        click.echo(f"--- {dataset.name} [{dataset.kind}, {split}] #{shown + 1}")
        click.echo(format_item(item))
        shown += 1
    skipped = dict(getattr(dataset, "skipped", {}) or {})
    if skipped:
        counts = ", ".join(f"{count} with {reason}" for reason, count in sorted(skipped.items()))
        click.echo(f"{dataset.name}: skipped {counts} while reading", err=True)
    if shown == 0:
        click.echo(f"{dataset.name}: the {split} split is empty")
