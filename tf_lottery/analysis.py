"""Analyses of lottery tickets on an existing run: instability, noise robustness, transfer,
one-shot vs iterative pruning.

    python -m tf_lottery.report analyze --run_dir=runs/<name>_<hash> --analysis=instability \\
        --levels=0,7 --rewind_points=0it,500it --training_steps=10000it
    python -m tf_lottery.report analyze --run_dir=... --analysis=noise --levels=7
    python -m tf_lottery.report analyze --run_dir=... --analysis=transfer --levels=7 \\
        --target_dataset=mnist
    python -m tf_lottery.report analyze --run_dir=... --analysis=one_shot

(``tf-lottery-analyze`` is the same as ``tf-lottery-report analyze``.) Each analysis
rebuilds the run's model and data from ``hparams.json``, reads the masks
(``level_<k>/<branch>/mask.npz``) and weights (``init.weights.h5``, ``rewind.weights.h5``)
of one replicate, trains with ``tf_lottery.ticket.Trainer`` and writes
``<replicate>/analysis/<name>.json`` atomically after every finished entry, so an
interrupted analysis resumes where it stopped (entries with the same settings are
skipped unless ``overwrite``). ``tf_lottery.report`` plots and tabulates these files.

Networks are named by ``level`` (0: the dense network; ``L``: the mask of level ``L``)
and ``mask`` (``"lottery"``: the winning ticket of the run; ``"random_prune"``: the
run's random-pruning control mask of that level, or a random mask with the same
per-layer counts when the run has none).

* **Instability** (Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and
  the Lottery Ticket Hypothesis", ICML 2020): two copies of ``m * theta_k`` are trained
  from the rewind point ``k`` to the end with different data orders (``w1``, ``w2``);
  the test error of ``a*w1 + (1-a)*w2`` is evaluated at ``points`` evenly spaced ``a``
  in [0, 1] (all weights are interpolated, biases and BatchNormalization statistics
  included; the masks are identical). Instability = max error minus the mean of the two
  end errors (``instability``); below 0.02 counts as stable. ``theta_k`` is the run's
  ``rewind.weights.h5`` when ``k`` is the run's rewind point, ``theta_0`` for ``k = 0``,
  and otherwise the dense network trained from ``theta_0`` to ``k`` with the run's data
  order and schedule. Note: the mask comes from the run, i.e. it was found with the
  run's rewind point; the paper finds a mask per rewind point (use one run per ``k``
  for that protocol).
* **Noise robustness** (Frankle, Schwab & Morcos, "The Early Phase of Neural Network
  Training", ICLR 2020): Gaussian noise with std ``scale * sigma_l`` is added to the
  surviving weights of each prunable layer ``l`` at the rewind point, with ``sigma_l``
  the std of that layer's kernel in ``theta_0``; the network is retrained from ``k``
  under its mask. Scale 0 (no noise) is always included as the reference.
* **Ticket transfer** (Morcos, Yu, Paganini & Tian, "One ticket to win them all",
  NeurIPS 2019): the mask and rewind weights found on the run's (source) dataset are
  trained on a target dataset with the same input shape. When the class counts differ,
  the output layer cannot be carried over: it is re-initialized from the target
  network's initialization and given a random mask with the source output layer's
  fraction of surviving weights (recorded as ``reinitialized_layers``). Compared on the
  target, all with the same budget: ``source_ticket`` (the transferred ticket),
  ``random_ticket`` (a random mask with the same per-layer counts on the same weights),
  ``target_ticket`` (the ticket of the same level found on the target: by iterative
  pruning on the target with the source run's pruning settings, written to
  ``analysis/transfer_<target>_imp/``, or read from ``target_run_dir``) and
  ``target_dense`` (the dense network on the target).
* **One-shot vs iterative** (Frankle & Carbin, ICLR 2019, Sec. 5): the trained dense
  network pruned at once to the sparsity of each iterative ticket of the run, retrained
  like the tickets, at the run's budget (so the two are comparable); the report draws
  both in one plot. (A run started with ``--one_shot=...`` has its own one-shot tickets
  too; the report shows both sources.)

Budgets: ``training_steps`` (default: the run's) is the length of each training; all
trainings use the run's optimizer, learning rate schedule and batch size. Mixed-precision
runs are analysed in float32.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import keras
import numpy as np
from absl import logging

from tf_lottery import data as data_lib
from tf_lottery import masking, models, pruning, files, paths, ticket
from tf_lottery.hparams import ExperimentHparams, Steps, derive_seed

__all__ = [
    "ANALYSES",
    "MASK_KINDS",
    "RunContext",
    "open_run",
    "instability",
    "interpolate",
    "interpolation_errors",
    "linear_mode_connectivity",
    "init_stds",
    "add_noise",
    "transfer_weights",
    "run_instability",
    "run_noise",
    "run_transfer",
    "run_one_shot",
]

ANALYSES = ("instability", "noise", "transfer", "one_shot")
MASK_KINDS = ("lottery", "random_prune")
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


# -------------------------------------------------------------- trainer-level tools


def interpolation_errors(trainer: ticket.Trainer, weights_1, weights_2, points: int = 30) -> dict:
    """Evaluates ``a*w1 + (1-a)*w2`` at ``points`` evenly spaced ``a`` in [0, 1].

    Args:
        trainer: a ``tf_lottery.ticket.Trainer`` whose model has the architecture of
            the weights; its weights are overwritten.
        weights_1, weights_2: ``get_weights()`` lists (masks included, identical).
        points: number of ``a`` values, >= 2 (paper: 30).

    Returns:
        ``{"alphas", "test_error", "val_error", "test_loss", "val_loss"}``: lists of
        ``points`` floats; errors are ``1 - accuracy`` (fractions), ``val_*`` ``None``
        without a validation split.
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"`points` (--points) must be an integer >= 2; received {points!r}.")
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


