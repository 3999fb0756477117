"""A logger that prints metric records as one short line each."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from nanochat.core.progress import is_showing, write_line
from nanochat.plugins.loggers.options import ConsoleOptions

_SKIP = {"time", "stage", "step", "event"}


def format_record(record: dict[str, Any]) -> str:
    """``[stage] step 10 | loss 3.2100 | lr 0.0200`` (floats with 4 significant digits)."""
    head = [f"[{record.get('stage', 'run')}]"]
    if "event" in record:
        head.append(str(record["event"]))
    if "step" in record:
        head.append(f"step {record['step']}")
    fields = [
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in record.items()
        if key not in _SKIP
    ]
    first = " ".join(head)
    if fields and len(head) > 1:
        return " | ".join([first, *fields])
    return " ".join([first, *fields[:1]]) + "".join(f" | {f}" for f in fields[1:])


class ConsoleLogger:
    """Prints records to the terminal without breaking progress bars."""

    def __init__(self, options: ConsoleOptions):
        self.options = options
        self._count = 0

    def start(self, run_dir: Path, run_name: str, config: dict[str, Any]) -> None:
        """Announce where the run lives."""
        self._write(f"run {run_name!r} in {run_dir}")

    def log(self, record: dict[str, Any]) -> None:
        """Print the record (every ``options.every``-th one of those with a step).

        Per-step records of a stage whose progress is on screen are left to the progress
        display (they are all in metrics.jsonl), so no step is printed twice.
        """
        if "step" in record and "event" not in record:
            if is_showing(str(record.get("stage"))):
                return
            self._count += 1
            if (self._count - 1) % max(1, self.options.every):
                return
        if record.get("event") == "start" and "index" in record:
            self._write(f"[{record.get('stage')}] stage {record['index']}/{record['count']}")
            return
        self._write(format_record(record))

    def finish(self) -> None:
        """Nothing to flush."""

    def _write(self, line: str) -> None:
        write_line(line, sys.stderr if self.options.stream == "stderr" else sys.stdout)
