"""TensorFlow imported without its C++ start-up lines.

Importing TensorFlow 2.21 prints a few lines from its C++ runtime on standard error
(absl's "All log messages before absl::InitializeLog()", oneDNN's notice, CUDA probing on
machines without a GPU) that ``TF_CPP_MIN_LOG_LEVEL`` no longer silences. ``tf_lottery``
imports TensorFlow through ``import_quietly`` first, with file descriptor 2 pointed at
``/dev/null`` for the import and the device probe only, so these lines are off by
default; set ``TF_CPP_MIN_LOG_LEVEL=0`` to see them. Errors raised by the import still
reach standard error (the descriptor is restored before they propagate), and everything
after start-up (TensorFlow's warnings and errors included) prints as usual.
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["import_quietly"]


@contextlib.contextmanager
def _stderr_to_devnull():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_quietly() -> None:
    """Imports TensorFlow (and probes its devices) with the C++ start-up lines hidden,
    unless TensorFlow is already imported or ``TF_CPP_MIN_LOG_LEVEL`` is ``0``."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with _stderr_to_devnull():
            import tensorflow as tf

            tf.config.list_physical_devices()
    except OSError:  # no descriptor 2 to redirect: import as usual
        import tensorflow  # noqa: F401
