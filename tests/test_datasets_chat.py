"""Chat, preference and synthetic datasets on files the tests make (and the offline demos)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_helpers import make_registry, write_jsonl
from nanochat_datasets import hub
from nanochat_datasets import options as o

from nanochat.core.data import DataError, Preference, Problem, validate_conversation
from nanochat.core.data_refs import open_dataset


@pytest.fixture(scope="module")
def registry():
    return make_registry()


def _everything(ds) -> list:
    return [item for split in ds.splits() for item, _ in ds.iter(split, shuffle=False)]


def test_chat_jsonl_openai_messages(registry, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                ]
            },
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "2+2?"}]},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "python", "text": "2+2"},
                            {"type": "python_output", "text": "4"},
                            {"type": "text", "text": "It is 4."},
                        ],
                    },
                ]
            },
        ],
    )
    items = _everything(open_dataset(f"chat-jsonl:{path}", registry))
    assert items[0][0] == {"role": "system", "content": "be brief"}
    assert items[1][0] == {"role": "user", "content": "2+2?"}
    assert items[1][1]["content"][1] == {"type": "python_output", "text": "4"}


def test_chat_jsonl_sharegpt(registry, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "sg.jsonl",
        [
            {
                "conversations": [
                    {"from": "system", "value": "sys"},
                    {"from": "human", "value": "q"},
                    {"from": "gpt", "value": "a"},
                ]
            },
        ],
    )
    (item,) = _everything(open_dataset(f"chat-jsonl:{path}", registry))
    assert [m["role"] for m in item] == ["system", "user", "assistant"]
    assert item[2]["content"] == "a"


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{broken", "malformed JSON"),
        (json.dumps({"text": "no messages"}), "no 'messages'"),
        (json.dumps({"messages": [{"role": "robot", "content": "x"}]}), "role"),
        (json.dumps({"conversations": [{"from": "alien", "value": "x"}]}), "speaker"),
    ],
)
def test_chat_jsonl_bad_lines_name_file_and_line(
    registry, tmp_path: Path, line: str, needle: str
) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps(
        {"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "ok"}]}
    )
    path.write_text(f"{good}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        _everything(open_dataset(f"chat-jsonl:{path}", registry))
    assert f"{path} line 3" in str(exc.value) and needle in str(exc.value)


def test_preferences_jsonl_formats(registry, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "prefs.jsonl",
        [
            {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."},
            {
                "prompt": [{"role": "user", "content": "Q"}],
                "chosen": [
                    {"role": "user", "content": "Q"},
                    {"role": "assistant", "content": "good"},
                ],
                "rejected": [
                    {"role": "user", "content": "Q"},
                    {"role": "assistant", "content": "bad"},
                ],
            },
        ],
    )
    first, second = _everything(open_dataset(f"preferences-jsonl:{path}", registry))
    assert isinstance(first, Preference)
    assert first.prompt == [{"role": "user", "content": "Say hi"}]
    assert first.chosen == {"role": "assistant", "content": "Hi!"}
    assert second.chosen["content"] == "good" and second.rejected["content"] == "bad"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "chosen": "y"}])
    with pytest.raises(DataError, match=f"{bad} line 1: missing field"):
        _everything(open_dataset(f"preferences-jsonl:{bad}", registry))


def test_smoltalk_from_a_local_copy(registry, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    pq.write_table(pa.table({"messages": [conv] * 3}), tmp_path / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"messages": [conv]}), tmp_path / "test-00000-of-00001.parquet")
    ds = open_dataset(f"smoltalk:{tmp_path}", registry)
    assert ds.kind == "chat"
    assert [c for c, _ in ds.iter("train")] == [conv] * 3
    assert len(list(ds.iter("test"))) == 1


def test_smoltalk_offline_fails_with_one_line(registry, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    try:
        with pytest.raises(DataError, match="cannot reach the Hugging Face hub"):
            list(open_dataset("smoltalk", registry).iter("train"))
    finally:
        hub.hub_reachable.cache_clear()


def test_demo_chat_loads_offline(registry) -> None:
    items = _everything(open_dataset("demo-chat", registry))
    assert len(items) > 500
    for conv in items:
        validate_conversation(conv)
        assert conv[0]["role"] == "user" and conv[1]["role"] == "assistant"


def test_identity_talks_about_nanochat(registry) -> None:
    items = _everything(open_dataset("identity", registry))
    assert len(items) > 100
    assert any("nanochat" in m["content"] for c in items for m in c)


def test_arithmetic_is_deterministic_and_correct(registry) -> None:
    options = o.ArithmeticOptions(train_size=200, val_size=20, min_steps=2, max_steps=4)
    a = [p for p, _ in open_dataset("arithmetic", registry, options=options).iter("train")]
    b = [p for p, _ in open_dataset("arithmetic", registry, options=options).iter("train")]
    assert [(p.prompt, p.answer) for p in a] == [(p.prompt, p.answer) for p in b]
    for problem in a:
        assert isinstance(problem, Problem)
        parts = problem.solution["content"]
        calls = [
            (x["text"], y["text"])
            for x, y in zip(parts, parts[1:], strict=False)
            if x["type"] == "python"
        ]
        assert 2 <= len(calls) <= 4
        for expr, out in calls:  # the calculator outputs are right
            assert int(eval(expr.replace("/", "//"))) == int(out)  # noqa: S307
        assert problem.reward(f"#### {problem.answer}") == 1.0
        assert problem.reward(f"#### {int(problem.answer) + 1}") == 0.0
    with pytest.raises(DataError):
        open_dataset("arithmetic", registry, options=o.ArithmeticOptions(operations="^"))


def test_arithmetic_bare_questions(registry) -> None:
    """bare_fraction mixes in one-call questions ("What is 12 * 7?") with right answers; at 0
    (the default) the problems are the word problems of earlier versions, unchanged."""
    default = open_dataset("arithmetic", registry, options=o.ArithmeticOptions(train_size=3))
    first = next(iter(default.load_split("train")))
    assert first.prompt[0]["content"].startswith("Gus has 96 shells. Then Gus ends up with 4")
    options = o.ArithmeticOptions(train_size=400, bare_fraction=0.5, max_value=50)
    problems = open_dataset("arithmetic", registry, options=options).load_split("train")
    bare = [p for p in problems if "has" not in p.prompt[0]["content"]]
    assert 150 <= len(bare) <= 250
    for problem in bare:
        parts = problem.solution["content"]
        assert [x["type"] for x in parts] == ["text", "python", "python_output", "text"]
        assert int(eval(parts[1]["text"].replace("/", "//"))) == int(problem.answer)  # noqa: S307
        assert int(problem.answer) >= 0 and parts[2]["text"] == problem.answer
        assert problem.reward(parts[-1]["text"]) == 1.0
    ops = {p.solution["content"][1]["text"].strip("0123456789") for p in bare}
    assert ops == {"+", "-", "*", "/"}
    assert any(p.prompt[0]["content"].startswith("What is") for p in bare)
    # one-digit operands ("12 * 7") are common, not one in eleven as in a uniform draw
    operands = [
        int(n)
        for p in bare
        for n in p.solution["content"][1]["text"]
        .replace("-", "+")
        .replace("*", "+")
        .replace("/", "+")
        .split("+")
    ]
    assert 0.4 <= sum(n < 10 for n in operands) / len(operands) <= 0.7


def test_problems_join_a_chat_mixture_as_conversations(registry, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # gsm8k from the bundled test split
    hub.hub_reachable.cache_clear()
    ds = open_dataset("identity:1,gsm8k:0.01", registry)
    assert ds.kind == "chat"
    assert ds.splits() == ("train", "val")  # identity has no test split
    items = [c for c, _ in ds.iter("val", seed=0)]
    n_identity = len([c for c, _ in open_dataset("identity", registry).iter("val")])
    assert len(items) == n_identity + 13
    assert [c for c, _ in ds.iter("val", seed=0)] == items  # deterministic order
    with pytest.raises(DataError, match="has no 'test' split; its splits are: train, val"):
        list(ds.iter("test"))
    as_chat = open_dataset("arithmetic", registry, kind="chat")
    conv, _ = next(iter(as_chat.iter("val")))
    assert conv[-1]["role"] == "assistant"
    hub.hub_reachable.cache_clear()
