"""GradInit: learn the scale of each weight tensor of an initialization.

Zhu, Ni, Xu, Kong, Huang, Goldstein, "GradInit: Learning to Initialize Neural Networks
for Stable and Efficient Training", NeurIPS 2021 (Algorithm 1).

GradInit keeps the directions of a random initialization ``theta_0`` (drawn by any Keras
initializer) and learns one positive scalar ``alpha_i`` per weight tensor, so that the
rescaled network ``alpha * theta_0`` is easy to train by the optimizer that will train it:
the loss after **one** optimizer step of size ``eta`` from ``alpha * theta_0`` should be
as small as possible, while the norm of the first gradient stays below ``gamma``:

    minimize_alpha  L(S~; alpha*theta_0 - eta * A[g])  subject to  ||g||_p <= gamma,
    g = grad_theta L(S; alpha*theta_0),  alpha_i >= min_scale,

with ``A[g] = g`` and ``p = 2`` for SGD, ``A[g] = sign(g)`` (Adam's first step) and
``p = 1`` for Adam, and ``S``, ``S~`` two different minibatches. Each iteration takes a
step of Adam (learning rate ``scale_lr``, gradients clipped to [-1, 1]) on the scales:
on the gradient norm ``||g||_p`` when it exceeds ``gamma`` (the constraint branch), on
the loss after the step otherwise. The objective is differentiated through the inner
step (second order, nested ``tf.GradientTape``).

``gradinit`` works on any built Keras 3 model (masked or not); ``make_model_fn`` is the
``model_fn(seed)`` of ``tf_lottery.ticket.fit`` for ``--initializer=gradinit``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os

import keras
import numpy as np
import tensorflow as tf

__all__ = ["GradInitResult", "gradinit", "apply_scales", "make_model_fn", "OPTIMIZERS"]

#: Target optimizers GradInit can prepare an initialization for.
OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass
class GradInitResult:
    """What ``gradinit`` learned, and how the objective went.

    Attributes:
        scales: ``{variable path: scale}`` (e.g. ``"fc1/kernel": 0.83``; a path that
            occurs twice gets ``#1``, ``#2``...), one positive float per trainable weight
            tensor in the order of ``model.trainable_variables``, every one
            ``>= min_scale``. The model's weights were multiplied by these in place.
        objective: float64 array ``(steps,)``: the quantity minimized at each step, the
            gradient norm ``||g||_p`` on constraint steps, the loss after the step
            ``L(S~; theta - eta*A[g])`` (nats per example) otherwise.
        loss: float64 ``(steps,)``, the loss ``L(S; theta)`` of the first minibatch
            before the step (nats per example).
        loss_after_step: float64 ``(steps,)``, ``L(S~; theta - eta*A[g])`` on the
            second minibatch.
        grad_norm: float64 ``(steps,)``, ``||g||_2`` (SGD) or ``||g||_1`` (Adam).
        constrained: bool ``(steps,)``, True where ``grad_norm > gamma`` and the scales
            stepped to reduce the gradient norm.
        scale_history: float64 ``(steps, tensors)``, the scales after each step (the
            columns in the order of ``scales``); the last row is ``scales``.
        settings: the arguments of the call (optimizer, eta, gamma, ...).
    """

    scales: dict[str, float]
    objective: np.ndarray
    loss: np.ndarray
    loss_after_step: np.ndarray
    grad_norm: np.ndarray
    constrained: np.ndarray
    scale_history: np.ndarray
    settings: dict

    def to_dict(self) -> dict:
        """A JSON-ready dict (arrays become lists)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, np.ndarray):
                out[key] = value.tolist()
        return out


def _fail(argument: str, value, fix: str):
    raise ValueError(f"`{argument}` {fix}; received {argument}={value!r}.")


def _check_positive(argument, value, *, integer=False):
    kinds = (numbers.Integral,) if integer else (numbers.Real,)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) \
            or value <= 0:
        _fail(argument, value, f"must be a positive {'integer' if integer else 'number'}")


