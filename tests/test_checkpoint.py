"""Checkpoints: exact round trips, atomic saves, and refusing pickled code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from nanochat.core import checkpoint as ckpt
from nanochat.core.checkpoint import CheckpointManager, rng_state, set_rng_state
from nanochat.core.errors import CheckpointError


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))


def train_a_bit(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(4, 8)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_model_and_optimizer_round_trip_exactly(tmp_path: Path) -> None:
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train_a_bit(model, optimizer, 3)
    manager = CheckpointManager(tmp_path / "ckpt")
    manager.save(
        3,
        model.state_dict(),
        {"config": {"width": 16}},
        optimizer.state_dict(),
        {"rng": rng_state(), "cursor": {"shard": 1, "row": 7}},
    )

    restored = tiny_model()
    restored_opt = torch.optim.AdamW(restored.parameters(), lr=1e-2)
    checkpoint = manager.load()
    assert checkpoint.step == 3 and checkpoint.meta["config"] == {"width": 16}
    restored.load_state_dict(checkpoint.model_state())
    restored_opt.load_state_dict(checkpoint.optimizer_state())
    loop = checkpoint.loop_state()
    assert loop["cursor"] == {"shard": 1, "row": 7}
    for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    set_rng_state(loop["rng"])
    train_a_bit(restored, restored_opt, 2)
    set_rng_state(loop["rng"])
    train_a_bit(model, optimizer, 2)
    for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_newest_and_given_step(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    for step in (10, 2, 30):
        manager.save(step, {"w": torch.full((2,), float(step))})
    assert manager.steps() == [2, 10, 30]
    assert manager.load().step == 30
    assert manager.load(10).model_state()["w"].tolist() == [10.0, 10.0]
    with pytest.raises(CheckpointError, match="no checkpoint at step 5"):
        manager.load(5)
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        CheckpointManager(tmp_path / "empty").load()


def test_keep_last_prunes_old_ones(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in range(5):
        manager.save(step, {"w": torch.zeros(1)})
    assert manager.steps() == [3, 4]


def test_crash_during_save_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(1, {"w": torch.ones(3)}, optimizer_state={"state": {}, "param_groups": []})

    def crash(obj, path):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt, "save_tensor_file", crash)
    with pytest.raises(OSError, match="simulated"):
        manager.save(2, {"w": torch.full((3,), 2.0)}, optimizer_state={"x": torch.ones(1)})
    with pytest.raises(OSError, match="simulated"):
        manager.save(1, {"w": torch.full((3,), 9.0)}, optimizer_state={"x": torch.ones(1)})
    assert manager.steps() == [1]
    assert manager.load().model_state()["w"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000001"]


def test_killed_mid_save_leaves_only_a_temp_folder(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(1, {"w": torch.ones(1)})
    partial = tmp_path / ".step_00000002.tmp-999"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 10)
    assert manager.steps() == [1]
    assert manager.latest().step == 1


class Exploit:
    def __reduce__(self):
        marker = os.environ["EXPLOIT_MARKER"]
        return (os.system, (f"touch {marker}",))


def test_malicious_pickle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARKER", str(marker))
    manager = CheckpointManager(tmp_path / "c")
    saved = manager.save(1, {"w": torch.ones(1)}, optimizer_state={"state": {}})
    with open(saved.path / ckpt.OPTIMIZER_FILE, "wb") as handle:
        pickle.dump({"state": Exploit()}, handle)
    with pytest.raises(CheckpointError, match="refusing to load"):
        manager.load().optimizer_state()
    assert not marker.exists()


def test_corrupt_files_give_clear_errors(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    saved = manager.save(1, {"w": torch.ones(1)}, loop_state={"a": 1})
    (saved.path / ckpt.MODEL_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="corrupt"):
        manager.load().model_state()
    (saved.path / ckpt.STATE_FILE).write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        manager.load().loop_state()
    (saved.path / ckpt.META_FILE).write_text("{ not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        manager.load()
