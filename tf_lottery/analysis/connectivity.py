"""Instability: linear mode connectivity of a run's networks at rewind points.

Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis", ICML 2020: two copies of ``m * theta_k`` are trained from the rewind point
``k`` to the end with different data orders (``w1``, ``w2``); the test error of
``a*w1 + (1-a)*w2`` is evaluated at ``points`` evenly spaced ``a`` in [0, 1] (all
weights are interpolated, biases and BatchNormalization statistics included; the masks
are identical). Instability = max error minus the mean of the two end errors
(``instability``); below ``STABLE_BELOW`` (0.02) counts as stable. The error is
measured on the test set and on a fixed subset of the training set
(``TRAIN_ERROR_EXAMPLES``; the paper reports both). In a network with
BatchNormalization the interpolated moving statistics are not those of the
interpolated network, which inflates the barrier; by default every network on the path
(the ends included) has its BatchNorm statistics re-estimated on ``BN_BATCHES``
training batches before it is evaluated (``reestimate_batch_norm``). ``theta_k`` is the
run's rewind weights when ``k`` is the run's rewind point, ``theta_0`` for ``k = 0``,
and otherwise the dense network trained from ``theta_0`` to ``k`` with the run's data
order and schedule. Note: the mask comes from the run, i.e. it was found with the run's
rewind point; the paper finds a mask per rewind point (use one run per ``k`` for that
protocol).
"""

from __future__ import annotations

import dataclasses
import math
import time
import weakref

import keras
import numpy as np
from absl import logging

from tf_lottery.analysis.run import (EntryFile, check_int, check_levels, make_trainer,
                                     mask_sparsity, open_run, rewind_points_for,
                                     short_summary, theta_k, training_for)
from tf_lottery.hparams import ArgumentError, derive_seed
from tf_lottery.runtime import Runtime
from tf_lottery.trainer import Trainer

__all__ = [
    "BN_BATCHES",
    "STABLE_BELOW",
    "TRAIN_ERROR_EXAMPLES",
    "batch_norm_layers",
    "instability",
    "interpolate",
    "interpolation_errors",
    "linear_mode_connectivity",
    "reestimate_batch_norm",
    "run_instability",
]

#: Networks whose instability (a fraction of test error) is below this are stable.
STABLE_BELOW = 0.02
#: Training batches (of the run's batch size) the BatchNorm statistics of every network
#: on the path are re-estimated on, by default.
BN_BATCHES = 32
#: Training examples (a fixed subset of the training split) the train error along the
#: path is measured on, by default.
TRAIN_ERROR_EXAMPLES = 10000


# ------------------------------------------------------------------ pure functions


def instability(errors) -> float:
    """The error barrier along a linear path: ``max(errors) - (errors[0] + errors[-1]) / 2``.

    Frankle et al., "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML
    2020, Sec. 2: the instability of a network at iteration ``k`` is the maximum of the
    error of ``a*w1 + (1-a)*w2`` over ``a`` in [0, 1] minus the mean of the errors of
    ``w1`` and ``w2``; networks with instability below 0.02 (2 percentage points of error)
    are called stable.

    Args:
        errors: 1-D sequence (>= 2 values, finite) of errors along the path, in path order
            (the ends are ``errors[0]`` and ``errors[-1]``); fractions in [0, 1] for
            classification error, but any unit works (the result has the same unit).

    Returns:
        The barrier, a float >= 0 (0 when the path is no worse than its ends).

    Raises:
        ValueError: ``errors`` is not 1-D, has fewer than 2 values, or holds NaN/inf.
    """
    values = np.asarray(errors, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"`errors` must be a 1-D sequence of at least 2 errors along the "
                         f"path; received shape {values.shape}.")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"`errors` must be finite; received {values.tolist()}.")
    return float(values.max() - (values[0] + values[-1]) / 2.0)


