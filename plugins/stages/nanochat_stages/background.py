"""Work done ahead of the training thread in a daemon thread, with errors handed back cleanly.

A :class:`BackgroundWorker` runs a generator in its own thread and queues what it yields (a
bounded queue, so it never reads far ahead). The consumer takes items with :meth:`get`; when the
generator raises, the consumer gets that same exception (original type and message) and the
thread is joined. Every live worker is stopped and joined when the interpreter exits, so no
thread is left inside native code (Rust tokenizer, Arrow, torch) while Python finalizes — a
daemon thread cut off there aborts the process with ``FATAL: exception not rethrown``.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch

logger = logging.getLogger(__name__)

_END = object()
_POLL_SECONDS = 0.1
_LIVE: weakref.WeakSet[BackgroundWorker] = weakref.WeakSet()


def close_all_workers() -> None:
    """Stop and join every live background worker (run at interpreter exit)."""
    for worker in list(_LIVE):
        worker.close()


atexit.register(close_all_workers)


class BackgroundWorker:
    """Runs ``produce()`` (a generator) in a daemon thread and queues its items.

    Args:
        produce: called once in the thread; each item it yields is queued for :meth:`get`.
        name: the thread's name (shown in logs and debuggers).
        depth: how many items may wait in the queue.
        join_seconds: how long :meth:`close` waits for the thread to finish.
    """

    def __init__(
        self,
        produce: Callable[[], Iterator[Any]],
        name: str = "nanochat-background",
        depth: int = 8,
        join_seconds: float = 10.0,
    ):
        self._produce = produce
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._finished = False
        self._join_seconds = join_seconds
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        _LIVE.add(self)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._produce():
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            self._error = exc
        self._put(_END)

    def _put(self, item: Any) -> bool:
        """Queue ``item`` unless the worker is stopped first; ``True`` when queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    @property
    def alive(self) -> bool:
        """Whether the background thread is still running."""
        return self._thread.is_alive()

    def get(self) -> Any:
        """The next item, waiting for it.

        Raises:
            StopIteration: the generator is exhausted (or the worker was closed).
            BaseException: whatever the generator raised, re-raised in the calling thread.
        """
        while True:
            if self._finished:
                raise StopIteration
            try:
                item = self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if self._stop.is_set() or not self._thread.is_alive() and self._queue.empty():
                    self._finished = True
                    self.close()
                continue
            if item is not _END:
                return item
            self._finished = True
            self.close()
            error, self._error = self._error, None
            if error is not None:
                raise error
            raise StopIteration

    def close(self) -> None:
        """Stop the thread and wait for it (it finishes the item it is working on)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._join_seconds)
            if self._thread.is_alive():
                logger.warning("background thread %s did not stop in time", self._thread.name)
        _LIVE.discard(self)


class BackgroundBatches:
    """Training batches made in a background thread, each with the source state after it.

    Args:
        make_batch: returns the next ``(inputs, targets)`` (runs in the background thread).
        snapshot: returns the source's state right after the batch just made; called in the
            background thread after every batch, so it must be cheap (no deep copies of data
            that is never modified in place).
        pin: copy batches into pinned (page-locked) memory, so that ``.to(cuda,
            non_blocking=True)`` overlaps the copy with compute; only when CUDA is available.
        depth: batches made ahead of the consumer.
        name: the thread's name.
    """

    def __init__(
        self,
        make_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
        snapshot: Callable[[], Any],
        pin: bool = False,
        depth: int = 2,
        name: str = "batches",
    ):
        self._make_batch = make_batch
        self._snapshot = snapshot
        self.pin = bool(pin) and torch.cuda.is_available()
        self._state = snapshot()
        self._worker = BackgroundWorker(self._produce, name=name, depth=depth)

    def _produce(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, Any]]:
        while True:
            try:
                inputs, targets = self._make_batch()
            except StopIteration:
                return
            state = self._snapshot()
            inputs, targets = inputs.contiguous(), targets.contiguous()
            if self.pin:
                inputs, targets = inputs.pin_memory(), targets.pin_memory()
            yield inputs, targets, state

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``(inputs, targets)``; errors of the background thread are raised here.

        Raises:
            StopIteration: the source ran out.
        """
        inputs, targets, self._state = self._worker.get()
        return inputs, targets

    def state(self) -> Any:
        """The source's state after the last batch returned by :meth:`next_batch`."""
        return self._state

    def close(self) -> None:
        """Stop the background thread."""
        self._worker.close()
