"""The checks every datagen template plugin must pass, reusable by third-party plugins.

Each function takes a template (what a ``template`` spec's factory returns) and raises
``AssertionError`` when the contract of :class:`~nanochat.core.datagen.DatagenTemplate` is
broken. :func:`check_template` runs them all.
"""

from __future__ import annotations

import json
from typing import Any

from nanochat.core.data import validate_conversation
from nanochat.core.datagen import DatagenJob, Rejected, TeacherReply

ROLES = ("system", "user", "assistant")
BAD_REPLIES: tuple[str, ...] = (
    "",
    "   \n\t ",
    "\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd",
    "<|assistant_start|><|assistant_end|><|bos|>",
    "x" * 200_000,
)
"""Answers no template may accept (empty, broken text, special tokens, huge)."""


def check_jobs(template: Any, count: int = 32) -> list[DatagenJob]:
    """Jobs are deterministic, well formed, JSON-serialisable, with unique keys per seed."""
    assert template.data_kind in ("chat", "problems"), template.data_kind
    jobs = [template.make_job(0, i) for i in range(count)]
    keys = set()
    for i, job in enumerate(jobs):
        assert isinstance(job, DatagenJob), type(job)
        assert job.index == i
        again = template.make_job(0, i)
        assert (again.key, again.messages, dict(again.params)) == (
            job.key,
            job.messages,
            dict(job.params),
        ), "make_job is not deterministic"
        assert isinstance(job.key, str) and job.key and len(job.key) <= 200
        assert all(c.isalnum() or c in "-_.:" for c in job.key), job.key
        keys.add(job.key)
        assert isinstance(job.messages, list) and job.messages
        for message in job.messages:
            assert message.get("role") in ROLES, message
            assert isinstance(message.get("content"), str) and message["content"], message
        assert job.messages[-1]["role"] == "user", "the teacher must be asked to answer a user"
        json.dumps({"messages": job.messages, "params": dict(job.params), "meta": dict(job.meta)})
    assert len(keys) == count, "job keys repeat"
    other_seed = {template.make_job(1, i).key for i in range(count)}
    assert not other_seed & keys, "keys of another seed collide"
    return jobs


def check_example_accepted(template: Any, jobs: list[DatagenJob]) -> None:
    """The template's own example answer is accepted into a valid, JSON-serialisable record."""
    for job in jobs:
        reply = TeacherReply(template.example_reply(job), "stop")
        record = template.accept(job, reply)
        assert isinstance(record, dict)
        validate_conversation(record["messages"], f"template record of {job.key}")
        json.dumps(record)
        key = template.dedup_key(record)
        assert isinstance(key, str) and key
        assert key == template.dedup_key(json.loads(json.dumps(record))), "dedup_key not stable"
        if template.data_kind == "problems":
            assert isinstance(record.get("question"), str) and record["question"]
            assert isinstance(record.get("answer"), str) and "####" in record["answer"]


def check_bad_replies_rejected(template: Any, jobs: list[DatagenJob]) -> None:
    """Every answer in :data:`BAD_REPLIES`, and a good one cut by ``max_tokens``, raises
    :class:`~nanochat.core.datagen.Rejected` with a short reason (and nothing else)."""
    for job in jobs[:4]:
        cut = TeacherReply(template.example_reply(job), "length")
        for reply in [TeacherReply(text, "stop") for text in BAD_REPLIES] + [cut]:
            try:
                template.accept(job, reply)
            except Rejected as exc:
                assert exc.reason and " " not in exc.reason, exc.reason
            else:
                raise AssertionError(f"accepted a bad answer: {reply.text[:60]!r}")


def check_template(template: Any) -> None:
    """Run every check of this module on ``template``."""
    jobs = check_jobs(template)
    check_example_accepted(template, jobs)
    check_bad_replies_rejected(template, jobs)
