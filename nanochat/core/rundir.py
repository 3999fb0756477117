"""Where runs live, and the run's lasting record (``pipeline.json``).

``$NANOCHAT_HOME/runs/<name>`` holds one folder per stage, ``metrics.jsonl`` and
``pipeline.json``. The record is append-only: every command on the run adds an entry to
``commands`` and merges what it ran into ``stages``, ``plugins`` and ``overrides``; what earlier
commands chose (the preset, the model and tokenizer plugins) stays unless a command changes it.
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
from pathlib import Path
from typing import Any

from nanochat.core.checkpoint import read_json, write_json_atomic
from nanochat.core.config import check_run_name
from nanochat.core.errors import UsageError

DONE_FILE = "done.json"
PIPELINE_FILE = "pipeline.json"


def nanochat_home() -> Path:
    """``$NANOCHAT_HOME``, default ``~/.cache/nanochat``."""
    return Path(os.environ.get("NANOCHAT_HOME") or Path.home() / ".cache" / "nanochat")


def run_directory(run_name: str) -> Path:
    """The folder of run ``run_name``: ``$NANOCHAT_HOME/runs/<name>``."""
    return nanochat_home() / "runs" / check_run_name(run_name)


def now() -> str:
    """The current UTC time in ISO format, to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The git commit of the nanochat source tree (with ``-dirty`` if modified), if any."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = "-dirty" if status.returncode == 0 and status.stdout.strip() else ""
        return commit.stdout.strip() + dirty
    except (OSError, subprocess.SubprocessError):
        return None


def read_run_record(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``pipeline.json``, or None for a run that has none yet."""
    path = run_dir / PIPELINE_FILE
    if not path.is_file():
        return None
    record = read_json(path, "run record")
    if not isinstance(record, dict):
        raise UsageError(f"run record {path} is not a JSON object")
    return record


def append_run_record(run_dir: Path, command: dict[str, Any]) -> dict[str, Any]:
    """Merge one command's description into the run's record and write it (atomically).

    ``command`` is :meth:`RunPlan.describe` output. Stages are kept by scope in first-run
    order with the newest options; plugins and overrides accumulate; the preset, model and
    tokenizer are replaced only by a command that sets them; ``overrides`` is the merged list
    the command applied (earlier ones, with this command's replacing the same ``scope.key``).

    Returns:
        The merged record.
    """
    record = read_run_record(run_dir) or {
        "run": command["run"],
        "created": command["time"],
        "stages": [],
        "plugins": {},
        "overrides": [],
        "commands": [],
    }
    stages = {s["scope"]: s for s in record.get("stages", []) if "scope" in s}
    for stage in command["stages"]:
        stages[stage["scope"]] = {**stages.get(stage["scope"], {}), **stage}
    record["stages"] = list(stages.values())
    record.setdefault("plugins", {}).update(command["plugins"])
    record["overrides"] = list(command["overrides"])
    for key in ("model", "tokenizer", "preset"):
        if command.get(key) is not None:
            record[key] = command[key]
    record["loggers"] = command["loggers"]
    record["device"] = command["device"]
    record["git_commit"] = command["git_commit"]
    record["updated"] = command["time"]
    record.setdefault("commands", []).append(
        {k: command[k] for k in ("time", "labels", "preset", "new_overrides", "git_commit")}
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / PIPELINE_FILE, record)
    return record
