"""Checkpoints: weights in safetensors, metadata in JSON, optimizer and loop state as tensors.

Each checkpoint is a folder ``step_00000100/`` holding ``model.safetensors``, ``meta.json`` and,
optionally, ``optimizer.pt`` and ``state.pt``. It is written into a temporary folder and renamed
into place, so a crash mid-save leaves the previous checkpoint untouched. ``.pt`` files are read
with ``torch.load(weights_only=True)``: a file carrying arbitrary pickled code is refused.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanochat.core.errors import CheckpointError

if TYPE_CHECKING:
    import torch

# torch and safetensors are imported inside the functions that need them, so that finding
# checkpoints and reading their metadata (a re-run of a finished run) stays torch-free.

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.pt"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> Any:
    """Read a JSON file; a missing or corrupt one is a :class:`CheckpointError` naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{what} {path} is corrupt: {exc}") from None


def save_tensor_file(obj: Any, path: Path) -> None:
    """``torch.save`` a structure of tensors and plain values (loadable with weights_only)."""
    import torch

    torch.save(obj, path)


def load_tensor_file(path: Path) -> Any:
    """Load a ``.pt`` file safely: only tensors and plain containers, never arbitrary pickles.

    Raises:
        CheckpointError: the file is missing, corrupt, or carries objects that are not data.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing") from None
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects that are not plain tensors and "
            "containers (an unsafe or foreign pickle)"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"checkpoint file {path} is corrupt: {exc}") from None


@dataclass
class Checkpoint:
    """One finished checkpoint on disk."""

    path: Path
    step: int
    meta: dict[str, Any] = field(default_factory=dict)

    def model_state(self) -> dict[str, torch.Tensor]:
        """The model's tensors (CPU)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(self.path / MODEL_FILE), device="cpu")
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {self.path} has no {MODEL_FILE}") from None
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"weights {self.path / MODEL_FILE} are corrupt: {exc}") from None

    def optimizer_state(self) -> Any | None:
        """The optimizer's ``state_dict`` (loaded with ``weights_only=True``), if saved."""
        path = self.path / OPTIMIZER_FILE
        return load_tensor_file(path) if path.exists() else None

    def loop_state(self) -> Any | None:
        """The training loop's state (RNG, data cursor, ...), if saved."""
        path = self.path / STATE_FILE
        return load_tensor_file(path) if path.exists() else None


class CheckpointManager:
    """Saves and finds the checkpoints of one stage, in ``directory``."""

    def __init__(self, directory: Path, keep_last: int | None = None):
        self.directory = Path(directory)
        self.keep_last = keep_last

    def steps(self) -> list[int]:
        """Steps of the finished checkpoints, ascending (temporary folders are ignored)."""
        if not self.directory.is_dir():
            return []
        steps = []
        for child in self.directory.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / META_FILE).is_file():
                steps.append(int(match.group(1)))
        return sorted(steps)

    def path_for(self, step: int) -> Path:
        """The folder of the checkpoint at ``step``."""
        return self.directory / f"step_{step:08d}"

    def save(
        self,
        step: int,
        model_state: dict[str, torch.Tensor],
        meta: dict[str, Any] | None = None,
        optimizer_state: Any | None = None,
        loop_state: Any | None = None,
    ) -> Checkpoint:
        """Write a checkpoint atomically and return it; older ones are pruned past ``keep_last``."""
        if step < 0:
            raise ValueError("step must be >= 0")
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.path_for(step)
        tmp = self.directory / f".{final.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        from safetensors.torch import save_file

        try:
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}
            save_file(tensors, str(tmp / MODEL_FILE))
            if optimizer_state is not None:
                save_tensor_file(optimizer_state, tmp / OPTIMIZER_FILE)
            if loop_state is not None:
                save_tensor_file(loop_state, tmp / STATE_FILE)
            full_meta = {"step": step, **(meta or {})}
            with open(tmp / META_FILE, "w", encoding="utf-8") as handle:
                json.dump(full_meta, handle, indent=2, sort_keys=True, default=str)
            for child in tmp.iterdir():
                _fsync_file(child)
            _fsync_dir(tmp)
            if final.exists():
                old = self.directory / f".{final.name}.old-{os.getpid()}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(self.directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._prune()
        return Checkpoint(final, step, full_meta)

    def _prune(self) -> None:
        if not self.keep_last:
            return
        for step in self.steps()[: -self.keep_last]:
            shutil.rmtree(self.path_for(step), ignore_errors=True)

    def load(self, step: int | None = None) -> Checkpoint:
        """The checkpoint at ``step``, or the newest one when ``step`` is None.

        Raises:
            CheckpointError: there is no such checkpoint.
        """
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise CheckpointError(
                f"no checkpoint at step {step} in {self.directory} (available: {steps})"
            )
        path = self.path_for(step)
        return Checkpoint(path, step, read_json(path / META_FILE, "checkpoint metadata"))

    def latest(self) -> Checkpoint | None:
        """The newest finished checkpoint, or None."""
        return self.load() if self.steps() else None


def rng_state() -> dict[str, Any]:
    """The RNG states of torch (CPU and CUDA) as tensors, for exact resume."""
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states saved by :func:`rng_state`."""
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
