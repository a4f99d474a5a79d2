"""Reading a ``.tflite`` flatbuffer back: which weights it stores sparse, and how sparse.

The file is parsed with the schema shipped in ``ai_edge_litert.schema_py_generated``.
What the converter does with sparsity (observed with TF 2.21): a constant weight tensor
with at least 30% zeros is stored in the TFLite sparse format (CSR-like
``DimensionMetadata``) and fed to its op through a ``DENSIFY`` op, which expands it once
when the interpreter prepares the graph. The file shrinks; inference is dense. (The
converter picks block-sparse encodings that fully-connected kernels can run sparse only
when whole 1x4 blocks are zero, which unstructured magnitude pruning does not produce.)

``weight_tensors`` lists the constant weight tensors (rank >= 2) with their dense
values; ``match_keras_weights`` pairs them with the Keras kernels they came from and
checks that every pruned zero is still zero in the file.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tf_lottery.export.litert import open_interpreter
from tf_lottery.export.report import TensorReport

__all__ = ["weight_tensors", "operator_names", "match_keras_weights", "csr_bytes",
           "sparse_tensor_count"]

_NUMPY_TYPES = {
    "FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT8": np.int8,
    "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
}


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _enum_names(enum_class) -> dict:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


def _read(model) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    with open(os.fspath(model), "rb") as f:
        return f.read()


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


def operator_names(model) -> list[str]:
    """The builtin operator names (``"FULLY_CONNECTED"``, ``"DENSIFY"``, ...) of a
    single-subgraph ``.tflite`` model (a path or its bytes), in graph order.

    Raises:
        ValueError: the model has more than one subgraph.
    """
    _, ops, _ = _parse(_read(model))
    return [name for name, _ in ops]


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

    Raises:
        ValueError: the model has more than one subgraph.
    """
    flat = _read(model)
    type_names = _enum_names(_schema().TensorType)
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


def sparse_tensor_count(model) -> int:
    """How many constant tensors of a ``.tflite`` model (path or bytes) are stored in
    TFLite's sparse format (read from the flatbuffer; nothing is run)."""
    _, _, constants = _parse(_read(model))
    return sum(tensor.sparsity is not None for tensor, _ in constants.values())


def csr_bytes(tensors) -> int:
    """Bytes the ``TensorReport``s would take as plain CSR with int32 indices.

    Per tensor ``nonzero * itemsize + nonzero * 4 + (rows + 1) * 4``, ``rows`` the first
    dimension in TFLite layout; tensors of unknown element type (``nonzero == -1``)
    are skipped.
    """
    return int(sum(
        t.nonzero * np.dtype(_NUMPY_TYPES.get(t.dtype.upper(), np.float32)).itemsize
        + 4 * t.nonzero + 4 * (t.shape[0] + 1) for t in tensors if t.nonzero >= 0
    ))


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


def match_keras_weights(keras_weights: dict, tensors) -> tuple[TensorReport, ...]:
    """Pairs Keras kernels with file tensors by shape and zero pattern.

    Args:
        keras_weights: ``{mask key ("fc1/kernel"): weight array in Keras layout}``.
        tensors: ``weight_tensors``' ``[(TensorReport, dense value or None), ...]``.

    Returns:
        The ``TensorReport``s in file order; each matched one carries ``keras_weight``,
        ``keras_nonzero`` and ``pruned_still_zero``. A Keras weight goes to the unused
        file tensor of the same size whose zeros agree with it most (ties: the highest
        correlation of values) in one of the layouts the converter uses.
    """
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
