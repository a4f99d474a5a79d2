"""Gradient-based scores of a model's masked weights, for pruning at initialization.

Each function returns ``{mask key: float64 np.ndarray of the weight's shape}``; a higher
score means "keep", as for ``tf_lottery.pruning.CRITERIA``. Gradients are taken with
respect to the dense weight variables (``layer.dense_weight``), while the layers compute
with ``weight * mask``, so the gradient at a pruned position is 0 (``d(w*m)/dw = m``) and
its score is 0 (``prune`` only ranks survivors anyway).

All three call the model with ``training=False``: BatchNormalization normalizes with its
moving statistics (mean 0 and variance 1 at initialization) and dropout is off, as
Synaptic-Flow's reference code (Tanaka et al. 2020) scores every method in eval mode.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_lottery import masking

__all__ = ["SynFlowTwin", "grasp", "snip", "synflow"]


def _weights(model, fn: str) -> tuple[list[str], list]:
    variables = masking._require_masked(model, fn)
    # The backend tf.Variables: a GradientTape watches those, not Keras's wrappers.
    return list(variables), [weight.value for weight, _ in variables.values()]


def _dense(grads, weights) -> list:
    """Gradients as dense tensors; a weight the output does not depend on gets zeros."""
    return [
        tf.zeros(w.shape, w.dtype) if g is None else tf.convert_to_tensor(g)
        for g, w in zip(grads, weights)
    ]


def _data_loss(model, x, y, loss, scale: float = 1.0):
    loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    logits = tf.cast(model(x, training=False), tf.float32)
    return loss(y, logits / scale)


def _scores(keys, weights, grads, transform) -> dict[str, np.ndarray]:
    return {
        key: transform(
            keras.ops.convert_to_numpy(w).astype(np.float64),
            keras.ops.convert_to_numpy(g).astype(np.float64),
        )
        for key, w, g in zip(keys, weights, grads)
    }


def snip(model, x, y, loss=None) -> dict[str, np.ndarray]:
    """SNIP connection sensitivity ``|w * dL/dw|`` on one batch.

    Lee, Ajanthan & Torr, "SNIP: Single-shot network pruning based on connection
    sensitivity", ICLR 2019 (the saliency ``|g * w|`` of a connection). The model runs
    with ``training=False`` (BatchNorm on its moving statistics, no dropout), as
    Synaptic-Flow's reference code scores.

    Args:
        model: a masked model (``tf_lottery.wrap``) whose output is logits.
        x: float inputs, shape ``(batch, *input_shape)``.
        y: integer labels, shape ``(batch,)``.
        loss: ``loss(y, logits) -> scalar``; default
            ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)`` (batch mean).

    Returns:
        ``{mask key: float64 scores}``; keep high.
    """
    keys, weights = _weights(model, "snip")
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(weights)
        value = _data_loss(model, x, y, loss)
    grads = _dense(tape.gradient(value, weights), weights)
    return _scores(keys, weights, grads, lambda w, g: np.abs(w * g))


def grasp(model, x, y, loss=None, temperature: float = 200.0) -> dict[str, np.ndarray]:
    """GraSP scores in keep-high convention: ``w * Hg`` (the paper's ``-S(-w)``).

    Wang, Zhang & Grosse, "Picking winning tickets before training by preserving gradient
    flow", ICLR 2020. With ``g = dL/dw`` (logits divided by ``temperature``, as in the
    authors' and Synaptic-Flow's code) and the Hessian-gradient product
    ``Hg = d(stop_gradient(g) . g)/dw`` (double backprop), the paper scores
    ``S(-w) = -w * Hg`` and *removes* the weights with the highest ``S``: those whose
    removal reduces the gradient flow least (or increases it). This function returns
    ``w * Hg = -S``, so that, like every criterion here, the lowest scores are pruned;
    scores can be negative. The model runs with ``training=False`` (BatchNorm on its
    moving statistics, no dropout), as Synaptic-Flow's reference code scores.

    Args: as ``snip``, plus ``temperature`` (200 in the paper's code).

    Returns:
        ``{mask key: float64 scores}``; keep high.
    """
    keys, weights = _weights(model, "grasp")
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(weights)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(weights)
            value = _data_loss(model, x, y, loss, scale=temperature)
        grads = _dense(inner.gradient(value, weights), weights)
        z = tf.add_n([tf.reduce_sum(tf.stop_gradient(g) * g) for g in grads])
    hg = _dense(outer.gradient(z, weights), weights)
    return _scores(keys, weights, hg, lambda w, h: w * h)


class SynFlowTwin:
    """A float64 copy of a masked model with ``|weights|``, for SynFlow's data-free scores.

    Every weight of ``get_weights()`` (kernels, biases, BatchNorm parameters and moving
    statistics) is replaced by its absolute value; masks stay 0/1 and ``scores(masks)``
    sets them on the copy only, so ``model`` never changes. Float64 avoids the overflow
    of the products of many weights (as Tanaka et al.'s code does). Use it as a context
    manager (or call ``close``) to drop the copy.
    """

    def __init__(self, model):
        self.keys, _ = _weights(model, "synflow")

        def clone(layer):
            return layer.__class__.from_config({**layer.get_config(), "dtype": "float64"})

        twin = keras.models.clone_model(model, clone_function=clone, recursive=True)
        twin.set_weights([
            np.abs(keras.ops.convert_to_numpy(source)).astype(target.dtype)
            for source, target in zip(model.weights, twin.weights, strict=True)
        ])
        self.model = twin
        self.inputs = [
            tf.ones((1, *tensor.shape[1:]), dtype=tensor.dtype) for tensor in twin.inputs
        ]

    def scores(self, masks=None) -> dict[str, np.ndarray]:
        """``|w * dR/dw|`` with ``masks`` (default: the model's at copy time) applied."""
        if masks is not None:
            masking.set_masks(self.model, masks)
        _, weights = _weights(self.model, "synflow")
        inputs = self.inputs[0] if len(self.inputs) == 1 else self.inputs
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(weights)
            outputs = self.model(inputs, training=False)
            flow = tf.add_n([
                tf.reduce_sum(tf.cast(o, tf.float64)) for o in tf.nest.flatten(outputs)
            ])
        grads = _dense(tape.gradient(flow, weights), weights)
        return _scores(self.keys, weights, grads, lambda w, g: np.abs(w * g))

    def close(self) -> None:
        self.model = self.inputs = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def synflow(model, masks=None) -> dict[str, np.ndarray]:
    """One round of SynFlow scores ``|w * dR/dw|``; no data.

    Tanaka, Kunin, Yamins & Ganguli, "Pruning neural networks without any data by
    iteratively conserving synaptic flow", NeurIPS 2020. ``R`` is the sum of the outputs
    of a float64 copy of the model with every weight replaced by its absolute value and
    the masks applied, on one all-ones input (batch 1) of the model's input shape. The
    copy runs with ``training=False`` (BatchNorm on its moving statistics, no dropout),
    as the authors' code does. The paper prunes iteratively, rescoring after each of
    100 rounds: ``tf_lottery.prune(criterion="synflow", rounds=100)`` does that.

    Args:
        model: a masked model; it is not changed.
        masks: optional ``{mask key: 0/1 array}`` to score with instead of the model's.

    Returns:
        ``{mask key: float64 scores}``; keep high.
    """
    with SynFlowTwin(model) as twin:
        return twin.scores(masks)
