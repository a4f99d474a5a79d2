"""Running exported ``.tflite`` files with LiteRT: interpreter, delegates, predict, latency.

Files are run with ``ai_edge_litert.interpreter.Interpreter`` (imported on first use).
``run_default`` runs a file exactly as a deployer would (``Interpreter(model_path=...)``
with no other argument: LiteRT's default delegates, XNNPACK on CPU); ``to_tflite``
writes only files that run this way. LiteRT's default XNNPACK delegate rejects some
sparse variants (sparse dynamic-range int8 and sparse full-int8 models fail with
"failed to delegate FULLY_CONNECTED" under ai-edge-litert 2.3.0), so for those
``to_tflite`` writes the dense encoding (``tf_lottery.export.encoding``).
``open_interpreter(path, delegate="builtin")`` runs a file with the builtin kernels
instead (``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``), which
``tf_lottery.export.flatbuffer`` uses to read densified weights back.
"""

from __future__ import annotations

import numbers
import os
import statistics
import time

import numpy as np

__all__ = [
    "DELEGATES",
    "open_interpreter",
    "predict",
    "run_default",
    "litert_latency_ms",
    "median_ms",
    "check_positive_int",
]

#: Accepted values of ``delegate``: LiteRT's default delegates, or its builtin kernels.
DELEGATES = ("xnnpack", "builtin")


def check_positive_int(arg: str, value) -> int:
    """``value`` as an int; ``ValueError`` naming ``arg`` unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{arg}` must be an integer >= 1; received {value!r}.")
    return int(value)


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
    if delegate not in DELEGATES:
        raise ValueError(f"`delegate` must be one of {list(DELEGATES)}; received {delegate!r}.")
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
    batch_size = check_positive_int("batch_size", batch_size)
    x = np.asarray(x, np.float32)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"`x` must hold at least one example; received shape {x.shape}.")
    return _run(open_interpreter(model, delegate=delegate, num_threads=num_threads), x, batch_size)


def _first_line(err) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".strip()


def run_default(model, x) -> tuple[np.ndarray | None, str | None]:
    """Runs ``x`` (one batch) the way a deployer opens a file, and says whether it worked.

    ``ai_edge_litert.interpreter.Interpreter(model_path=...)`` (``model_content=`` for
    bytes) with no other argument, so LiteRT's default delegates (XNNPACK on CPU) and
    threads; then ``allocate_tensors()``, ``set_tensor``, ``invoke()``, ``get_tensor``
    (the input resized to ``x``'s batch).

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        x: float32 array ``(N, *input_shape)``.

    Returns:
        ``(outputs, None)`` with float32 outputs ``(N, *output_shape)`` when it runs
        and gives finite outputs, else ``(None, first line of the error)``.
    """
    lib = _interpreter_module()
    source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {
        "model_path": os.fspath(model)}
    try:
        interpreter = lib.Interpreter(**source)
        interpreter.allocate_tensors()
        outputs = _run(interpreter, np.asarray(x, np.float32), len(x))
    except (RuntimeError, ValueError) as err:
        return None, _first_line(err)
    if not np.isfinite(outputs).all():
        return None, "RuntimeError: NaN or infinite outputs"
    return outputs, None


def median_ms(fn, runs: int) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls, after 3 warm-ups."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def litert_latency_ms(model, example, delegate: str, runs: int) -> float:
    """Median latency in milliseconds of one LiteRT inference of ``example``.

    One thread; each run is ``set_tensor`` + ``invoke`` + ``get_tensor``.

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        example: float32 array ``(1, *input_shape)`` (the input is resized to it).
        delegate: ``"xnnpack"`` or ``"builtin"``.
        runs: timed runs behind the median, >= 1.
    """
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

    return median_ms(once, runs)
