"""TFLite / LiteRT export of sparse tickets, checked by running the exported file.

``to_tflite(model, "ticket.tflite", quantization=...)`` folds the masks into the
weights (``tf_lottery.strip``), converts with ``tf.lite.TFLiteConverter`` and
``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` (sparse weight encoding), runs the result
with ``ai_edge_litert.interpreter.Interpreter`` on sample inputs, compares it with the
Keras model and returns an ``ExportReport``: file sizes (raw, gzip, and a dense export
of the same model for comparison), which weight tensors the file stores sparse and how
sparse they still are (read back from the flatbuffer), the largest output difference,
and latencies.

How a Keras 3 model is converted (TF 2.21, Keras 3.15): the model is written as a
SavedModel with ``keras.export.ExportArchive`` and one endpoint calling
``model(x, training=False)``, which ``TFLiteConverter.from_saved_model`` converts.
``TFLiteConverter.from_keras_model`` does the same internally in TF 2.21, but swallows
any export error and falls back to an older path; ``from_concrete_functions`` on a
``tf.function`` of a Keras 3 model keeps the weights as resource variables
(``VAR_HANDLE``/``READ_VARIABLE`` ops, no weights in the file), so it is not used.
tf_keras models (tfmot's quantization-aware training) are saved with
``tf.saved_model.save``, as ``from_keras_model`` does for them.

What the converter does with sparsity (observed with TF 2.21, recorded in
``ExportReport``): a constant weight tensor with at least 30% zeros is stored in the
TFLite sparse format (CSR-like ``DimensionMetadata``) and fed to its op through a
``DENSIFY`` op, which expands it once when the interpreter prepares the graph. The file
shrinks; inference is dense. (The converter picks block-sparse encodings that
fully-connected kernels can run sparse only when whole 1x4 blocks are zero, which
unstructured magnitude pruning does not produce.)

LiteRT's default XNNPACK delegate rejects some sparse variants: sparse dynamic-range
int8 and sparse full-int8 models fail with "failed to delegate FULLY_CONNECTED" under
ai-edge-litert 2.3.0. Every export is run; a variant that fails under the default
delegates is re-run with the builtin kernels (``OpResolverType.
BUILTIN_WITHOUT_DEFAULT_DELEGATES``) and the report says so (``delegate="builtin"``
and the reason). Load such files with ``open_interpreter(path, delegate="builtin")``.

Command line (the flags live in ``tf_lottery.main``, the only module reading absl
flags)::

    python -m tf_lottery.export --run_dir=runs/<name>_<hash> --level=8 --quantization=int8
"""

from __future__ import annotations

import dataclasses
import gzip
import numbers
import os
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tf_lottery import masking, files, paths
from tf_lottery.layers import is_masked, masked_class_for

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

#: Accepted values of ``quantization`` (``None`` is the same as ``"float32"``).
QUANTIZATIONS = ("float32", "float16", "dynamic_int8", "int8")

_DELEGATES = ("xnnpack", "builtin")
_DEFAULT_SAMPLES = 32
_REPRESENTATIVE_LIMIT = 500


