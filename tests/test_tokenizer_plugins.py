"""Every tokenizer plugin passes the same contract, and the `tokenizer` stage runs each one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from nanochat.core.errors import NanochatError
from nanochat.core.registry import Registry
from nanochat.testing import tokenizer_contract as contract

REGISTRY = Registry.load()
# Trainable tokenizers pass the whole contract; `pretrained` comes with imported weights
# (tests/test_llama_import.py checks it against HF `tokenizers`).
TOKENIZERS = [
    item.spec.name
    for item in REGISTRY.components("tokenizer")
    if item.spec.extra.get("trainable", True)
]


def test_builtin_tokenizers_are_registered() -> None:
    assert {"rustbpe", "hf-bpe"} <= set(TOKENIZERS)
    assert "pretrained" in {item.spec.name for item in REGISTRY.components("tokenizer")}


def test_an_untrainable_tokenizer_says_so(tmp_path: Path) -> None:
    result = run_cli(["run", "tokenizer", "--run", "t", "--tokenizer", "pretrained"], tmp_path)
    assert result.returncode != 0
    assert "cannot be trained" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module", params=TOKENIZERS)
def trained(request) -> tuple[object, object]:
    factory = REGISTRY.create("tokenizer", request.param)
    return factory, contract.train_small(factory)


def test_round_trip(trained) -> None:
    contract.check_round_trip(trained[1])


def test_special_tokens(trained) -> None:
    contract.check_special_tokens(trained[1])


def test_token_bytes(trained) -> None:
    contract.check_token_bytes(trained[1])


def test_vocab_size_is_exact(trained) -> None:
    assert trained[1].vocab_size == 300


def test_save_load(trained, tmp_path: Path) -> None:
    contract.check_save_load(trained[0], trained[1], tmp_path / "tok")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "other-impl"])
def test_bad_tokenizer_files_fail_with_one_message(trained, tmp_path: Path, damage: str) -> None:
    factory, tokenizer = trained
    directory = tmp_path / "tok"
    tokenizer.save(directory)
    files = [p for p in directory.iterdir() if not p.name.endswith(".meta")]
    if damage == "truncate":
        for path in files:
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif damage == "garbage":
        for path in files:
            path.write_bytes(b"\x00\x01not a tokenizer at all\xff" * 10)
    elif damage == "missing":
        for path in directory.iterdir():
            path.unlink()
    else:
        meta = directory / "tokenizer.json.meta"
        meta.write_text(json.dumps({"implementation": "someone-else"}))
    with pytest.raises(NanochatError) as err:
        factory.load(directory)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400
    assert str(directory) in message or damage == "other-impl"


@pytest.mark.parametrize("name", ["rustbpe", "hf-bpe"])
def test_tokenizer_stage_on_demo_text(tmp_path: Path, name: str) -> None:
    result = run_cli(
        [
            "run",
            "tokenizer",
            "--run",
            "t",
            "--tokenizer",
            name,
            "-o",
            "tokenizer.vocab_size=4096",
            "-o",
            "tokenizer.max_chars=3000000",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[tokenizer] " in result.stderr and "ids learned" in result.stderr  # the progress
    run_dir = tmp_path / "runs" / "t"
    meta = json.loads((run_dir / "tokenizer" / "tokenizer.json.meta").read_text())
    assert meta == {"implementation": name, "vocab_size": 4096}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "bytes_per_token" in r]  # the stage's end record
    assert logged and 3.0 < logged[0]["bytes_per_token"] < 6.0
    assert logged[0]["implementation"].endswith(name)


def test_corrupt_tokenizer_in_a_run_is_one_line(tmp_path: Path) -> None:
    result = run_cli(
        [
            "run",
            "tokenizer",
            "--run",
            "c",
            "-o",
            "tokenizer.vocab_size=400",
            "-o",
            "tokenizer.max_chars=200000",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rbpe = tmp_path / "runs" / "c" / "tokenizer" / "tokenizer.rbpe"
    rbpe.write_bytes(rbpe.read_bytes()[:100])
    result = run_cli(["run", "pretrain", "--run", "c", "-o", "pretrain.max_steps=1"], tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "tokenizer" in lines[0] and "Traceback" not in result.stderr
