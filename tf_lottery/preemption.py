"""Stopping on SIGTERM without losing the level in progress.

A cluster scheduler or a preemptible cloud VM sends ``SIGTERM`` shortly before it kills a
job. Within ``stop_on_sigterm()`` (``ticket.fit`` runs its levels inside it) the signal
only sets ``STOP.requested``; the training engine then writes a checkpoint of the branch
in training at its next chunk of iterations and raises ``Preempted``, and a rerun of the
same experiment resumes from that checkpoint. ``tf.distribute``'s
``PreemptionCheckpointHandler`` does the same for ``tf.train.Checkpoint``-based loops;
this project's checkpoints are Keras weights files plus the resume state in JSON
(``paths.BranchDir.checkpoint``), written by the engine, so the signal is handled here.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from absl import logging

__all__ = ["Preempted", "STOP", "stop_on_sigterm"]


class Preempted(Exception):
    """Training stopped on ``SIGTERM`` after writing a checkpoint of the branch in
    progress; rerunning the same experiment resumes from it.

    Attributes:
        level, branch: the branch that was training.
        iteration: iterations done (the checkpoint's).
        branch_dir: its directory.
    """

    def __init__(self, level: int, branch: str, iteration: int, branch_dir: str):
        super().__init__(
            f"stopped by SIGTERM during level {level} {branch} at iteration {iteration}; "
            f"its checkpoint is in {branch_dir}: run the same experiment again to resume.")
        self.level, self.branch, self.iteration, self.branch_dir = (
            level, branch, iteration, branch_dir)


class _StopRequest:
    """Whether a ``SIGTERM`` asked the process to stop (set by ``stop_on_sigterm``)."""

    requested = False


STOP = _StopRequest()


@contextlib.contextmanager
def stop_on_sigterm():
    """Within the block, ``SIGTERM`` (what a cluster scheduler or a preemptible VM sends
    before it kills a job) no longer ends the process at once: it sets
    ``STOP.requested``, and the branch in training writes a checkpoint at its next chunk
    of iterations (at most ``Runtime.steps_per_execution``) and raises ``Preempted``.
    Outside the main thread, where Python cannot install signal handlers, it does
    nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        del frame
        STOP.requested = True
        logging.warning("signal %d: writing a checkpoint of the branch in training, then "
                        "stopping.", signum)

    STOP.requested = False
    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        STOP.requested = False
