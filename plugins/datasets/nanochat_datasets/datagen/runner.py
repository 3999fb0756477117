"""The local runner: jobs as asyncio tasks over one aiohttp session, ``concurrency`` at a time.

Records go to the store as answers arrive; the run stops at exactly ``n`` records in the folder
(answers still in flight then are cancelled). Killing it loses only the jobs in flight: the next
run reads the folder back and asks for what is missing.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import aiohttp

from nanochat.core.datagen import DatagenTemplate
from nanochat.core.progress import Progress
from nanochat_datasets.datagen.jobs import Outcome, run_job
from nanochat_datasets.datagen.pacing import TokenBucket
from nanochat_datasets.datagen.tally import Tally
from nanochat_datasets.datagen.teacher import TeacherConfig


@dataclass(frozen=True)
class RunSettings:
    """How a run goes.

    Attributes:
        concurrency: jobs in flight at once (the local runner) or enqueued at once (Celery).
        rate: requests per second at most (0: no limit).
        show_progress: show a progress bar / lines on stderr.
    """

    concurrency: int = 8
    rate: float = 0.0
    show_progress: bool = True


def _progress(tally: Tally, settings: RunSettings, name: str) -> Progress:
    return Progress(
        tally.n,
        f"datagen {name}",
        "records",
        initial=tally.store.count,
        enabled=settings.show_progress,
    )


def _postfix(tally: Tally) -> dict[str, int]:
    return {
        "jobs": tally.finished_jobs,
        "rejected": sum(tally.rejected.values()),
        "failed": sum(tally.failed.values()),
        "retries": tally.usage.retries,
    }


async def run_local(
    tally: Tally,
    template: DatagenTemplate,
    teacher: TeacherConfig,
    settings: RunSettings,
    name: str,
) -> None:
    """Run jobs until the folder holds ``tally.n`` records or no job may be started.

    Raises:
        FatalTeacherError: the teacher refused the key, URL or model.
        NanochatError: too many jobs in a row got no answer.
    """
    bucket = TokenBucket(settings.rate or None)
    rng = random.Random()
    indices = tally.next_jobs()
    connector = aiohttp.TCPConnector(limit=max(1, settings.concurrency))
    running: set[asyncio.Task[Outcome]] = set()
    with _progress(tally, settings, name) as bar:
        async with aiohttp.ClientSession(connector=connector) as session:
            try:
                while True:
                    while tally.want_more(len(running), settings.concurrency):
                        job = template.make_job(tally.seed, next(indices))
                        running.add(
                            asyncio.ensure_future(
                                run_job(session, template, job, teacher, bucket, rng)
                            )
                        )
                        tally.started(len(running))
                    if not running:
                        break
                    finished, running = await asyncio.wait(
                        running, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in finished:
                        before = tally.store.count
                        tally.record(task.result())
                        bar.update(tally.store.count - before, **_postfix(tally))
                    if tally.done:
                        break
            finally:
                for task in running:
                    task.cancel()
                if running:
                    await asyncio.gather(*running, return_exceptions=True)
