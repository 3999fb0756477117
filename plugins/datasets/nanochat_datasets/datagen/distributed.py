"""Datagen on many machines: the same jobs as Celery tasks on a Redis broker.

``nanochat datagen TEMPLATE ... --broker redis://HOST:6379/0`` enqueues one task per job (the
task id is the run's id and the job's key) and collects the outcomes; ``nanochat datagen worker
--broker ...`` runs them. A worker rebuilds the job from the template, its options, the seed and
the index (the same job on every machine), asks the teacher, lets the template judge, and stores
the outcome in Redis with ``SET NX``: the first outcome of a job is the only one, so a job
delivered twice writes once, and a worker that finds the outcome already there does nothing.

Tasks are acknowledged late (after they ran) and rejected when their worker is lost, so the jobs
of a worker killed mid-job go back to the queue: a surviving worker hands unacknowledged messages
out again once ``--visibility-timeout`` seconds have passed (it looks every few seconds, at
most every 10). Only the enqueuing command writes the
output folder; workers need no shared disk. API keys never travel through the broker: a worker
reads the variable named by ``--api-key-env`` from its own environment.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from nanochat.core.errors import NanochatError, UsageError
from nanochat_datasets.datagen.jobs import Outcome
from nanochat_datasets.datagen.pacing import TokenBucket
from nanochat_datasets.datagen.runner import RunSettings, _postfix, _progress
from nanochat_datasets.datagen.tally import Tally
from nanochat_datasets.datagen.teacher import TeacherConfig

log = logging.getLogger(__name__)

TASK_NAME = "nanochat.datagen.job"
QUEUE = "nanochat-datagen"
RESULT_TTL_S = 7 * 24 * 3600
DEFAULT_VISIBILITY_TIMEOUT_S = 3600.0


def check_broker(url: str) -> str:
    """``url`` when it is a Redis URL.

    Raises:
        UsageError: anything else.
    """
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"--broker must be a redis:// URL (e.g. redis://HOST:6379/0), not {url!r}")
    return url


def run_id(template: str, options: Mapping[str, Any], seed: int, model: str) -> str:
    """The id of a run's jobs in Redis: the same settings give the same id on every machine."""
    text = json.dumps([template, dict(options), seed, model], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def result_key(run: str, index: int) -> str:
    """Where the outcome of job ``index`` of run ``run`` is stored."""
    return f"nanochat:datagen:{run}:result:{index}"


def stop_key(run: str) -> str:
    """Set when the enqueuer has its records: workers then skip the run's queued jobs."""
    return f"nanochat:datagen:{run}:stop"


def running_key(run: str) -> str:
    """A hash: job index -> the worker running it now."""
    return f"nanochat:datagen:{run}:running"


def executions_key(run: str) -> str:
    """A hash: job index -> how many times a worker started asking the teacher for it."""
    return f"nanochat:datagen:{run}:executions"


def redis_client(url: str) -> Any:
    """A Redis client for ``url`` (redis-py)."""
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)


