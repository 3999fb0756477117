"""Datagen templates: the contract suite over every registered template, the built-ins' own
checks, pacing (token bucket, backoff, Retry-After) and the output store."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from nanochat.core.components import ComponentSpec
from nanochat.core.datagen import DatagenTemplate, Rejected, TeacherReply
from nanochat.core.hookspecs import hookimpl
from nanochat.core.registry import Registry
from nanochat.testing import template_contract

REGISTRY = Registry.load()
TEMPLATES = sorted(r.qualified_name for r in REGISTRY.components("template"))


def test_the_built_in_templates_are_registered() -> None:
    assert {"nanochat-datasets/identity", "nanochat-datasets/math-word-problems"} <= set(TEMPLATES)


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_contract(name: str) -> None:
    template = REGISTRY.create("template", name)
    assert isinstance(template, DatagenTemplate)
    template_contract.check_template(template)


def _math_reply(steps: list[dict[str, object]], answer: object, problem: str = "") -> str:
    return json.dumps(
        {
            "problem": problem or "Ada bakes 12 cookies and then 7 more. How many are there?",
            "steps": steps,
            "answer": answer,
        }
    )


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (_math_reply([{"text": "Add", "expression": "12+7", "result": 20}], 20), "wrong-step"),
        (_math_reply([{"text": "Add", "expression": "12+7", "result": 19}], 18), "wrong-answer"),
        (_math_reply([{"text": "Add", "expression": "12+", "result": 12}], 12), "calc-error"),
        (_math_reply([{"text": "Add", "expression": "1/0", "result": 0}], 0), "calc-error"),
        (_math_reply([{"text": "Add", "expression": "12+7=19", "result": 19}], 19), "bad-schema"),
        (_math_reply([], 19), "bad-schema"),
        (
            _math_reply([{"text": "Add", "expression": "12+7", "result": 19}], 19, "Short?"),
            "bad-schema",
        ),
        ("Sure! Here is a problem about cookies.", "not-json"),
        ('{"problem": "cut', "not-json"),
    ],
)
def test_math_answers_are_checked_with_the_calculator(reply: str, reason: str) -> None:
    template = REGISTRY.create("template", "math-word-problems")
    job = template.make_job(0, 0)
    with pytest.raises(Rejected) as err:
        template.accept(job, TeacherReply(reply, "stop"))
    assert err.value.reason == reason


def test_math_accepts_fenced_json_and_decimal_results() -> None:
    template = REGISTRY.create("template", "math-word-problems")
    steps = [
        {"text": "Cookies in all", "expression": "12+7", "result": 19},
        {"text": "Shared by 4", "expression": "19/4", "result": "4.75"},
    ]
    reply = "```json\n" + _math_reply(steps, 4.75) + "\n```"
    record = template.accept(template.make_job(0, 0), TeacherReply(reply, "stop"))
    parts = record["messages"][1]["content"]
    assert [p["text"] for p in parts if p["type"] == "python"] == ["12+7", "19/4"]
    assert [p["text"] for p in parts if p["type"] == "python_output"] == ["19", "4.75"]
    assert record["answer"].endswith("#### 4.75") and "<<19/4=4.75>>" in record["answer"]


def test_identity_checks() -> None:
    template = REGISTRY.create("template", "identity")
    name_job = next(
        j for j in (template.make_job(0, i) for i in range(100)) if j.meta["topic"] == "name"
    )
    for text, reason in [
        ("I am a helpful assistant.", "missing-name"),
        ("As an AI language model, I am nanochat.", "off-identity"),
        ("Hi", "too-short"),
        ("I am nanochat\x07 hello", "garbled"),
    ]:
        with pytest.raises(Rejected) as err:
            template.accept(name_job, TeacherReply(text, "stop"))
        assert err.value.reason == reason
    record = template.accept(name_job, TeacherReply("  My name is nanochat.  ", "stop"))
    assert record["messages"][1] == {"role": "assistant", "content": "My name is nanochat."}
    assert record["messages"][0]["content"] == name_job.meta["question"]


def test_identity_reads_facts_from_a_file(tmp_path: Path) -> None:
    from nanochat.core.config import apply_overrides
    from nanochat.core.data import DataError

    facts = tmp_path / "facts.txt"
    facts.write_text("You like puns.\n\nYou were trained on a laptop.\n")
    resolved = REGISTRY.resolve("template", "identity")
    options = apply_overrides(resolved.spec.options(), {"facts": str(facts)}, "identity")
    job = REGISTRY.create("template", "identity", options).make_job(0, 0)
    assert "- You like puns.\n- You were trained on a laptop." in job.messages[0]["content"]
    missing = apply_overrides(options, {"facts": str(tmp_path / "nope.txt")}, "identity")
    with pytest.raises(DataError, match="identity.facts: cannot read"):
        REGISTRY.create("template", "identity", missing)


def test_token_bucket_spaces_takers_evenly() -> None:
    from nanochat_datasets.datagen.pacing import TokenBucket

    now = [0.0]
    bucket = TokenBucket(10.0, burst=2, clock=lambda: now[0])
    assert [round(bucket.reserve(), 6) for _ in range(5)] == [0.0, 0.0, 0.1, 0.2, 0.3]
    now[0] = 10.0  # idle: the bucket refills up to its burst only
    assert [round(bucket.reserve(), 6) for _ in range(3)] == [0.0, 0.0, 0.1]
    assert TokenBucket(None).reserve() == 0.0


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    from nanochat_datasets.datagen.pacing import backoff_delay

    rng = random.Random(0)
    for attempt in range(8):
        ceiling = min(5.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, 0.5, 5.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jitter spreads clients apart


def test_retry_after_header_forms() -> None:
    from nanochat_datasets.datagen.pacing import parse_retry_after

    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_store_cuts_a_torn_last_line_and_keeps_ids_and_keys(tmp_path: Path) -> None:
    from nanochat_datasets.datagen.store import OutputStore

    def make() -> OutputStore:
        return OutputStore(tmp_path, "t", {"seed": 0}, lambda r: r["messages"][0]["content"], 2)

    store = make().open()
    for i in range(3):
        record = {"id": f"j{i}", "messages": [{"role": "user", "content": f"q{i}"}]}
        assert store.add(record) == "written"
    assert store.add({"id": "j0", "messages": [{"role": "user", "content": "x"}]}) == (
        "duplicate-id"
    )
    assert store.add({"id": "j9", "messages": [{"role": "user", "content": "q1"}]}) == "duplicate"
    assert [p.name for p in store.shards()] == ["t-00000.jsonl", "t-00001.jsonl"]
    with store.shards()[-1].open("a") as f:
        f.write('{"id": "j3", "mess')
    again = make().open()
    assert again.ids == {"j0", "j1", "j2"} and again.count == 3
    assert again.shards()[-1].read_text().endswith("}\n")
    assert again.add({"id": "j3", "messages": [{"role": "user", "content": "q3"}]}) == "written"
    assert len(again.shards()) == 2  # the second shard had room for one more


class _ShoutTemplate:
    """A third party's template: asks for a word, keeps it upper-cased."""

    data_kind = "chat"

    def __init__(self, options: object) -> None:
        self.options = options

    def make_job(self, seed: int, index: int):  # type: ignore[no-untyped-def]
        from nanochat.core.datagen import DatagenJob

        word = random.Random(f"{seed}:{index}").choice(["cat", "dog", "owl", "fox", "elk"])
        return DatagenJob(
            key=f"shout-s{seed}-{index:07d}",
            index=index,
            messages=[{"role": "user", "content": f"Say {word} {index} loudly."}],
            meta={"word": word},
        )

    def accept(self, job, reply):  # type: ignore[no-untyped-def]
        text = reply.text.strip()
        if reply.finish_reason == "length" or not text or len(text) > 100 or "\ufffd" in text:
            raise Rejected("bad", "not a short clean word")
        if "<|" in text:
            raise Rejected("special-tokens")
        return {"messages": [*job.messages, {"role": "assistant", "content": text.upper()}]}

    def dedup_key(self, record):  # type: ignore[no-untyped-def]
        return str(record["messages"][-1]["content"])

    def example_reply(self, job):  # type: ignore[no-untyped-def]
        return f"{job.meta['word']} {job.index}!"