def _short(summary: dict) -> dict:
    keys = ("sparsity", "early_stop_iteration", "early_stop_test_accuracy",
            "final_test_accuracy", "final_val_accuracy", "train_seconds")
    return {k: summary.get(k) for k in keys}


def linear_mode_connectivity(trainer: ticket.Trainer, weights, masks, *, start: int,
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
        raise ValueError(f"`points` (--points) must be an integer >= 2; received {points!r}.")
    finals, copies = [], []
    for order in data_orders:
        trainer.set_data_order(int(order))
        summary = trainer.train(weights=weights, masks=masks, start=start)
        finals.append(trainer.model.get_weights())
        copies.append(_short(summary))
    curve = interpolation_errors(trainer, finals[0], finals[1], points)
    val = curve["val_error"]
    return {
        **curve,
        "instability": instability(curve["test_error"]),
        "val_instability": instability(val) if None not in val else None,
        "copies": copies,
    }


# -------------------------------------------------------------------- run context


@dataclasses.dataclass
class RunContext:
    """One replicate of a ``tf_lottery.main`` run, rebuilt for analysis.

    Attributes:
        root: the ``<name>_<hash>`` directory (holds ``hparams.json``).
        replicate_dir: the ``replicate_<r>`` directory analysed.
        replicate: ``r``.
        hparams: the run's ``ExperimentHparams``.
        seed: the replicate's seed, ``derive_seed(hparams.seed, "replicate", r)`` as in
            ``tf_lottery.main`` (fixes the data order used to reach rewind points).
        dataset: the run's ``tf_lottery.data.Dataset`` (``None`` if not loaded).
        rewind_iteration: the run's rewind point ``k`` in iterations.
    """

    root: str
    replicate_dir: str
    replicate: int
    hparams: ExperimentHparams
    seed: int
    dataset: data_lib.Dataset | None
    rewind_iteration: int

    def build(self, seed: int, input_shape=None, num_classes=None) -> keras.Model:
        """A fresh (unwrapped) model of the run's architecture; default input shape and
        classes are the run's dataset's.

        Analyses load ``theta_0`` and ``theta_k`` from the run's files, so only the
        architecture matters here, except for fresh layers (the re-initialized output
        layer of a transfer): a GradInit run (``initializer="gradinit"``) builds them
        with its ``base_initializer``, without GradInit's rescaling.
        """
        info = data_lib.DATASETS[self.hparams.dataset.dataset]
        m = self.hparams.model
        initializer = m.initializer
        if initializer == "gradinit":
            initializer = getattr(m, "base_initializer", None) or "glorot_normal"
        return models.build_model(
            m.model, input_shape or info.input_shape, num_classes or info.num_classes,
            initializer=initializer, dropout=m.dropout, seed=seed, batch_norm=m.batch_norm)

    def weights_file(self, name: str) -> str:
        return os.path.join(self.replicate_dir, f"{name}.weights.h5")

    def load(self, name: str) -> keras.Model:
        """A wrapped model of the run holding ``<replicate>/<name>.weights.h5``."""
        model = masking.wrap(self.build(0))
        model.load_weights(self.weights_file(name))
        return model

    def _ticket_mask_file(self, level: int) -> str | None:
        """The level's ticket mask: ``lottery/mask.npz``, or the identical
        ``reinit/mask.npz`` (the reinit control trains under the ticket's mask and starts
        first, so a level in progress already has it)."""
        for branch in ("lottery", "reinit"):
            path = os.path.join(self.replicate_dir, f"level_{level}", branch, "mask.npz")
            if os.path.exists(path):
                return path
        return None

    def mask_levels(self) -> list[int]:
        """Levels with a ticket mask (level 0, the dense network, always)."""
        levels = [0]
        for name in os.listdir(self.replicate_dir):
            if name.startswith("level_") and name[6:].isdigit() and int(name[6:]) > 0:
                if self._ticket_mask_file(int(name[6:])) is not None:
                    levels.append(int(name[6:]))
        return sorted(levels)

    def masks(self, level: int, kind: str = "lottery", ones_like=None) -> dict[str, np.ndarray]:
        """The mask of ``level`` (all ones for level 0, shaped like ``ones_like``'s masks);
        ``kind="random_prune"``: the run's random-pruning mask of that level, else a
        random mask with the ticket's per-layer counts."""
        if level == 0:
            return {k: np.ones_like(v) for k, v in masking.get_masks(ones_like).items()}
        lottery = masking.load_masks(self._ticket_mask_file(level))
        if kind == "lottery":
            return lottery
        path = os.path.join(self.replicate_dir, f"level_{level}", "random_prune", "mask.npz")
        if os.path.exists(path):
            return masking.load_masks(path)
        return pruning.random_masks_like(lottery, derive_seed(self.seed, "analysis_random", level))

    def analysis_path(self, name: str) -> str:
        return os.path.join(self.replicate_dir, "analysis", f"{name}.json")


def _train_examples(hp: ExperimentHparams) -> int:
    """Training examples of the run's dataset after the validation split (as
    ``tf_lottery.data.load`` splits it), known without loading the data."""
    info = data_lib.DATASETS[hp.dataset.dataset]
    total = hp.dataset.synthetic_size or info.num_train
    validation = hp.dataset.validation_size
    if validation is None:
        validation = total // 5 if hp.dataset.dataset == "synthetic" else 5000
    return total - validation


def open_run(run_dir, *, replicate: int | None = None, data_dir=None,
             load_data: bool = True) -> RunContext:
    """Opens a replicate of a run for analysis.

    Args:
        run_dir: ``<run_root>/<name>_<hash>`` or one of its ``replicate_<r>`` directories.
        replicate: ``r`` when ``run_dir`` is the ``<name>_<hash>`` directory (default 0).
        data_dir: passed to ``tf_lottery.data.load``.
        load_data: load the run's dataset (not needed for transfer).

    Raises:
        ValueError: naming ``run_dir`` (--run_dir) or ``replicate`` (--replicate) when
            the directory is not a run, the replicate does not exist or has not started
            (no ``init.weights.h5``, or no ``rewind.weights.h5`` for a run rewinding to
            ``k > 0`` that has not reached ``k``), or naming the data when it cannot be
            loaded.
    """
    run, rep = paths.resolve_replicate(run_dir, replicate)
    root, replicate_dir, replicate = run.path, rep.path, rep.index
    if not os.path.exists(os.path.join(replicate_dir, "init.weights.h5")):
        raise ValueError(f"`run_dir` (--run_dir) {replicate_dir!r} has no init.weights.h5 "
                         "yet; analyses need a run that has started.")
    hp = ExperimentHparams.from_dict(files.read_json(os.path.join(root, "hparams.json")))
    dataset = None
    if load_data:
        dataset = data_lib.load(hp.dataset.dataset, data_dir=data_dir,
                                validation_size=hp.dataset.validation_size,
                                synthetic_size=hp.dataset.synthetic_size)
    spe = math.ceil(_train_examples(hp) / hp.training.batch_size)
    rewind = Steps.parse(hp.pruning.rewind)
    k = rewind.iterations(spe)
    if k > 0 and not os.path.exists(os.path.join(replicate_dir, "rewind.weights.h5")):
        raise ValueError(f"`run_dir` (--run_dir) {replicate_dir!r} has no rewind.weights.h5 "
                         f"(theta_k of --rewind={hp.pruning.rewind}) yet; wait until the dense "
                         "level has passed the rewind point.")
    return RunContext(root, replicate_dir, replicate, hp,
                      derive_seed(hp.seed, "replicate", replicate), dataset, k)


# ------------------------------------------------------------------ shared helpers


def _training(ctx: RunContext, training_steps, eval_every, dataset):
    training = ctx.hparams.training
    changes = {}
    if training_steps is not None:
        Steps.parse(training_steps, "training_steps")
        changes["training_steps"] = training_steps
    if eval_every is not None:
        Steps.parse(eval_every, "eval_every")
        changes["eval_every"] = eval_every
    training = dataclasses.replace(training, **changes)
    spe = math.ceil(len(dataset.y_train) / training.batch_size)
    try:
        training.check_against(spe)
    except ValueError as err:
        raise ValueError(f"{err} Choose a --training_steps that covers the run's schedule, "
                         "or leave it at the run's budget.") from None
    return training, spe


def _rewinds(rewind_points, ctx: RunContext, spe: int, budget: int) -> list[tuple[str, int]]:
    if rewind_points is None:
        rewind_points = [ctx.hparams.pruning.rewind]
    if isinstance(rewind_points, str):
        rewind_points = [rewind_points]
    out = []
    for text in rewind_points:
        steps = Steps.parse(text, "rewind_points")
        k = steps.iterations(spe)
        if k >= budget:
            raise ValueError(f"`rewind_points` (--rewind_points) {text!r} is iteration {k}, "
                             f"not before the end of training ({budget} iterations); use a "
                             "smaller rewind point or a larger --training_steps.")
        if (str(steps), k) not in out:
            out.append((str(steps), k))
    return out


def _check_levels(levels, ctx: RunContext, kind: str, default) -> list[int]:
    available = ctx.mask_levels()
    if levels is None:
        levels = default(available)
    if isinstance(levels, int):
        levels = [levels]
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
            raise ValueError(f"`levels` (--levels) must list levels (integers >= 0, 0 = "
                             f"dense); received {levels!r}.")
        if level not in available:
            raise ValueError(f"`levels` (--levels) {level} has no ticket mask in "
                             f"{ctx.replicate_dir}; levels with a mask: {available}.")
    if kind not in MASK_KINDS:
        raise ValueError(f"`mask` (--mask) must be one of {list(MASK_KINDS)}; received {kind!r}.")
    return [int(level) for level in levels]


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"`{name}` (--{name}) must be an integer >= {low}; received {value!r}.")
    return int(value)


