"""The worker pool, seen from the server's event loop: processes, routing, queueing, stats.

Each worker is a process (:mod:`nanochat.plugins.server.worker`) holding one model and one
engine. A request goes to the alive worker with the most free slots; when every slot is taken
it waits in one bounded queue (full: :class:`Overloaded`, which the server turns into 503 with
``Retry-After``) and is sent to the first worker that frees a slot. Workers stream back events
that the pool hands to each request's :class:`Job` queue.

Processes rather than threads or tasks: a worker that crashes, is OOM-killed or is killed by
hand takes nothing else with it. Its death is seen at once (the loop watches each process's
sentinel and pipe): it is marked dead in :meth:`WorkerPool.stats`, its requests get a
:class:`Failure`, and the others keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from nanochat.core.errors import NanochatError
from nanochat.plugins.server.worker import WorkerSpec, worker_main

log = logging.getLogger(__name__)


class ServerStartError(NanochatError):
    """A worker could not load the model (the message says which and why)."""


class Overloaded(Exception):
    """Every slot is busy and the queue is full."""


class Unavailable(Exception):
    """No worker is alive, or the server is shutting down."""


@dataclass(frozen=True)
class Piece:
    """Text of a request (``tokens`` new tokens), ``finish`` on its last piece."""

    text: str
    tokens: int
    finish: str | None = None


@dataclass(frozen=True)
class Failure:
    """A request that cannot go on (its worker died, the engine refused it, shutdown)."""

    status: int
    message: str
    type: str = "server_error"


@dataclass(eq=False)
class Job:
    """One request in the pool: what to generate, and where its output goes."""

    prompt: list[int]
    params: dict[str, Any]
    stops: list[str] = field(default_factory=list)
    id: int = 0
    worker: int | None = None
    tokens: int = 0
    done: bool = False
    output: asyncio.Queue[Piece | Failure] = field(default_factory=asyncio.Queue)


@dataclass(eq=False)
class _Worker:
    """The parent's view of one worker process."""

    spec: WorkerSpec
    process: Any
    conn: Connection
    ready: bool = False
    alive: bool = True
    info: dict[str, Any] = field(default_factory=dict)
    jobs: dict[int, Job] = field(default_factory=dict)
    busy_rows: int = 0
    tokens_served: int = 0
    requests_served: int = 0
    exit_code: int | None = None
    error: str | None = None

    @property
    def free(self) -> int:
        return self.spec.slots - len(self.jobs)


