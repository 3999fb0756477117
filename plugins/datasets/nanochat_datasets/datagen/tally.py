"""Counting a datagen run: outcomes into the store, what to launch next, the usage summary.

Used by the local runner and by the Celery enqueuer alike, so both stop at exactly ``n`` records,
launch work the same way and print the same summary.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nanochat.core.datagen import DatagenTemplate
from nanochat.core.errors import NanochatError
from nanochat_datasets.datagen.jobs import Outcome
from nanochat_datasets.datagen.store import OutputStore
from nanochat_datasets.datagen.teacher import Usage


class FatalTeacherError(NanochatError):
    """The teacher refused in a way no retry fixes (bad API key, wrong URL or model)."""


@dataclass
class Tally:
    """The state of one run over an :class:`OutputStore`.

    Args:
        store: the opened output folder.
        template: the template (makes the jobs).
        seed: the run's seed.
        n: records wanted in the folder.
        max_jobs: the most new jobs this run may start.
        max_consecutive_failures: stop when this many jobs in a row got no answer at all.
    """

    store: OutputStore
    template: DatagenTemplate
    seed: int
    n: int
    max_jobs: int
    max_consecutive_failures: int = 50
    usage: Usage = field(default_factory=Usage)
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    written: int = 0
    duplicates: int = 0
    surplus: int = 0
    started_jobs: int = 0
    finished_jobs: int = 0
    accepted: int = 0
    max_in_flight: int = 0
    workers: Counter[str] = field(default_factory=Counter)
    _consecutive_failures: int = 0
    _next_index: int = 0
    _started: float = field(default_factory=time.monotonic)
    initial: int = 0

    def __post_init__(self) -> None:
        self.initial = self.store.count

    @property
    def done(self) -> bool:
        """Whether the folder holds ``n`` records."""
        return self.store.count >= self.n

    @property
    def exhausted(self) -> bool:
        """Whether this run may start no more jobs."""
        return self.started_jobs >= self.max_jobs

    def want_more(self, in_flight: int, limit: int) -> bool:
        """Whether to start another job now, with ``in_flight`` running and at most ``limit``.

        Jobs are started while the records expected from those running (at the acceptance rate
        seen so far) would not reach ``n``: a teacher that always passes gets exactly the jobs
        it needs, one that is mostly rejected keeps ``limit`` jobs running.
        """
        if self.done or self.exhausted or in_flight >= limit:
            return False
        rate = (self.accepted + 1) / (self.finished_jobs + 1)
        return self.store.count + rate * in_flight < self.n

    def next_jobs(self) -> Iterator[int]:
        """Indices of jobs not yet done, in order (each handed out once)."""
        while True:
            index = self._next_index
            self._next_index += 1
            if not self.store.is_done(self.template.make_job(self.seed, index).key):
                yield index

    def started(self, in_flight: int) -> None:
        """Count a job as started, ``in_flight`` now running (it included)."""
        self.started_jobs += 1
        self.max_in_flight = max(self.max_in_flight, in_flight)

    def record(self, outcome: Outcome) -> None:
        """Take one job's outcome: write its record, or count why there is none.

        Raises:
            FatalTeacherError: the outcome is fatal.
            NanochatError: too many jobs in a row failed (the teacher seems unreachable).
        """
        self.finished_jobs += 1
        if outcome.usage is not None:
            self.usage.add(outcome.usage)
        if outcome.worker:
            self.workers[outcome.worker] += 1
        if outcome.status == "fatal":
            if outcome.reason.startswith("http-"):
                raise FatalTeacherError(
                    f"the teacher refused the request ({outcome.reason}: {outcome.detail}); "
                    "check --endpoint, --model and --api-key-env"
                )
            where = f" on {outcome.worker}" if outcome.worker else ""
            raise FatalTeacherError(f"a job cannot run{where} ({outcome.reason}: {outcome.detail})")
        if outcome.status == "failed":
            self.failed[outcome.reason] += 1
            self._consecutive_failures += 1
            if self._consecutive_failures >= self.max_consecutive_failures:
                raise NanochatError(
                    f"{self._consecutive_failures} jobs in a row got no answer (last: "
                    f"{outcome.reason}: {outcome.detail}); is the teacher at --endpoint up?"
                )
            return
        self._consecutive_failures = 0
        if outcome.status == "rejected":
            self.rejected[outcome.reason] += 1
            self.store.log_attempt(outcome.key, "rejected", outcome.reason)
            return
        self.accepted += 1
        if self.done:
            self.surplus += 1
            return
        assert outcome.record is not None
        verdict = self.store.add(outcome.record)
        if verdict == "written":
            self.written += 1
        elif verdict == "duplicate":
            self.duplicates += 1
            self.store.log_attempt(outcome.key, "rejected", "duplicate")

    def summary(self) -> dict[str, Any]:
        """The usage summary (also written to ``OUT/.datagen/summary.json``)."""
        elapsed = time.monotonic() - self._started
        return {
            "records": self.store.count,
            "wanted": self.n,
            "records_before": self.initial,
            "written": self.written,
            "jobs": self.finished_jobs,
            "accepted": self.accepted,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": sum(self.rejected.values()),
            "duplicates": self.duplicates,
            "surplus": self.surplus,
            "failed": dict(sorted(self.failed.items())),
            "failed_total": sum(self.failed.values()),
            "max_in_flight": self.max_in_flight,
            "workers": dict(sorted(self.workers.items())),
            "elapsed_s": round(elapsed, 3),
            **self.usage.as_dict(),
        }


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items()) or "none"


def format_summary(summary: dict[str, Any]) -> list[str]:
    """The summary as a few lines for people."""
    elapsed = summary["elapsed_s"]
    rate = summary["written"] / elapsed if elapsed > 0 else 0.0
    return [
        f"records: {summary['records']}/{summary['wanted']} in the folder "
        f"({summary['written']} written now, {rate:.2f}/s over {elapsed:.1f}s)",
        f"jobs: {summary['jobs']} finished, {summary['accepted']} accepted, "
        f"{summary['rejected_total']} rejected ({_counts(summary['rejected'])}), "
        f"{summary['duplicates']} duplicates dropped, {summary['surplus']} surplus, "
        f"{summary['failed_total']} failed ({_counts(summary['failed'])})",
        f"requests: {summary['requests']} ({summary['retries']} retries; failed attempts: "
        f"{_counts(summary['errors'])}); max in flight {summary['max_in_flight']}",
        f"tokens: {summary['prompt_tokens']} prompt + {summary['completion_tokens']} completion",
    ]