def _arrays(dataset):
    """``(x, y)`` training arrays of a ``tf_lottery.data.Dataset`` or an ``(x, y)`` pair."""
    if hasattr(dataset, "x_train") and hasattr(dataset, "y_train"):
        x, y = dataset.x_train, dataset.y_train
    elif isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        x, y = dataset
    else:
        raise ValueError(
            "`dataset` must be a tf_lottery.data.Dataset or an (x, y) pair of arrays; "
            f"received {type(dataset).__name__}."
        )
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim != 1 or len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            "`dataset` labels must be integer class ids of shape (N,) matching N inputs; "
            f"received x of shape {x.shape} and y of shape {y.shape} ({y.dtype})."
        )
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return x, y


def _keys(variables) -> list[str]:
    """One name per variable: its ``path``, with ``#1``, ``#2``... on repeated paths."""
    keys, seen = [], {}
    for variable in variables:
        count = seen.get(variable.path, 0)
        seen[variable.path] = count + 1
        keys.append(variable.path if count == 0 else f"{variable.path}#{count}")
    return keys


def _build_step(model, variables, loss_fn, eta: float, gamma: float, optimizer: str):
    """The GradInit objective of Algorithm 1 and its gradient w.r.t. the scales.

    Returns a ``tf.function`` ``step(scales, x1, y1, x2, y2)``: ``scales`` float32
    ``(len(variables),)``, ``(x1, y1)`` the minibatch ``S`` and ``(x2, y2)`` the
    minibatch ``S~``. With ``theta = scales * theta_0`` (``theta_0``: the current values
    of ``variables``, unchanged) and ``g = grad_theta L(S; theta)`` it returns
    ``(d objective / d scales (unclipped, float32 (n,)), objective, L(S; theta),
    L(S~; theta - eta * A[g]), ||g||_p, ||g||_p > gamma)``; the objective is
    ``||g||_p`` when ``||g||_p > gamma`` and ``L(S~; theta - eta * A[g])`` otherwise.
    ``A[g] = g``, ``p = 2`` for ``"sgd"``; ``A[g] = sign(g)``, ``p = 1`` for ``"adam"``.
    ``g`` is recorded by the outer tape, so the gradient is second order (through ``g``;
    ``sign(g)`` has zero derivative). Forward passes run ``model.stateless_call`` in
    training mode; the model's non-trainable variables (masks, BatchNorm statistics)
    are read, never written.
    """
    non_trainable = list(model.non_trainable_variables)
    eta_t = tf.constant(eta, tf.float32)
    gamma_t = tf.constant(gamma, tf.float32)

    def forward(weights, images):
        logits, _ = model.stateless_call(
            weights, [v.value for v in non_trainable], images, training=True
        )
        return logits

    @tf.function
    def step(scales, x1, y1, x2, y2):
        with tf.GradientTape() as outer:
            outer.watch(scales)
            theta = [
                tf.cast(scales[i], v.dtype) * v.value for i, v in enumerate(variables)
            ]
            with tf.GradientTape() as inner:
                inner.watch(theta)
                loss1 = tf.cast(loss_fn(y1, forward(theta, x1)), tf.float32)
            grads = inner.gradient(loss1, theta, unconnected_gradients="zero")
            grads = [tf.cast(g, tf.float32) for g in grads]
            if optimizer == "sgd":
                norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
                moves = grads
            else:
                norm = tf.add_n([tf.reduce_sum(tf.abs(g)) for g in grads])
                moves = [tf.sign(g) for g in grads]
            stepped = [w - tf.cast(eta_t * d, w.dtype) for w, d in zip(theta, moves)]
            loss2 = tf.cast(loss_fn(y2, forward(stepped, x2)), tf.float32)
            constrained = norm > gamma_t
            objective = tf.where(constrained, norm, loss2)
        grad = outer.gradient(objective, scales, unconnected_gradients="zero")
        return grad, objective, loss1, loss2, norm, constrained

    return step


