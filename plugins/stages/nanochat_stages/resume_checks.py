"""What a training stage checks before it continues from a checkpoint.

A resume must continue the same model on the same tokenizer: a changed model option or a
retrained tokenizer is refused with one line naming the difference (instead of training on with
the old shape while the run record says otherwise, or failing later with an IndexError). A
corrupt newest checkpoint names its file and the older valid one to fall back to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nanochat.core.checkpoint import Checkpoint, CheckpointManager
from nanochat.core.errors import CheckpointError, StageError


def checkpoint_name(checkpoint: Checkpoint) -> str:
    """``stage/step_N`` of a checkpoint, for messages."""
    return f"{checkpoint.path.parent.parent.name}/{checkpoint.path.name}"


def check_vocabulary(checkpoint: Checkpoint, vocab_size: int, run_name: str) -> None:
    """Refuse a checkpoint trained with a tokenizer of another vocabulary size.

    Raises:
        StageError: the sizes differ.
    """
    recorded = checkpoint.meta.get("tokenizer_vocab_size")
    if recorded is None:
        recorded = checkpoint.meta.get("model_config", {}).get("vocab_size")
    if recorded is not None and int(recorded) != vocab_size:
        raise StageError(
            f"the tokenizer of run {run_name!r} has {vocab_size} ids, but checkpoint "
            f"{checkpoint_name(checkpoint)} was trained with {recorded}: the tokenizer was "
            "retrained; restore it or start the model stages over in a new run"
        )


def check_model_options(
    checkpoint: Checkpoint, config_now: dict[str, Any], stage: str, stage_dir: Path
) -> None:
    """Refuse to resume when the model options now give another config than the checkpoint's.

    Raises:
        StageError: some config entries differ (each named with its old and new value).
    """
    saved = checkpoint.meta.get("model_config", {})
    changed = [
        f"{key} {saved.get(key)!r} -> {config_now.get(key)!r}"
        for key in sorted(set(saved) | set(config_now))
        if saved.get(key) != config_now.get(key)
    ]
    if changed:
        raise StageError(
            f"{stage} cannot resume from {checkpoint_name(checkpoint)}: the model options changed "
            f"({', '.join(changed)}); run again with the -o model.* options it was trained with "
            f"(the run remembers the last ones given), or delete {stage_dir} to start it over"
        )


def corrupt_checkpoint_message(manager: CheckpointManager, error: CheckpointError) -> str:
    """``error`` plus the newest older checkpoint that loads, and how to resume from it."""
    steps = manager.steps()
    for step in reversed(steps[:-1]):
        try:
            older = manager.load(step)
            older.model_state()
            older.loop_state()
        except CheckpointError:
            continue
        bad = manager.path_for(steps[-1])
        return (
            f"{error}; the older checkpoint {checkpoint_name(older)} is valid: delete {bad} and "
            "run the same command again to resume from it"
        )
    return f"{error}; no older valid checkpoint exists: delete {manager.directory} to start over"
