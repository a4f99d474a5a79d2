"""Ticket transfer: a run's tickets trained on another dataset.

Morcos, Yu, Paganini & Tian, "One ticket to win them all: generalizing lottery ticket
initializations across datasets and optimizers", NeurIPS 2019: the mask and rewind
weights found on the run's (source) dataset are trained on a target dataset with the
same input shape. When the class counts differ, the output layer cannot be carried
over: it is re-initialized from the target network's initialization and given a random
mask with the source output layer's fraction of surviving weights (recorded as
``reinitialized_layers``). Compared on the target, all with the same budget:

* ``source_ticket``: the transferred ticket;
* ``random_ticket``: a random mask with the same per-layer counts on the same weights;
* ``target_ticket``: the ticket of the same level found on the target, by iterative
  pruning on the target with the source run's pruning settings (written to
  ``analysis/transfer_<target>_imp/``, ``ReplicateDir.transfer_imp``), or read from
  ``target_run_dir``;
* ``target_dense``: the dense network on the target.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from absl import logging

from tf_lottery import data as data_lib
from tf_lottery import masking, pruning, ticket
from tf_lottery.analysis.run import (EntryFile, check_levels, make_trainer, open_run,
                                     short_summary, training_for)
from tf_lottery.hparams import ArgumentError, derive_seed
from tf_lottery.training import Runtime

__all__ = [
    "transfer_weights",
    "run_transfer",
]


def _layer_shapes(layer) -> list[tuple]:
    return [tuple(w.shape) for w in layer.weights]


def transfer_weights(source, target) -> list[str]:
    """Copies the weights of ``source``'s layers into the same-named layers of ``target``.

    Layers whose weight shapes differ (the output layer when the class counts differ)
    keep ``target``'s own (fresh) weights; their qualified names are returned. Masks
    are layer weights too, so matching layers also receive the source masks.

    Args:
        source, target: built Keras models of the same architecture family (e.g.
            ``tf_lottery.models.build_model`` with the same name), typically wrapped.

    Returns:
        Names of the layers of ``target`` that were not copied (shape mismatch or no
        same-named layer in ``source``).

    Raises:
        ValueError: ``source`` and ``target`` share no layer with weights.
    """
    source_layers = dict(masking._walk(source))
    kept, copied = [], 0
    for name, layer in masking._walk(target):
        if not layer.weights:
            continue
        other = source_layers.get(name)
        if other is None or _layer_shapes(other) != _layer_shapes(layer):
            kept.append(name)
            continue
        layer.set_weights(other.get_weights())
        copied += 1
    if not copied:
        raise ValueError(f"`source` {source.name!r} and `target` {target.name!r} share no "
                         "layer of equal name and shapes; transfer needs the same architecture.")
    return kept


def _random_mask(shape, fraction: float, rng) -> np.ndarray:
    """A 0/1 float32 mask of ``shape`` keeping ``round(fraction * size)`` (>= 1) random
    entries."""
    size = int(np.prod(shape))
    keep = max(1, int(round(fraction * size)))
    flat = np.zeros(size, np.float32)
    flat[rng.permutation(size)[:keep]] = 1.0
    return flat.reshape(shape)


def run_transfer(run_dir, *, target_dataset, levels=None, target_run_dir=None,
                 training_steps: str | None = None, eval_every: str | None = None,
                 replicate: int | None = None, target_data_dir=None,
                 runtime: Runtime | None = None, overwrite: bool = False,
                 check_only: bool = False) -> dict | None:
    """Trains a run's tickets on another dataset and compares them (Morcos et al. 2019).

    See ``tf_lottery.analysis.transfer`` for the four methods compared and how the
    output layer is handled when the class counts differ. The source dataset itself is never loaded:
    the masks and ``theta_k`` (the run's rewind point) come from the run's files.

    Args:
        run_dir, replicate: the source run (see ``open_run``).
        target_dataset: a ``tf_lottery.data.DATASETS`` name or a ``tf_lottery.data.Dataset``
            with the source's input shape.
        levels: mask levels > 0; default: the deepest level with a mask.
        target_run_dir: a run of the same model on the target dataset whose tickets (same
            levels) serve as ``target_ticket``; default: iterative pruning on the target
            with the source run's pruning settings and this budget, written to
            ``<replicate>/analysis/transfer_<target>_imp/``.
        training_steps, eval_every: budget and evaluation period; default: the run's.
        target_data_dir: passed to ``tf_lottery.data.load`` for the target.
        runtime, overwrite, check_only: as for ``run_instability``.

    Returns:
        The content of ``<replicate>/analysis/transfer.json``; each entry has ``"key"``
        (source, target, level, method, training_steps), the early-stopping and final
        test accuracies, ``"sparsity"``, ``"weights_remaining"``,
        ``"reinitialized_layers"`` and ``"seconds"``.

    Raises:
        ValueError: before any training, for an unknown target, a target whose input
            shape differs from the source's, the source dataset as target, levels
            without masks (or level 0), or a ``target_run_dir`` of another model or
            dataset or without those levels.
    """
    ctx = open_run(run_dir, replicate=replicate, load_data=False)
    levels = check_levels(levels, ctx, "lottery", lambda a: [max(a)])
    if 0 in levels:
        raise ArgumentError("levels", levels,
                            "`levels` must be pruned levels (> 0) for transfer; received "
                            f"{levels}. The dense network is always compared.")
    source = ctx.hparams.dataset.dataset
    source_info = data_lib.DATASETS[source]
    if isinstance(target_dataset, data_lib.Dataset):
        shape, target_name = tuple(target_dataset.input_shape), target_dataset.name
    elif isinstance(target_dataset, str) and target_dataset in data_lib.DATASETS:
        shape = data_lib.DATASETS[target_dataset].input_shape
        target_name = target_dataset
    else:
        raise ArgumentError("target_dataset", target_dataset,
                            f"`target_dataset` must be one of {sorted(data_lib.DATASETS)} or a "
                            f"tf_lottery.data.Dataset; received {target_dataset!r}.")
    if tuple(shape) != tuple(source_info.input_shape):
        compatible = sorted(n for n, i in data_lib.DATASETS.items()
                            if i.input_shape == source_info.input_shape and n != source)
        raise ArgumentError("target_dataset", target_name,
                            f"`target_dataset` {target_name!r} has input shape {tuple(shape)}, "
                            f"the run's {source!r} {source_info.input_shape}; tickets transfer "
                            f"between equal input shapes: {compatible}.")
    if target_name == source and not isinstance(target_dataset, data_lib.Dataset):
        raise ArgumentError("target_dataset", target_name,
                            f"`target_dataset` {target_name!r} is the run's own dataset; pick "
                            "another dataset with the same input shape.")
    target_ctx = None
    if target_run_dir is not None:
        target_ctx = open_run(target_run_dir, replicate=replicate, load_data=False)
        t = target_ctx.hparams
        if t.model.model != ctx.hparams.model.model or t.dataset.dataset != target_name:
            raise ArgumentError("target_run_dir", target_run_dir,
                                f"`target_run_dir` {target_ctx.root!r} trains {t.model.model} "
                                f"on {t.dataset.dataset}; it must train "
                                f"{ctx.hparams.model.model} on {target_name}.")
        check_levels(levels, target_ctx, "lottery", None)
    # All checks done: load the target data and train.
    target = (target_dataset if isinstance(target_dataset, data_lib.Dataset)
              else data_lib.load(target_name, data_dir=target_data_dir))
    training, spe = training_for(ctx, training_steps, eval_every, target)
    budget = training.iterations("training_steps", spe)
    k = ctx.rewind_iteration
    if k >= budget:
        raise ArgumentError("training_steps", str(training.training_steps),
                            f"`training_steps` {training.training_steps} must exceed the "
                            f"run's rewind point ({k} iterations).")
    if check_only:
        return None
    target_k = target_ctx.rewind_iteration if target_ctx is not None else k
    seed = derive_seed(ctx.seed, "transfer", target_name)

    def target_fn(model_seed):
        return ctx.build(model_seed, target.input_shape, target.num_classes)

    trainer = make_trainer(ctx, target, training, [("k", k), ("k", target_k)], runtime,
                           seed=seed, model_fn=target_fn)
    store = EntryFile(ctx.analysis_path("transfer"), "transfer", ctx, overwrite)
    source_model = ctx.load("init" if k == 0 else "rewind")
    trainer.model.set_weights(trainer.fresh_weights(derive_seed(seed, "head")))
    reinitialized = transfer_weights(source_model, trainer.model)
    transferred = trainer.model.get_weights()
    ones = {key: np.ones_like(v) for key, v in masking.get_masks(trainer.model).items()}

    imp = None
    if target_ctx is None:
        imp_dir = ctx.layout.transfer_imp(target_name).path
        logging.info("finding tickets on %s by iterative pruning in %s", target_name, imp_dir)
        imp = ticket.fit(target_fn, target, training=training,
                         pruning_hparams=dataclasses.replace(
                             ctx.hparams.pruning, levels=max(levels), controls=(),
                             one_shot=()),
                         run_dir=imp_dir, seed=seed, runtime=runtime)

    def train(weights, masks, start):
        t0 = time.perf_counter()
        trainer.set_data_order(derive_seed(seed, "data"))
        summary = trainer.train(weights=weights, masks=masks, start=start)
        return {**short_summary(summary), "seconds": time.perf_counter() - t0}

    for level in levels:
        source_masks = ctx.masks(level)
        masks = {}
        rng = np.random.default_rng(derive_seed(seed, "output_mask", level))
        for key, ref in ones.items():
            src = source_masks.get(key)
            if src is not None and src.shape == ref.shape:
                masks[key] = src
            else:
                fraction = float(src.mean()) if src is not None else 1.0
                masks[key] = _random_mask(ref.shape, fraction, rng)
        methods = {"source_ticket": lambda: train(transferred, masks, k),
                   "random_ticket": lambda: train(
                       transferred, pruning.random_masks_like(
                           masks, derive_seed(seed, "random_ticket", level)), k)}
        if imp is not None:
            methods["target_ticket"] = lambda: {**short_summary(imp.levels[level]["lottery"]),
                                                "seconds": imp.levels[level]["lottery"].get(
                                                    "train_seconds")}
            methods["target_dense"] = lambda: {**short_summary(imp.levels[0]["lottery"]),
                                               "seconds": imp.levels[0]["lottery"].get(
                                                   "train_seconds")}
        else:
            target_start = target_ctx.load(
                "init" if target_k == 0 else "rewind").get_weights()
            methods["target_ticket"] = lambda: train(target_start, target_ctx.masks(level),
                                                     target_k)
            methods["target_dense"] = lambda: train(
                target_ctx.load("init").get_weights(), ones, 0)
        for method, run in methods.items():
            key = {"source": source, "target": target_name, "level": level,
                   "method": method, "training_steps": str(training.training_steps)}
            if store.done(key):
                continue
            result = run()  # its "sparsity" is the trained network's (sparsity_report)
            store.put({"key": key, **result, "weights_remaining": 1.0 - result["sparsity"],
                       "reinitialized_layers": reinitialized if method in (
                           "source_ticket", "random_ticket") else []})
            logging.info("transfer %s -> %s level %d %s: test accuracy %s at early stopping",
                         source, target_name, level, method, result["early_stop_test_accuracy"])
    return store.data

