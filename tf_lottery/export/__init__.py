"""TFLite / LiteRT export of sparse tickets, checked by running the exported file.

``to_tflite(model, "ticket.tflite", quantization=...)`` folds the masks into the
weights (``shrink=True``: removes pruned channels too), converts with
``tf.lite.TFLiteConverter`` with and without ``EXPERIMENTAL_SPARSITY`` (sparse and
dense weight encodings), writes the sparse encoding only where it runs in LiteRT's
default ``Interpreter`` and is smaller gzipped (else the dense one), checks the file
by running it there against the Keras model and returns an ``ExportReport`` (the
encoding chosen and why, sizes, which weights are stored sparse and how sparse, output
differences, latencies, optionally against a ``baseline`` network).
``load_ticket(run_dir, level)`` rebuilds a trained network of a run directory for it;
``predict(path, x)`` runs an exported file.

Submodules, each importing only those listed before it:

- ``report``: ``ExportReport`` and ``TensorReport``.
- ``litert``: running files with LiteRT (``run_default``: as a deployer opens a file;
  ``open_interpreter``, ``predict``, latency).
- ``encoding``: the sparse-or-dense choice (``choose``, ``ENCODINGS``).
- ``flatbuffer``: reading a ``.tflite`` file back (``weight_tensors``: sparse encoding,
  nonzeros, the Keras weight each tensor holds).
- ``converter``: Keras -> TFLite (``convert``, ``to_tflite``, ``QUANTIZATIONS``;
  tfmot's prune-preserving QAT through ``tf_lottery.tfmot_bridge``, imported lazily).
- ``load``: ``load_ticket`` and ``Ticket``.
"""

from tf_lottery.export.converter import QUANTIZATIONS, convert, to_tflite
from tf_lottery.export.flatbuffer import weight_tensors
from tf_lottery.export.litert import open_interpreter, predict
from tf_lottery.export.load import Ticket, load_ticket
from tf_lottery.export.report import ExportReport, TensorReport

__all__ = [
    "QUANTIZATIONS",
    "ExportReport",
    "TensorReport",
    "Ticket",
    "convert",
    "load_ticket",
    "open_interpreter",
    "predict",
    "to_tflite",
    "weight_tensors",
]
