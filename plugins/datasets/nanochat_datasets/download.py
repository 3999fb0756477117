"""Downloading FineWeb shards: parallel workers, retries with backoff, ``.tmp`` then rename.

A shard already present is skipped. A download is written to ``NAME.tmp`` and renamed into
place only once it is complete and looks like parquet (``PAR1`` at both ends), so an interrupted
run never leaves a half shard that a later stream would trip over.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nanochat.core.data import DataError

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


def shard_name(index: int) -> str:
    """The file name of shard ``index`` (``shard_00042.parquet``)."""
    return f"shard_{index:05d}.parquet"


@dataclass
class DownloadReport:
    """What a download did: shards fetched, already present, and failed (with reasons)."""

    fetched: list[str]
    skipped: list[str]
    failed: dict[str, str]


def _looks_like_parquet(path: Path) -> bool:
    size = path.stat().st_size
    if size < 8:
        return False
    with path.open("rb") as f:
        head = f.read(4)
        f.seek(size - 4)
        return head == b"PAR1" and f.read(4) == b"PAR1"


async def _fetch(session: object, url: str, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    async with session.get(url) as response:  # type: ignore[attr-defined]
        response.raise_for_status()
        with tmp.open("wb") as f:
            async for chunk in response.content.iter_chunked(CHUNK):
                f.write(chunk)
    if not _looks_like_parquet(tmp):
        tmp.unlink(missing_ok=True)
        raise OSError("the downloaded file is not a complete parquet file")
    os.replace(tmp, target)


async def _download_one(
    session: object,
    semaphore: asyncio.Semaphore,
    base_url: str,
    target: Path,
    retries: int,
    backoff: float,
) -> str | None:
    url = f"{base_url.rstrip('/')}/{target.name}"
    error = "not tried"
    async with semaphore:
        for attempt in range(1, retries + 1):
            try:
                await _fetch(session, url, target)
                logger.info("downloaded %s", target.name)
                return None
            except Exception as exc:  # noqa: BLE001 - network errors of every kind are retried
                error = f"{type(exc).__name__}: {exc}"
                target.with_name(target.name + ".tmp").unlink(missing_ok=True)
                if attempt < retries:
                    delay = backoff * 2 ** (attempt - 1)
                    logger.warning(
                        "%s: attempt %d failed (%s); retrying in %.1fs",
                        target.name,
                        attempt,
                        error,
                        delay,
                    )
                    await asyncio.sleep(delay)
    return error


async def _download(
    base_url: str,
    targets: list[Path],
    workers: int,
    retries: int,
    backoff: float,
    timeout: float,
    on_done: Callable[[str], None] | None,
) -> dict[str, str]:
    import aiohttp

    semaphore = asyncio.Semaphore(max(1, workers))
    client_timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout, sock_connect=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:

        async def one(target: Path) -> tuple[str, str | None]:
            error = await _download_one(session, semaphore, base_url, target, retries, backoff)
            if on_done is not None:
                on_done(target.name)
            return target.name, error

        results = await asyncio.gather(*(one(t) for t in targets))
    return {name: error for name, error in results if error is not None}


def download_shards(
    directory: Path,
    count: int,
    base_url: str,
    *,
    workers: int = 4,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    on_done: Callable[[str], None] | None = None,
) -> DownloadReport:
    """Download shards ``0 .. count-1`` into ``directory``, skipping those present.

    Args:
        directory: where shards go (created if needed).
        count: how many shards, from the first.
        base_url: the folder URL the shard names are appended to.
        workers: concurrent downloads.
        retries: attempts per shard.
        backoff: first retry delay in seconds, doubled on each further attempt.
        timeout: seconds a connection may stall before the attempt fails.
        on_done: called with each shard name as it finishes (for progress).

    Raises:
        DataError: ``count`` is out of range or the directory cannot be created.
    """
    if count < 1:
        raise DataError(f"the number of shards must be at least 1, not {count}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{directory}: cannot create the directory ({exc.strerror})") from exc
    targets: list[Path] = []
    skipped: list[Path] = []
    for index in range(count):
        target = directory / shard_name(index)
        (skipped if target.exists() else targets).append(target)
    failed: dict[str, str] = {}
    if targets:
        failed = asyncio.run(
            _download(base_url, targets, workers, retries, backoff, timeout, on_done)
        )
    fetched = [t.name for t in targets if t.name not in failed]
    return DownloadReport(fetched=fetched, skipped=[s.name for s in skipped], failed=failed)