def make_app(broker: str, visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT_S) -> Any:
    """The Celery app: late acks, re-delivery of a lost worker's jobs, one job prefetched."""
    from celery import Celery

    app = Celery("nanochat-datagen", broker=broker)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=QUEUE,
        broker_transport_options={
            "visibility_timeout": visibility_timeout,
            # sweep for abandoned jobs every few seconds (kombu's default is about every 100 s)
            "unacked_restore_interval": max(1, min(10, round(visibility_timeout / 4))),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    app.task(name=TASK_NAME, bind=True)(_task)
    return app


# --- the worker side -----------------------------------------------------------------------

_worker_state: dict[str, Any] = {"bucket": TokenBucket(None), "templates": {}}
_templates_lock = threading.Lock()


def _template(name: str, options: Mapping[str, Any]) -> Any:
    from nanochat.core.config import options_from_dict
    from nanochat.core.registry import create_component, get_registry

    cache_key = json.dumps([name, dict(options)], sort_keys=True)
    with _templates_lock:
        cached = _worker_state["templates"].get(cache_key)
        if cached is None:
            resolved = get_registry().resolve("template", name)
            values = options_from_dict(resolved.spec.options, options)
            cached = create_component(resolved, values)
            _worker_state["templates"][cache_key] = cached
        return cached


def _task(task: Any, payload: dict[str, Any]) -> str:
    """The Celery task: run one job unless its outcome exists or the run has stopped."""
    return execute(payload, task.request.hostname or socket.gethostname())


def execute(payload: dict[str, Any], worker: str) -> str:
    """Run the job ``payload`` describes on this worker and store its outcome once.

    Returns:
        ``done`` (ran and stored), ``duplicate`` (another delivery stored it first), ``skipped``
        (already stored, or the run stopped).
    """
    client = redis_client(payload["broker"])
    run, index = payload["run"], int(payload["index"])
    key = result_key(run, index)
    if client.exists(key) or client.exists(stop_key(run)):
        return "skipped"
    client.hset(running_key(run), str(index), worker)
    client.hincrby(executions_key(run), str(index), 1)
    try:
        outcome = _outcome(payload, index)
    except NanochatError as exc:  # e.g. the template is not installed here: every job would fail
        outcome = Outcome(payload["key"], index, "fatal", "worker-error", str(exc))
    except Exception as exc:  # noqa: BLE001 - the enqueuer must hear of every job
        log.exception("job %s failed on this worker", payload["key"])
        outcome = Outcome(payload["key"], index, "failed", "worker-error", type(exc).__name__)
    except BaseException:
        client.hdel(running_key(run), str(index))
        raise
    outcome.worker = worker
    stored = client.set(key, json.dumps(outcome.as_dict()), nx=True, ex=RESULT_TTL_S)
    client.hdel(running_key(run), str(index))  # after the outcome: a kill leaves the mark
    return "done" if stored else "duplicate"


def _outcome(payload: dict[str, Any], index: int) -> Outcome:
    import aiohttp

    from nanochat_datasets.datagen.jobs import run_job

    template = _template(payload["template"], payload["options"])
    job = template.make_job(int(payload["seed"]), index)
    if job.key != payload["key"]:
        return Outcome(
            payload["key"],
            index,
            "fatal",
            "template-mismatch",
            "job keys differ "
            "between the enqueuer and this worker: install the same template version",
        )
    settings = dict(payload["teacher"])
    key_env = settings.pop("api_key_env", None)
    api_key = None
    if key_env:
        api_key = os.environ.get(key_env)
        if not api_key:
            return Outcome(
                job.key,
                index,
                "fatal",
                "api-key-missing",
                f"${key_env} is not set on worker {socket.gethostname()}",
            )
    teacher = TeacherConfig(**settings, api_key=api_key)

    async def go() -> Outcome:
        async with aiohttp.ClientSession() as session:
            return await run_job(session, template, job, teacher, _worker_state["bucket"])

    return asyncio.run(go())


def start_worker(
    broker: str,
    concurrency: int,
    visibility_timeout: float,
    rate: float,
    hostname: str | None,
    loglevel: str = "WARNING",
) -> None:
    """Consume datagen jobs from ``broker`` until stopped (a thread per job in flight)."""
    _worker_state["bucket"] = TokenBucket(rate or None)
    app = make_app(broker, visibility_timeout)
    argv = [
        "worker",
        "--pool=threads",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-Q",
        QUEUE,
    ]
    if hostname:
        argv += ["--hostname", hostname]
    app.worker_main(argv=argv)


# --- the enqueuing side --------------------------------------------------------------------


def run_distributed(
    tally: Tally,
    template_name: str,
    options: Mapping[str, Any],
    teacher: TeacherConfig,
    api_key_env: str | None,
    settings: RunSettings,
    broker: str,
    run: str,
    name: str,
    poll_s: float = 0.05,
) -> None:
    """Enqueue jobs (at most ``settings.concurrency`` outstanding) and write their outcomes until
    the folder holds ``tally.n`` records or no job may be started.

    Raises:
        NanochatError: the broker cannot be reached, or a fatal teacher error.
    """
    client = redis_client(broker)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - redis raises several kinds for an unreachable host
        raise NanochatError(f"cannot reach the broker at {broker} ({exc})") from None
    app = make_app(broker)
    client.delete(stop_key(run))
    teacher_fields = {k: v for k, v in asdict(teacher).items() if k != "api_key"}
    teacher_fields["api_key_env"] = api_key_env
    outstanding: dict[int, str] = {}
    indices = tally.next_jobs()
    with _progress(tally, settings, name) as bar:
        try:
            while True:
                while tally.want_more(len(outstanding), settings.concurrency):
                    index = next(indices)
                    job = template_job_key(tally, index)
                    outstanding[index] = result_key(run, index)
                    tally.started(len(outstanding))
                    if client.exists(outstanding[index]):
                        continue  # done by workers before a restart of this command
                    payload = {
                        "broker": broker,
                        "run": run,
                        "template": template_name,
                        "options": dict(options),
                        "seed": tally.seed,
                        "index": index,
                        "key": job,
                        "teacher": teacher_fields,
                    }
                    app.send_task(TASK_NAME, args=[payload], task_id=f"{run}:{job}", queue=QUEUE)
                if not outstanding:
                    break
                items = list(outstanding.items())
                values = client.mget([key for _, key in items])
                progressed = False
                for (index, key), value in zip(items, values, strict=True):
                    if value is None:
                        continue
                    del outstanding[index]
                    progressed = True
                    outcome = Outcome.from_dict(json.loads(value))
                    if outcome.status == "failed":
                        client.delete(key)  # a later run may try this job again
                    before = tally.store.count
                    tally.record(outcome)
                    bar.update(tally.store.count - before, **_postfix(tally))
                    if tally.done:
                        break
                if tally.done:
                    break
                if not progressed:
                    time.sleep(poll_s)
        finally:
            client.set(stop_key(run), "1", ex=RESULT_TTL_S)


def template_job_key(tally: Tally, index: int) -> str:
    """The key of job ``index`` of the tally's template and seed."""
    return tally.template.make_job(tally.seed, index).key
