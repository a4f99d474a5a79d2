"""TFLite / LiteRT export of sparse tickets, checked by running the exported file.

``to_tflite(model, "ticket.tflite", quantization=...)`` folds the masks into the
weights, converts with ``tf.lite.TFLiteConverter`` and ``EXPERIMENTAL_SPARSITY``
(sparse weight encoding), runs the file with LiteRT on sample inputs, compares it with
the Keras model and returns an ``ExportReport`` (sizes, which weights are stored
sparse and how sparse, output differences, the delegate that ran it, latencies).
``load_ticket(run_dir, level)`` rebuilds a trained network of a run directory for it;
``predict(path, x)`` runs an exported file.

Submodules, each importing only those listed before it:

- ``report``: ``ExportReport`` and ``TensorReport``.
- ``litert``: running files with LiteRT (``open_interpreter``, ``predict``, delegate
  fallback, latency).
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
