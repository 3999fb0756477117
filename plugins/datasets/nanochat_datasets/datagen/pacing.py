"""Pacing requests: a token-bucket rate limit, exponential backoff with jitter, ``Retry-After``.

The bucket is shared by every coroutine of a run (and, in a Celery worker, by its threads): each
request takes one token; tokens come back at ``rate`` per second up to ``burst``. Taking a token
reserves a start time without awaiting, so concurrent callers are spaced evenly and none can
overtake another.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import time
from collections.abc import Callable


class TokenBucket:
    """A token bucket of ``rate`` tokens per second holding at most ``burst`` tokens.

    Args:
        rate: tokens per second; ``None`` or ``0`` means no limit.
        burst: the most tokens that can pile up while idle (requests started at once).
        clock: a monotonic clock in seconds (tests pass their own).
    """

    def __init__(
        self,
        rate: float | None,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate is not None and rate < 0:
            raise ValueError(f"rate must be >= 0, not {rate}")
        self.rate = rate or None
        self.burst = max(1.0, burst)
        self._clock = clock
        self._tokens = self.burst
        self._updated = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one token now; return how many seconds the caller must wait before using it."""
        if self.rate is None:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def acquire(self) -> None:
        """Wait for a token (returns at once when there is no limit)."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt + 1``: exponential with "equal jitter".

    The ceiling doubles each attempt (``base``, ``2 * base``, ... up to ``cap``); the delay is
    half of it plus a random share of the other half, so clients that failed together do not
    retry together.
    """
    ceiling = min(cap, base * (2.0 ** max(0, attempt)))
    rng = rng or random.Random()
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta seconds or an HTTP date).

    Returns:
        The wait, at least 0; ``None`` when the header is missing or unreadable.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
