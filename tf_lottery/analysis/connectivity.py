"""Instability: linear mode connectivity of a run's networks at rewind points.

Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis", ICML 2020: two copies of ``m * theta_k`` are trained from the rewind point
``k`` to the end with different data orders (``w1``, ``w2``); the test error of
``a*w1 + (1-a)*w2`` is evaluated at ``points`` evenly spaced ``a`` in [0, 1] (all
weights are interpolated, biases and BatchNormalization statistics included; the masks
are identical). Instability = max error minus the mean of the two end errors
(``instability``); below ``STABLE_BELOW`` (0.02) counts as stable. ``theta_k`` is the
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

import numpy as np
from absl import logging

from tf_lottery.analysis.run import (EntryFile, check_int, check_levels, make_trainer,
                                     mask_sparsity, open_run, rewind_points_for,
                                     short_summary, theta_k, training_for)
from tf_lottery.hparams import derive_seed
from tf_lottery.training import Runtime, Trainer

__all__ = [
    "STABLE_BELOW",
    "instability",
    "interpolate",
    "interpolation_errors",
    "linear_mode_connectivity",
    "run_instability",
]

#: Networks whose instability (a fraction of test error) is below this are stable.
STABLE_BELOW = 0.02


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


# -------------------------------------------------------------- trainer-level tools


def interpolation_errors(trainer: Trainer, weights_1, weights_2, points: int = 30) -> dict:
    """Evaluates ``a*w1 + (1-a)*w2`` at ``points`` evenly spaced ``a`` in [0, 1].

    Args:
        trainer: a ``tf_lottery.training.Trainer`` whose model has the architecture of
            the weights; its weights are overwritten.
        weights_1, weights_2: ``get_weights()`` lists (masks included, identical).
        points: number of ``a`` values, >= 2 (paper: 30).

    Returns:
        ``{"alphas", "test_error", "val_error", "test_loss", "val_loss"}``: lists of
        ``points`` floats; errors are ``1 - accuracy`` (fractions), ``val_*`` ``None``
        without a validation split.
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"`points` must be an integer >= 2; received {points!r}.")
    alphas = np.linspace(0.0, 1.0, points)
    out = {"alphas": alphas.tolist(), "test_error": [], "val_error": [], "test_loss": [],
           "val_loss": []}
    for alpha in alphas:
        trainer.model.set_weights(interpolate(weights_1, weights_2, float(alpha)))
        row = trainer.evaluate()
        for split in ("test", "val"):
            accuracy, loss = row[f"{split}_accuracy"], row[f"{split}_loss"]
            finite = math.isfinite(accuracy)  # NaN without a validation split
            out[f"{split}_error"].append(1.0 - accuracy if finite else None)
            out[f"{split}_loss"].append(loss if finite else None)
    return out


def linear_mode_connectivity(trainer: Trainer, weights, masks, *, start: int,
                             data_orders=(1, 2), points: int = 30) -> dict:
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

    Returns:
        ``interpolation_errors``'s dict plus ``"instability"`` (on test error),
        ``"val_instability"`` (``None`` without validation data) and ``"copies"`` (each
        copy's short summary). Leaves the trainer's data order at ``data_orders[1]``.

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
    curve = interpolation_errors(trainer, finals[0], finals[1], points)
    val = curve["val_error"]
    return {
        **curve,
        "instability": instability(curve["test_error"]),
        "val_instability": instability(val) if None not in val else None,
        "copies": copies,
    }


# ---------------------------------------------------------------------- on a run


def run_instability(run_dir, *, levels=None, rewind_points=None, mask: str = "lottery",
                    training_steps: str | None = None, points: int = 30,
                    replicate: int | None = None, data_dir=None,
                    runtime: Runtime | None = None, overwrite: bool = False,
                    check_only: bool = False) -> dict | None:
    """Instability of the dense network and tickets of a run at rewind points.

    For every level ``L`` in ``levels`` and rewind point ``k``: trains two copies of
    ``m_L * theta_k`` from ``k`` to ``training_steps`` with two data orders and records
    the test error along the line between them (``linear_mode_connectivity``).

    Args:
        run_dir, replicate, data_dir: the run (see ``open_run``).
        levels: mask levels (0: dense); default ``[0, deepest level with a mask]``.
        rewind_points: step strings ``k`` (``["0it", "500it"]``); default: the run's.
        mask: ``"lottery"`` or ``"random_prune"`` (see ``tf_lottery.analysis.run``).
        training_steps: budget of each copy as a step string; default: the run's.
        points: interpolation points (30 in the paper).
        runtime: ``tf_lottery.training.Runtime`` (``deterministic=True`` turns on op
            determinism for the whole process).
        overwrite: recompute entries already in ``analysis/instability.json``.
        check_only: validate the arguments (and load the data) and return ``None``
            without training or writing anything.

    Returns:
        The content of ``<replicate>/analysis/instability.json``: ``{"analysis",
        "run_dir", "replicate_dir", "entries"}``; each entry has ``"key"`` (level, mask,
        rewind, training_steps, points, data_orders), ``"alphas"``, ``"test_error"``,
        ``"val_error"`` (fractions), ``"instability"``, ``"val_instability"``,
        ``"sparsity"``, ``"weights_remaining"``, ``"copies"`` and ``"seconds"``.

    Raises:
        ValueError: before any training, for a bad run directory, levels without masks,
            a rewind point at or past the budget, bad step strings or ``points < 2``.
    """
    ctx = open_run(run_dir, replicate=replicate, data_dir=data_dir)
    levels = check_levels(levels, ctx, mask, lambda a: sorted({0, max(a)}))
    points = check_int("points", points, 2)
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
    for rewind, k in rewinds:
        for level in levels:
            key = {"level": level, "mask": "dense" if level == 0 else mask, "rewind": rewind,
                   "training_steps": str(training.training_steps), "points": points,
                   "data_orders": orders}
            if store.done(key):
                logging.info("instability %s: done, skipped", key)
                continue
            t0 = time.perf_counter()
            weights = theta_k(ctx, trainer, k, theta_0, ones, cache)
            masks = ctx.masks(level, mask, ones_like=trainer.model)
            result = linear_mode_connectivity(trainer, weights, masks, start=k,
                                              data_orders=orders, points=points)
            sparsity = mask_sparsity(masks)
            store.put({"key": key, **result, "sparsity": sparsity,
                       "weights_remaining": 1.0 - sparsity, "rewind_iteration": k,
                       "seconds": time.perf_counter() - t0})
            logging.info("instability level %d (%s) rewind %s: %.4f", level, key["mask"],
                         rewind, result["instability"])
    return store.data