def _make_trainer(ctx: RunContext, dataset, training, rewinds, runtime, seed=None, model_fn=None):
    g = 0
    for _, k in rewinds:
        g = math.gcd(g, k)
    runtime = runtime or ticket.Runtime()
    if runtime.deterministic:
        keras.utils.set_random_seed(ctx.seed)
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    return ticket.Trainer(model_fn or ctx.build, dataset, training,
                          seed=ctx.seed if seed is None else seed, rewind=f"{g}it",
                          runtime=runtime)


class _Store:
    """``analysis/<name>.json``: entries keyed by their settings, written after each."""

    def __init__(self, path: str, name: str, ctx: RunContext, overwrite: bool):
        self.path = path
        self.data = {"analysis": name, "run_dir": ctx.root,
                     "replicate_dir": ctx.replicate_dir, "entries": []}
        if os.path.exists(path):
            try:
                self.data["entries"] = files.read_json(path).get("entries", [])
            except ValueError as err:
                logging.warning("%s; starting %s afresh.", err, path)
        self.overwrite = overwrite
        self._fresh = set()

    def find(self, key: dict):
        for entry in self.data["entries"]:
            if entry["key"] == key:
                return entry
        return None

    def done(self, key: dict) -> dict | None:
        """The stored entry for ``key`` unless it must be recomputed."""
        entry = self.find(key)
        if entry is None or (self.overwrite and repr(key) not in self._fresh):
            return None
        return entry

    def put(self, entry: dict) -> None:
        """Adds ``entry`` (replacing one with the same key) to the file as it is now, so
        entries written meanwhile by another process on the same replicate are kept."""
        if os.path.exists(self.path):
            try:
                self.data["entries"] = files.read_json(self.path).get("entries", [])
            except ValueError:
                pass
        self.data["entries"] = [e for e in self.data["entries"] if e["key"] != entry["key"]]
        self.data["entries"].append(entry)
        self._fresh.add(repr(entry["key"]))
        files.atomic_write_json(self.path, self.data)


