"""One datagen job end to end: ask the teacher, let the template judge, build the record.

Shared by the local asyncio runner and the Celery task, so a job means the same on one machine
and on many. The outcome is ``accepted`` (with its record), ``rejected`` (the template's reason),
``failed`` (the teacher gave no answer after the retries: its cause) or ``fatal`` (the run must
stop: a refused key or a wrong URL).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from typing import Any

import aiohttp

from nanochat.core.data import DataError, validate_conversation
from nanochat.core.datagen import DatagenJob, DatagenTemplate, Rejected
from nanochat_datasets.datagen.pacing import TokenBucket
from nanochat_datasets.datagen.teacher import TeacherConfig, TeacherError, Usage, ask_teacher

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """How one job ended.

    Attributes:
        key: the job's key.
        index: the job's number.
        status: ``accepted``, ``rejected``, ``failed`` or ``fatal``.
        reason: the rejection reason or failure cause (empty when accepted).
        detail: one line about the reason.
        record: the record to write (accepted only).
        usage: requests, retries and tokens this job cost.
        worker: who ran it (a Celery worker's name; empty locally).
    """

    key: str
    index: int
    status: str
    reason: str = ""
    detail: str = ""
    record: dict[str, Any] | None = None
    usage: Usage | None = None
    worker: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (what a Celery worker stores)."""
        return {
            "key": self.key,
            "index": self.index,
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "record": self.record,
            "usage": (self.usage or Usage()).as_dict(),
            "worker": self.worker,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        """The inverse of :meth:`as_dict`."""
        return cls(
            key=str(data["key"]),
            index=int(data["index"]),
            status=str(data["status"]),
            reason=str(data.get("reason", "")),
            detail=str(data.get("detail", "")),
            record=data.get("record"),
            usage=Usage.from_dict(data.get("usage") or {}),
            worker=str(data.get("worker", "")),
        )


def judge(template: DatagenTemplate, job: DatagenJob, reply: Any) -> Outcome:
    """The template's verdict on ``reply`` as an outcome; a template that raises anything but
    :class:`Rejected` rejects with ``template-error`` (logged) instead of stopping the run."""
    try:
        record = template.accept(job, reply)
        validate_conversation(record.get("messages"), f"job {job.key}")
        record = {"id": job.key, **{k: v for k, v in record.items() if k != "id"}}
        json.dumps(record)
    except Rejected as exc:
        return Outcome(job.key, job.index, "rejected", exc.reason, exc.detail)
    except DataError as exc:
        return Outcome(job.key, job.index, "rejected", "invalid-conversation", str(exc))
    except Exception as exc:  # noqa: BLE001 - a broken template must not stop the run
        log.warning("job %s: the template raised %s: %s", job.key, type(exc).__name__, exc)
        return Outcome(job.key, job.index, "rejected", "template-error", type(exc).__name__)
    return Outcome(job.key, job.index, "accepted", record=record)


async def run_job(
    session: aiohttp.ClientSession,
    template: DatagenTemplate,
    job: DatagenJob,
    config: TeacherConfig,
    bucket: TokenBucket,
    rng: random.Random | None = None,
) -> Outcome:
    """Ask the teacher for ``job`` (with retries) and judge the answer; never raises for a bad
    answer (a fatal teacher error comes back as a ``fatal`` outcome)."""
    usage = Usage()
    try:
        reply = await ask_teacher(session, config, job, bucket, usage, rng)
    except TeacherError as exc:
        status = "fatal" if exc.fatal else "failed"
        return Outcome(job.key, job.index, status, exc.cause, exc.detail, usage=usage)
    outcome = judge(template, job, reply)
    outcome.usage = usage
    return outcome