class WorkerPool:
    """Worker processes, one bounded queue, least-loaded routing.

    Args:
        specs: one per worker.
        queue_size: requests that may wait for a slot.
    """

    def __init__(self, specs: Sequence[WorkerSpec], queue_size: int) -> None:
        self.specs = list(specs)
        self.queue_size = queue_size
        self.workers: list[_Worker] = []
        self.waiting: deque[Job] = deque()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = time.time()

    # --- life cycle ----------------------------------------------------------------------

    async def start(self, timeout: float = 600.0) -> None:
        """Start every worker and wait until each has loaded its model.

        Raises:
            ServerStartError: a worker failed to load (its one-line reason) or took too long.
        """
        self._loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")
        for spec in self.specs:
            parent, child = context.Pipe()
            process = context.Process(
                target=worker_main, args=(child, spec), name=f"nanochat-worker-{spec.index}"
            )
            process.start()
            child.close()
            worker = _Worker(spec, process, parent)
            self.workers.append(worker)
            self._loop.add_reader(parent.fileno(), self._on_readable, worker)
            self._loop.add_reader(process.sentinel, self._on_exit, worker)
        deadline = time.monotonic() + timeout
        while not all(w.ready for w in self.workers):
            failed = [w for w in self.workers if not w.alive]
            if failed:
                w = failed[0]
                raise ServerStartError(
                    f"worker {w.spec.index} ({w.spec.device}) failed to start: "
                    f"{w.error or f'exit code {w.exit_code}'}"
                )
            if time.monotonic() > deadline:
                raise ServerStartError(f"the workers did not load the model within {timeout:.0f} s")
            await asyncio.sleep(0.05)

    def close(self, timeout: float = 5.0) -> None:
        """Stop every worker (politely, then by force after ``timeout`` seconds)."""
        for worker in self.workers:
            self._forget(worker)
            if worker.alive:
                with contextlib.suppress(OSError, ValueError):
                    worker.conn.send(("stop",))
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1.0)
            worker.conn.close()

    def fail_all(self, failure: Failure) -> None:
        """End every waiting and running request with ``failure`` (shutdown)."""
        for job in list(self.waiting):
            self._finish(job, failure)
        self.waiting.clear()
        for worker in self.workers:
            for job in list(worker.jobs.values()):
                self.cancel(job)
                self._finish(job, failure)

    @property
    def active(self) -> int:
        """Requests waiting or running."""
        return len(self.waiting) + sum(len(w.jobs) for w in self.workers)

    @property
    def alive(self) -> list[_Worker]:
        """Workers that can take requests."""
        return [w for w in self.workers if w.alive and w.ready]

    # --- requests ------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Send ``job`` to the least-loaded worker, or queue it.

        Raises:
            Unavailable: no worker is alive.
            Overloaded: every slot is taken and the queue is full.
        """
        if not self.alive:
            raise Unavailable("no worker is alive")
        job.id = next(self._ids)
        if not self.waiting and self._dispatch(job):
            return
        if len(self.waiting) >= self.queue_size:
            raise Overloaded(f"all {self.slots} slots are busy and {len(self.waiting)} wait")
        self.waiting.append(job)

    def cancel(self, job: Job) -> None:
        """Drop ``job`` (its client went away): out of the queue, or its slot freed at once."""
        if job.done:
            return
        job.done = True
        if job in self.waiting:
            self.waiting.remove(job)
            return
        worker = self.workers[job.worker] if job.worker is not None else None
        if worker is not None and worker.jobs.pop(job.id, None) is not None and worker.alive:
            self._send(worker, ("cancel", job.id))
            self._pump()

    @property
    def slots(self) -> int:
        """Slots of the alive workers."""
        return sum(w.spec.slots for w in self.alive)

    def _dispatch(self, job: Job) -> bool:
        """Send ``job`` to the alive worker with the most free slots; False if none is free."""
        candidates = [w for w in self.alive if w.free > 0]
        if not candidates:
            return False
        worker = max(candidates, key=lambda w: (w.free, -w.spec.index))
        job.worker = worker.spec.index
        worker.jobs[job.id] = job
        self._send(worker, ("submit", job.id, job.prompt, job.params, job.stops))
        return True

    def _pump(self) -> None:
        """Move queued requests into freed slots."""
        while self.waiting and self._dispatch(self.waiting[0]):
            self.waiting.popleft()

    def _send(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        try:
            worker.conn.send(message)
        except (OSError, ValueError) as exc:
            self._on_death(worker, f"its pipe broke ({type(exc).__name__})")

    def _finish(self, job: Job, item: Piece | Failure) -> None:
        job.done = True
        job.output.put_nowait(item)

    # --- worker messages -----------------------------------------------------------------

    def _on_readable(self, worker: _Worker) -> None:
        try:
            while worker.alive and worker.conn.poll():
                self._handle(worker, worker.conn.recv())
        except (EOFError, OSError):
            self._on_exit(worker)

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "events":
            worker.busy_rows = message[2]
            for rid, text, tokens, finish in message[1]:
                worker.tokens_served += tokens
                job = worker.jobs.get(rid)
                if job is None:  # cancelled meanwhile
                    continue
                job.tokens += tokens
                job.output.put_nowait(Piece(text, tokens, finish))
                if finish is not None:
                    job.done = True
                    worker.requests_served += 1
                    del worker.jobs[rid]
            self._pump()
        elif kind == "state":
            worker.busy_rows = message[1]
        elif kind == "error":
            job = worker.jobs.pop(message[1], None)
            if job is not None:
                self._finish(job, Failure(400, message[2], "invalid_request_error"))
            self._pump()
        elif kind == "ready":
            worker.ready, worker.info = True, message[1]
            log.info(
                "worker %d ready on %s (pid %s)",
                worker.spec.index,
                worker.spec.device,
                worker.info.get("pid"),
            )
        elif kind == "fatal":
            worker.error = message[1]
            self._on_death(worker, message[1])

    def _on_exit(self, worker: _Worker) -> None:
        if not worker.alive:
            return
        worker.process.join(0.5)
        worker.exit_code = worker.process.exitcode
        self._on_death(worker, f"its process exited (code {worker.exit_code})")

    def _on_death(self, worker: _Worker, reason: str) -> None:
        """Mark ``worker`` dead and fail its requests with a 5xx; the others go on."""
        if not worker.alive:
            return
        worker.alive = False
        worker.error = worker.error or reason
        self._forget(worker)
        if worker.ready:
            log.error("worker %d (%s) died: %s", worker.spec.index, worker.spec.device, reason)
        for job in list(worker.jobs.values()):
            self._finish(job, Failure(502, f"worker {worker.spec.index} died: {reason}"))
        worker.jobs.clear()
        worker.busy_rows = 0
        if not self.alive:
            for job in list(self.waiting):
                self._finish(job, Failure(503, "no worker is alive", "service_unavailable"))
            self.waiting.clear()
        else:
            self._pump()

    def _forget(self, worker: _Worker) -> None:
        """Stop watching ``worker``'s pipe and process."""
        if self._loop is None:
            return
        for fd in (worker.conn, worker.process.sentinel):
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_reader(fd.fileno() if hasattr(fd, "fileno") else fd)

    # --- what /stats shows ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Workers (alive, busy and free slots, tokens served), queue length, totals."""
        workers = []
        for w in self.workers:
            workers.append(
                {
                    "index": w.spec.index,
                    "device": w.spec.device,
                    "pid": w.info.get("pid", w.process.pid),
                    "alive": w.alive,
                    "ready": w.ready,
                    "slots": w.spec.slots,
                    "busy_slots": w.busy_rows if w.alive else 0,
                    "free_slots": max(0, w.spec.slots - w.busy_rows) if w.alive else 0,
                    "requests_running": len(w.jobs),
                    "requests_served": w.requests_served,
                    "tokens_served": w.tokens_served,
                    **({"error": w.error} if w.error else {}),
                }
            )
        return {
            "workers": workers,
            "workers_alive": len(self.alive),
            "queue_length": len(self.waiting),
            "queue_size": self.queue_size,
            "busy_slots": sum(w["busy_slots"] for w in workers),
            "free_slots": sum(w["free_slots"] for w in workers),
            "tokens_served": sum(w.tokens_served for w in self.workers),
            "requests_served": sum(w.requests_served for w in self.workers),
            "uptime_s": round(time.time() - self._started, 1),
        }
