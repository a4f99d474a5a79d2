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
the loss after the step otherwise.

Two variants (``variant=``):

* ``"second_order"`` (the default; Algorithm 1 as the paper writes it): the loss after
  the step is differentiated through the inner gradient ``g`` (nested
  ``tf.GradientTape``), and one Adam state (Keras's form, epsilon 1e-7) trains the scales
  on both branches.
* ``"authors"``: what the authors' code does (github.com/zhuchen03/gradinit,
  ``gradinit_utils.py`` and ``gradinit_optimizers.RescaleAdam``): ``g`` is detached in
  the simulated step (first order: ``theta - eta * stop_gradient(A[g])``), the objective
  is ``L(S~; theta - eta*A[g]) / eta``, and the scales' Adam keeps separate first
  moments (and bias corrections) for constraint and objective steps, with one second
  moment over all steps (epsilon 1e-8 added to ``sqrt(v / (1 - beta_2^t))``). The
  constraint branch is the gradient of ``||g||_p`` in both variants (second order).

``normalize_grad=True`` makes the simulated SGD step ``eta * g / ||g||_2`` (the authors'
``--gradinit-normalize-grad``, which their CIFAR-10 script uses). Still different from
the authors' code in either variant: their ``S~`` shares half its examples with ``S``
(here the two minibatches are disjoint), and their zero-initialized biases' scales have
floor 0, not ``min_scale`` (immaterial here: a zero tensor's scale never moves).

``gradinit`` works on any built Keras 3 model (masked or not), on the data ``model.fit``
takes: ``(x, y)`` arrays, a ``tf.data.Dataset`` of ``(x, y)`` batches, or a
``tf_lottery.data.Dataset``. ``tf_lottery.experiment.model_fn`` applies it to every
network an experiment with ``initializer="gradinit"`` builds.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import keras
import numpy as np
import tensorflow as tf

__all__ = ["GradInitResult", "gradinit", "apply_scales", "OPTIMIZERS", "VARIANTS"]

#: Target optimizers GradInit can prepare an initialization for.
OPTIMIZERS = ("sgd", "adam")
#: ``"second_order"`` (Algorithm 1 differentiated through ``g``) or ``"authors"`` (the
#: authors' code: first order, objective / eta, separate Adam first moments).
VARIANTS = ("second_order", "authors")


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
            ``L(S~; theta - eta*A[g])`` (nats per example) otherwise, divided by ``eta``
            for ``variant="authors"``.
        loss: float64 ``(steps,)``, the loss ``L(S; theta)`` of the first minibatch
            before the step (nats per example).
        loss_after_step: float64 ``(steps,)``, ``L(S~; theta - eta*A[g])`` on the
            second minibatch.
        grad_norm: float64 ``(steps,)``, ``||g||_2`` (SGD) or ``||g||_1`` (Adam).
        constrained: bool ``(steps,)``, True where ``grad_norm > gamma`` and the scales
            stepped to reduce the gradient norm.
        scale_history: float64 ``(steps, tensors)``, the scales after each step (the
            columns in the order of ``scales``); the last row is ``scales``.
        settings: the arguments of the call (optimizer, eta, gamma, ...;
            ``batch_size`` is ``None`` for a ``tf.data.Dataset``, whose batches are used).
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


def _check_labels(x, y, where: str):
    """Checks one ``(x, y)`` pair of numpy arrays; returns ``x`` as float."""
    if y.ndim != 1 or len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"`dataset` labels must be integer class ids of shape (N,) matching N inputs; "
            f"received {where}x of shape {x.shape} and y of shape {y.shape} ({y.dtype})."
        )
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)


def _arrays(dataset):
    """``(x, y)`` training arrays of a ``tf_lottery.data.Dataset`` or an ``(x, y)`` pair,
    or ``None`` for a ``tf.data.Dataset``."""
    if isinstance(dataset, tf.data.Dataset):
        spec = dataset.element_spec
        if not isinstance(spec, (tuple, list)) or len(spec) != 2:
            raise ValueError(
                "`dataset` as a tf.data.Dataset must yield (x, y) batches; received "
                f"elements {spec}."
            )
        return None
    if hasattr(dataset, "x_train") and hasattr(dataset, "y_train"):
        x, y = dataset.x_train, dataset.y_train
    elif isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        x, y = dataset
    else:
        raise ValueError(
            "`dataset` must be a tf_lottery.data.Dataset, an (x, y) pair of arrays or a "
            f"tf.data.Dataset of (x, y) batches; received {type(dataset).__name__}."
        )
    x, y = np.asarray(x), np.asarray(y)
    return _check_labels(x, y, ""), y


