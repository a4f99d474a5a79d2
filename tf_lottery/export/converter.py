"""Keras -> TFLite conversion of sparse tickets: converter settings, quantization, checks.

``to_tflite(model, "ticket.tflite", quantization=...)`` folds the masks into the
weights (``tf_lottery.strip``; with ``shrink=True`` pruned channels are removed too),
converts twice with ``tf.lite.TFLiteConverter``, with and without
``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` (the sparse and the dense weight encoding),
runs both as a deployer would (LiteRT's default ``Interpreter``,
``tf_lottery.export.litert.run_default``), writes the sparse one only if it runs there
and is smaller gzipped (``tf_lottery.export.encoding``), compares the file with the
Keras model and returns an ``ExportReport``: the encoding chosen and why, file sizes
(raw, gzip, both encodings), which weight tensors the file stores sparse and how sparse
they still are (read back from the flatbuffer, ``tf_lottery.export.flatbuffer``), the
largest output difference, and latencies, optionally against a ``baseline`` network.

How a Keras 3 model is converted (TF 2.21, Keras 3.15): the model is written as a
SavedModel with ``keras.export.ExportArchive`` and one endpoint calling
``model(x, training=False)``, which ``TFLiteConverter.from_saved_model`` converts.
``TFLiteConverter.from_keras_model`` does the same internally in TF 2.21, but swallows
any export error and falls back to an older path; ``from_concrete_functions`` on a
``tf.function`` of a Keras 3 model keeps the weights as resource variables
(``VAR_HANDLE``/``READ_VARIABLE`` ops, no weights in the file), so it is not used.
tf_keras models (tfmot's quantization-aware training, handed over by
``tf_lottery.tfmot_bridge.prune_preserving_qat``) are saved with
``tf.saved_model.save``, as ``from_keras_model`` does for them.

Every file written runs under LiteRT's default delegates; a model whose dense encoding
does not run there either raises ``RuntimeError`` and nothing is written.
"""

from __future__ import annotations

import numbers
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tf_lottery import files, stripping
from tf_lottery.export import encoding, flatbuffer, litert
from tf_lottery.export.report import ExportReport
from tf_lottery.layers import is_masked
from tf_lottery.unmasked import candidate_weights

__all__ = ["QUANTIZATIONS", "convert", "to_tflite"]

#: Accepted values of ``quantization`` (``None`` is the same as ``"float32"``).
QUANTIZATIONS = ("float32", "float16", "dynamic_int8", "int8")

_DEFAULT_SAMPLES = 32
_REPRESENTATIVE_LIMIT = 500


# ------------------------------------------------------------------------- validation
def _check_model(model, arg="model"):
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`{arg}` must be a keras.Model; received {type(model).__name__}. Pass a built "
            "Sequential or Functional Keras 3 model (masked or plain)."
        )
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"`{arg}` {model.name!r} has no defined inputs (not built, or subclassed). Pass "
            "a Sequential or Functional model built on keras.Input(shape)."
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"`{arg}` {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; to_tflite exports single-input, single-output models. Wrap the model "
            "in one that takes and returns a single tensor."
        )
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"`{arg}` {model.name!r} has input shape {tuple(model.inputs[0].shape)} with "
            "unknown dimensions besides the batch; export needs them fixed. Rebuild it on "
            "keras.Input with a full shape."
        )
    for layer in model.layers:
        policy = getattr(layer, "dtype_policy", None)
        compute = getattr(policy, "compute_dtype", "float32")
        if compute not in ("float32", None):
            raise ValueError(
                f"`{arg}` layer {layer.name!r} computes in {compute} (dtype policy "
                f"{getattr(policy, 'name', policy)!r}); export float32 models. Rebuild the "
                "model under keras.config.set_dtype_policy('float32') and load the weights "
                "into it; use quantization='float16' for a half-precision file."
            )
    return shape