def _theta_k(ctx: RunContext, trainer, k: int, theta_0: list, ones: dict, cache: dict) -> list:
    """``theta_k`` as a ``get_weights()`` list (see the module docstring)."""
    if k in cache:
        return cache[k]
    if k == 0:
        weights = theta_0
    elif k == ctx.rewind_iteration:
        weights = ctx.load("rewind").get_weights()
    else:
        logging.info("training the dense network from theta_0 to iteration %d", k)
        trainer.set_data_order(derive_seed(ctx.seed, "data"))  # the run's order
        trainer.train(weights=theta_0, masks=ones, start=0, end=k)
        weights = trainer.model.get_weights()
    cache[k] = weights
    return weights


def _sparsity(masks) -> float:
    total = sum(m.size for m in masks.values())
    return 1.0 - sum(float(m.sum()) for m in masks.values()) / total


# ---------------------------------------------------------------------- analyses


def run_instability(run_dir, *, levels=None, rewind_points=None, mask: str = "lottery",
                    training_steps: str | None = None, points: int = 30,
                    replicate: int | None = None, data_dir=None,
                    runtime: ticket.Runtime | None = None, overwrite: bool = False,
                    check_only: bool = False) -> dict | None:
    """Instability of the dense network and tickets of a run at rewind points.

    For every level ``L`` in ``levels`` and rewind point ``k``: trains two copies of
    ``m_L * theta_k`` from ``k`` to ``training_steps`` with two data orders and records
    the test error along the line between them (``linear_mode_connectivity``).

    Args:
        run_dir, replicate, data_dir: the run (see ``open_run``).
        levels: mask levels (0: dense); default ``[0, deepest level with a mask]``.
        rewind_points: step strings ``k`` (``["0it", "500it"]``); default: the run's.
        mask: ``"lottery"`` or ``"random_prune"`` (see the module docstring).
        training_steps: budget of each copy as a step string; default: the run's.
        points: interpolation points (30 in the paper).
        runtime: ``tf_lottery.ticket.Runtime`` (``deterministic=True`` turns on op
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
    levels = _check_levels(levels, ctx, mask, lambda a: sorted({0, max(a)}))
    points = _check_int("points", points, 2)
    training, spe = _training(ctx, training_steps, None, ctx.dataset)
    budget = training.iterations("training_steps", spe)
    rewinds = _rewinds(rewind_points, ctx, spe, budget)
    if check_only:
        return None
    # Copies only need their final weights: evaluate at the start and end only.
    training = dataclasses.replace(training, eval_every=f"{budget}it")
    trainer = _make_trainer(ctx, ctx.dataset, training, rewinds, runtime)
    store = _Store(ctx.analysis_path("instability"), "instability", ctx, overwrite)
    theta_0 = ctx.load("init").get_weights()
    trainer.model.set_weights(theta_0)
    ones = ctx.masks(0, ones_like=trainer.model)
    cache: dict = {}
    orders = [derive_seed(ctx.seed, "instability", i) for i in (1, 2)]
    for rewind, k in rewinds:
        for level in levels:
            key = {"level": level, "mask": "dense" if level == 0 else mask, "rewind": rewind,
                   "training_steps": training.training_steps, "points": points,
                   "data_orders": orders}
            if store.done(key):
                logging.info("instability %s: done, skipped", key)
                continue
            t0 = time.perf_counter()
            weights = _theta_k(ctx, trainer, k, theta_0, ones, cache)
            masks = ctx.masks(level, mask, ones_like=trainer.model)
            result = linear_mode_connectivity(trainer, weights, masks, start=k,
                                              data_orders=orders, points=points)
            sparsity = _sparsity(masks)
            store.put({"key": key, **result, "sparsity": sparsity,
                       "weights_remaining": 1.0 - sparsity, "rewind_iteration": k,
                       "seconds": time.perf_counter() - t0})
            logging.info("instability level %d (%s) rewind %s: %.4f", level, key["mask"],
                         rewind, result["instability"])
    return store.data


def run_noise(run_dir, *, levels=None, scales=(0.5, 1.0, 2.0, 3.0), repeats: int = 1,
              rewind_points=None, mask: str = "lottery", training_steps: str | None = None,
              eval_every: str | None = None, replicate: int | None = None, data_dir=None,
              runtime: ticket.Runtime | None = None, overwrite: bool = False,
              check_only: bool = False) -> dict | None:
    """Accuracy of tickets retrained from noisy rewind weights.

    For every level ``L``, rewind point ``k``, noise scale ``s`` (and 0) and repeat:
    ``add_noise`` perturbs the surviving weights of ``theta_k`` with std ``s`` times the
    layer's ``theta_0`` std (``init_stds``); the network is trained from ``k`` under
    ``m_L`` with the run's data order (Frankle, Schwab & Morcos, ICLR 2020).

    Args:
        levels: mask levels (0: dense); default: the deepest level with a mask.
        scales: noise scales, floats > 0 (0 is always added as the reference).
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
    levels = _check_levels(levels, ctx, mask, lambda a: [max(a)])
    repeats = _check_int("repeats", repeats, 1)
    if isinstance(scales, (int, float)):
        scales = [scales]
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (
                math.isfinite(s) and s >= 0):
            raise ValueError(f"`noise_scales` (--noise_scales) must list numbers >= 0 (noise "
                             f"std / initialization std), e.g. 0.5,1,2,3; received {scales!r}.")
    scales = sorted({0.0} | {float(s) for s in scales})
    training, spe = _training(ctx, training_steps, eval_every, ctx.dataset)
    budget = training.iterations("training_steps", spe)
    rewinds = _rewinds(rewind_points, ctx, spe, budget)
    if check_only:
        return None
    trainer = _make_trainer(ctx, ctx.dataset, training, rewinds, runtime)
    store = _Store(ctx.analysis_path("noise"), "noise", ctx, overwrite)
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
                           "rewind": rewind, "training_steps": training.training_steps,
                           "scale": scale, "repeat": repeat}
                    if store.done(key):
                        continue
                    t0 = time.perf_counter()
                    weights = _theta_k(ctx, trainer, k, theta_0, ones, cache)
                    trainer.model.set_weights(weights)
                    noisy = add_noise(masking.get_prunable_weights(trainer.model), masks, stds,
                                      scale, derive_seed(ctx.seed, "noise", level, scale, repeat))
                    masking.set_prunable_weights(trainer.model, noisy)
                    start_weights = trainer.model.get_weights()
                    trainer.set_data_order(derive_seed(ctx.seed, "data"))
                    summary = trainer.train(weights=start_weights, masks=masks, start=k)
                    sparsity = _sparsity(masks)
                    store.put({"key": key, **_short(summary), "sparsity": sparsity,
                               "weights_remaining": 1.0 - sparsity,
                               "noise_stds": {n: scale * s for n, s in stds.items()},
                               "seconds": time.perf_counter() - t0})
                    logging.info("noise level %d scale %g repeat %d: test accuracy %.4f at "
                                 "early stopping", level, scale, repeat,
                                 summary["early_stop_test_accuracy"] or float("nan"))
    return store.data