# ----------------------------------------------------------------------------- reports
@dataclasses.dataclass(frozen=True)
class TensorReport:
    """One constant weight tensor (rank >= 2) of an exported ``.tflite`` file.

    Attributes:
        name: the tensor's name in the file (the converter fuses op names into it).
        shape: shape in TFLite layout (fully connected: ``(out, in)``; convolution:
            ``(out, kh, kw, in)``).
        dtype: stored element type, e.g. ``"float32"``, ``"float16"``, ``"int8"``.
        stored_sparse: the file stores it in the TFLite sparse format.
        elements: number of entries of the dense tensor.
        nonzero: nonzero entries, counted from the stored values (entries the sparse
            format does not store are zero), in the stored dtype: int8 weights count
            their quantized value; -1 for element types numpy cannot hold (int4).
        stored_bytes: bytes of the tensor's buffer (values only; the sparse index
            arrays live in the tensor's metadata).
        keras_weight: the mask key (``"fc1/kernel"``) of the Keras weight this tensor
            holds, found by shape and zero pattern, or ``None`` if none matched.
        keras_nonzero: nonzero entries of that Keras weight (``None`` if unmatched).
        pruned_still_zero: every entry that is zero in the Keras weight is zero in the
            file (``None`` if unmatched).
    """

    name: str
    shape: tuple
    dtype: str
    stored_sparse: bool
    elements: int
    nonzero: int
    stored_bytes: int
    keras_weight: str | None = None
    keras_nonzero: int | None = None
    pruned_still_zero: bool | None = None

    @property
    def sparsity(self) -> float:
        """Fraction of zero entries in the file, in [0, 1]."""
        return 1.0 - self.nonzero / self.elements if self.elements else 0.0

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["shape"] = list(self.shape)
        out["sparsity"] = self.sparsity
        return out


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What ``to_tflite`` wrote and measured. Sizes in bytes, times in milliseconds.

    Attributes:
        path: the ``.tflite`` file written.
        quantization: ``"float32"``, ``"float16"``, ``"dynamic_int8"`` or ``"int8"``.
        qat: the int8 model comes from tfmot's prune-preserving quantization-aware
            training (``to_tflite(..., qat_data=...)``).
        file_bytes, gzip_bytes: size of the file, raw and gzip-compressed (level 9).
        dense_file_bytes, dense_gzip_bytes: the same model and quantization converted
            without ``EXPERIMENTAL_SPARSITY``.
        keras_weights, keras_nonzero: prunable weights (kernels of Dense/Conv/...
            layers) of the exported Keras model and how many are nonzero.
        sparse_tensors: weight tensors stored in the sparse format.
        densify_ops: ``DENSIFY`` ops in the graph (one per sparse tensor whose op
            cannot read the sparse format).
        tensors: one ``TensorReport`` per constant weight tensor of rank >= 2.
        csr_bytes: what the file's weight tensors take as plain CSR with int32
            indices: per tensor ``nonzero * itemsize + nonzero * 4 + (rows + 1) * 4``
            with ``rows`` the first dimension in TFLite layout; a yardstick for
            ``file_bytes``.
        samples: number of sample inputs compared.
        max_abs_diff: largest ``|LiteRT output - reference output|`` over the samples.
        reference: what LiteRT was compared with (the Keras model, or tfmot's
            quantization-aware tf_keras model for ``qat``).
        delegate: ``"xnnpack"`` (LiteRT's default delegates ran the file) or
            ``"builtin"`` (they failed; the builtin kernels ran it).
        delegate_error: why the default delegates failed (``None`` if they did not).
        litert_latency_ms, dense_litert_latency_ms: median latency of one LiteRT
            inference (batch 1, one thread, ``set_tensor`` + ``invoke`` +
            ``get_tensor``) of this file and of the dense export.
        keras_latency_ms: median latency of ``tf.function(model(x, training=False))``
            on the same example (batch 1, TensorFlow's default threads).
        latency_runs: timed runs behind each median.
        converter: how the model was converted.
        versions: TensorFlow, Keras and ai-edge-litert versions.
    """

    path: str
    quantization: str
    qat: bool
    file_bytes: int
    gzip_bytes: int
    dense_file_bytes: int
    dense_gzip_bytes: int
    keras_weights: int
    keras_nonzero: int
    sparse_tensors: int
    densify_ops: int
    tensors: tuple
    csr_bytes: int
    samples: int
    max_abs_diff: float
    reference: str
    delegate: str
    delegate_error: str | None
    litert_latency_ms: float
    dense_litert_latency_ms: float
    keras_latency_ms: float
    latency_runs: int
    converter: str
    versions: dict

    @property
    def keras_sparsity(self) -> float:
        """Fraction of the Keras model's prunable weights that are zero."""
        return 1.0 - self.keras_nonzero / self.keras_weights if self.keras_weights else 0.0

    @property
    def pruned_zeros_preserved(self) -> bool:
        """Every prunable Keras weight was found in the file with its zeros intact."""
        matched = [t for t in self.tensors if t.keras_weight is not None]
        return bool(matched) and all(t.pruned_still_zero for t in matched)

    def to_dict(self) -> dict:
        """JSON-ready dict of every field, plus ``keras_sparsity`` and
        ``pruned_zeros_preserved``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["tensors"] = [t.to_dict() for t in self.tensors]
        out["keras_sparsity"] = self.keras_sparsity
        out["pruned_zeros_preserved"] = self.pruned_zeros_preserved
        return out

    def __str__(self) -> str:
        def kib(n):
            return f"{n / 1024:,.1f} KiB"

        label = self.quantization + (" (prune-preserving QAT)" if self.qat else "")
        ratio = self.file_bytes / self.dense_file_bytes if self.dense_file_bytes else float("nan")
        lines = [
            f"TFLite export {self.path} [{label}]",
            f"  file:        {kib(self.file_bytes)} ({kib(self.gzip_bytes)} gzipped); dense "
            f"export {kib(self.dense_file_bytes)} ({kib(self.dense_gzip_bytes)} gzipped); "
            f"sparse/dense {ratio:.2f}"
            + (" (the sparse encoding is LARGER: too few zeros for its indices)"
               if ratio > 1 else ""),
            f"  weights:     {self.keras_nonzero:,} of {self.keras_weights:,} nonzero in Keras "
            f"(sparsity {self.keras_sparsity:.4f}); int32-CSR size of the file's weights "
            f"{kib(self.csr_bytes)}",
            f"  encoding:    {self.sparse_tensors} of {len(self.tensors)} weight tensors stored "
            f"sparse, {self.densify_ops} DENSIFY ops; pruned zeros preserved: "
            f"{'yes' if self.pruned_zeros_preserved else 'NO'}",
            f"  outputs:     max |LiteRT - {self.reference}| = {self.max_abs_diff:.3g} on "
            f"{self.samples} samples",
            f"  delegate:    {self.delegate}"
            + (f" (default delegates failed: {self.delegate_error})" if self.delegate_error else ""),
            f"  latency:     LiteRT {self.litert_latency_ms:.3f} ms (dense export "
            f"{self.dense_litert_latency_ms:.3f} ms), Keras {self.keras_latency_ms:.3f} ms "
            f"(batch 1, median of {self.latency_runs})",
        ]
        width = max([len(t.name) for t in self.tensors] + [6])
        width = min(width, 48)
        lines.append(f"  {'tensor':<{width}}  {'keras weight':<16} {'shape':<18} {'dtype':<8} "
                     f"{'stored':<7} {'nonzero':>9} {'sparsity':>8}  zeros kept")
        for t in self.tensors:
            name = t.name if len(t.name) <= width else "..." + t.name[-(width - 3):]
            kept = "-" if t.pruned_still_zero is None else ("yes" if t.pruned_still_zero else "NO")
            lines.append(
                f"  {name:<{width}}  {t.keras_weight or '-':<16} {str(t.shape):<18} {t.dtype:<8} "
                f"{'sparse' if t.stored_sparse else 'dense':<7} {t.nonzero:>9,} "
                f"{t.sparsity:>8.4f}  {kept}"
            )
        return "\n".join(lines)


# ------------------------------------------------------------------------- validation
def _check_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a keras.Model; received {type(model).__name__}. Pass a built "
            "Sequential or Functional Keras 3 model (masked or plain)."
        )
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"`model` {model.name!r} has no defined inputs (not built, or subclassed). Pass "
            "a Sequential or Functional model built on keras.Input(shape)."
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"`model` {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; to_tflite exports single-input, single-output models. Wrap the model "
            "in one that takes and returns a single tensor."
        )
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"`model` {model.name!r} has input shape {tuple(model.inputs[0].shape)} with "
            "unknown dimensions besides the batch; export needs them fixed. Rebuild it on "
            "keras.Input with a full shape."
        )
    for layer in model.layers:
        policy = getattr(layer, "dtype_policy", None)
        compute = getattr(policy, "compute_dtype", "float32")
        if compute not in ("float32", None):
            raise ValueError(
                f"`model` layer {layer.name!r} computes in {compute} (dtype policy "
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


def _check_positive_int(arg, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{arg}` must be an integer >= 1; received {value!r}.")
    return int(value)


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


# ------------------------------------------------------------------------ interpreter
def _interpreter_module():
    from ai_edge_litert import interpreter as interpreter_lib

    return interpreter_lib


def open_interpreter(model, *, delegate="xnnpack", num_threads=None, preserve_all_tensors=False):
    """An allocated ``ai_edge_litert.interpreter.Interpreter`` for a ``.tflite`` model.

    Args:
        model: a path to a ``.tflite`` file, or its bytes.
        delegate: ``"xnnpack"`` (LiteRT's default delegates, XNNPACK on CPU) or
            ``"builtin"`` (``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``).
        num_threads: interpreter threads (``None``: LiteRT's default).
        preserve_all_tensors: keep intermediate tensors readable (builtin only).

    Raises:
        ValueError: unknown ``delegate``.
        RuntimeError / ValueError from LiteRT: the model does not load or prepare.
    """
    if delegate not in _DELEGATES:
        raise ValueError(f"`delegate` must be one of {list(_DELEGATES)}; received {delegate!r}.")
    lib = _interpreter_module()
    resolver = (lib.OpResolverType.AUTO if delegate == "xnnpack"
                else lib.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    source = {"model_content": model} if isinstance(model, (bytes, bytearray)) else {
        "model_path": os.fspath(model)}
    interpreter = lib.Interpreter(
        **source, num_threads=num_threads, experimental_op_resolver_type=resolver,
        experimental_preserve_all_tensors=preserve_all_tensors,
    )
    interpreter.allocate_tensors()
    return interpreter


def _run(interpreter, x, batch_size):
    """Runs ``x`` through an allocated single-input interpreter in chunks."""
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    results = []
    current = tuple(inp["shape"])
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        if tuple(chunk.shape) != current:
            interpreter.resize_tensor_input(inp["index"], list(chunk.shape), strict=False)
            interpreter.allocate_tensors()
            current = tuple(chunk.shape)
        interpreter.set_tensor(inp["index"], chunk.astype(inp["dtype"], copy=False))
        interpreter.invoke()
        results.append(np.array(interpreter.get_tensor(out["index"]), dtype=np.float32))
    return np.concatenate(results)


def predict(model, x, *, batch_size=256, delegate="xnnpack", num_threads=None) -> np.ndarray:
    """Runs a single-input ``.tflite`` model on ``x`` with LiteRT.

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        x: float32 array ``(N, *input_shape)``.
        batch_size: examples per ``invoke`` (the input is resized to it).
        delegate: ``"xnnpack"`` or ``"builtin"`` (see ``open_interpreter``; use the
            ``delegate`` of the file's ``ExportReport``).
        num_threads: interpreter threads (``None``: LiteRT's default).

    Returns:
        float32 array ``(N, *output_shape)``.

    Raises:
        ValueError: ``batch_size < 1`` or empty ``x``; RuntimeError from LiteRT if the
            model cannot run with that delegate.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    x = np.asarray(x, np.float32)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"`x` must hold at least one example; received shape {x.shape}.")
    return _run(open_interpreter(model, delegate=delegate, num_threads=num_threads), x, batch_size)


def _first_line(err) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".strip()


def _run_with_fallback(model, x):
    """(outputs, delegate, error): the default delegates first, builtin kernels if they fail."""
    try:
        outputs = _run(open_interpreter(model, delegate="xnnpack"), x, len(x))
        if not np.isfinite(outputs).all():
            raise RuntimeError("non-finite outputs under the default delegates")
        return outputs, "xnnpack", None
    except (RuntimeError, ValueError) as err:
        reason = _first_line(err)
    try:
        outputs = _run(open_interpreter(model, delegate="builtin"), x, len(x))
    except (RuntimeError, ValueError) as err:
        raise RuntimeError(
            f"The exported model fails under LiteRT's default delegates ({reason}) and "
            f"under its builtin kernels ({_first_line(err)}); nothing was written."
        ) from err
    if not np.isfinite(outputs).all():
        raise RuntimeError("The exported model gives NaN or infinite outputs under LiteRT; "
                           "nothing was written.")
    return outputs, "builtin", reason


def _median_ms(fn, runs_):
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs_):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _litert_latency(model, example, delegate, runs_):
    interpreter = open_interpreter(model, delegate=delegate, num_threads=1)
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    if tuple(inp["shape"]) != example.shape:
        interpreter.resize_tensor_input(inp["index"], list(example.shape), strict=False)
        interpreter.allocate_tensors()

    def once():
        interpreter.set_tensor(inp["index"], example)
        interpreter.invoke()
        interpreter.get_tensor(out["index"])

    return _median_ms(once, runs_)


def _keras_latency(model, example, runs_):
    fn = tf.function(lambda x: model(x, training=False))
    tensor = tf.constant(example)
    return _median_ms(lambda: fn(tensor).numpy(), runs_)


# --------------------------------------------------------------------- reading back
def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _enum_names(enum_class) -> dict:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


_NUMPY_TYPES = {
    "FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT8": np.int8,
    "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
}


def _buffer_bytes(flat, buffer):
    if buffer.data is not None and len(buffer.data):
        return np.asarray(buffer.data, np.uint8).tobytes()
    offset, size = int(getattr(buffer, "offset", 0) or 0), int(getattr(buffer, "size", 0) or 0)
    if offset > 1 and size:  # large models keep buffers after the flatbuffer
        return bytes(flat[offset:offset + size])
    return b""


def _parse(flat: bytes):
    """(subgraph, [(operator name, op), ...], {tensor index: (tensor, buffer bytes)}) of the
    constant tensors of rank >= 2."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(flat), 0)
    names = _enum_names(schema.BuiltinOperator)
    if len(model.subgraphs) != 1:
        raise ValueError(f"expected one subgraph, found {len(model.subgraphs)}")
    graph = model.subgraphs[0]
    ops = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        ops.append((names.get(builtin, str(builtin)), op))
    constants = {}
    for index, tensor in enumerate(graph.tensors):
        data = _buffer_bytes(flat, model.buffers[tensor.buffer]) if tensor.buffer else b""
        if data and tensor.shape is not None and len(tensor.shape) >= 2:
            constants[index] = (tensor, data)
    return graph, ops, constants


def weight_tensors(model) -> list[tuple[TensorReport, np.ndarray | None]]:
    """Reads the constant weight tensors (rank >= 2) of a ``.tflite`` model back.

    Metadata and nonzero counts come from the flatbuffer (parsed with the schema shipped
    in ``ai_edge_litert.schema_py_generated``); the dense value of a tensor stored
    sparse comes from LiteRT itself: the output of its ``DENSIFY`` op, read with the
    builtin kernels and ``experimental_preserve_all_tensors``.

    Args:
        model: path to a ``.tflite`` file, or its bytes.

    Returns:
        ``[(TensorReport without Keras matches, dense value or None), ...]`` in tensor
        order; the value is an array of the stored dtype in TFLite layout, ``None`` for
        element types numpy cannot hold (int4, ...).
    """
    if isinstance(model, (bytes, bytearray)):
        flat = bytes(model)
    else:
        with open(os.fspath(model), "rb") as f:
            flat = f.read()
    schema = _schema()
    type_names = _enum_names(schema.TensorType)
    graph, ops, constants = _parse(flat)
    densified = {op.inputs[0]: op.outputs[0] for name, op in ops if name == "DENSIFY"}
    interpreter = None
    if any(constants[i][0].sparsity is not None for i in constants):
        interpreter = open_interpreter(flat, delegate="builtin", preserve_all_tensors=True)
        (inp,) = interpreter.get_input_details()
        interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
        interpreter.invoke()
    out = []
    for index, (tensor, data) in constants.items():
        dtype_name = type_names.get(int(tensor.type), str(tensor.type))
        dtype = _NUMPY_TYPES.get(dtype_name)
        shape = tuple(int(d) for d in tensor.shape)
        stored = np.frombuffer(data, dtype) if dtype is not None else None
        nonzero = int(np.count_nonzero(stored)) if stored is not None else -1
        sparse = tensor.sparsity is not None
        value = None
        if dtype is not None:
            if sparse and index in densified and interpreter is not None:
                value = np.array(interpreter.get_tensor(densified[index]))
            elif not sparse:
                value = stored.reshape(shape)
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
        out.append((TensorReport(
            name=name, shape=shape, dtype=dtype_name.lower(), stored_sparse=sparse,
            elements=int(np.prod(shape)), nonzero=nonzero, stored_bytes=len(data),
        ), value))
    return out


def _walk_layers(model, prefix=""):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk_layers(layer, prefix + layer.name + "/")
        else:
            yield prefix + layer.name, layer


def _keras_prunable(model) -> dict[str, np.ndarray]:
    """``{mask key: weight}`` of the prunable kernels of a plain (stripped) model."""
    out = {}
    for name, layer in _walk_layers(model):
        cls = masked_class_for(layer)
        if cls is None or not layer.built:
            continue
        for weight in cls.prunable_weights:
            out[f"{name}/{weight}"] = keras.ops.convert_to_numpy(getattr(layer, weight))
    return out


def _layouts(array):
    """Ways the converter may lay out a Keras kernel in TFLite."""
    yield array
    if array.ndim == 2:
        yield array.T
    if array.ndim >= 3:
        yield np.moveaxis(array, -1, 0)  # conv (..., in, out) -> (out, ..., in)
    if array.ndim == 4:
        kh, kw, cin, mult = array.shape  # depthwise (kh, kw, in, mult) -> (1, kh, kw, in*mult)
        yield array.reshape(1, kh, kw, cin * mult)


def _match(keras_weights, tensors):
    """Pairs Keras kernels with file tensors by shape and zero pattern."""
    matched = {}
    used = set()
    for key, array in keras_weights.items():
        best = None
        for position, (report, value) in enumerate(tensors):
            if position in used or value is None or report.elements != array.size:
                continue
            for layout in _layouts(array):
                if layout.shape != value.shape:
                    continue
                keras_zero = layout == 0
                file_zero = value == 0
                agree = int(np.sum(keras_zero == file_zero))
                a = layout.astype(np.float64).ravel()
                b = value.astype(np.float64).ravel()
                corr = 0.0
                if a.std() > 0 and b.std() > 0:
                    corr = float(np.corrcoef(a, b)[0, 1])
                score = (agree, corr)
                kept = bool(np.all(file_zero[keras_zero]))
                if best is None or score > best[0]:
                    best = (score, position, kept)
        if best is not None:
            _, position, kept = best
            used.add(position)
            matched[position] = (key, int(np.count_nonzero(array)), kept)
    out = []
    for position, (report, _) in enumerate(tensors):
        if position in matched:
            key, nonzero, kept = matched[position]
            report = dataclasses.replace(
                report, keras_weight=key, keras_nonzero=nonzero, pruned_still_zero=kept)
        out.append(report)
    return tuple(out)


# ---------------------------------------------------------------------------- export
def _versions():
    from importlib import metadata

    try:
        litert = metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:  # pragma: no cover
        litert = "unknown"
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "ai_edge_litert": litert}


def to_tflite(model, path, *, quantization=None, representative_data=None, sample_inputs=None,
              qat_data=None, qat_steps=100, qat_batch_size=32, qat_learning_rate=1e-4,
              latency_runs=50) -> ExportReport:
    """Exports a (masked or plain) Keras model to a sparse ``.tflite`` file and checks it.

    Steps: strip the masks (``tf_lottery.strip``) when the model is masked; convert with
    ``EXPERIMENTAL_SPARSITY`` and the requested quantization; run the file with LiteRT
    (default delegates, falling back to the builtin kernels when they fail) on
    ``sample_inputs`` and compare with the Keras model; only then move the file to
    ``path`` (atomically: ``path`` never holds an unchecked or partial file). A dense
    export (no sparsity optimization, same quantization) is converted in memory for the
    size and latency comparison. The file takes and returns float32 tensors.

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

    Returns:
        An ``ExportReport``.

    Raises:
        ValueError: before any work, for a model that is not a built single-input
            float32 keras.Model, a ``path`` not ending in ``.tflite``, an unknown
            ``quantization``, ``"int8"`` without ``representative_data`` or
            ``qat_data``, ``qat_data`` with another quantization, inputs of the wrong
            shape, or bad counts.
        RuntimeError: the converted file runs neither under LiteRT's default delegates
            nor under its builtin kernels (nothing is written).
    """
    shape = _check_model(model)
    label = _check_quantization(quantization)
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).endswith(".tflite"):
        raise ValueError(f"`path` must be a file name ending in '.tflite'; received {path!r}.")
    path = os.fspath(path)
    latency_runs = _check_positive_int("latency_runs", latency_runs)
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
        qat_steps = _check_positive_int("qat_steps", qat_steps)
        qat_batch_size = _check_positive_int("qat_batch_size", qat_batch_size)
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

    plain = masking.strip(model) if any(is_masked(layer) for _, layer in
                                        _walk_layers(model)) else model
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
        reference_outputs = keras.ops.convert_to_numpy(plain(sample_inputs, training=False))
        reference = "Keras"
        how = ("keras.export.ExportArchive (model(x, training=False)) -> "
               "TFLiteConverter.from_saved_model")
    how += f", optimizations={'[]' if label == 'float32' else '[DEFAULT]'} + EXPERIMENTAL_SPARSITY"

    with tempfile.TemporaryDirectory(prefix="tf_lottery_export_") as directory:
        _saved_model(source, directory)
        flat = _convert_saved_model(directory, label, representative_data, sparse=True)
        dense = _convert_saved_model(directory, label, representative_data, sparse=False)

    # The dense export (for comparison) is checked first, so that nothing is written
    # when any LiteRT run fails.
    _, dense_delegate, _ = _run_with_fallback(dense, sample_inputs[:1])
    with files.atomic_path(path, ".tflite") as tmp:
        with open(tmp, "wb") as f:
            f.write(flat)
            f.flush()
            os.fsync(f.fileno())
        outputs, delegate, delegate_error = _run_with_fallback(tmp, sample_inputs)

    tensors = weight_tensors(flat)
    reports = _match(keras_weights, tensors)
    _, ops, _ = _parse(flat)
    csr = sum(
        t.nonzero * np.dtype(_NUMPY_TYPES.get(t.dtype.upper(), np.float32)).itemsize
        + 4 * t.nonzero + 4 * (t.shape[0] + 1) for t in reports if t.nonzero >= 0
    )
    example = sample_inputs[:1]
    return ExportReport(
        path=path,
        quantization=label,
        qat=qat_data is not None,
        file_bytes=len(flat),
        gzip_bytes=len(gzip.compress(flat, 9, mtime=0)),
        dense_file_bytes=len(dense),
        dense_gzip_bytes=len(gzip.compress(dense, 9, mtime=0)),
        keras_weights=int(sum(a.size for a in keras_weights.values())),
        keras_nonzero=int(sum(np.count_nonzero(a) for a in keras_weights.values())),
        sparse_tensors=sum(t.stored_sparse for t in reports),
        densify_ops=sum(name == "DENSIFY" for name, _ in ops),
        tensors=reports,
        csr_bytes=int(csr),
        samples=len(sample_inputs),
        max_abs_diff=float(np.max(np.abs(outputs - reference_outputs))),
        reference=reference,
        delegate=delegate,
        delegate_error=delegate_error,
        litert_latency_ms=_litert_latency(flat, example, delegate, latency_runs),
        dense_litert_latency_ms=_litert_latency(dense, example, dense_delegate, latency_runs),
        keras_latency_ms=_keras_latency(plain, example, latency_runs),
        latency_runs=latency_runs,
        converter=how,
        versions=_versions(),
    )


# --------------------------------------------------------------------- run directories
@dataclasses.dataclass(frozen=True)
class Ticket:
    """A trained network of a run directory, rebuilt (see ``load_ticket``).

    Attributes:
        model: the masked Keras model (``tf_lottery.wrap``) with the branch's final
            weights and masks loaded.
        dataset: the run's ``tf_lottery.data.Dataset``.
        hparams: the run's ``ExperimentHparams``.
        summary: the branch's ``summary.json``.
        branch_dir: ``.../replicate_<r>/level_<k>/<branch>``.
    """

    model: keras.Model
    dataset: object
    hparams: object
    summary: dict
    branch_dir: str


def _levels_done(replicate_dir, branch):
    done = []
    if os.path.isdir(replicate_dir):
        for entry in os.listdir(replicate_dir):
            if entry.startswith("level_") and entry[6:].isdigit() and os.path.exists(
                    os.path.join(replicate_dir, entry, branch, "summary.json")):
                done.append(int(entry[6:]))
    return sorted(done)


def load_ticket(run_dir, level, *, branch="lottery", replicate=None, data_dir=None) -> Ticket:
    """Rebuilds the trained network of one level and branch of a ``tf_lottery.main`` run.

    The run layout is ``<run_root>/<name>_<hash>/hparams.json`` and
    ``replicate_<r>/level_<k>/<branch>/{final.weights.h5, summary.json}``. The model is
    rebuilt with ``tf_lottery.models.build_model`` from ``hparams.json`` and the
    dataset's input shape and classes (``tf_lottery.data.load``), wrapped, and the
    branch's final weights (and masks) are loaded. Mixed-precision runs are rebuilt
    in float32 (weights are float32 variables either way).

    Args:
        run_dir: the ``<name>_<hash>`` directory, or one of its ``replicate_<r>``
            directories.
        level: pruning level ``k`` >= 0 whose ``summary.json`` exists (the branch
            finished).
        branch: ``"lottery"``, ``"reinit"`` or ``"random_prune"``.
        replicate: replicate index (default 0) when ``run_dir`` is the ``<name>_<hash>``
            directory; must agree with a ``replicate_<r>`` ``run_dir`` if given.
        data_dir: passed to ``tf_lottery.data.load`` (IDX files or TFDS directory).

    Raises:
        ValueError: naming the argument (``run_dir``, ``replicate``, ``level``,
            ``branch``) when the directory, level or branch does not exist or has not
            finished, or when the data cannot be loaded.
    """
    from tf_lottery import data as data_lib
    from tf_lottery import models as models_lib
    from tf_lottery.hparams import BRANCHES, ExperimentHparams

    run, rep = paths.resolve_replicate(run_dir, replicate)
    root, replicate_dir, replicate = run.path, rep.path, rep.index
    if branch not in BRANCHES:
        raise ValueError(f"`branch` (--branch) must be one of {list(BRANCHES)}; received "
                         f"{branch!r}.")
    done = _levels_done(replicate_dir, branch)
    if isinstance(level, bool) or not isinstance(level, int) or level not in done:
        raise ValueError(
            f"`level` (--level) {level!r} has no finished {branch!r} branch in "
            f"{replicate_dir} (no summary.json); finished levels: {done or 'none'}."
        )
    branch_dir = os.path.join(replicate_dir, f"level_{level}", branch)
    weights = os.path.join(branch_dir, "final.weights.h5")
    if not os.path.exists(weights):
        raise ValueError(f"`level` (--level) {level}: {weights} is missing.")
    hparams = ExperimentHparams.from_dict(files.read_json(os.path.join(root, "hparams.json")))
    dataset = data_lib.load(
        hparams.dataset.dataset, data_dir=data_dir,
        validation_size=hparams.dataset.validation_size,
        synthetic_size=hparams.dataset.synthetic_size,
    )
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = models_lib.build_model(
            hparams.model.model, dataset.input_shape, dataset.num_classes,
            initializer=hparams.model.base_initializer or hparams.model.initializer,
            dropout=hparams.model.dropout,
            batch_norm=hparams.model.batch_norm,
        )
        model = masking.wrap(model)
    finally:
        keras.config.set_dtype_policy(policy)
    model.load_weights(weights)
    summary = files.read_json(os.path.join(branch_dir, "summary.json"))
    return Ticket(model=model, dataset=dataset, hparams=hparams, summary=summary,
                  branch_dir=branch_dir)


if __name__ == "__main__":
    from tf_lottery import main

    main.run_export()
