"""One worker process: a model and an engine, fed requests through a pipe.

The server starts one such process per device (or per CPU replica). Messages are tuples:

parent -> worker
    ``("submit", rid, prompt_ids, params, stops)``, ``("cancel", rid)``, ``("stop",)``
worker -> parent
    ``("ready", info)`` once the model is loaded, or ``("fatal", message)`` instead;
    ``("events", [(rid, text, tokens, finish), ...], busy_rows)`` after every decode step (one
    entry per engine event, i.e. per token, in order; ``finish`` set on a request's last one);
    ``("error", rid, message)`` for a request the engine refuses;
    ``("state", busy_rows)`` when rows were freed without a step (cancel).

A thread reads the pipe into a queue so that the parent never waits on a busy worker, and the
loop takes every waiting command between two decode steps: new requests are submitted to the
engine, which admits them into free slots at its next step (continuous batching); a cancelled
request's rows are freed at once. Text goes out readable (:func:`nanochat.core.chat.readable`:
tool calls as ``[calculator: 6*7] = 42``, no special tokens), cut at the request's stop strings.

The worker ignores SIGINT and SIGTERM (a Ctrl-C reaches the whole process group): it stops on
``("stop",)`` or when the parent's end of the pipe closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to load and serve (picklable).

    Attributes:
        index: the worker's number (the ``gpu`` field of nanochat's stream).
        device: ``cpu`` or ``cuda:N``.
        run_name: the run to serve.
        checkpoint: the :class:`~nanochat.core.checkpoint.Checkpoint` every worker loads.
        slots: engine slots (requests decoding together).
        threads: torch threads (0: leave torch's default).
        plugin_options: the CLI's ``-p`` options (to load the same plugins).
        defaults: the CLI's fallback component names.
    """

    index: int
    device: str
    run_name: str
    checkpoint: Any
    slots: int
    threads: int = 0
    plugin_options: tuple[str, ...] = ()
    defaults: dict[str, str] = field(default_factory=dict)


class StopMatcher:
    """Cuts a stream of text at the first of some stop strings, holding back text that might be
    the start of one until the next piece tells."""

    def __init__(self, stops: Sequence[str]) -> None:
        """Args:
        stops: the stop strings (none: text passes through unchanged)."""
        self.stops = [s for s in stops if s]
        self.held = ""

    def push(self, text: str) -> tuple[str, bool]:
        """``(text to release, whether a stop string was met)``."""
        if not self.stops:
            return text, False
        buffer = self.held + text
        hits = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.held = ""
            return buffer[: min(hits)], True
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(buffer)), hold, -1):
                if buffer.endswith(stop[:k]):
                    hold = k
                    break
        self.held = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        """The text held back (the stream ended without a stop string)."""
        held, self.held = self.held, ""
        return held


@dataclass
class _Active:
    """A request the engine is working on."""

    request: Any
    matcher: StopMatcher


def _load(spec: WorkerSpec) -> tuple[Any, Callable[[], Any]]:
    """Load the model and build the engine; returns ``(engine, autocast factory)``."""
    import torch

    from nanochat.core import registry as registry_module
    from nanochat.core.chat import load_chat_model
    from nanochat.core.engine import Engine

    # Only when it changes anything: on a loaded machine, torch.set_num_threads(n) (even to the
    # default n) made every small float64 op of the sampler cost milliseconds (torch 2.15).
    if spec.threads and spec.threads != torch.get_num_threads():
        torch.set_num_threads(spec.threads)
    registry_module.configure(spec.plugin_options)
    chat = load_chat_model(
        registry_module.get_registry(),
        spec.run_name,
        device="cpu",
        defaults=spec.defaults,
        checkpoint=spec.checkpoint,
    )
    device = torch.device(spec.device)
    autocast: Callable[[], Any] = contextlib.nullcontext
    if device.type == "cuda":
        torch.cuda.set_device(device)

        def autocast() -> Any:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)

    model = chat.model.to(device)
    engine = Engine(
        model,
        chat.tokenizer,
        slots=spec.slots,
        tools=chat.tools,
        autocast=autocast,
        seed=spec.index,
    )
    return engine, autocast


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """The worker process: load, say ready, then serve commands until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        engine, _ = _load(spec)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        conn.send(("fatal", f"{type(exc).__name__}: {message}"))
        return
    conn.send(
        (
            "ready",
            {
                "pid": os.getpid(),
                "device": spec.device,
                "slots": engine.slots,
                "context": engine.cache.max_len,
            },
        )
    )
    inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
    threading.Thread(target=_receive, args=(conn, inbox), daemon=True).start()
    try:
        _serve(conn, inbox, engine)
    except Exception as exc:  # a broken engine or model: say why, then exit (the pool reports)
        log.exception("worker %d failed", spec.index)
        with contextlib.suppress(OSError, ValueError):
            conn.send(("fatal", f"{type(exc).__name__}: {exc}".splitlines()[0]))
        raise SystemExit(1) from None


def _receive(conn: Connection, inbox: queue.Queue[tuple[Any, ...]]) -> None:
    """Move commands from the pipe to ``inbox``; a closed pipe means stop."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            inbox.put(("stop",))
            return
        inbox.put(message)
        if message[0] == "stop":
            return


def _serve(conn: Connection, inbox: queue.Queue[tuple[Any, ...]], engine: Any) -> None:
    """The loop: commands between decode steps, events after each step."""
    from nanochat.core.chat import readable
    from nanochat.core.engine import FINISH_STOP, Request, SamplingParams

    active: dict[int, _Active] = {}
    while True:
        commands = [inbox.get()] if not engine.busy else []
        while True:
            try:
                commands.append(inbox.get_nowait())
            except queue.Empty:
                break
        freed = False
        for command in commands:
            if command[0] == "stop":
                return
            if command[0] == "submit":
                _, rid, prompt, params, stops = command
                request = Request(list(prompt), SamplingParams(**params), id=rid)
                try:
                    engine.submit(request)
                except ValueError as exc:
                    conn.send(("error", rid, str(exc)))
                    continue
                active[rid] = _Active(request, StopMatcher(stops))
            elif command[0] == "cancel":
                gone = active.pop(command[1], None)
                freed |= gone is not None and engine.cancel(gone.request)
        if freed and not engine.busy:
            conn.send(("state", engine.slots - engine.free_slots))
        if not engine.busy:
            continue
        out: list[tuple[int, str, int, str | None]] = []
        for event in engine.step():
            rid = event.request.id
            job = active.get(rid)
            if job is None:  # stopped by a stop string earlier in this step
                continue
            text, stopped = job.matcher.push(readable(event.text))
            finish = event.finish
            if stopped:
                engine.cancel(job.request)
                finish = FINISH_STOP
            elif finish is not None:
                text += job.matcher.flush()
            if finish is not None:
                del active[rid]
            out.append((rid, text, 1, finish))
        conn.send(("events", out, engine.slots - engine.free_slots))