def _first_batch(iterator):
    """The first ``(x, y)`` batch of a tf.data iterator, as checked numpy arrays."""
    try:
        x, y = next(iterator)
    except StopIteration:
        raise ValueError("`dataset` (a tf.data.Dataset) yields no batch.") from None
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim == 0:
        raise ValueError("`dataset` (a tf.data.Dataset) must yield batches of (x, y); its "
                         "labels are scalars: batch it (dataset.batch(n)).")
    return _check_labels(x, y, "a first batch with "), y


def _array_pairs(x, y, batch_size: int, seed: int):
    """Pairs of disjoint minibatches ``(x1, y1, x2, y2)`` from ``(x, y)``: consecutive
    slices of ``2 * batch_size`` of ``np.random.default_rng(seed).permutation(N)``, a new
    permutation (from the same generator) when fewer than ``2 * batch_size`` remain."""
    rng = np.random.default_rng(int(seed))
    order, position = rng.permutation(len(y)), 0
    while True:
        if position + 2 * batch_size > len(order):
            order, position = rng.permutation(len(y)), 0
        idx = order[position:position + 2 * batch_size]
        position += 2 * batch_size
        first, second = idx[:batch_size], idx[batch_size:]
        yield x[first], y[first], x[second], y[second]


def _dataset_pairs(dataset, iterator, first):
    """Pairs of consecutive batches ``(x1, y1, x2, y2)`` of a ``tf.data.Dataset``, both
    of one pass (a pass's odd last batch is dropped); passes repeat without end.
    ``iterator`` is the first pass, whose first batch ``first`` was already drawn."""
    pending, in_pass = first, 1
    while True:
        try:
            x, y = next(iterator)
        except StopIteration:
            if in_pass < 2:
                raise ValueError(
                    f"`dataset` (a tf.data.Dataset) yields {in_pass} batch per pass; "
                    "GradInit needs two different minibatches per step: make the batches "
                    "smaller or the dataset larger."
                ) from None
            iterator, pending, in_pass = iter(dataset), None, 0
            continue
        in_pass += 1
        if not x.dtype.is_floating:
            x = tf.cast(x, tf.float32)
        if pending is None:
            pending = (x, y)
        else:
            yield pending[0], pending[1], x, y
            pending = None


def _keys(variables) -> list[str]:
    """One name per variable: its ``path``, with ``#1``, ``#2``... on repeated paths."""
    keys, seen = [], {}
    for variable in variables:
        count = seen.get(variable.path, 0)
        seen[variable.path] = count + 1
        keys.append(variable.path if count == 0 else f"{variable.path}#{count}")
    return keys


def _build_step(model, variables, loss_fn, eta: float, gamma: float, optimizer: str,
                variant: str = "second_order", normalize_grad: bool = False):
    """The GradInit objective of Algorithm 1 and its gradient w.r.t. the scales.

    Returns a ``tf.function`` ``step(scales, x1, y1, x2, y2)``: ``scales`` float32
    ``(len(variables),)``, ``(x1, y1)`` the minibatch ``S`` and ``(x2, y2)`` the
    minibatch ``S~``. With ``theta = scales * theta_0`` (``theta_0``: the current values
    of ``variables``, unchanged) and ``g = grad_theta L(S; theta)`` it returns
    ``(d objective / d scales (unclipped, float32 (n,)), objective, L(S; theta),
    L(S~; theta - eta * A[g]), ||g||_p, ||g||_p > gamma)``; the objective is
    ``||g||_p`` when ``||g||_p > gamma`` and ``L(S~; theta - eta * A[g])`` otherwise
    (divided by ``eta`` for ``variant="authors"``).
    ``A[g] = g`` (``g / ||g||_2`` with ``normalize_grad``), ``p = 2`` for ``"sgd"``;
    ``A[g] = sign(g)``, ``p = 1`` for ``"adam"``. ``g`` is recorded by the outer tape, so
    the gradient is second order (through ``g``; ``sign(g)`` has zero derivative); for
    ``variant="authors"`` ``A[g]`` is a constant of the step (``tf.stop_gradient``, the
    authors' ``grad.detach()``), so the loss after the step is differentiated first
    order, while ``||g||_p`` still is through ``g``. Forward passes run
    ``model.stateless_call`` in training mode; the model's non-trainable variables
    (masks, BatchNorm statistics) are read, never written.
    """
    non_trainable = list(model.non_trainable_variables)
    first_order = variant == "authors"
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
                moves = [g / norm for g in grads] if normalize_grad else grads
            else:
                norm = tf.add_n([tf.reduce_sum(tf.abs(g)) for g in grads])
                moves = [tf.sign(g) for g in grads]
            if first_order:
                moves = [tf.stop_gradient(d) for d in moves]
            stepped = [w - tf.cast(eta_t * d, w.dtype) for w, d in zip(theta, moves)]
            loss2 = tf.cast(loss_fn(y2, forward(stepped, x2)), tf.float32)
            constrained = norm > gamma_t
            objective = tf.where(constrained, norm,
                                 loss2 / eta_t if first_order else loss2)
        grad = outer.gradient(objective, scales, unconnected_gradients="zero")
        return grad, objective, loss1, loss2, norm, constrained

    return step


