"""A one-line progress bar for ``fit``, drawn only when the output is a terminal."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["ProgressBar", "is_terminal"]


def is_terminal(stream: TextIO) -> bool:
    """True when ``stream`` is attached to a terminal (``isatty()``)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    """``Epoch 001/010 [=========>          ] 234/469  cost 0.2345  3.1s``, redrawn in place
    with a carriage return at most every ``interval`` seconds; :meth:`clear` erases it so a
    log line can be printed cleanly. Does nothing when ``enabled`` is False."""

    def __init__(self, stream: TextIO, enabled: bool, width: int = 24, interval: float = 0.1):
        self.stream, self.enabled, self.width, self.interval = stream, enabled, width, interval
        self._last = 0.0
        self._shown = False

    def update(self, epoch: int, epochs: int, done: int, total: int, cost: float, started: float,
               force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < self.interval and done < total:
            return
        self._last = now
        filled = int(self.width * done / max(total, 1))
        arrow = ">" if filled < self.width else ""
        bar = "=" * filled + arrow + " " * (self.width - filled - len(arrow))
        self.stream.write(f"\r\033[KEpoch {epoch:03d}/{epochs:03d} [{bar}] {done}/{total}  "
                          f"cost {cost:.4f}  {now - started:.1f}s")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False