def _check_inputs(arg, value, shape):
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != shape \
            or len(array) == 0:
        got = getattr(array, "shape", type(value).__name__)
        raise ValueError(
            f"`{arg}` must be a float array of shape (N, {', '.join(map(str, shape))}) with "
            f"N >= 1, examples of the model's input; received shape {got}."
        )
    if not np.isfinite(array).all():
        raise ValueError(f"`{arg}` holds NaN or infinite values; pass finite inputs.")
    return array


def _check_quantization(quantization):
    label = "float32" if quantization is None else quantization
    if label not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be None (float32) or one of {list(QUANTIZATIONS)}; "
            f"received {quantization!r}."
        )
    return label


# ------------------------------------------------------------------------- conversion
def _saved_model(model, directory) -> None:
    """Writes ``model``'s inference function as a SavedModel for the converter.

    Keras 3: ``keras.export.ExportArchive`` with one endpoint calling
    ``model(x, training=False)`` (the batch dimension left free). tf_keras models (from
    tfmot): ``tf.saved_model.save``, what ``TFLiteConverter.from_keras_model`` does
    for them.
    """
    if not isinstance(model, keras.Model):
        tf.saved_model.save(model, directory)
        return
    spec = model.inputs[0]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((None, *spec.shape[1:]), spec.dtype, name="input")],
    )
    archive.write_out(directory, verbose=False)


