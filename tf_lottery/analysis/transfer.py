"""Ticket transfer: a run's tickets trained on another dataset.

Morcos, Yu, Paganini & Tian, "One ticket to win them all: generalizing lottery ticket
initializations across datasets and optimizers", NeurIPS 2019: the mask and rewind
weights found on the run's (source) dataset are trained on a target dataset with the
same input shape, or on a target of another shape whose images are converted to the
source's input shape (``target_preprocess``: 28x28x1 <-> 32x32x3 by zero-padding or
cropping, ``"pad"``, or by resizing, ``"resize"``; gray -> RGB by repeating the channel,
RGB -> gray by luminance; ``to_input_shape``). When the class counts differ, the output
layer cannot be carried over: it is re-initialized from the target network's
initialization and given a random mask with the source output layer's fraction of
surviving weights (recorded as ``reinitialized_layers``). Compared on the target, all
with the same budget:

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

import tensorflow as tf

import numpy as np
from absl import logging

from tf_lottery import data as data_lib
from tf_lottery import masking, pruning, ticket
from tf_lottery.analysis.run import (EntryFile, check_levels, make_trainer, open_run,
                                     short_summary, training_for)
from tf_lottery.hparams import ArgumentError, derive_seed
from tf_lottery.training import Runtime

__all__ = [
    "LUMINANCE",
    "TARGET_PREPROCESS",
    "convert_dataset",
    "to_input_shape",
    "transfer_weights",
    "run_transfer",
]

#: Ways of giving target images the source network's input shape (``to_input_shape``).
TARGET_PREPROCESS = ("pad", "resize")
#: RGB -> gray weights (ITU-R BT.601 luma, as ``tf.image.rgb_to_grayscale``).
LUMINANCE = (0.299, 0.587, 0.114)


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


def to_input_shape(images, input_shape, method: str) -> np.ndarray:
    """Images converted to another input shape, for ticket transfer across datasets of
    different shapes (Morcos et al., "One ticket to win them all", NeurIPS 2019, transfer
    between datasets).

    Channels first: equal counts are kept; 1 -> 3 repeats the gray channel; 3 -> 1 takes
    the luminance ``0.299 R + 0.587 G + 0.114 B`` (``LUMINANCE``). Then each spatial
    axis: ``"pad"`` zero-pads a smaller image symmetrically (an odd extra row or column
    goes to the bottom or right) and centre-crops a larger one (an odd extra row or
    column is cut from the bottom or right), so 28x28 sits in the middle of 32x32 and
    32x32 loses 2 pixels on each side; ``"resize"`` resamples bilinearly
    (``tf.image.resize``, half-pixel centres, antialiased when shrinking). The values
    are the dataset's preprocessed ones (pixels / 255 for MNIST-like data, standardized
    per channel for CIFAR), so zero padding is black on MNIST-like data and the
    channel mean on CIFAR.

    Args:
        images: float array ``(N, H, W, C)`` with ``C`` 1 or 3.
        input_shape: ``(H2, W2, C2)`` wanted, ``C2`` 1 or 3.
        method: one of ``TARGET_PREPROCESS``: ``"pad"`` or ``"resize"``.

    Returns:
        float32 ``(N, H2, W2, C2)``; ``images`` itself (as float32) when the shapes match.

    Raises:
        ValueError: naming ``target_preprocess`` for another ``method``; for channel
            counts other than 1 and 3, or an ``images`` array that is not 4-D.
    """
    if method not in TARGET_PREPROCESS:
        raise ArgumentError("target_preprocess", method,
                            f"`target_preprocess` must be one of {list(TARGET_PREPROCESS)}; "
                            f"received {method!r}.")
    x = np.asarray(images, np.float32)
    h2, w2, c2 = (int(d) for d in input_shape)
    if x.ndim != 4:
        raise ValueError(f"`images` must be a 4-D (N, H, W, C) array; received shape "
                         f"{x.shape}.")
    c = x.shape[-1]
    if c not in (1, 3) or c2 not in (1, 3):
        raise ValueError(f"Converting {c} channels to {c2} is not supported: images must "
                         "have 1 (gray) or 3 (RGB) channels.")
    if c == 1 and c2 == 3:
        x = np.repeat(x, 3, axis=-1)
    elif c == 3 and c2 == 1:
        x = (x @ np.asarray(LUMINANCE, np.float32))[..., None].astype(np.float32)
    if x.shape[1:3] == (h2, w2):
        return x
    if method == "resize":
        out = [tf.image.resize(x[i:i + 4096], (h2, w2), method="bilinear",
                               antialias=True).numpy() for i in range(0, len(x), 4096)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(
            (0, h2, w2, x.shape[-1]), np.float32)
    for axis, size in ((1, h2), (2, w2)):
        extra = x.shape[axis] - size
        if extra > 0:  # crop
            x = np.take(x, np.arange(extra // 2, extra // 2 + size), axis=axis)
        elif extra < 0:  # pad
            widths = [(0, 0)] * 4
            widths[axis] = (-extra // 2, -extra - (-extra // 2))
            x = np.pad(x, widths)
    return np.ascontiguousarray(x, np.float32)


def convert_dataset(dataset: data_lib.Dataset, input_shape, method: str) -> data_lib.Dataset:
    """``dataset`` with every split's images passed through ``to_input_shape``; name,
    labels, classes and source kept, ``channel_mean``/``channel_std`` dropped (they
    describe the original channels). Returns ``dataset`` itself when the shapes match."""
    if tuple(dataset.input_shape) == tuple(input_shape):
        return dataset
    return data_lib.Dataset(
        to_input_shape(dataset.x_train, input_shape, method), dataset.y_train,
        to_input_shape(dataset.x_val, input_shape, method), dataset.y_val,
        to_input_shape(dataset.x_test, input_shape, method), dataset.y_test,
        name=dataset.name, num_classes=dataset.num_classes, input_shape=tuple(input_shape),
        source=dataset.source)


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
                 target_preprocess: str | None = None,
                 runtime: Runtime | None = None, overwrite: bool = False,
                 check_only: bool = False) -> dict | None:
    """Trains a run's tickets on another dataset and compares them (Morcos et al. 2019).

    See ``tf_lottery.analysis.transfer`` for the four methods compared and how the
    output layer is handled when the class counts differ. The source dataset itself is never loaded:
    the masks and ``theta_k`` (the run's rewind point) come from the run's files.

    Args:
        run_dir, replicate: the source run (see ``open_run``).
        target_dataset: a ``tf_lottery.data.DATASETS`` name or a ``tf_lottery.data.Dataset``
            with the source's input shape (or another, with ``target_preprocess``).
        levels: mask levels > 0; default: the deepest level with a mask.
        target_run_dir: a run of the same model on the target dataset whose tickets (same
            levels) serve as ``target_ticket``; default: iterative pruning on the target
            with the source run's pruning settings and this budget, written to
            ``<replicate>/analysis/transfer_<target>_imp/``.
        training_steps, eval_every: budget and evaluation period; default: the run's.
        target_data_dir: passed to ``tf_lottery.data.load`` for the target.
        target_preprocess: ``None`` (default: the target must have the source's input
            shape) or one of ``TARGET_PREPROCESS``, ``"pad"`` or ``"resize"``: a target
            of another shape has its images converted to the source's input shape
            (``to_input_shape``; e.g. Fashion-MNIST 28x28x1 -> a CIFAR-10 ticket's
            32x32x3), and its own tickets are found by pruning on the converted data (in
            ``analysis/transfer_<target>_<method>_imp/``). Ignored when the shapes match.
        runtime, overwrite, check_only: as for ``run_instability``.

    Returns:
        The content of ``<replicate>/analysis/transfer.json``; each entry has ``"key"``
        (source, target, level, method, training_steps, and ``"target_preprocess"`` when
        the target's images were converted), ``"target_input_shape"`` (the target's
        own), the early-stopping and final
        test accuracies, ``"sparsity"``, ``"weights_remaining"``,
        ``"reinitialized_layers"`` and ``"seconds"``.

    Raises:
        ValueError: before any training, for an unknown target, a target whose input
            shape differs from the source's without ``target_preprocess`` (the message
            names it) or with channel counts other than 1 and 3, an unknown
            ``target_preprocess``, the source dataset as target, levels without masks
            (or level 0), or a ``target_run_dir`` of another model or dataset or without
            those levels, or together with a conversion.
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
    if target_preprocess is not None and target_preprocess not in TARGET_PREPROCESS:
        raise ArgumentError("target_preprocess", target_preprocess,
                            f"`target_preprocess` must be None or one of "
                            f"{list(TARGET_PREPROCESS)}; received {target_preprocess!r}.")
    convert = tuple(shape) != tuple(source_info.input_shape)
    if convert and target_preprocess is None:
        compatible = sorted(n for n, i in data_lib.DATASETS.items()
                            if i.input_shape == source_info.input_shape and n != source)
        raise ArgumentError("target_dataset", target_name,
                            f"`target_dataset` {target_name!r} has input shape {tuple(shape)}, "
                            f"the run's {source!r} {source_info.input_shape}; tickets transfer "
                            f"between equal input shapes: {compatible}, or pass "
                            f"`target_preprocess` ({' or '.join(map(repr, TARGET_PREPROCESS))}) "
                            "to convert the target's images to the run's input shape.")
    if convert and not {shape[-1], source_info.input_shape[-1]} <= {1, 3}:
        raise ArgumentError("target_dataset", target_name,
                            f"`target_dataset` {target_name!r} has {shape[-1]} channels and the "
                            f"run's {source!r} {source_info.input_shape[-1]}; "
                            "`target_preprocess` converts between 1 and 3 channels only.")
    if target_name == source and not isinstance(target_dataset, data_lib.Dataset):
        raise ArgumentError("target_dataset", target_name,
                            f"`target_dataset` {target_name!r} is the run's own dataset; pick "
                            "another dataset with the same input shape.")
    target_ctx = None
    if target_run_dir is not None and convert:
        raise ArgumentError("target_run_dir", target_run_dir,
                            "`target_run_dir` cannot be used with `target_preprocess`: a run "
                            f"on {target_name!r} has that dataset's input shape, not the "
                            "run's. Leave it unset: the target's tickets are then found by "
                            "pruning on the converted target.")
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
    target_shape = tuple(int(d) for d in shape)
    if convert:
        logging.info("converting %s %s to the run's input shape %s (%s)", target_name,
                     target_shape, source_info.input_shape, target_preprocess)
        target = convert_dataset(target, source_info.input_shape, target_preprocess)
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
        imp_dir = ctx.layout.transfer_imp(
            f"{target_name}_{target_preprocess}" if convert else target_name).path
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
                           masks, derive_seed(seed, "random_ticket", level),
                           structure=ctx.hparams.pruning.structure, model=trainer.model),
                       k)}
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
            if convert:
                key["target_preprocess"] = target_preprocess
            if store.done(key):
                continue
            result = run()  # its "sparsity" is the trained network's (sparsity_report)
            store.put({"key": key, **result, "weights_remaining": 1.0 - result["sparsity"],
                       "target_input_shape": list(target_shape),
                       "reinitialized_layers": reinitialized if method in (
                           "source_ticket", "random_ticket") else []})
            logging.info("transfer %s -> %s level %d %s: test accuracy %s at early stopping",
                         source, target_name, level, method, result["early_stop_test_accuracy"])
    return store.data

