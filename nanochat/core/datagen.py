"""The contract of a datagen template: what ``nanochat datagen`` asks a teacher and what it keeps.

A template (kind ``template``, registered through ``nanochat_register_templates``) turns a seed
and a job number into a :class:`DatagenJob` (the chat messages sent to an OpenAI-compatible
teacher), and turns the teacher's :class:`TeacherReply` into a record for a jsonl file, or
raises :class:`Rejected` with a short reason. The machinery around it (requests, retries, rate
limits, deduplication, shards, resuming, Celery) lives in the plugin that provides the command;
a template only decides *what* to ask and *what counts as a good answer*.

Every record holds ``messages`` in the chat schema of :mod:`nanochat.core.data`, so the
``chat-jsonl`` dataset reads the output whatever the template.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from nanochat.core.errors import NanochatError


@dataclass(frozen=True)
class DatagenJob:
    """One request to the teacher, fully determined by the template, its options, seed and index.

    Attributes:
        key: a stable identifier, unique per template, seed and index (it becomes the record's
            ``id`` and the Celery task's id, which is what makes re-delivery harmless).
        index: the job's number (0, 1, 2, ...).
        messages: the OpenAI chat messages sent to the teacher (``role`` / ``content`` strings).
        params: sampling fields of the request (``temperature``, ``max_tokens``, ``top_p``).
        meta: what the template chose for this job (topic, persona, ...); kept in the record.
    """

    key: str
    index: int
    messages: list[dict[str, str]]
    params: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TeacherReply:
    """What the teacher answered to a job.

    Attributes:
        text: the assistant message's content.
        finish_reason: ``stop``, ``length`` (cut by ``max_tokens``), or None when not given.
    """

    text: str
    finish_reason: str | None = "stop"


class Rejected(NanochatError):
    """A teacher answer that a template does not accept; ``reason`` is a short slug.

    Args:
        reason: a short, stable name of the check that failed (``not-json``, ``wrong-answer``),
            used to count rejections by cause.
        detail: one line for logs.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@runtime_checkable
class DatagenTemplate(Protocol):
    """A datagen template: what a factory of kind ``template`` returns.

    ``nanochat.testing.template_contract`` checks an implementation against this contract.
    """

    data_kind: str
    """What the records are for: ``chat``, or ``problems`` (records also carry GSM8K-style
    ``question`` / ``answer`` fields, so the ``gsm8k`` dataset can read them as problems)."""

    def make_job(self, seed: int, index: int) -> DatagenJob:
        """The job ``index`` of a run seeded with ``seed``; the same arguments give an equal job
        on every machine and in every process."""
        ...

    def accept(self, job: DatagenJob, reply: TeacherReply) -> dict[str, Any]:
        """Check the teacher's answer and build the record (a JSON-serialisable dict with a
        ``messages`` conversation that :func:`nanochat.core.data.validate_conversation` accepts).

        Raises:
            Rejected: the answer fails one of the template's checks (never another exception).
        """
        ...

    def dedup_key(self, record: Mapping[str, Any]) -> str:
        """The text two records share exactly when one is a duplicate of the other."""
        ...

    def example_reply(self, job: DatagenJob) -> str:
        """An answer a good teacher could give to ``job``, which :meth:`accept` accepts (for
        documentation, contract tests and stub teachers)."""
        ...