class _KerasAdam:
    """Adam on the scales as ``keras.optimizers.Adam`` steps (epsilon 1e-7 added to
    ``sqrt(v)``), one state for every step: ``variant="second_order"``."""

    beta_1, beta_2, epsilon = 0.9, 0.999, 1e-7

    def __init__(self, size: int, lr: float):
        self.lr, self.t = lr, 0
        self.m, self.v = np.zeros(size, np.float32), np.zeros(size, np.float32)

    def __call__(self, grad, constrained: bool):
        beta_1, beta_2 = self.beta_1, self.beta_2
        self.t += 1
        self.m = beta_1 * self.m + (1 - beta_1) * grad
        self.v = beta_2 * self.v + (1 - beta_2) * grad * grad
        lr_t = self.lr * math.sqrt(1 - beta_2 ** self.t) / (1 - beta_1 ** self.t)
        return lr_t * self.m / (np.sqrt(self.v) + self.epsilon)


class _AuthorsAdam:
    """Adam on the scales as the authors' ``RescaleAdam`` steps (zhuchen03/gradinit,
    ``gradinit_optimizers.py``): a first moment and step count for constraint steps and
    another for objective steps, one second moment over all steps, and the step
    ``lr / (1 - beta_1^t_branch) * m / (sqrt(v / (1 - beta_2^t_all)) + 1e-8)``:
    ``variant="authors"``."""

    def __init__(self, size: int, lr: float):
        self.lr = lr
        self.m = {True: np.zeros(size), False: np.zeros(size)}
        self.t = {True: 0, False: 0}
        self.v = np.zeros(size)

    def __call__(self, grad, constrained: bool):
        grad = grad.astype(np.float64)  # the authors' moments are Python floats
        self.t[constrained] += 1
        self.m[constrained] = 0.9 * self.m[constrained] + (1 - 0.9) * grad
        self.v = 0.999 * self.v + (1 - 0.999) * grad * grad
        denom = np.sqrt(self.v / (1 - 0.999 ** (self.t[True] + self.t[False]))) + 1e-8
        return self.lr / (1 - 0.9 ** self.t[constrained]) * self.m[constrained] / denom


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
    variant: str = "second_order",
    normalize_grad: bool = False,
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
      step, ``L(S~; theta - eta * A[g])`` with ``A[g] = g`` (SGD; ``g / ||g||_2`` with
      ``normalize_grad``) or ``sign(g)`` (Adam's first step), differentiated through
      ``g`` (``variant="second_order"``), or with ``g`` held constant and divided by
      ``eta`` (``variant="authors"``, the authors' code; see the module docstring).

    The scales are trained by Adam at ``scale_lr`` with their gradients clipped to
    [-1, 1] and are floored at ``min_scale`` after every step; for ``"authors"`` the
    constraint and objective steps keep separate first moments, as the authors'
    ``RescaleAdam`` does. At the end every weight
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
        dataset: what ``model.fit`` takes: an ``(x, y)`` pair of arrays (``x`` of
            shape ``(N, ...)``, float, other dtypes cast to float32; ``y`` integer class
            ids of shape ``(N,)``; ``N >= 2 * batch_size``), a ``tf_lottery.data.Dataset``
            (its training split, as arrays), or a ``tf.data.Dataset`` of ``(x, y)``
            batches. Arrays are drawn from in pairs of disjoint minibatches of
            ``batch_size``: consecutive slices of
            ``np.random.default_rng(seed).permutation(N)``, a new permutation when fewer
            than ``2 * batch_size`` examples remain. A ``tf.data.Dataset`` is read in its
            own order and batching: step ``t`` takes batches ``2t`` and ``2t + 1`` of a
            pass (``S`` and ``S~``), a pass's odd last batch is dropped and passes repeat;
            ``batch_size`` and ``seed`` do not apply. So, by construction, a
            ``tf.data.Dataset`` yielding the batches the arrays would be cut into (the
            arrays in that permutation's order, batched by ``batch_size``) gives the
            same result as the arrays.
        steps: GradInit iterations (paper, CIFAR-10: 390, one epoch at batch 128).
        eta: step size of the simulated first optimizer step (paper: 0.1); use the
            learning rate of the optimizer that will train the network.
        gamma: upper bound on the first gradient's norm (paper, CIFAR-10: 1); L2 norm
            for ``optimizer="sgd"``, L1 norm for ``"adam"``.
        scale_lr: learning rate of the Adam optimizer training the scales (1e-2).
        min_scale: lower bound of every scale (paper: 0.01).
        optimizer: the optimizer that will train the network, ``"sgd"`` or ``"adam"``.
        batch_size: examples in each of the two minibatches per iteration (128; arrays
            only).
        seed: int >= 0; fixes the minibatch order (arrays only).
        loss: ``loss(y_true, y_pred) -> scalar``; default
            ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``.
        variant: ``"second_order"`` (Algorithm 1 differentiated through ``g``) or
            ``"authors"`` (zhuchen03/gradinit: first order, objective / ``eta``, separate
            Adam first moments for constraint steps).
        normalize_grad: simulate the SGD step ``eta * g / ||g||_2`` (the authors'
            ``--gradinit-normalize-grad``); ``optimizer="sgd"`` only.

    Returns:
        A ``GradInitResult``: the learned scales per tensor path and per-step arrays
        (objective, loss, loss after the step, gradient norm, constraint flag).

    Raises:
        ValueError: before any work, if ``model`` is not a built Keras model or has no
            trainable weights, ``steps``/``eta``/``gamma``/``scale_lr``/``min_scale``/
            ``batch_size`` are not positive, ``optimizer`` is not ``"sgd"`` or
            ``"adam"``, ``variant`` is not in ``VARIANTS``, ``normalize_grad`` is not a
            bool or is True for ``"adam"``, ``dataset`` is malformed or has fewer than
            ``2 * batch_size`` examples (a ``tf.data.Dataset``: yields no batch, or not
            ``(x, y)`` batches), or the model's output does not fit the labels (of the
            first batch, for a ``tf.data.Dataset``); during the first step, for a
            ``tf.data.Dataset`` that yields fewer than two batches per pass (the model is
            unchanged then).
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
    if variant not in VARIANTS:
        _fail("variant", variant, f"must be one of {list(VARIANTS)}")
    if not isinstance(normalize_grad, bool):
        _fail("normalize_grad", normalize_grad, "must be True or False")
    if normalize_grad and optimizer != "sgd":
        _fail("normalize_grad", normalize_grad,
              "applies to optimizer='sgd' only (Adam's first step is eta * sign(g))")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        _fail("seed", seed, "must be an integer >= 0")
    arrays = _arrays(dataset)
    if arrays is None:  # a tf.data.Dataset: its batches, in its order
        iterator = iter(dataset)
        x, y = _first_batch(iterator)
        pairs = _dataset_pairs(dataset, iterator, (x, y))
    else:
        x, y = arrays
        if len(y) < 2 * batch_size:
            _fail("batch_size", batch_size,
                  f"needs 2 * batch_size <= {len(y)} training examples (two minibatches per "
                  "step); pass a smaller batch_size")
        pairs = _array_pairs(x, y, batch_size, seed)
    out = keras.ops.convert_to_numpy(model(x[:2], training=False))
    if out.ndim != 2 or out.shape[-1] <= int(y.max()) or int(y.min()) < 0:
        raise ValueError(
            f"`model` outputs shape {out.shape[1:]} per example, but the labels of "
            f"`dataset` range over [{int(y.min())}, {int(y.max())}]; GradInit needs logits "
            "(batch, classes) with classes > the largest label."
        )
    loss_fn = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # ---- the scales: a float32 vector, trained by Adam (Kingma & Ba; beta_1 0.9,
    # beta_2 0.999) written out in numpy, so that GradInit also runs under a
    # tf.distribute strategy scope (no distributed variable to update).
    keys = _keys(variables)
    scales = np.ones(len(variables), np.float32)
    update = _AuthorsAdam(len(scales), scale_lr) if variant == "authors" \
        else _KerasAdam(len(scales), scale_lr)
    step = _build_step(model, variables, loss_fn, eta, gamma, optimizer,
                       variant=variant, normalize_grad=normalize_grad)

    # ---- the loop: pairs of minibatches (a stream of permutations of the arrays, or
    # consecutive batches of the tf.data.Dataset).
    # Dropout is off while GradInit runs (BatchNorm stays in training mode); the rates
    # are restored afterwards.
    dropouts = [layer for layer in model._flatten_layers(include_self=True, recursive=True)
                if isinstance(layer, keras.layers.Dropout) and layer.rate > 0]
    rates = [layer.rate for layer in dropouts]
    rows, history = [], []
    try:
        for layer in dropouts:
            layer.rate = 0.0
        for t in range(1, int(steps) + 1):
            x1, y1, x2, y2 = next(pairs)
            grad, *values = step(tf.constant(scales), x1, y1, x2, y2)
            grad = np.clip(grad.numpy(), -1.0, 1.0)  # the paper's clipping of the scale grads
            scales = scales - update(grad, bool(values[-1])).astype(np.float32)
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
                      optimizer=optimizer,
                      batch_size=int(batch_size) if arrays is not None else None,
                      seed=int(seed), variant=variant, normalize_grad=normalize_grad),
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