def run_one_shot(run_dir, *, levels=None, replicate: int | None = None, data_dir=None,
                 runtime: ticket.Runtime | None = None, overwrite: bool = False,
                 check_only: bool = False) -> dict | None:
    """One-shot tickets at the sparsities of a run's iterative tickets.

    For every pruned level ``L``: the trained dense network (``level_0/lottery``) is
    pruned at once to the total sparsity of the level-``L`` ticket's mask
    (``tf_lottery.ticket.one_shot_masks``, the run's criterion, scope and per-layer
    rates, as ``--one_shot`` does) and retrained like the run's tickets (from
    ``theta_k`` with ``--retrain=rewind``, the run's data order, budget and schedule).
    Frankle & Carbin (ICLR 2019), Sec. 5 and Fig. 4: iterative pruning finds tickets
    that stay accurate at higher sparsity than one-shot pruning. ``tf_lottery.report``
    draws both in ``one_shot.png`` and tabulates them side by side.

    Args:
        run_dir, replicate, data_dir: the run (see ``open_run``).
        levels: pruned levels (ints > 0) whose sparsity is matched; default: every level
            with a ticket mask.
        runtime, overwrite, check_only: as for ``run_instability``.

    Returns:
        The content of ``<replicate>/analysis/one_shot.json``; each entry has ``"key"``
        (level, target: the matched sparsity as a fraction, training_steps: the run's),
        the early-stopping iteration and test accuracies (fractions in [0, 1]),
        ``"sparsity"`` (reached; equals ``target`` up to rounding of per-layer counts),
        ``"weights_remaining"``, ``"layer_sparsity"``, ``"iterative"`` (the level's
        lottery summary, short, or ``None`` while it trains), ``"mask_file"`` (the
        one-shot mask, ``tf_lottery.load_masks`` format, relative to
        ``<replicate>/analysis``) and ``"seconds"``.

    Raises:
        ValueError: before any training, for a bad run directory, level 0 or levels
            without a mask, or a run whose dense network (level 0) has not finished.
    """
    ctx = open_run(run_dir, replicate=replicate, data_dir=data_dir)
    levels = _check_levels(levels, ctx, "lottery", lambda a: [lv for lv in a if lv > 0])
    if not levels or 0 in levels:
        raise ValueError(f"`levels` (--levels) must list pruned levels (> 0) for one_shot; "
                         f"received {levels}; levels with a mask: {ctx.mask_levels()}. Wait "
                         "until level 1 has started if there is none yet.")
    dense_file = os.path.join(ctx.replicate_dir, "level_0", "lottery", "final.weights.h5")
    if not os.path.exists(os.path.join(os.path.dirname(dense_file), "summary.json")):
        raise ValueError(f"`run_dir` (--run_dir) {ctx.replicate_dir!r} has no finished dense "
                         "network (level_0/lottery/summary.json); one-shot pruning starts "
                         "from it, wait until level 0 has finished.")
    training, spe = _training(ctx, None, None, ctx.dataset)
    k = ctx.rewind_iteration
    if check_only:
        return None
    hp = ctx.hparams.pruning
    trainer = _make_trainer(ctx, ctx.dataset, training, [("k", k)], runtime)
    store = _Store(ctx.analysis_path("one_shot"), "one_shot", ctx, overwrite)
    theta_0 = ctx.load("init").get_weights()
    trainer.model.set_weights(theta_0)
    ones = ctx.masks(0, ones_like=trainer.model)
    theta_k = _theta_k(ctx, trainer, k, theta_0, ones, {})
    trainer.model.set_weights(theta_k)
    reference = masking.get_prunable_weights(trainer.model)
    trainer.model.load_weights(dense_file)
    dense_final = trainer.model.get_weights()
    for level in levels:
        target = round(_sparsity(ctx.masks(level)), 6)
        key = {"level": level, "target": target, "training_steps": training.training_steps}
        if store.done(key):
            continue
        t0 = time.perf_counter()
        trainer.model.set_weights(dense_final)
        masks = ticket.one_shot_masks(trainer.model, target, hp, reference_weights=reference,
                                      seed=derive_seed(ctx.seed, "one_shot", target))
        mask_file = os.path.join("one_shot_masks", f"level_{level}.npz")
        masking.save_masks(os.path.join(ctx.replicate_dir, "analysis", mask_file), masks)
        trainer.set_data_order(derive_seed(ctx.seed, "data"))  # the run's order
        summary = trainer.train(weights=theta_k if hp.retrain == "rewind" else dense_final,
                                masks=masks, start=k, finetune=hp.retrain == "finetune")
        iterative = os.path.join(ctx.replicate_dir, f"level_{level}", "lottery", "summary.json")
        store.put({"key": key, **_short(summary), "mask_file": mask_file,
                   "weights_remaining": 1.0 - summary["sparsity"],
                   "layer_sparsity": summary["layer_sparsity"],
                   "iterative": _short(files.read_json(iterative))
                   if os.path.exists(iterative) else None,
                   "seconds": time.perf_counter() - t0})
        logging.info("one-shot to sparsity %.4f (level %d): test accuracy %s at early "
                     "stopping", target, level, summary["early_stop_test_accuracy"])
    return store.data


