"""Noise robustness: tickets retrained from noisy rewind weights.

Frankle, Schwab & Morcos, "The Early Phase of Neural Network Training", ICLR 2020:
Gaussian noise with std ``scale * sigma_l`` is added to the surviving weights of each
prunable layer ``l`` at the rewind point, with ``sigma_l`` the std of that layer's
kernel in ``theta_0``; the network is retrained from ``k`` under its mask. Scale 0 (no
noise) is always included as the reference.
"""

from __future__ import annotations

import math
import time

import numpy as np
from absl import logging

from tf_lottery import masking
from tf_lottery.analysis.run import (EntryFile, check_int, check_levels, make_trainer,
                                     mask_sparsity, open_run, rewind_points_for,
                                     short_summary, theta_k, training_for)
from tf_lottery.hparams import ArgumentError, derive_seed
from tf_lottery.training import Runtime

__all__ = [
    "init_stds",
    "add_noise",
    "run_noise",
]


def init_stds(initial_weights) -> dict[str, float]:
    """``{mask key: std}`` of each prunable weight at initialization (all entries).

    The unit of the noise of ``add_noise`` (Frankle, Schwab & Morcos, ICLR 2020, Sec. 5:
    noise "scaled by the standard deviation of the initialization distribution").

    Args:
        initial_weights: ``{mask key: array}``, e.g. ``tf_lottery.get_prunable_weights``
            of the model holding ``theta_0``.
    """
    return {key: float(np.std(np.asarray(value, dtype=np.float64)))
            for key, value in initial_weights.items()}


