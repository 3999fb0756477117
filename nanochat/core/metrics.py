"""Metrics: records from stages go to the selected loggers and to the ``nanochat_metrics`` hook."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nanochat.core.components import MetricLogger

logger = logging.getLogger(__name__)


def clean_value(value: Any) -> Any:
    """Plain JSON values: tensors and numpy scalars become floats, NaN/inf become strings."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Metrics:
    """Fans metric records out to loggers (on the main process only) and to plugins.

    Args:
        run_name: the run the records belong to.
        loggers: the metric loggers.
        broadcast: called with each record after the loggers (the ``nanochat_metrics`` hook).
        enabled: False on processes other than rank 0 (records are dropped).
    """

    def __init__(
        self,
        run_name: str,
        loggers: list[MetricLogger],
        broadcast: Callable[[dict[str, Any]], None] | None = None,
        enabled: bool = True,
    ):
        self.run_name = run_name
        self.loggers = loggers if enabled else []
        self.broadcast = broadcast
        self.enabled = enabled
        self._started = False

    def start(self, run_dir: Path, config: dict[str, Any]) -> None:
        """Start every logger once for this run."""
        if self._started:
            return
        for metric_logger in self.loggers:
            metric_logger.start(run_dir, self.run_name, config)
        self._started = True

    def log(self, record: dict[str, Any]) -> None:
        """Send one record (a ``time`` field is added) to the loggers and the metrics hook."""
        if not self.enabled:
            return
        clean = {"time": round(time.time(), 3), **{k: clean_value(v) for k, v in record.items()}}
        for metric_logger in self.loggers:
            metric_logger.log(clean)
        if self.broadcast is not None:
            self.broadcast(clean)

    def finish(self) -> None:
        """Flush and close every logger."""
        if not self._started:
            return
        for metric_logger in self.loggers:
            try:
                metric_logger.finish()
            except Exception as exc:  # noqa: BLE001 - a logger failing to close loses nothing
                logger.warning("logger %s failed to close: %s", type(metric_logger).__name__, exc)
        self._started = False
