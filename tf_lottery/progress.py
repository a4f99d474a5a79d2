"""Progress of a branch in training: Keras's ``Progbar``, one bar per level and branch.

A level of a paper preset trains for minutes on CPU (hours for Conv-6); without this the
log says "training" and nothing until the level ends. The bar shows iterations done of
the branch's total, the rate in iterations per second, the time left (Progbar's ETA),
and the latest validation and test accuracy at each evaluation. On a terminal it is
redrawn in place; when the output is not a terminal (a log file, a pipe, a cluster
scheduler) it prints one line per branch, when the branch ends. Under multi-worker only
the chief shows it.
"""

from __future__ import annotations

import sys
import time

from keras.utils import Progbar

__all__ = ["BranchProgress"]


class BranchProgress:
    """A progress bar over iterations ``[start, end)`` of one branch.

    Args:
        title: printed on the line before the bar, e.g. ``"level 2 lottery"``.
        start, end: the branch's first iteration and its end (ints, ``start < end``);
            a resumed branch starts its bar at the iteration it resumes from.
        resumed_at: the iteration training resumes from (default ``start``).
        enabled: ``False`` prints nothing (``Runtime.progress``; non-chief workers).
    """

    def __init__(self, title: str, start: int, end: int, *, resumed_at: int | None = None,
                 enabled: bool = True):
        self.enabled = enabled and end > start
        self.start = start
        self._rate_from = resumed_at if resumed_at is not None else start
        self._t0 = time.monotonic()
        self._values = {}
        if not self.enabled:
            return
        terminal = hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
        print(title, flush=True)
        self.bar = Progbar(end - start, verbose=1 if terminal else 2, unit_name="it",
                           stateful_metrics=["it/s", "val_accuracy", "test_accuracy"])
        if self._rate_from > start:
            self.bar.update(self._rate_from - start)

    def update(self, step: int, row: dict | None = None, *, final: bool = False) -> None:
        """Moves the bar to iteration ``step`` (``start <= step <= end``); ``row`` (a
        metrics row) gives the latest ``val_accuracy`` and ``test_accuracy``; ``final``
        ends the bar (on a non-terminal output, its one line)."""
        if not self.enabled:
            return
        elapsed = time.monotonic() - self._t0
        if step > self._rate_from and elapsed > 0:
            self._values["it/s"] = (step - self._rate_from) / elapsed
        for name in ("val_accuracy", "test_accuracy"):
            if row is not None and row.get(name) == row.get(name):  # skip NaN
                self._values[name] = row[name]
        self.bar.update(step - self.start, values=list(self._values.items()),
                        finalize=final)
