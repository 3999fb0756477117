"""Progress of long work: a live bar on a terminal, plain periodic lines everywhere else.

On a terminal (stderr is a TTY) a tqdm bar shows done/total, rate and ETA. When stderr is a file
or a pipe (CI, ``> log``) a bar would be redrawn into one endless line, so instead one short line
is printed at most every ``NANOCHAT_PROGRESS_INTERVAL`` seconds (default 30) and at the end:

    [pretrain] 120/200 steps (60%) | 3.21 steps/s | ETA 25s | loss 3.214

``NANOCHAT_PROGRESS=bar|lines|off`` forces a style. Only the main process shows progress. While
a stage's progress is shown, the console logger leaves that stage's per-step records to it, so a
step is never printed twice.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

ENV_STYLE = "NANOCHAT_PROGRESS"
ENV_INTERVAL = "NANOCHAT_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0
MAX_LINE = 160

_active: dict[str, int] = {}


def is_showing(owner: str) -> bool:
    """Whether a progress display of ``owner`` (a stage name) is open."""
    return _active.get(owner, 0) > 0


def progress_style(stream: TextIO | None = None) -> str:
    """``bar``, ``lines`` or ``off``: from ``$NANOCHAT_PROGRESS``, else whether ``stream`` is a
    terminal."""
    forced = os.environ.get(ENV_STYLE, "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced
    stream = stream or sys.stderr
    return "bar" if hasattr(stream, "isatty") and stream.isatty() else "lines"


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``2h07m``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _singular(unit: str) -> str:
    """``steps`` -> ``step``, ``batches`` -> ``batch`` (tqdm adds its own ``/s``)."""
    if unit.endswith(("ches", "shes", "sses")):
        return unit[:-2]
    if unit.endswith("s") and not unit.endswith("ss") and len(unit) > 2:
        return unit[:-1]
    return unit


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """Progress of one piece of work.

    Args:
        total: units of work in all (None or 0 when unknown).
        desc: what is being done, shown first (e.g. the stage name).
        unit: the unit's plural name (``steps``, ``batches``, ``MB``).
        initial: units already done (a resumed stage).
        enabled: False on processes other than the main one (nothing is shown).
        owner: the stage whose per-step records this display stands for (see module doc).
        stream: where to write (default stderr).
    """

    def __init__(
        self,
        total: float | None,
        desc: str,
        unit: str = "it",
        initial: float = 0,
        enabled: bool = True,
        owner: str | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.total = total or None
        self.desc = desc
        self.unit = unit
        self.done: float = initial
        self.stream = stream or sys.stderr
        self.style = progress_style(self.stream) if enabled else "off"
        self.interval = float(os.environ.get(ENV_INTERVAL) or DEFAULT_INTERVAL)
        self.postfix: dict[str, Any] = {}
        self._start_done = self.done
        self._started = time.monotonic()
        self._last_line = self._started
        self._owner = owner
        self._bar: Any = None
        self._closed = False
        if self.style == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                initial=initial,
                desc=desc,
                unit=_singular(unit),
                file=self.stream,
                dynamic_ncols=True,
            )
        if owner is not None and self.style != "off":
            _active[owner] = _active.get(owner, 0) + 1

    def set_total(self, total: float | None) -> None:
        """Change the total (work whose size becomes known on the way)."""
        self.total = total or None
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def update(self, n: float = 1, **postfix: Any) -> None:
        """Count ``n`` more units done; ``postfix`` values are shown after the rate."""
        self.done += n
        self.postfix.update(postfix)
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: _format_value(v) for k, v in postfix.items()})
            self._bar.update(int(n) if float(n).is_integer() else n)
        elif self.style == "lines":
            now = time.monotonic()
            if now - self._last_line >= self.interval:
                self._last_line = now
                self._print_line()

    def set_done(self, done: float, **postfix: Any) -> None:
        """Set the units done so far (for callbacks that report a position)."""
        self.update(done - self.done, **postfix)

    def line(self) -> str:
        """The plain progress line (at most :data:`MAX_LINE` characters)."""
        elapsed = time.monotonic() - self._started
        rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
        count = f"{_format_value(self.done)}"
        parts = [f"[{self.desc}] {count}"]
        if self.total:
            parts[0] += (
                f"/{_format_value(self.total)} {self.unit} ({100 * self.done / self.total:.0f}%)"
            )
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{rate:.3g} {self.unit}/s")
        if self.total and rate > 0:
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
        else:
            parts.append(f"elapsed {format_duration(elapsed)}")
        parts += [f"{k} {_format_value(v)}" for k, v in self.postfix.items()]
        text = " | ".join(parts)
        return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."

    def _print_line(self) -> None:
        print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        """Finish the display (a final line when printing lines)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.style == "lines" and self.done > self._start_done:
            self._print_line()
        if self._owner is not None and self.style != "off":
            _active[self._owner] -= 1

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_line(text: str, stream: TextIO | None = None) -> None:
    """Print a line (on ``stream``, default stdout) without breaking a progress bar."""
    stream = stream or sys.stdout
    if any(_active.values()) and progress_style() == "bar":
        from tqdm import tqdm

        tqdm.write(text, file=stream)
    else:
        print(text, file=stream, flush=True)
