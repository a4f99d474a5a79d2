"""Counting a model's prunable weights: the kernel entries of its Dense and Conv layers."""

from __future__ import annotations

import keras
import numpy as np


def count_prunable_weights(model: keras.Model) -> int:
    """Count the prunable weights of `model`: the kernel entries of its Dense and Conv layers.

    Counts every layer (recursing into nested models and layers) that is an instance of
    `keras.layers.Dense`, `EinsumDense`, or a convolution (`Conv1D/2D/3D`,
    `Conv*Transpose`, `DepthwiseConv*`, `SeparableConv*`: depthwise and pointwise
    kernels) or a recurrent cell (`SimpleRNNCell`, `GRUCell`, `LSTMCell`: kernel and
    recurrent kernel), so masked subclasses of these, the projections inside
    `MultiHeadAttention` and the cells inside `LSTM`/`GRU`/`SimpleRNN`/`Bidirectional`
    are counted too. Biases, BatchNormalization
    and embedding weights are not counted. A layer shared by several models is counted
    once.

    Args:
      model: a built `keras.Model` (or any `keras.layers.Layer`).

    Returns:
      The number of kernel entries, a Python int (e.g. 266,200 for LeNet-300-100 on
      28x28x1 with 10 classes).

    Raises:
      ValueError: if `model` is not a Keras layer/model or is not built yet.
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "`model` must be a keras.Model or keras.layers.Layer. "
            f"Received: model={model!r} of type {type(model).__name__}."
        )
    if not model.built:
        raise ValueError(
            f"`model` {model.name!r} is not built, so its kernels have no shape yet. "
            "Build it first, e.g. by calling it on a batch or with model.build(input_shape)."
        )
    kernel_layers = (
        keras.layers.Dense,
        keras.layers.EinsumDense,
        keras.layers.Conv1D,
        keras.layers.Conv2D,
        keras.layers.Conv3D,
        keras.layers.Conv1DTranspose,
        keras.layers.Conv2DTranspose,
        keras.layers.Conv3DTranspose,
        keras.layers.DepthwiseConv1D,
        keras.layers.DepthwiseConv2D,
        keras.layers.SeparableConv1D,
        keras.layers.SeparableConv2D,
        keras.layers.SimpleRNNCell,
        keras.layers.GRUCell,
        keras.layers.LSTMCell,
    )
    kernel_attrs = ("kernel", "recurrent_kernel", "depthwise_kernel", "pointwise_kernel")
    total = 0
    seen: set[int] = set()
    for layer in _iter_layers(model):
        if id(layer) in seen or not isinstance(layer, kernel_layers):
            continue
        seen.add(id(layer))
        for attr in kernel_attrs:
            try:
                kernel = getattr(layer, attr, None)
            except (AttributeError, ValueError):  # e.g. quantized Dense without `_kernel`
                kernel = None
            if kernel is not None and hasattr(kernel, "shape"):
                total += int(np.prod(kernel.shape))
    return total


def _iter_layers(layer):
    """Yield `layer` and every layer nested in it (sub-models, custom composite layers)."""
    yield layer
    flatten = getattr(layer, "_flatten_layers", None)  # Keras 3 Layer method.
    if flatten is not None:
        yield from flatten(include_self=False, recursive=True)
    else:
        for sub in getattr(layer, "layers", []):
            yield from _iter_layers(sub)
