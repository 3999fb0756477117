"""Where runs live, and the run's lasting record (``pipeline.json``).

``$NANOCHAT_HOME/runs/<name>`` holds one folder per stage, ``metrics.jsonl`` and
``pipeline.json``. The record is append-only: every command on the run adds an entry to
``commands`` and merges what it ran into ``stages``, ``plugins`` and ``overrides``; what earlier
commands chose (the preset, the model and tokenizer plugins) stays unless a command changes it.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from nanochat.core.checkpoint import read_json, write_json_atomic
from nanochat.core.config import check_run_name
from nanochat.core.errors import RunLockedError, UsageError

logger = logging.getLogger(__name__)

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
    record.setdefault("datasets", {}).update(command.get("datasets", {}))
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


LOCK_FILE = ".lock"


class RunLock:
    """One writer per run: an exclusive ``flock`` on ``<run>/.lock``, which says who holds it.

    The kernel drops the lock when its holder dies (even by SIGKILL), so a lock left by a dead
    process is stale and the next command takes it over. Under torchrun only rank 0 locks; the
    other ranks are the same run.

    Args:
        run_dir: the run's folder (created if needed).
        command: what the holder is doing, for the message a second process prints.
    """

    def __init__(self, run_dir: Path, command: str = "") -> None:
        self.path = run_dir / LOCK_FILE
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or fail at once.

        Raises:
            RunLockedError: another live process holds it (the message names it).
        """
        import fcntl
        import json
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            run = self.path.parent.name
            raise RunLockedError(
                f"run {run!r} is in use by {holder}; wait for it to finish, stop it, or use "
                "another --run"
            ) from None
        stale = _read_holder(fd) if os.fstat(fd).st_size else None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": now(),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        if stale:
            logger.info("took over the stale lock of run %s (was %s)", self.path.parent, stale)

    def release(self) -> None:
        """Give the lock back (the file stays; an unlocked file is free)."""
        if self._fd is None:
            return
        import fcntl

        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """``pid N on host H since T (command)`` from a lock file's contents."""
    import json

    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return "another process"
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    text = f"pid {info['pid']} on host {info.get('host', '?')} since {info.get('since', '?')}"
    return text + (f" ({info['command']})" if info.get("command") else "")
