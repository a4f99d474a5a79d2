"""What an export wrote and measured: ``ExportReport`` and one ``TensorReport`` per weight.

Plain frozen dataclasses, JSON-ready through ``to_dict``; ``tf_lottery.export.flatbuffer``
fills the ``TensorReport``s and ``tf_lottery.export.converter.to_tflite`` the
``ExportReport``.
"""

from __future__ import annotations

import dataclasses

__all__ = ["ExportReport", "TensorReport"]


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
        """JSON-ready dict of every field (``shape`` as a list), plus ``sparsity``."""
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
            without ``EXPERIMENTAL_SPARSITY`` (the dense encoding).
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
        delegate: ``"xnnpack"``: every file ``to_tflite`` writes runs under LiteRT's
            default delegates (kept from reports of older versions, which could say
            ``"builtin"``: a file only LiteRT's builtin kernels ran).
        delegate_error: ``None`` (older reports: why the default delegates failed).
        litert_latency_ms, dense_litert_latency_ms: median latency of one LiteRT
            inference (batch 1, one thread, ``set_tensor`` + ``invoke`` +
            ``get_tensor``, default delegates) of this file and of the dense encoding.
        keras_latency_ms: median latency of ``tf.function(model(x, training=False))``
            on the same example (batch 1, TensorFlow's default threads).
        latency_runs: timed runs behind each median.
        converter: how the model was converted.
        versions: TensorFlow, Keras and ai-edge-litert versions.
        encoding: ``"sparse"`` (weights in TFLite's sparse format) or ``"dense"``: the
            sparse encoding is written only when it runs under LiteRT's default
            delegates and is smaller gzipped than the dense one
            (``tf_lottery.export.encoding``).
        encoding_reason: why that encoding was chosen, one sentence.
        sparse_file_bytes, sparse_gzip_bytes: the sparse encoding's sizes (written or not).
        sparse_delegate_error: first line of the sparse encoding's failure under the
            default delegates (``None`` if it ran or was not tried).
        keras_params: parameters of the exported Keras model (``count_params``, after
            stripping and shrinking).
        shrunk: the model was exported with ``shrink=True`` (pruned channels removed).
        baseline: what the latency is compared with (``None``: nothing), e.g. the
            unshrunk network of the same architecture.
        baseline_params, baseline_file_bytes, baseline_gzip_bytes: its parameters and
            dense-encoding file sizes (same quantization).
        baseline_litert_latency_ms: its median LiteRT latency, measured like
            ``litert_latency_ms``.
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
    encoding: str = "sparse"
    encoding_reason: str = ""
    sparse_file_bytes: int | None = None
    sparse_gzip_bytes: int | None = None
    sparse_delegate_error: str | None = None
    keras_params: int | None = None
    shrunk: bool = False
    baseline: str | None = None
    baseline_params: int | None = None
    baseline_file_bytes: int | None = None
    baseline_gzip_bytes: int | None = None
    baseline_litert_latency_ms: float | None = None

    @property
    def keras_sparsity(self) -> float:
        """Fraction of the Keras model's prunable weights that are zero."""
        return 1.0 - self.keras_nonzero / self.keras_weights if self.keras_weights else 0.0

    @property
    def pruned_zeros_preserved(self) -> bool:
        """Every prunable Keras weight was found in the file with its zeros intact."""
        matched = [t for t in self.tensors if t.keras_weight is not None]
        return bool(matched) and all(t.pruned_still_zero for t in matched)

    @property
    def speedup(self) -> float | None:
        """``baseline_litert_latency_ms / litert_latency_ms`` (> 1: this file is faster),
        ``None`` without a baseline."""
        if self.baseline_litert_latency_ms is None or not self.litert_latency_ms:
            return None
        return self.baseline_litert_latency_ms / self.litert_latency_ms

    def to_dict(self) -> dict:
        """JSON-ready dict of every field, plus ``keras_sparsity``,
        ``pruned_zeros_preserved`` and ``speedup``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["tensors"] = [t.to_dict() for t in self.tensors]
        out["keras_sparsity"] = self.keras_sparsity
        out["pruned_zeros_preserved"] = self.pruned_zeros_preserved
        out["speedup"] = self.speedup
        return out

    def __str__(self) -> str:
        def kib(n):
            return f"{n / 1024:,.1f} KiB"

        label = self.quantization + (" (prune-preserving QAT)" if self.qat else "")
        sparse_size = "not converted" if self.sparse_file_bytes is None else (
            f"{kib(self.sparse_file_bytes)} ({kib(self.sparse_gzip_bytes)} gzipped)")
        params = "" if self.keras_params is None else f"{self.keras_params:,} parameters, "
        lines = [
            f"TFLite export {self.path} [{label}]" + (" shrunk" if self.shrunk else ""),
            f"  file:        {kib(self.file_bytes)} ({kib(self.gzip_bytes)} gzipped); sparse "
            f"encoding {sparse_size}, dense {kib(self.dense_file_bytes)} "
            f"({kib(self.dense_gzip_bytes)} gzipped)",
            f"  encoding:    {self.encoding}: {self.encoding_reason}",
            f"  weights:     {params}{self.keras_nonzero:,} of {self.keras_weights:,} prunable "
            f"nonzero in Keras (sparsity {self.keras_sparsity:.4f}); int32-CSR size of the "
            f"file's weights {kib(self.csr_bytes)}",
            f"  stored:      {self.sparse_tensors} of {len(self.tensors)} weight tensors "
            f"sparse, {self.densify_ops} DENSIFY ops; pruned zeros preserved: "
            f"{'yes' if self.pruned_zeros_preserved else 'NO'}",
            f"  outputs:     max |LiteRT - {self.reference}| = {self.max_abs_diff:.3g} on "
            f"{self.samples} samples",
            f"  delegate:    {self.delegate}"
            + (f" (default delegates failed: {self.delegate_error})" if self.delegate_error
               else " (LiteRT's default Interpreter(model_path=...) runs the file)"),
            f"  latency:     LiteRT {self.litert_latency_ms:.3f} ms (dense encoding "
            f"{self.dense_litert_latency_ms:.3f} ms), Keras {self.keras_latency_ms:.3f} ms "
            f"(batch 1, median of {self.latency_runs})",
        ]
        if self.baseline is not None:
            speedup = "n/a" if self.speedup is None else f"{self.speedup:.2f}x"
            lines.append(
                f"  vs baseline: LiteRT ms: this file {self.litert_latency_ms:.3f} vs "
                f"{self.baseline_litert_latency_ms:.3f} for {self.baseline} "
                f"(speedup {speedup}); {self.baseline_params:,} parameters, "
                f"{kib(self.baseline_file_bytes)} ({kib(self.baseline_gzip_bytes)} gzipped)")
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
