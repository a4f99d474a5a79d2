"""Which weight encoding an export writes: sparse where it runs and is smaller, else dense.

``to_tflite`` converts every model twice: with ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``
(the *sparse* encoding: weight tensors with at least 30% zeros stored in TFLite's sparse
format, expanded by ``DENSIFY`` ops) and without (the *dense* encoding). ``choose``
runs both as a deployer would (``tf_lottery.export.litert.run_default``: LiteRT's
default ``Interpreter``, XNNPACK) and keeps the sparse one only when it runs there and
its gzip-compressed size is smaller than the dense one's: a file full of zeros
compresses well, and the indices of the sparse format cost as much as the values they
save for int8 weights. Otherwise the dense one, which must run.
"""

from __future__ import annotations

import dataclasses
import gzip

import numpy as np

from tf_lottery.export import flatbuffer, litert

__all__ = ["ENCODINGS", "Choice", "choose", "gzip_size"]

#: The weight encodings an export can hold.
ENCODINGS = ("sparse", "dense")


def gzip_size(flat: bytes) -> int:
    """Bytes of ``flat`` gzip-compressed at level 9 (no timestamp)."""
    return len(gzip.compress(flat, 9, mtime=0))


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


@dataclasses.dataclass(frozen=True)
class Choice:
    """The encoding ``choose`` picked.

    Attributes:
        encoding: ``"sparse"`` or ``"dense"``.
        reason: one sentence saying why.
        flat: the chosen file's bytes.
        outputs: its float32 outputs on the inputs ``choose`` ran, under the default
            delegates.
        sparse_error: first line of the sparse encoding's failure under the default
            delegates (``None`` if it ran).
    """

    encoding: str
    reason: str
    flat: bytes
    outputs: np.ndarray
    sparse_error: str | None


def choose(sparse: bytes, dense: bytes, x) -> Choice:
    """Picks the encoding to write, running both under LiteRT's default delegates.

    Args:
        sparse: the model converted with ``EXPERIMENTAL_SPARSITY``.
        dense: the same model converted without it.
        x: float32 sample inputs ``(N, *input_shape)``, run through both.

    Returns:
        A ``Choice``: the sparse encoding when it runs under the default delegates and
        its gzip size is below the dense encoding's, else the dense one.

    Raises:
        RuntimeError: the dense encoding does not run under the default delegates
            either (and the sparse one was not chosen); the message gives both errors.
    """
    # Without a tensor stored sparse (none had 30% zeros) the two files differ only in
    # metadata: that is the dense encoding, whatever its gzip size.
    same = sparse == dense or flatbuffer.sparse_tensor_count(sparse) == 0
    sparse_out, sparse_error = (None, None) if same else litert.run_default(sparse, x)
    sparse_gz, dense_gz = gzip_size(sparse), gzip_size(dense)
    if not same and sparse_error is None and sparse_gz < dense_gz:
        return Choice("sparse", f"the sparse encoding runs under LiteRT's default delegates "
                      f"and is smaller ({_kib(sparse_gz)} gzipped, dense {_kib(dense_gz)})",
                      sparse, sparse_out, None)
    dense_out, dense_error = litert.run_default(dense, x)
    if dense_error is not None:
        raise RuntimeError(
            "The exported model does not run under LiteRT's default delegates in either "
            f"encoding (sparse: {sparse_error or 'not tried or not smaller'}; dense: "
            f"{dense_error}); "
            "nothing was written."
        )
    if same:
        reason = "no weight tensor has enough zeros (30%) for the sparse format"
    elif sparse_error is not None:
        reason = f"the sparse encoding fails under LiteRT's default delegates ({sparse_error})"
    else:
        reason = (f"the sparse encoding is not smaller ({_kib(sparse_gz)} gzipped, dense "
                  f"{_kib(dense_gz)})")
    return Choice("dense", reason, dense, dense_out, sparse_error)
