"""Downloading the CORE evaluation bundle (``eval_bundle.zip``, as nanochat distributes it) and
unpacking it to ``$NANOCHAT_HOME/data/eval_bundle``, where the `core` evaluator looks.

The zip holds one ``eval_bundle/`` folder (``core.yaml``, ``eval_meta_data.csv``,
``eval_data/...``). It is downloaded to a temporary file, checked (a readable zip with a
``core.yaml``), unpacked beside the target and renamed into place, so an interrupted download
never leaves half a bundle behind.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from nanochat.core.data import DataError
from nanochat.core.rundir import nanochat_home

logger = logging.getLogger(__name__)

CORE_BUNDLE_URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"
BUNDLE_DIR = "eval_bundle"
CHUNK = 1 << 20


def default_core_bundle_url() -> str:
    """``$NANOCHAT_CORE_BUNDLE_URL`` or the bundle nanochat distributes."""
    return os.environ.get("NANOCHAT_CORE_BUNDLE_URL") or CORE_BUNDLE_URL


def default_data_dir() -> Path:
    """``$NANOCHAT_HOME/data`` (the bundle goes in its ``eval_bundle`` folder)."""
    return nanochat_home() / "data"


def _fetch(url: str, target: Path, on_bytes: Callable[[int], None] | None) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
        while chunk := response.read(CHUNK):
            out.write(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))


def _unpack(archive: Path, data_dir: Path) -> Path:
    """Unpack ``archive`` into ``data_dir/eval_bundle`` (replacing what is there)."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            names = bundle.namelist()
            if f"{BUNDLE_DIR}/core.yaml" not in names:
                raise DataError(f"the download is not a CORE bundle (no {BUNDLE_DIR}/core.yaml)")
            staging = Path(tempfile.mkdtemp(prefix=".eval_bundle-", dir=data_dir))
            try:
                for name in names:
                    if name.startswith("/") or ".." in Path(name).parts:
                        raise DataError(f"the bundle holds an unsafe path: {name!r}")
                bundle.extractall(staging)
                target = data_dir / BUNDLE_DIR
                if target.exists():
                    shutil.rmtree(target)
                os.replace(staging / BUNDLE_DIR, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except zipfile.BadZipFile:
        raise DataError("the download is not a complete zip file") from None
    return target


def download_core_bundle(
    data_dir: Path | None = None,
    url: str | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    force: bool = False,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[Path, bool]:
    """Download and unpack the bundle; ``(its folder, whether it was downloaded)``.

    A bundle already unpacked (its ``core.yaml`` present) is kept unless ``force``.

    Raises:
        DataError: every attempt failed, or the file is not a CORE bundle.
    """
    data_dir = data_dir or default_data_dir()
    url = url or default_core_bundle_url()
    target = data_dir / BUNDLE_DIR
    if (target / "core.yaml").is_file() and not force:
        return target, False
    data_dir.mkdir(parents=True, exist_ok=True)
    archive = data_dir / "eval_bundle.zip.tmp"
    error: Exception | None = None
    for attempt in range(retries):
        try:
            _fetch(url, archive, on_bytes)
            return _unpack(archive, data_dir), True
        except DataError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            error = exc
            logger.warning("core-bundle: attempt %d of %d failed: %s", attempt + 1, retries, exc)
            time.sleep(backoff * 2**attempt if attempt + 1 < retries else 0)
        finally:
            archive.unlink(missing_ok=True)
    raise DataError(f"downloading the CORE bundle from {url} failed: {error}")
