"""The speedrun's progress lines: which stage of how many, the elapsed time, and an estimate of
the rest from the preset's per-stage ``estimates`` scaled by how fast this machine ran the
stages so far."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from nanochat.core.hookspecs import hookimpl
from nanochat.core.progress import format_duration

MIN_EVIDENCE_S = 60.0


class SpeedrunProgress:
    """Prints a line when a stage starts, is skipped or ends: position, elapsed, time left.

    Args:
        run_name: the run whose records to follow.
        scopes: the pipeline's stage scopes, in order.
        labels: the pipeline's stage labels (keys of ``estimates``), in order.
        estimates: seconds per label on the preset's reference hardware.
        echo: where lines go.
    """

    def __init__(
        self,
        run_name: str,
        scopes: Sequence[str],
        labels: Sequence[str],
        estimates: Mapping[str, float],
        echo: Any = None,
    ) -> None:
        self.run_name = run_name
        self.scopes, self.labels = list(scopes), list(labels)
        self.estimates = [float(estimates.get(label, 0.0)) for label in labels]
        self.echo = echo or (lambda line: click.echo(line, err=True))
        self.started = time.monotonic()
        self.position = 0  # stages started or skipped so far
        self.stage_started = self.started
        self.spent = 0.0  # seconds of stages that ran to their end here
        self.expected = 0.0  # what the estimates said those stages would take

    def speed(self) -> float:
        """How much slower (> 1) or faster than the estimates this machine runs (1 until stages
        estimated at ``MIN_EVIDENCE_S`` in all have finished: a few seconds say nothing)."""
        if self.expected < MIN_EVIDENCE_S:
            return 1.0
        return min(10.0, max(0.1, self.spent / self.expected))

    def left(self, running: bool) -> float:
        """Seconds the rest of the pipeline should take."""
        rest = sum(self.estimates[self.position :]) * self.speed()
        if running and self.position > 0:
            current = self.estimates[self.position - 1] * self.speed()
            rest += max(0.0, current - (time.monotonic() - self.stage_started))
        return rest

    def line(self, text: str, running: bool) -> None:
        """Print ``text`` with the elapsed time and the estimate of the rest."""
        elapsed = format_duration(time.monotonic() - self.started)
        left = self.left(running)
        tail = f" | about {format_duration(left)} left" if left > 0 else ""
        self.echo(f"[speedrun] {text} | elapsed {elapsed}{tail}")

    @hookimpl
    def nanochat_metrics(self, run_name: str, record: dict[str, Any]) -> None:
        """Follow the run's stage events."""
        event, stage = record.get("event"), record.get("stage")
        if run_name != self.run_name:
            return
        count = len(self.scopes)
        if event in ("start", "skipped") and self.position < count:
            self.position += 1
            label = self.labels[self.position - 1]
            if event == "skipped":
                self.line(f"stage {self.position}/{count} {label}: finished earlier", False)
            else:
                self.stage_started = time.monotonic()
                self.line(f"stage {self.position}/{count} {label}: running", True)
        elif event == "end" and self.position and stage == self.scopes[self.position - 1]:
            took = time.monotonic() - self.stage_started
            self.spent += took
            self.expected += self.estimates[self.position - 1]
            label = self.labels[self.position - 1]
            self.line(
                f"stage {self.position}/{count} {label}: done in {format_duration(took)}", False
            )
