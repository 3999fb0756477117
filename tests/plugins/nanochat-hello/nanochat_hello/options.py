"""Options of the nanochat-hello components."""

from __future__ import annotations

from dataclasses import dataclass

from nanochat.core.config import option


@dataclass
class HelloOptions:
    """Options of the hello stage."""

    greeting: str = option("hello", doc="the word the hello stage writes")
    times: int = option(1, ge=1, doc="how many times it writes it")


@dataclass
class CountOptions:
    """Options of the count stage."""

    steps: int = option(20, ge=0, doc="steps to count")
    sleep: float = option(0.05, ge=0, doc="seconds to sleep at each step")


@dataclass
class AllReduceOptions:
    """Options of the allreduce stage."""

    scale: float = option(1.0, doc="the factor each rank multiplies its value by")


@dataclass
class HelloEvalOptions:
    """Options of the hello eval."""

    bonus: float = option(0.0, doc="added to the metric the eval reports")
