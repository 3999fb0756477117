"""The output folder of ``nanochat datagen``: jsonl shards, resuming, deduplication.

Records are appended, one JSON line each, to ``TEMPLATE-00000.jsonl``, ``TEMPLATE-00001.jsonl``,
... (a new shard every ``shard_size`` records), the files ``chat-jsonl:OUT`` or
``chat-jsonl:OUT/*.jsonl`` read. Bookkeeping lives in ``OUT/.datagen/`` under names that end in
neither ``.jsonl`` nor a data suffix, so no dataset ever reads it: ``config.json`` (template,
options, seed: a re-run must match them), ``attempts.log`` (jobs the template rejected, so a
re-run does not ask again) and ``summary.json`` (the last run's usage summary).

Opening the store reads every shard back: the ids of the records (a job already written is never
asked again) and their dedup keys. A run killed in the middle of a write leaves at most one
partial last line, which is cut off (and logged) before anything is appended.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nanochat.core.data import DataError
from nanochat.core.errors import UsageError

log = logging.getLogger(__name__)

STATE_DIR = ".datagen"
SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<number>\d{5})\.jsonl$")


def digest(text: str) -> str:
    """A short stable hash of ``text`` (what the store keeps of a dedup key)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _repair(path: Path) -> None:
    """Cut a partial last line (no newline at the end) off ``path``."""
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        block = min(size, 1 << 20)
        while True:
            f.seek(size - block)
            data = f.read(block)
            cut = data.rfind(b"\n")
            if cut >= 0 or block == size:
                keep = size - block + cut + 1 if cut >= 0 else 0
                break
            block = min(size, block * 2)
        f.truncate(keep)
    log.warning(
        "%s: dropped a partial last line (%d bytes) left by an interrupted run", path, size - keep
    )


class OutputStore:
    """Shards of one datagen run, opened for appending.

    Args:
        out: the output folder (created).
        prefix: the shards' name before ``-NNNNN.jsonl`` (the template's short name).
        config: what must match between runs into ``out`` (template, options, seed).
        dedup: the template's ``dedup_key`` applied to a record.
        shard_size: records per shard.
    """

    def __init__(
        self,
        out: Path,
        prefix: str,
        config: Mapping[str, Any],
        dedup: Callable[[Mapping[str, Any]], str],
        shard_size: int = 10_000,
    ) -> None:
        self.out = out
        self.prefix = prefix
        self.config = dict(config)
        self.dedup = dedup
        self.shard_size = shard_size
        self.ids: set[str] = set()
        self.keys: set[str] = set()
        self.rejected: set[str] = set()
        self._shard_number = 0
        self._shard_count = 0

    @property
    def state_dir(self) -> Path:
        """``OUT/.datagen``."""
        return self.out / STATE_DIR

    @property
    def count(self) -> int:
        """Records in the folder."""
        return len(self.ids)

    def shard_path(self, number: int) -> Path:
        """The path of shard ``number``."""
        return self.out / f"{self.prefix}-{number:05d}.jsonl"

    def shards(self) -> list[Path]:
        """This run's shards in order."""
        found = []
        for path in self.out.glob(f"{self.prefix}-*.jsonl"):
            match = SHARD_RE.match(path.name)
            if match and match.group("prefix") == self.prefix:
                found.append((int(match.group("number")), path))
        return [path for _, path in sorted(found)]

    def open(self) -> OutputStore:
        """Create the folder or read it back (see the module docstring).

        Raises:
            UsageError: ``out`` is a file, or was written with another template, options or seed.
            DataError: a shard line that is not a record.
        """
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"--out {self.out}: exists and is not a folder")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.state_dir / "config.json"
        if config_path.exists():
            try:
                before = json.loads(config_path.read_text(encoding="utf-8"))
            except ValueError:
                raise DataError(f"{config_path}: not JSON; remove it to start over") from None
            if before != self.config:
                diff = [
                    k
                    for k in sorted(set(before) | set(self.config))
                    if before.get(k) != self.config.get(k)
                ]
                raise UsageError(
                    f"--out {self.out} holds data made with other settings ({', '.join(diff)} "
                    "differ); use another --out folder or the same template, -o options and --seed"
                )
        else:
            config_path.write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
        for number, path in enumerate(self.shards()):
            _repair(path)
            lines = self._read_shard(path)
            self._shard_number, self._shard_count = number, lines
        if self._shard_count >= self.shard_size:
            self._shard_number, self._shard_count = self._shard_number + 1, 0
        attempts = self.state_dir / "attempts.log"
        if attempts.exists():
            _repair(attempts)
            for line in attempts.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("status") == "rejected":
                    self.rejected.add(str(entry.get("key")))
        return self

    def _read_shard(self, path: Path) -> int:
        lines = 0
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                    ident = record["id"]
                except (ValueError, KeyError, TypeError):
                    raise DataError(f"{path} line {number}: not a datagen record") from None
                self.ids.add(str(ident))
                self.keys.add(digest(self.dedup(record)))
                lines += 1
        return lines

    def is_done(self, key: str) -> bool:
        """Whether job ``key`` needs no asking: its record exists or the template rejected it."""
        return key in self.ids or key in self.rejected

    def add(self, record: dict[str, Any]) -> str:
        """Append ``record`` unless it repeats one already here.

        Returns:
            ``written``, ``duplicate-id`` (that job's record exists) or ``duplicate`` (same dedup
            key as an existing record).
        """
        ident = str(record["id"])
        if ident in self.ids:
            return "duplicate-id"
        key = digest(self.dedup(record))
        if key in self.keys:
            return "duplicate"
        if self._shard_count >= self.shard_size:
            self._shard_number, self._shard_count = self._shard_number + 1, 0
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        _append(self.shard_path(self._shard_number), line)
        self._shard_count += 1
        self.ids.add(ident)
        self.keys.add(key)
        return "written"

    def log_attempt(self, key: str, status: str, reason: str) -> None:
        """Note a job that ended without a record (rejected ones are not asked again)."""
        entry = json.dumps({"key": key, "status": status, "reason": reason}) + "\n"
        _append(self.state_dir / "attempts.log", entry.encode("utf-8"))
        if status == "rejected":
            self.rejected.add(key)

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write the run's summary to ``OUT/.datagen/summary.json`` (atomically)."""
        path = self.state_dir / "summary.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` with one ``write`` on an ``O_APPEND`` descriptor (a kill leaves either the
    whole line or a partial last line that the next open cuts off)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)
