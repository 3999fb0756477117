"""A logger that appends every metric record to ``metrics.jsonl`` in the run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from nanochat.plugins.loggers.options import JsonlOptions


class JsonlLogger:
    """Appends one JSON object per line, flushed as it goes (nothing lost on a crash)."""

    def __init__(self, options: JsonlOptions):
        self.options = options
        self._handle: IO[str] | None = None

    def start(self, run_dir: Path, run_name: str, config: dict[str, Any]) -> None:
        """Open ``metrics.jsonl`` for appending (re-runs add to it)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        self._handle = open(run_dir / self.options.filename, "a", encoding="utf-8")  # noqa: SIM115

    def log(self, record: dict[str, Any]) -> None:
        """Write the record as one line and flush."""
        if self._handle is None:
            return
        self._handle.write(json.dumps(record, default=str) + "\n")
        self._handle.flush()

    def finish(self) -> None:
        """Close the file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