def _convert_saved_model(directory, label, representative_data, sparse) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(directory)
    optimizations = [] if label == "float32" else [tf.lite.Optimize.DEFAULT]
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if label == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if label == "int8" and representative_data is not None:
        examples = np.asarray(representative_data, np.float32)[:_REPRESENTATIVE_LIMIT]

        def representative():
            for example in examples:
                yield [example[np.newaxis]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # int8 without representative data: a quantization-aware (tfmot) model, which
    # carries its own ranges.
    return bytes(converter.convert())


def convert(model, *, quantization=None, representative_data=None, sparse=True) -> bytes:
    """Converts ``model`` to a ``.tflite`` flatbuffer, without running or checking it.

    Masks are not stripped here (``to_tflite`` does that); pass a plain model. The
    converted model takes and returns float32 tensors in every mode (full-int8 models
    quantize and dequantize inside).

    Args:
        model: a built single-input Keras 3 model, or a tf_keras model.
        quantization: ``None``/``"float32"``, ``"float16"`` (float16 weights),
            ``"dynamic_int8"`` (int8 weights of tensors with >= 1024 entries, float
            activations) or ``"int8"`` (int8 weights and activations).
        representative_data: float32 array ``(N, *input_shape)``; calibrates ``"int8"``
            (the first 500 examples are used, batch 1).
        sparse: add ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` (sparse weight encoding).

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: unknown ``quantization``, or ``"int8"`` of a Keras 3 model without
            ``representative_data``.
    """
    label = _check_quantization(quantization)
    if label == "int8" and representative_data is None and isinstance(model, keras.Model):
        raise ValueError(
            "`representative_data` is required with quantization='int8' (full integer): "
            "pass an array of typical inputs, e.g. 100-500 training examples."
        )
    with tempfile.TemporaryDirectory(prefix="tf_lottery_export_") as directory:
        _saved_model(model, directory)
        return _convert_saved_model(directory, label, representative_data, sparse)


# ------------------------------------------------------------------ keras side
def _walk_layers(model, prefix=""):
    """``(mask-key prefix + layer name, layer)`` of every leaf layer, nested models walked."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk_layers(layer, prefix + layer.name + "/")
        else:
            yield prefix + layer.name, layer


def _keras_prunable(model) -> dict[str, np.ndarray]:
    """``{mask key: weight}`` of the prunable weights of a plain (stripped) model: those
    ``tf_lottery.wrap`` masks (kernels, the projections inside attention, the kernels of
    recurrent cells), named by the same keys."""
    out = {}
    for name, layer in _walk_layers(model):
        for weight, variable in candidate_weights(layer).items():
            out[f"{name}/{weight}"] = keras.ops.convert_to_numpy(variable)
    return out


def _keras_latency(model, example, runs):
    """Median ms of ``tf.function(model(x, training=False))`` on ``example`` (batch 1)."""
    fn = tf.function(lambda x: model(x, training=False))
    tensor = tf.constant(example)
    return litert.median_ms(lambda: fn(tensor).numpy(), runs)


# ---------------------------------------------------------------------------- export
def _versions():
    from importlib import metadata

    try:
        version = metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:  # pragma: no cover
        version = "unknown"
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "ai_edge_litert": version}


def _plain(model, shrink):
    """``model`` with its masks folded in (and pruned channels removed with ``shrink``)."""
    if shrink:
        return stripping.strip(model, shrink=True)
    masked = any(is_masked(layer) for _, layer in _walk_layers(model))
    return stripping.strip(model) if masked else model


def _check_baseline(baseline, model, shape):
    _check_model(baseline, "baseline")
    base_in = tuple(baseline.inputs[0].shape[1:])
    base_out = tuple(baseline.outputs[0].shape[1:])
    out = tuple(model.outputs[0].shape[1:])
    if base_in != shape or base_out != out:
        raise ValueError(
            f"`baseline` {baseline.name!r} maps {base_in} to {base_out}, but `model` maps "
            f"{shape} to {out}; pass the unpruned network of the same architecture."
        )


def _measure_baseline(baseline, label, representative_data, example, runs):
    """``(parameters, file bytes, gzip bytes, LiteRT ms)`` of ``baseline``'s dense
    encoding in quantization ``label``; RuntimeError if it does not run under the
    default delegates."""
    plain = _plain(baseline, shrink=False)
    flat = convert(plain, quantization=label, representative_data=representative_data,
                   sparse=False)
    _, error = litert.run_default(flat, example)
    if error is not None:
        raise RuntimeError(f"The `baseline` model does not run under LiteRT's default "
                           f"delegates ({error}); nothing was written.")
    return (int(plain.count_params()), len(flat), encoding.gzip_size(flat),
            litert.litert_latency_ms(flat, example, "xnnpack", runs))


def to_tflite(model, path, *, quantization=None, representative_data=None, sample_inputs=None,
              qat_data=None, qat_steps=100, qat_batch_size=32, qat_learning_rate=1e-4,
              latency_runs=50, shrink=False, baseline=None) -> ExportReport:
    """Exports a (masked or plain) Keras model to a ``.tflite`` file that runs anywhere.

    Steps: strip the masks (``tf_lottery.strip``; with ``shrink=True`` also remove
    pruned channels, ``tf_lottery.strip(model, shrink=True)``); convert with the
    requested quantization twice, with ``EXPERIMENTAL_SPARSITY`` (sparse weight
    encoding) and without (dense); run both on ``sample_inputs`` in LiteRT's default
    ``Interpreter`` (default delegates, XNNPACK) and keep the sparse encoding only when
    it runs there and is smaller gzipped than the dense one, else the dense one
    (``ExportReport.encoding`` and ``encoding_reason`` say which and why); write it to
    ``path`` atomically, open it from there with ``Interpreter(model_path=path)``,
    run it and compare with the Keras model (``path`` never holds an unchecked or
    partial file). The file takes and returns float32 tensors.

    Args:
        model: built single-input, single-output Keras 3 model, float32 policy.
        path: where to write, must end in ``.tflite``; parent directories are created.
        quantization: ``None``/``"float32"``, ``"float16"``, ``"dynamic_int8"`` or
            ``"int8"`` (full integer weights and activations).
        representative_data: float32 ``(N, *input_shape)``, required for ``"int8"``
            (unless ``qat_data`` is given); up to 500 examples calibrate activations.
        sample_inputs: float32 ``(N, *input_shape)`` compared between Keras and LiteRT
            and used (first example) for latency; default: ``representative_data[:32]``
            or 32 seeded draws of ``U[0, 1)``.
        qat_data: ``(x, y)`` with ``x`` float32 ``(N, *input_shape)`` and ``y`` int class
            ids ``(N,)``: with ``quantization="int8"``, fine-tune with tfmot's
            prune-preserving quantization-aware training
            (``tf_lottery.tfmot_bridge.prune_preserving_qat``, needs the ``tfmot``
            extra) before converting; the model must output logits.
        qat_steps, qat_batch_size, qat_learning_rate: QAT iterations (>= 1), batch size
            and Adam learning rate.
        latency_runs: timed runs (batch 1) behind each latency median, >= 1.
        shrink: remove the pruned channels (Dense units, convolution filters whose
            kernel mask column is all zero) before converting: a channel-pruned ticket
            becomes a small dense network.
        baseline: a Keras model (masked or plain) of the same input and output shapes,
            typically the unpruned network of the same architecture: converted dense in
            the same quantization, and its LiteRT latency, size and parameters are
            reported next to this file's (``ExportReport.baseline_*``, ``speedup``).
            Default ``None``: with ``shrink=True``, ``model`` stripped without shrinking
            (the same architecture with every channel: the dense network's cost);
            otherwise no comparison.

    Returns:
        An ``ExportReport``.

    Raises:
        ValueError: before any work, for a model (or ``baseline``) that is not a built
            single-input float32 keras.Model, a ``baseline`` of other shapes, a
            ``path`` not ending in ``.tflite``, an unknown ``quantization``, ``"int8"``
            without ``representative_data`` or ``qat_data``, ``qat_data`` with another
            quantization, inputs of the wrong shape, a non-bool ``shrink``, or bad
            counts; from ``shrink=True``, a channel mask on an output layer.
        RuntimeError: neither encoding runs under LiteRT's default delegates, or the
            baseline does not (nothing is written).
    """
    shape = _check_model(model)
    label = _check_quantization(quantization)
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).endswith(".tflite"):
        raise ValueError(f"`path` must be a file name ending in '.tflite'; received {path!r}.")
    path = os.fspath(path)
    latency_runs = litert.check_positive_int("latency_runs", latency_runs)
    if not isinstance(shrink, (bool, np.bool_)):
        raise ValueError(f"`shrink` must be True or False; received {shrink!r}.")
    if baseline is not None:
        _check_baseline(baseline, model, shape)
    if representative_data is not None:
        representative_data = _check_inputs("representative_data", representative_data, shape)
    if qat_data is not None:
        if label != "int8":
            raise ValueError(
                f"`qat_data` (prune-preserving quantization-aware training) applies to "
                f"quantization='int8' only; received quantization={quantization!r}."
            )
        if not (isinstance(qat_data, (tuple, list)) and len(qat_data) == 2):
            raise ValueError("`qat_data` must be a pair (x, y) of inputs and int class ids.")
        qat_x = _check_inputs("qat_data[0]", qat_data[0], shape)
        qat_y = np.asarray(qat_data[1])
        if qat_y.shape != (len(qat_x),) or not np.issubdtype(qat_y.dtype, np.integer):
            raise ValueError(
                f"`qat_data[1]` must be int class ids of shape ({len(qat_x)},); received "
                f"{qat_y.dtype} array of shape {qat_y.shape}."
            )
        qat_steps = litert.check_positive_int("qat_steps", qat_steps)
        qat_batch_size = litert.check_positive_int("qat_batch_size", qat_batch_size)
        if not (isinstance(qat_learning_rate, numbers.Real) and qat_learning_rate > 0):
            raise ValueError(f"`qat_learning_rate` must be > 0; received {qat_learning_rate!r}.")
    elif label == "int8" and representative_data is None:
        raise ValueError(
            "`representative_data` is required with quantization='int8' (full integer "
            "activations need calibration): pass typical inputs, e.g. 100-500 training "
            "examples, or use qat_data=(x, y) for quantization-aware training."
        )
    if sample_inputs is None:
        if representative_data is not None:
            sample_inputs = representative_data[:_DEFAULT_SAMPLES]
        else:
            rng = np.random.default_rng(0)
            sample_inputs = rng.uniform(0.0, 1.0, (_DEFAULT_SAMPLES, *shape)).astype(np.float32)
    sample_inputs = _check_inputs("sample_inputs", sample_inputs, shape)

    plain = _plain(model, bool(shrink))
    if baseline is None and shrink:
        baseline, baseline_label = model, "the unshrunk network (every channel)"
    elif baseline is not None:
        baseline_label = f"baseline {baseline.name!r}"
    keras_weights = _keras_prunable(plain)
    if qat_data is not None:
        from tf_lottery import tfmot_bridge

        source = tfmot_bridge.prune_preserving_qat(
            plain, qat_x, qat_y, steps=qat_steps, batch_size=qat_batch_size,
            learning_rate=qat_learning_rate)
        reference_outputs = np.asarray(source(sample_inputs, training=False), np.float32)
        reference = "tfmot QAT model"
        how = ("tfmot prune-preserving QAT (tf_keras) -> tf.saved_model.save -> "
               "TFLiteConverter.from_saved_model")
    else:
        source = plain
        reference_outputs = keras.ops.convert_to_numpy(model(sample_inputs, training=False))
        reference = "Keras"
        how = ("keras.export.ExportArchive (model(x, training=False)) -> "
               "TFLiteConverter.from_saved_model")

    with tempfile.TemporaryDirectory(prefix="tf_lottery_export_") as directory:
        _saved_model(source, directory)
        sparse = _convert_saved_model(directory, label, representative_data, sparse=True)
        dense = _convert_saved_model(directory, label, representative_data, sparse=False)
    choice = encoding.choose(sparse, dense, sample_inputs)
    flat = choice.flat
    how += (f", optimizations={'[]' if label == 'float32' else '[DEFAULT]'} with and "
            f"without EXPERIMENTAL_SPARSITY; {choice.encoding} encoding written")
    example = sample_inputs[:1]
    measured = (None,) * 4
    if baseline is not None:
        calibration = representative_data if representative_data is not None else (
            qat_x[:_REPRESENTATIVE_LIMIT] if qat_data is not None else None)
        measured = _measure_baseline(baseline, label, calibration, example, latency_runs)

    # Everything that could fail has run; write, then run the file from its own path.
    with files.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(flat)
            f.flush()
            os.fsync(f.fileno())
        outputs, error = litert.run_default(tmp, sample_inputs)
        if error is not None:
            raise RuntimeError(f"The written file does not run under LiteRT's default "
                               f"delegates ({error}); nothing was written.")

    reports = flatbuffer.match_keras_weights(keras_weights, flatbuffer.weight_tensors(flat))
    ops = flatbuffer.operator_names(flat)
    latency = litert.litert_latency_ms(flat, example, "xnnpack", latency_runs)
    return ExportReport(
        path=path,
        quantization=label,
        qat=qat_data is not None,
        file_bytes=len(flat),
        gzip_bytes=encoding.gzip_size(flat),
        dense_file_bytes=len(dense),
        dense_gzip_bytes=encoding.gzip_size(dense),
        keras_weights=int(sum(a.size for a in keras_weights.values())),
        keras_nonzero=int(sum(np.count_nonzero(a) for a in keras_weights.values())),
        sparse_tensors=sum(t.stored_sparse for t in reports),
        densify_ops=sum(name == "DENSIFY" for name in ops),
        tensors=reports,
        csr_bytes=flatbuffer.csr_bytes(reports),
        samples=len(sample_inputs),
        max_abs_diff=float(np.max(np.abs(outputs - reference_outputs))),
        reference=reference,
        delegate="xnnpack",
        delegate_error=None,
        litert_latency_ms=latency,
        dense_litert_latency_ms=latency if flat is dense else litert.litert_latency_ms(
            dense, example, "xnnpack", latency_runs),
        keras_latency_ms=_keras_latency(plain, example, latency_runs),
        latency_runs=latency_runs,
        converter=how,
        versions=_versions(),
        encoding=choice.encoding,
        encoding_reason=choice.reason,
        sparse_file_bytes=len(sparse),
        sparse_gzip_bytes=encoding.gzip_size(sparse),
        sparse_delegate_error=choice.sparse_error,
        keras_params=int(plain.count_params()),
        shrunk=bool(shrink),
        baseline=baseline_label if baseline is not None else None,
        baseline_params=measured[0],
        baseline_file_bytes=measured[1],
        baseline_gzip_bytes=measured[2],
        baseline_litert_latency_ms=measured[3],
    )