def add_noise(weights, masks, stds, scale: float, seed: int) -> dict[str, np.ndarray]:
    """Adds ``N(0, (scale * stds[key])**2)`` noise to the surviving entries of each weight.

    Args:
        weights: ``{mask key: float array}`` (e.g. the prunable weights at the rewind
            point).
        masks: ``{mask key: 0/1 array}`` of the same shapes; entries with mask 0 are left
            exactly as they are. Keys missing from ``masks`` are left unchanged.
        stds: ``{mask key: float}`` noise unit per weight (``init_stds``).
        scale: noise std in units of ``stds``, a float >= 0 (0 returns copies).
        seed: seed of the noise (numpy ``default_rng``).

    Returns:
        ``{mask key: array}`` of the same dtypes.

    Raises:
        ValueError: a negative or non-finite ``scale``, or a key of ``masks`` without a
            weight or std, or mismatched shapes.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
            math.isfinite(scale) and scale >= 0):
        raise ValueError(f"`scale` must be a finite number >= 0 (noise std in units of the "
                         f"initialization std); received {scale!r}.")
    missing = [k for k in masks if k not in weights or k not in stds]
    if missing:
        raise ValueError(f"`masks` has keys {missing} without an entry in `weights` or `stds`.")
    rng = np.random.default_rng(seed)
    out = {}
    for key, value in weights.items():
        value = np.asarray(value)
        if key not in masks or scale == 0:
            out[key] = value.copy()
            continue
        mask = np.asarray(masks[key])
        if mask.shape != value.shape:
            raise ValueError(f"`masks[{key!r}]` has shape {mask.shape}, the weight {value.shape}.")
        noise = rng.normal(0.0, scale * stds[key], size=value.shape)
        out[key] = (value + mask * noise).astype(value.dtype)
    return out


def run_noise(run_dir, *, levels=None, scales=(0.5, 1.0, 2.0, 3.0), repeats: int = 1,
              rewind_points=None, mask: str = "lottery", training_steps: str | None = None,
              eval_every: str | None = None, replicate: int | None = None, data_dir=None,
              runtime: Runtime | None = None, overwrite: bool = False,
              check_only: bool = False) -> dict | None:
    """Accuracy of tickets retrained from noisy rewind weights.

    For every level ``L``, rewind point ``k``, noise scale ``s`` (and 0) and repeat:
    ``add_noise`` perturbs the surviving weights of ``theta_k`` with std ``s`` times the
    layer's ``theta_0`` std (``init_stds``); the network is trained from ``k`` under
    ``m_L`` with the run's data order (Frankle, Schwab & Morcos, ICLR 2020).

    Args:
        levels: mask levels (0: dense); default: the deepest level with a mask.
        scales: noise scales, numbers >= 0 in units of the layer's initialization std
            (0 is always added as the reference).
        repeats: noise draws per scale, >= 1.
        rewind_points, mask, training_steps, replicate, data_dir, runtime, overwrite,
            check_only: as for ``run_instability``.
        eval_every: evaluation period (step string; default: the run's), which fixes the
            early-stopping resolution.

    Returns:
        The content of ``<replicate>/analysis/noise.json``; each entry has ``"key"``
        (level, mask, rewind, training_steps, scale, repeat), ``"early_stop_iteration"``,
        ``"early_stop_test_accuracy"``, ``"final_test_accuracy"``, ``"noise_stds"``
        (absolute std per mask key), ``"sparsity"``, ``"weights_remaining"``, ``"seconds"``.

    Raises:
        ValueError: before any training, as ``run_instability``, and for negative or
            non-numeric ``scales`` or ``repeats < 1``.
    """
    ctx = open_run(run_dir, replicate=replicate, data_dir=data_dir)
    levels = check_levels(levels, ctx, mask, lambda a: [max(a)])
    repeats = check_int("repeats", repeats, 1)
    if isinstance(scales, (int, float)):
        scales = [scales]
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (
                math.isfinite(s) and s >= 0):
            raise ArgumentError("scales", scales,
                                "`scales` must list numbers >= 0 (noise std / initialization "
                                f"std), e.g. 0.5,1,2,3; received {scales!r}.")
    scales = sorted({0.0} | {float(s) for s in scales})
    training, spe = training_for(ctx, training_steps, eval_every, ctx.dataset)
    budget = training.iterations("training_steps", spe)
    rewinds = rewind_points_for(rewind_points, ctx, spe, budget)
    if check_only:
        return None
    trainer = make_trainer(ctx, ctx.dataset, training, rewinds, runtime)
    store = EntryFile(ctx.analysis_path("noise"), "noise", ctx, overwrite)
    theta_0 = ctx.load("init").get_weights()
    trainer.model.set_weights(theta_0)
    stds = init_stds(masking.get_prunable_weights(trainer.model))
    ones = ctx.masks(0, ones_like=trainer.model)
    cache: dict = {}
    for rewind, k in rewinds:
        for level in levels:
            masks = ctx.masks(level, mask, ones_like=trainer.model)
            for scale in scales:
                for repeat in range(1 if scale == 0 else repeats):
                    key = {"level": level, "mask": "dense" if level == 0 else mask,
                           "rewind": rewind, "training_steps": str(training.training_steps),
                           "scale": scale, "repeat": repeat}
                    if store.done(key):
                        continue
                    t0 = time.perf_counter()
                    weights = theta_k(ctx, trainer, k, theta_0, ones, cache)
                    trainer.model.set_weights(weights)
                    noisy = add_noise(masking.get_prunable_weights(trainer.model), masks, stds,
                                      scale, derive_seed(ctx.seed, "noise", level, scale, repeat))
                    masking.set_prunable_weights(trainer.model, noisy)
                    start_weights = trainer.model.get_weights()
                    trainer.set_data_order(derive_seed(ctx.seed, "data"))
                    summary = trainer.train(weights=start_weights, masks=masks, start=k)
                    sparsity = mask_sparsity(masks)
                    store.put({"key": key, **short_summary(summary), "sparsity": sparsity,
                               "weights_remaining": 1.0 - sparsity,
                               "noise_stds": {n: scale * s for n, s in stds.items()},
                               "seconds": time.perf_counter() - t0})
                    logging.info("noise level %d scale %g repeat %d: test accuracy %.4f at "
                                 "early stopping", level, scale, repeat,
                                 summary["early_stop_test_accuracy"] or float("nan"))
    return store.data