class _ShoutPlugin:
    @hookimpl
    def nanochat_register_templates(self):  # type: ignore[no-untyped-def]
        return [ComponentSpec("template", "shout", f"{__name__}:_ShoutTemplate", "shouting")]


def test_a_third_party_template_plugs_in_and_runs(tmp_path: Path) -> None:
    """A template registered through the hook passes the contract and runs end to end."""
    import asyncio

    from datagen_helpers import StubTeacher
    from nanochat_datasets.datagen.runner import RunSettings, run_local
    from nanochat_datasets.datagen.store import OutputStore
    from nanochat_datasets.datagen.tally import Tally
    from nanochat_datasets.datagen.teacher import TeacherConfig

    registry = Registry.load()
    with registry.temporary_plugin(_ShoutPlugin(), "third-party"):
        assert registry.resolve("template", "shout").qualified_name == "third-party/shout"
        template = registry.create("template", "shout")
        template_contract.check_template(template)

        def reply(key: str, body: dict[str, object]) -> str:
            return template.example_reply(template.make_job(0, int(key.rsplit("-", 1)[1])))

        store = OutputStore(tmp_path, "shout", {}, template.dedup_key).open()
        tally = Tally(store, template, 0, 12, 100)
        with StubTeacher(reply) as stub:
            teacher = TeacherConfig(f"{stub.url}/chat/completions", "stub")
            asyncio.run(run_local(tally, template, teacher, RunSettings(4, 0, False), "shout"))
    assert store.count == 12
    lines = (tmp_path / "shout-00000.jsonl").read_text().splitlines()
    for line in lines:
        record = json.loads(line)
        word = template.make_job(0, int(record["id"][-7:])).meta["word"]
        assert record["messages"][-1]["content"].startswith(word.upper())