def interpolate(weights_1, weights_2, alpha: float) -> list[np.ndarray]:
    """``alpha * w1 + (1 - alpha) * w2`` for two ``get_weights()`` lists.

    Computed as ``w2 + alpha * (w1 - w2)``, so entries equal in both lists (masks,
    pruned weights) stay exactly equal, ``alpha = 0`` gives ``w2`` and ``alpha = 1``
    gives ``w1`` exactly.

    Args:
        weights_1, weights_2: lists of arrays of equal shapes (any float dtype; the result
            keeps each array's dtype).
        alpha: a float in [0, 1].

    Raises:
        ValueError: lists of different lengths or shapes, or ``alpha`` outside [0, 1].
    """
    if not (isinstance(alpha, (int, float, np.floating)) and 0.0 <= float(alpha) <= 1.0):
        raise ValueError(f"`alpha` must be a number in [0, 1]; received {alpha!r}.")
    if len(weights_1) != len(weights_2):
        raise ValueError(f"`weights_1` and `weights_2` must come from the same architecture; "
                         f"they hold {len(weights_1)} and {len(weights_2)} arrays.")
    out = []
    for i, (a, b) in enumerate(zip(weights_1, weights_2)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise ValueError(f"`weights_1[{i}]` has shape {a.shape} but `weights_2[{i}]` has "
                             f"{b.shape}; interpolate weights of the same architecture.")
        if alpha == 1:
            out.append(a.copy())
        elif alpha == 0:
            out.append(b.copy())
        else:
            out.append((b + np.asarray(alpha, b.dtype) * (a - b)).astype(b.dtype))
    return out


# -------------------------------------------------------------- BatchNorm statistics


def batch_norm_layers(model) -> list[tuple[str, keras.layers.BatchNormalization]]:
    """``[(qualified name, layer)]`` of the ``keras.layers.BatchNormalization`` layers of
    ``model`` (nested models searched), in layer order; ``[]`` for a network without."""
    from tf_lottery import masking

    return [(name, layer) for name, layer in masking._walk(model)
            if isinstance(layer, keras.layers.BatchNormalization)]


#: model -> its compiled training-mode forward pass (``reestimate_batch_norm``).
_TRAINING_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def reestimate_batch_norm(model, batches) -> int:
    """Replaces the moving statistics of every BatchNormalization layer of ``model`` by
    their average over ``batches`` of training data; no other weight changes.

    Interpolating two networks interpolates their BatchNorm moving means and variances,
    which are not the statistics of the interpolated network's own activations; this
    re-estimates them, as Frankle et al. ("Linear Mode Connectivity and the Lottery Ticket
    Hypothesis", ICML 2020) require for networks with BatchNorm. Each batch is passed
    forward in training mode (every layer: BN normalizes with the batch's statistics,
    as in training); afterwards each layer's ``moving_mean`` is the average over the
    batches of the per-batch mean of its input (per channel) and ``moving_variance``
    the average of the per-batch (biased) variance -- the cumulative average that
    PyTorch's ``momentum=None`` running statistics and SWA's ``bn_update`` compute. With
    batches of equal size ``moving_mean`` is the mean of the layer's inputs over all
    the examples. Layers with ``trainable=False`` (Keras runs them in inference mode)
    keep their statistics.

    Args:
        model: a built Keras model; its BN layers' ``moving_mean``/``moving_variance``
            are overwritten (their ``momentum`` is restored afterwards).
        batches: a non-empty sequence of input batches, each a float array
            ``(batch, *input_shape)`` (the network's input; no labels).

    Returns:
        The number of layers re-estimated (0 for a network without BatchNorm, which is
        left untouched, its inputs never run).

    Raises:
        ValueError: ``batches`` is empty.
    """
    layers = [(n, layer) for n, layer in batch_norm_layers(model) if layer.trainable]
    batches = list(batches)
    if not batches:
        raise ValueError("`batches` must hold at least one batch of training inputs.")
    if not layers:
        return 0
    import tensorflow as tf

    forward = _TRAINING_FORWARD.get(model)
    if forward is None:
        # momentum 0 is read when the function is traced: every call then sets the moving
        # statistics to the statistics of its batch (moving * 0 + batch * 1).
        # (Through a weak reference: the cache must not keep the model alive.)
        ref = weakref.ref(model)
        forward = tf.function(lambda x: ref()(x, training=True), reduce_retracing=True)
        _TRAINING_FORWARD[model] = forward
    momenta = [layer.momentum for _, layer in layers]
    sums = [[np.zeros(layer.moving_mean.shape, np.float64),
             np.zeros(layer.moving_variance.shape, np.float64)] for _, layer in layers]
    try:
        for _, layer in layers:
            layer.momentum = 0.0
            layer.moving_mean.assign(np.zeros(layer.moving_mean.shape))
            layer.moving_variance.assign(np.ones(layer.moving_variance.shape))
        for batch in batches:
            forward(tf.convert_to_tensor(np.asarray(batch, np.float32)))
            for total, (_, layer) in zip(sums, layers):
                total[0] += layer.moving_mean.numpy()
                total[1] += layer.moving_variance.numpy()
    finally:
        for momentum, (_, layer) in zip(momenta, layers):
            layer.momentum = momentum
    for (mean, variance), (_, layer) in zip(sums, layers):
        layer.moving_mean.assign((mean / len(batches)).astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(
            (variance / len(batches)).astype(layer.moving_variance.dtype))
    return len(layers)


def _error_and_loss(model, x, y, batch_size: int = 1000) -> tuple[float, float]:
    """Classification error (``1 - accuracy``, argmax of the logits) and mean sparse
    cross-entropy of ``model`` (logits out) on ``(x, y)``, in inference mode."""
    logits = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    y = np.asarray(y, np.int64)
    loss = float(-log_probs[np.arange(len(y)), y].mean())
    return float(np.mean(np.argmax(logits, axis=1) != y)), loss


# -------------------------------------------------------------- trainer-level tools


def interpolation_errors(trainer: Trainer, weights_1, weights_2, points: int = 30, *,
                         train_data=None, bn_data=None) -> dict:
    """Evaluates ``a*w1 + (1-a)*w2`` at ``points`` evenly spaced ``a`` in [0, 1].

    Args:
        trainer: a ``tf_lottery.trainer.Trainer`` whose model has the architecture of
            the weights; its weights are overwritten.
        weights_1, weights_2: ``get_weights()`` lists (masks included, identical).
        points: number of ``a`` values, >= 2 (paper: 30).
        train_data: ``(x, y)`` training examples (float ``(N, *input_shape)``, int
            ``(N,)``) to measure the train error on, or ``None`` for none.
        bn_data: input batches of training data (``reestimate_batch_norm``); when given,
            the BatchNorm statistics of every network on the path, the ends included,
            are re-estimated on them before it is evaluated. ``None``: the interpolated
            statistics are used. Without BatchNorm layers it changes nothing.

    Returns:
        ``{"alphas", "test_error", "val_error", "train_error", "test_loss", "val_loss",
        "train_loss"}``: lists of ``points`` floats; errors are ``1 - accuracy``
        (fractions), ``val_*`` ``None`` without a validation split, ``train_*`` ``None``
        without ``train_data``.
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"`points` must be an integer >= 2; received {points!r}.")
    alphas = np.linspace(0.0, 1.0, points)
    out = {"alphas": alphas.tolist(), "test_error": [], "val_error": [], "train_error": [],
           "test_loss": [], "val_loss": [], "train_loss": []}
    for alpha in alphas:
        trainer.model.set_weights(interpolate(weights_1, weights_2, float(alpha)))
        if bn_data is not None:
            reestimate_batch_norm(trainer.model, bn_data)
        row = trainer.evaluate()
        for split in ("test", "val"):
            accuracy, loss = row[f"{split}_accuracy"], row[f"{split}_loss"]
            finite = math.isfinite(accuracy)  # NaN without a validation split
            out[f"{split}_error"].append(1.0 - accuracy if finite else None)
            out[f"{split}_loss"].append(loss if finite else None)
        error, loss = (_error_and_loss(trainer.model, *train_data) if train_data is not None
                       else (None, None))
        out["train_error"].append(error)
        out["train_loss"].append(loss)
    return out


def linear_mode_connectivity(trainer: Trainer, weights, masks, *, start: int,
                             data_orders=(1, 2), points: int = 30, train_data=None,
                             bn_data=None) -> dict:
    """Trains two copies of ``weights`` under ``masks`` from iteration ``start`` with two
    data orders and measures the error along the line between them (Frankle et al.,
    ICML 2020).

    Args:
        trainer: a ``Trainer`` (its budget is the end of both trainings).
        weights: ``get_weights()`` list at iteration ``start`` (``theta_k``).
        masks: ``{mask key: 0/1 array}``.
        start: the rewind iteration ``k``, ``0 <= start < trainer.iterations``.
        data_orders: two seeds of ``Trainer.set_data_order``; equal seeds (with
            deterministic ops) train identical copies, whose instability is exactly 0.
        points: interpolation points, >= 2.
        train_data, bn_data: as for ``interpolation_errors`` (the train error, and the
            batches BatchNorm statistics are re-estimated on).

    Returns:
        ``interpolation_errors``'s dict plus ``"instability"`` (on test error),
        ``"instability_train"`` (on train error, ``None`` without ``train_data``),
        ``"val_instability"`` (``None`` without validation data),
        ``"bn_layers"`` (the network's BatchNorm layers with ``trainable=True``),
        ``"bn_reestimated"`` (how many were re-estimated at each point: ``bn_layers``
        with ``bn_data``, else 0) and ``"copies"`` (each copy's short summary).
        Leaves the trainer's data order at ``data_orders[1]``.

    Raises:
        ValueError: ``data_orders`` not two ints, or bad ``start``/``points``.
    """
    if len(data_orders) != 2 or not all(isinstance(s, (int, np.integer)) for s in data_orders):
        raise ValueError(f"`data_orders` must be two integer seeds; received {data_orders!r}.")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"`points` must be an integer >= 2; received {points!r}.")
    finals, copies = [], []
    for order in data_orders:
        trainer.set_data_order(int(order))
        summary = trainer.train(weights=weights, masks=masks, start=start)
        finals.append(trainer.model.get_weights())
        copies.append(short_summary(summary))
    curve = interpolation_errors(trainer, finals[0], finals[1], points,
                                 train_data=train_data, bn_data=bn_data)
    val, train = curve["val_error"], curve["train_error"]
    bn_layers = [layer for _, layer in batch_norm_layers(trainer.model) if layer.trainable]
    return {
        **curve,
        "instability": instability(curve["test_error"]),
        "instability_train": instability(train) if None not in train else None,
        "val_instability": instability(val) if None not in val else None,
        "bn_layers": len(bn_layers),
        "bn_reestimated": len(bn_layers) if bn_data is not None else 0,
        "copies": copies,
    }


# ---------------------------------------------------------------------- on a run


def run_instability(run_dir, *, levels=None, rewind_points=None, mask: str = "lottery",
                    training_steps: str | None = None, points: int = 30,
                    replicate: int | None = None, data_dir=None,
                    reestimate_bn: bool = True, bn_batches: int = BN_BATCHES,
                    train_error_examples: int = TRAIN_ERROR_EXAMPLES,
                    runtime: Runtime | None = None, overwrite: bool = False,
                    check_only: bool = False) -> dict | None:
    """Instability of the dense network and tickets of a run at rewind points.

    For every level ``L`` in ``levels`` and rewind point ``k``: trains two copies of
    ``m_L * theta_k`` from ``k`` to ``training_steps`` with two data orders and records
    the test and train error along the line between them
    (``linear_mode_connectivity``).

    Args:
        run_dir, replicate, data_dir: the run (see ``open_run``).
        levels: mask levels (0: dense); default ``[0, deepest level with a mask]``.
        rewind_points: step strings ``k`` (``["0it", "500it"]``); default: the run's.
        mask: ``"lottery"`` or ``"random_prune"`` (see ``tf_lottery.analysis.run``).
        training_steps: budget of each copy as a step string; default: the run's.
        points: interpolation points (30 in the paper).
        reestimate_bn: re-estimate the BatchNorm moving statistics of every network on
            the path (``reestimate_batch_norm``) on ``bn_batches`` training batches of
            the run's batch size (the first ``bn_batches * batch_size`` examples of a
            permutation of the training split fixed by the replicate's seed, the same
            for every point and entry). Ignored for networks without BatchNorm.
            ``False``: evaluate with the interpolated statistics, as entries written
            before this option existed did.
        bn_batches: integer >= 1 (default ``BN_BATCHES``, 32).
        train_error_examples: size of the fixed subset of the training split the train
            error is measured on (the first examples of a permutation drawn with seed
            0, the same for every replicate and entry), default ``TRAIN_ERROR_EXAMPLES``
            (10,000; capped at the split's size); 0 measures no train error.
        runtime: ``tf_lottery.training.Runtime`` (``deterministic=True`` turns on op
            determinism for the whole process).
        overwrite: recompute entries already in ``analysis/instability.json``.
        check_only: validate the arguments (and load the data) and return ``None``
            without training or writing anything.

    Returns:
        The content of ``<replicate>/analysis/instability.json``: ``{"analysis",
        "run_dir", "replicate_dir", "entries"}``; each entry has ``"key"`` (level, mask,
        rewind, training_steps, points, data_orders, and ``"bn_reestimate"``, the number
        of batches, only when BatchNorm statistics were re-estimated: entries without it,
        including those written before the option existed, used the interpolated
        statistics, so they are found again with ``reestimate_bn=False``),
        ``"alphas"``, ``"test_error"``, ``"train_error"``, ``"val_error"`` (fractions),
        ``"instability"`` (test), ``"instability_train"``, ``"val_instability"``,
        ``"train_error_examples"``, ``"bn_layers"``, ``"bn_reestimated"`` (BN layers
        in the network, and re-estimated),
        ``"sparsity"``, ``"weights_remaining"``, ``"copies"`` and ``"seconds"``. Entries
        of networks without BatchNorm keep their keys, so earlier entries are skipped
        (without train error: rerun with ``overwrite`` to add it).

    Raises:
        ValueError: before any training, for a bad run directory, levels without masks,
            a rewind point at or past the budget, bad step strings, ``points < 2``,
            ``reestimate_bn`` not a bool, ``bn_batches < 1`` or
            ``train_error_examples < 0``.
    """
    ctx = open_run(run_dir, replicate=replicate, data_dir=data_dir)
    levels = check_levels(levels, ctx, mask, lambda a: sorted({0, max(a)}))
    points = check_int("points", points, 2)
    if not isinstance(reestimate_bn, (bool, np.bool_)):
        raise ArgumentError("reestimate_bn", reestimate_bn,
                            f"`reestimate_bn` must be True or False; received {reestimate_bn!r}.")
    bn_batches = check_int("bn_batches", bn_batches, 1)
    train_error_examples = check_int("train_error_examples", train_error_examples, 0)
    training, spe = training_for(ctx, training_steps, None, ctx.dataset)
    budget = training.iterations("training_steps", spe)
    rewinds = rewind_points_for(rewind_points, ctx, spe, budget)
    if check_only:
        return None
    # Copies only need their final weights: evaluate at the start and end only.
    training = dataclasses.replace(training, eval_every=f"{budget}it")
    trainer = make_trainer(ctx, ctx.dataset, training, rewinds, runtime)
    store = EntryFile(ctx.analysis_path("instability"), "instability", ctx, overwrite)
    theta_0 = ctx.load("init").get_weights()
    trainer.model.set_weights(theta_0)
    ones = ctx.masks(0, ones_like=trainer.model)
    cache: dict = {}
    orders = [derive_seed(ctx.seed, "instability", i) for i in (1, 2)]
    x_train, y_train = ctx.dataset.x_train, ctx.dataset.y_train
    bn_data = None
    if reestimate_bn and batch_norm_layers(trainer.model):
        bn_data = _bn_batches(x_train, bn_batches, training.batch_size,
                              derive_seed(ctx.seed, "instability_bn"))
    train_data = None
    if train_error_examples:
        subset = np.sort(np.random.default_rng(0).permutation(len(y_train))[
            :train_error_examples])
        train_data = (x_train[subset], y_train[subset])
    for rewind, k in rewinds:
        for level in levels:
            key = {"level": level, "mask": "dense" if level == 0 else mask, "rewind": rewind,
                   "training_steps": str(training.training_steps), "points": points,
                   "data_orders": orders}
            if bn_data is not None:
                key["bn_reestimate"] = bn_batches
            if store.done(key):
                logging.info("instability %s: done, skipped", key)
                continue
            t0 = time.perf_counter()
            weights = theta_k(ctx, trainer, k, theta_0, ones, cache)
            masks = ctx.masks(level, mask, ones_like=trainer.model)
            result = linear_mode_connectivity(trainer, weights, masks, start=k,
                                              data_orders=orders, points=points,
                                              train_data=train_data, bn_data=bn_data)
            sparsity = mask_sparsity(masks)
            store.put({"key": key, **result,
                       "train_error_examples": 0 if train_data is None else len(train_data[1]),
                       "sparsity": sparsity,
                       "weights_remaining": 1.0 - sparsity, "rewind_iteration": k,
                       "seconds": time.perf_counter() - t0})
            logging.info("instability level %d (%s) rewind %s: %.4f (train %s)%s", level,
                         key["mask"], rewind, result["instability"],
                         result["instability_train"],
                         ", BatchNorm re-estimated" if bn_data is not None else "")
    return store.data


def _bn_batches(x_train, count: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """``count`` batches of ``batch_size`` training inputs: consecutive slices of
    concatenated permutations of the training split drawn with ``seed``."""
    n = len(x_train)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(n)
                            for _ in range(math.ceil(count * batch_size / n))])
    return [x_train[np.sort(order[i * batch_size:(i + 1) * batch_size])]
            for i in range(count)]