def gradinit(
    model,
    dataset,
    *,
    steps: int = 390,
    eta: float = 0.1,
    gamma: float = 1.0,
    scale_lr: float = 1e-2,
    min_scale: float = 0.01,
    optimizer: str = "sgd",
    batch_size: int = 128,
    seed: int = 0,
    loss=None,
) -> GradInitResult:
    """Rescales ``model``'s weight tensors in place by GradInit (Zhu et al., NeurIPS 2021).

    Learns one positive scale per trainable weight tensor (Dense/Conv kernels and
    biases, BatchNormalization gammas and betas, ...) by Algorithm 1 of Zhu et al.,
    "GradInit: Learning to Initialize Neural Networks for Stable and Efficient
    Training", NeurIPS 2021. Each of ``steps`` iterations draws two disjoint minibatches
    ``S`` and ``S~`` of ``batch_size`` training examples, computes the gradient ``g`` of
    the loss on ``S`` at the rescaled weights ``theta = alpha * theta_0`` and:

    * if ``||g||_p > gamma`` (``p = 2`` for SGD, ``1`` for Adam), steps the scales down
      the gradient of ``||g||_p`` (the constraint branch);
    * otherwise steps them down the gradient of the loss on ``S~`` after one optimizer
      step, ``L(S~; theta - eta * A[g])`` with ``A[g] = g`` (SGD) or ``sign(g)`` (Adam's
      first step), differentiated through ``g`` (second order).

    The scales are trained by Adam at ``scale_lr`` with their gradients clipped to
    [-1, 1] and are floored at ``min_scale`` after every step. At the end every weight
    tensor is multiplied by its scale (``model``'s variables are assigned). Masked
    layers (``tf_lottery.wrap``) compute with ``kernel * mask``: their dense kernel is
    scaled and the masks are unchanged. Non-trainable variables (masks, BatchNorm
    moving statistics) are never changed. A tensor whose initial values are all zero
    (the biases and BN betas of the model zoo) gets a zero gradient and keeps scale 1.
    The forward passes run in training mode (BatchNorm uses batch statistics) with
    dropout switched off (so the loss before and after the simulated step see the same
    network); the dropout rates are restored afterwards.

    Args:
        model: a built Keras 3 model mapping a batch of ``dataset`` inputs to logits of
            shape ``(batch, classes)`` (with the default ``loss``).
        dataset: a ``tf_lottery.data.Dataset`` (its training split is used) or an
            ``(x, y)`` pair: ``x`` of shape ``(N, ...)`` (float; other dtypes are cast to
            float32), ``y`` integer class ids of shape ``(N,)``, ``N >= 2 * batch_size``.
        steps: GradInit iterations (paper, CIFAR-10: 390, one epoch at batch 128).
        eta: step size of the simulated first optimizer step (paper: 0.1); use the
            learning rate of the optimizer that will train the network.
        gamma: upper bound on the first gradient's norm (paper, CIFAR-10: 1); L2 norm
            for ``optimizer="sgd"``, L1 norm for ``"adam"``.
        scale_lr: learning rate of the Adam optimizer training the scales (1e-2).
        min_scale: lower bound of every scale (paper: 0.01).
        optimizer: the optimizer that will train the network, ``"sgd"`` or ``"adam"``.
        batch_size: examples in each of the two minibatches per iteration (128).
        seed: int >= 0; fixes the minibatch order.
        loss: ``loss(y_true, y_pred) -> scalar``; default
            ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``.

    Returns:
        A ``GradInitResult``: the learned scales per tensor path and per-step arrays
        (objective, loss, loss after the step, gradient norm, constraint flag).

    Raises:
        ValueError: before any work, if ``model`` is not a built Keras model or has no
            trainable weights, ``steps``/``eta``/``gamma``/``scale_lr``/``min_scale``/
            ``batch_size`` are not positive, ``optimizer`` is not ``"sgd"`` or
            ``"adam"``, ``dataset`` is malformed or has fewer than ``2 * batch_size``
            examples, or the model's output does not fit the labels.
    """
    # ---- checks, before any work
    if not isinstance(model, keras.layers.Layer):
        _fail("model", type(model).__name__, "must be a Keras model")
    if not model.built:
        raise ValueError(
            f"`model` {model.name!r} is not built; call it on a batch or build it first."
        )
    variables = list(model.trainable_variables)
    if not variables:
        raise ValueError(
            f"`model` {model.name!r} has no trainable weights, so GradInit has nothing to "
            "scale; make its layers trainable (layer.trainable = True)."
        )
    _check_positive("steps", steps, integer=True)
    for name, value in (("eta", eta), ("gamma", gamma), ("scale_lr", scale_lr),
                        ("min_scale", min_scale)):
        _check_positive(name, value)
    _check_positive("batch_size", batch_size, integer=True)
    if optimizer not in OPTIMIZERS:
        _fail("optimizer", optimizer, f"must be one of {list(OPTIMIZERS)}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        _fail("seed", seed, "must be an integer >= 0")
    x, y = _arrays(dataset)
    if len(y) < 2 * batch_size:
        _fail("batch_size", batch_size,
              f"needs 2 * batch_size <= {len(y)} training examples (two minibatches per "
              "step); pass a smaller batch_size")
    out = keras.ops.convert_to_numpy(model(x[:2], training=False))
    if out.ndim != 2 or out.shape[-1] <= int(y.max()) or int(y.min()) < 0:
        raise ValueError(
            f"`model` outputs shape {out.shape[1:]} per example, but the labels of "
            f"`dataset` range over [{int(y.min())}, {int(y.max())}]; GradInit needs logits "
            "(batch, classes) with classes > the largest label."
        )
    loss_fn = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # ---- the scales: a float32 vector, trained by Adam (Kingma & Ba; Keras's defaults
    # beta_1 0.9, beta_2 0.999, epsilon 1e-7) written out in numpy, so that GradInit
    # also runs under a tf.distribute strategy scope (no distributed variable to update).
    keys = _keys(variables)
    scales = np.ones(len(variables), np.float32)
    adam_m = np.zeros_like(scales)
    adam_v = np.zeros_like(scales)
    beta_1, beta_2, epsilon = 0.9, 0.999, 1e-7
    step = _build_step(model, variables, loss_fn, eta, gamma, optimizer)

    # ---- the loop: consecutive pairs of minibatches from a stream of permutations.
    # Dropout is off while GradInit runs (BatchNorm stays in training mode); the rates
    # are restored afterwards.
    dropouts = [layer for layer in model._flatten_layers(include_self=True, recursive=True)
                if isinstance(layer, keras.layers.Dropout) and layer.rate > 0]
    rates = [layer.rate for layer in dropouts]
    rng = np.random.default_rng(int(seed))
    order = rng.permutation(len(y))
    position = 0
    rows, history = [], []
    try:
        for layer in dropouts:
            layer.rate = 0.0
        for t in range(1, int(steps) + 1):
            if position + 2 * batch_size > len(order):
                order, position = rng.permutation(len(y)), 0
            idx = order[position:position + 2 * batch_size]
            position += 2 * batch_size
            first, second = idx[:batch_size], idx[batch_size:]
            grad, *values = step(tf.constant(scales), x[first], y[first], x[second], y[second])
            grad = np.clip(grad.numpy(), -1.0, 1.0)  # the paper's clipping of the scale grads
            adam_m = beta_1 * adam_m + (1 - beta_1) * grad
            adam_v = beta_2 * adam_v + (1 - beta_2) * grad * grad
            lr_t = scale_lr * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
            scales = scales - (lr_t * adam_m / (np.sqrt(adam_v) + epsilon)).astype(np.float32)
            scales = np.maximum(scales, np.float32(min_scale))
            rows.append([float(v) for v in values])
            history.append(scales.copy())
    finally:
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate
    table = np.asarray(rows, dtype=np.float64)

    learned = scales.astype(np.float64)
    for value, variable in zip(learned, variables):
        variable.assign(variable.value * keras.ops.cast(value, variable.dtype))
    return GradInitResult(
        scales={key: float(s) for key, s in zip(keys, learned)},
        objective=table[:, 0],
        loss=table[:, 1],
        loss_after_step=table[:, 2],
        grad_norm=table[:, 3],
        constrained=table[:, 4].astype(bool),
        scale_history=np.asarray(history, dtype=np.float64),
        settings=dict(steps=int(steps), eta=float(eta), gamma=float(gamma),
                      scale_lr=float(scale_lr), min_scale=float(min_scale),
                      optimizer=optimizer, batch_size=int(batch_size), seed=int(seed)),
    )


def apply_scales(model, scales: dict) -> None:
    """Multiplies each trainable weight tensor of ``model`` by ``scales[variable.path]``.

    Replays a ``GradInitResult.scales`` on a model built the same way (same seed, same
    architecture), without rerunning GradInit.

    Args:
        model: a built Keras model.
        scales: ``{variable path: positive float}`` covering exactly the model's
            trainable variables (the keys of ``GradInitResult.scales``).

    Raises:
        ValueError: if the paths do not match the model's trainable variables (nothing
            is changed then).
    """
    variables = dict(zip(_keys(model.trainable_variables), model.trainable_variables))
    if set(variables) != set(scales):
        raise ValueError(
            f"`scales` names {sorted(set(scales) ^ set(variables))} that are not exactly "
            f"the trainable variables of model {model.name!r}; pass the scales GradInit "
            "learned for a model built the same way."
        )
    for path, value in scales.items():
        variable = variables[path]
        variable.assign(variable.value * keras.ops.cast(float(value), variable.dtype))


def make_model_fn(model_hparams, dataset, *, cache_dir: str | None = None):
    """``model_fn(seed) -> keras.Model`` for ``tf_lottery.ticket.fit`` from ``ModelHparams``.

    Builds ``model_hparams.model`` with ``tf_lottery.models.build_model``. With
    ``initializer="gradinit"`` the kernels come from ``base_initializer`` and the new
    network is then rescaled by ``gradinit`` on ``dataset``'s training split with the
    ``gradinit_*`` settings and a GradInit seed derived from ``seed``, so the network
    ``fit`` saves as ``theta_0`` and every ``reinit`` control network are GradInit
    initializations. With ``cache_dir``, the learned scales of each seed are written to
    ``<cache_dir>/gradinit_<seed>.json`` (with the objective history) and replayed from
    there when the same seed is built again (a resumed run does not rerun GradInit).

    Args:
        model_hparams: a ``tf_lottery.hparams.ModelHparams``.
        dataset: a ``tf_lottery.data.Dataset``.
        cache_dir: directory for the per-seed scale files, or None.

    Returns:
        A function ``model_fn(seed: int) -> keras.Model``.
    """
    from tf_lottery import models as models_lib
    from tf_lottery import files
    from tf_lottery.hparams import derive_seed

    hp = model_hparams
    use_gradinit = hp.initializer == "gradinit"
    initializer = hp.base_initializer if use_gradinit else hp.initializer

    def model_fn(seed: int):
        model = models_lib.build_model(
            hp.model, dataset.input_shape, dataset.num_classes, initializer=initializer,
            dropout=hp.dropout, seed=seed, batch_norm=hp.batch_norm,
        )
        if not use_gradinit:
            return model
        path = os.path.join(cache_dir, f"gradinit_{seed}.json") if cache_dir else None
        if path and os.path.exists(path):
            try:
                apply_scales(model, files.read_json(path)["scales"])
                return model
            except (ValueError, KeyError, TypeError):
                pass  # unreadable or stale: learn the scales again
        result = gradinit(
            model, dataset, steps=hp.gradinit_steps, eta=hp.gradinit_eta,
            gamma=hp.gradinit_gamma, scale_lr=hp.gradinit_scale_lr,
            min_scale=hp.gradinit_min_scale, optimizer=hp.gradinit_optimizer,
            batch_size=min(hp.gradinit_batch_size, len(dataset.y_train) // 2),
            seed=derive_seed(seed, "gradinit"),
        )
        if path:
            files.atomic_write_json(path, result.to_dict())
        return model

    return model_fn

