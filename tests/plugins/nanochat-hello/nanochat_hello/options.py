"""Options of the nanochat-hello components."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HelloOptions:
    """Options of the hello stage."""

    greeting: str = "hello"
    times: int = 1


@dataclass
class CountOptions:
    """Options of the count stage."""

    steps: int = 20
    sleep: float = 0.05


@dataclass
class AllReduceOptions:
    """Options of the allreduce stage."""

    scale: float = 1.0


@dataclass
class HelloEvalOptions:
    """Options of the hello eval."""

    bonus: float = 0.0