def _random_mask(shape, fraction: float, rng) -> np.ndarray:
    size = int(np.prod(shape))
    keep = max(1, int(round(fraction * size)))
    flat = np.zeros(size, np.float32)
    flat[rng.permutation(size)[:keep]] = 1.0
    return flat.reshape(shape)


def run_transfer(run_dir, *, target_dataset, levels=None, target_run_dir=None,
                 training_steps: str | None = None, eval_every: str | None = None,
                 replicate: int | None = None, target_data_dir=None,
                 runtime: ticket.Runtime | None = None, overwrite: bool = False,
                 check_only: bool = False) -> dict | None:
    """Trains a run's tickets on another dataset and compares them (Morcos et al. 2019).

    See the module docstring for the four methods compared and how the output layer is
    handled when the class counts differ. The source dataset itself is never loaded:
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
    levels = _check_levels(levels, ctx, "lottery", lambda a: [max(a)])
    if 0 in levels:
        raise ValueError("`levels` (--levels) must be pruned levels (> 0) for transfer; "
                         f"received {levels}. The dense network is always compared.")
    source = ctx.hparams.dataset.dataset
    source_info = data_lib.DATASETS[source]
    if isinstance(target_dataset, data_lib.Dataset):
        shape, target_name = tuple(target_dataset.input_shape), target_dataset.name
    elif isinstance(target_dataset, str) and target_dataset in data_lib.DATASETS:
        shape = data_lib.DATASETS[target_dataset].input_shape
        target_name = target_dataset
    else:
        raise ValueError(f"`target_dataset` (--target_dataset) must be one of "
                         f"{sorted(data_lib.DATASETS)} or a tf_lottery.data.Dataset; received "
                         f"{target_dataset!r}.")
    if tuple(shape) != tuple(source_info.input_shape):
        compatible = sorted(n for n, i in data_lib.DATASETS.items()
                            if i.input_shape == source_info.input_shape and n != source)
        raise ValueError(f"`target_dataset` (--target_dataset) {target_name!r} has input shape "
                         f"{tuple(shape)}, the run's {source!r} {source_info.input_shape}; "
                         f"tickets transfer between equal input shapes: {compatible}.")
    if target_name == source and not isinstance(target_dataset, data_lib.Dataset):
        raise ValueError(f"`target_dataset` (--target_dataset) {target_name!r} is the run's own "
                         "dataset; pick another dataset with the same input shape.")
    target_ctx = None
    if target_run_dir is not None:
        target_ctx = open_run(target_run_dir, replicate=replicate if replicate is not None
                              else None, load_data=False)
        t = target_ctx.hparams
        if t.model.model != ctx.hparams.model.model or t.dataset.dataset != target_name:
            raise ValueError(f"`target_run_dir` (--target_run_dir) {target_ctx.root!r} trains "
                             f"{t.model.model} on {t.dataset.dataset}; it must train "
                             f"{ctx.hparams.model.model} on {target_name}.")
        _check_levels(levels, target_ctx, "lottery", None)
    # All checks done: load the target data and train.
    target = (target_dataset if isinstance(target_dataset, data_lib.Dataset)
              else data_lib.load(target_name, data_dir=target_data_dir))
    training, spe = _training(ctx, training_steps, eval_every, target)
    budget = training.iterations("training_steps", spe)
    k = ctx.rewind_iteration
    if k >= budget:
        raise ValueError(f"`training_steps` (--training_steps) {training.training_steps} must "
                         f"exceed the run's rewind point ({k} iterations).")
    if check_only:
        return None
    target_k = target_ctx.rewind_iteration if target_ctx is not None else k
    seed = derive_seed(ctx.seed, "transfer", target_name)

    def target_fn(model_seed):
        return ctx.build(model_seed, target.input_shape, target.num_classes)

    trainer = _make_trainer(ctx, target, training, [("k", k), ("k", target_k)], runtime,
                            seed=seed, model_fn=target_fn)
    store = _Store(ctx.analysis_path("transfer"), "transfer", ctx, overwrite)
    source_model = ctx.load("init" if k == 0 else "rewind")
    trainer.model.set_weights(trainer.fresh_weights(derive_seed(seed, "head")))
    reinitialized = transfer_weights(source_model, trainer.model)
    transferred = trainer.model.get_weights()
    ones = {key: np.ones_like(v) for key, v in masking.get_masks(trainer.model).items()}

    imp = None
    if target_ctx is None:
        imp_dir = os.path.join(ctx.replicate_dir, "analysis", f"transfer_{target_name}_imp")
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
        return {**_short(summary), "seconds": time.perf_counter() - t0}

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
            methods["target_ticket"] = lambda: {**_short(imp.levels[level]["lottery"]),
                                                "seconds": imp.levels[level]["lottery"].get(
                                                    "train_seconds")}
            methods["target_dense"] = lambda: {**_short(imp.levels[0]["lottery"]),
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
                   "method": method, "training_steps": training.training_steps}
            if store.done(key):
                continue
            result = run()  # its "sparsity" is the trained network's (sparsity_report)
            store.put({"key": key, **result, "weights_remaining": 1.0 - result["sparsity"],
                       "reinitialized_layers": reinitialized if method in (
                           "source_ticket", "random_ticket") else []})
            logging.info("transfer %s -> %s level %d %s: test accuracy %s at early stopping",
                         source, target_name, level, method, result["early_stop_test_accuracy"])
    return store.data


if __name__ == "__main__":
    from tf_lottery import main

    main.run_analysis()
