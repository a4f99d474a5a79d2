"""One replicate of a run, reopened for analysis, and what every analysis shares.

``open_run`` rebuilds a replicate from its files (``hparams.json``, ``theta_0``,
``theta_k``, the masks of each level; every name from ``tf_lottery.paths``) into a
``RunContext``. The helpers below check the common arguments (levels, rewind points,
the budget), set up the ``tf_lottery.trainer.Trainer`` the analyses train with, reach
``theta_k`` and keep each analysis's entries in ``analysis/<name>.json`` (``EntryFile``),
written after every finished entry so an interrupted analysis resumes where it stopped.

Networks are named by ``level`` (0: the dense network; ``L``: the mask of level ``L``)
and ``mask`` (``"lottery"``: the winning ticket of the run; ``"random_prune"``: the
run's random-pruning control mask of that level, or a random mask with the same
per-layer counts when the run has none).
"""

from __future__ import annotations

import dataclasses
import math
import os

import keras
import numpy as np
from absl import logging

from tf_lottery import data as data_lib
from tf_lottery import experiment, files, masking, paths, pruning
from tf_lottery.hparams import ArgumentError, ExperimentHparams, Steps, derive_seed
from tf_lottery.runtime import Runtime
from tf_lottery.trainer import Trainer

__all__ = [
    "ANALYSES",
    "MASK_KINDS",
    "RunContext",
    "open_run",
    "EntryFile",
    "check_levels",
    "check_int",
    "training_for",
    "rewind_points_for",
    "make_trainer",
    "theta_k",
    "short_summary",
    "mask_sparsity",
]

ANALYSES = paths.ANALYSES
MASK_KINDS = ("lottery", "random_prune")

#: The summary fields an analysis entry keeps of a training (``short_summary``).
SHORT_KEYS = ("sparsity", "early_stop_iteration", "early_stop_test_accuracy",
              "final_test_accuracy", "final_val_accuracy", "train_seconds")


@dataclasses.dataclass
class RunContext:
    """One replicate of a run (``tf_lottery.experiment.run_experiment``), rebuilt for
    analysis.

    Attributes:
        root: the ``<name>_<hash>`` directory (holds ``hparams.json``).
        replicate_dir: the ``replicate_<r>`` directory analysed.
        replicate: ``r``.
        hparams: the run's ``ExperimentHparams``.
        seed: the replicate's seed, ``experiment.replicate_seed(hparams, r)`` (fixes the
            data order used to reach rewind points).
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

    @property
    def layout(self) -> paths.ReplicateDir:
        """The replicate's files (``tf_lottery.paths.ReplicateDir``)."""
        return paths.ReplicateDir(self.replicate_dir, self.replicate)

    def build(self, seed: int, input_shape=None, num_classes=None) -> keras.Model:
        """A fresh (unwrapped) model of the run's architecture:
        ``tf_lottery.experiment.build_model(hparams.model, ...)``.

        Analyses load ``theta_0`` and ``theta_k`` from the run's files, so only the
        architecture matters here, except for fresh layers (the re-initialized output
        layer of a transfer): kernels are drawn from ``hparams.model.kernel_initializer``
        (for a GradInit run its base initializer, without GradInit's rescaling).

        Args:
            seed: int >= 0, the initialization seed.
            input_shape: one example's shape; default: the run's dataset's.
            num_classes: number of logits; default: the run's dataset's.
        """
        info = data_lib.DATASETS[self.hparams.dataset.dataset]
        return experiment.build_model(self.hparams.model, input_shape or info.input_shape,
                                      num_classes or info.num_classes, seed=seed)

    def weights_file(self, name: str) -> str:
        """The path of ``"init"`` (``theta_0``) or ``"rewind"`` (``theta_k``) weights."""
        return self.layout.weights(name)

    def load(self, name: str) -> keras.Model:
        """A wrapped model of the run holding the replicate's ``name`` weights
        (``"init"`` or ``"rewind"``)."""
        model = masking.wrap(self.build(0))
        model.load_weights(self.weights_file(name))
        return model

    def _ticket_mask_file(self, level: int) -> str | None:
        """The level's ticket mask: the lottery branch's, or the identical mask of the
        reinit control (it trains under the ticket's mask and starts first, so a level
        in progress already has it)."""
        for branch in ("lottery", "reinit"):
            path = self.layout.branch(level, branch).mask
            if os.path.exists(path):
                return path
        return None

    def mask_levels(self) -> list[int]:
        """Levels with a ticket mask (level 0, the dense network, always), sorted."""
        return [0] + [level for level in self.layout.levels()
                      if level > 0 and self._ticket_mask_file(level) is not None]

    def masks(self, level: int, kind: str = "lottery", ones_like=None) -> dict[str, np.ndarray]:
        """The mask of ``level`` as ``{mask key: 0/1 array}``.

        Level 0 is all ones, shaped like ``ones_like``'s masks (a wrapped model).
        ``kind="random_prune"``: the run's random-pruning mask of that level, else a
        random mask with the ticket's per-layer counts (of channels, or per group of
        ``M``, for a run with a ``structure``).
        """
        if level == 0:
            return {k: np.ones_like(v) for k, v in masking.get_masks(ones_like).items()}
        lottery = masking.load_masks(self._ticket_mask_file(level))
        if kind == "lottery":
            return lottery
        path = self.layout.branch(level, "random_prune").mask
        if os.path.exists(path):
            return masking.load_masks(path)
        structure = self.hparams.pruning.structure
        model = None if structure == "unstructured" else masking.wrap(self.build(0))
        return pruning.random_masks_like(lottery, derive_seed(self.seed, "analysis_random", level),
                                         structure=structure, model=model)

    def analysis_path(self, name: str) -> str:
        """``analysis/<name>.json`` of the replicate."""
        return self.layout.analysis(name)


def open_run(run_dir, *, replicate: int | None = None, data_dir=None,
             load_data: bool = True) -> RunContext:
    """Opens a replicate of a run for analysis.

    Args:
        run_dir: ``<run_root>/<name>_<hash>`` or one of its ``replicate_<r>`` directories.
        replicate: ``r`` when ``run_dir`` is the ``<name>_<hash>`` directory (default 0).
        data_dir: passed to ``tf_lottery.data.load``.
        load_data: load the run's dataset (not needed for transfer).

    Raises:
        ValueError: naming ``run_dir`` or ``replicate`` when the directory is not a run,
            the replicate does not exist or has not started (no ``theta_0``, or no
            ``theta_k`` for a run rewinding to ``k > 0`` that has not reached ``k``), or
            naming the data when it cannot be loaded.
    """
    run, rep = paths.resolve_replicate(run_dir, replicate)
    if not os.path.exists(rep.init_weights):
        raise ArgumentError("run_dir", run_dir,
                            f"`run_dir` {rep.path!r} has no {os.path.basename(rep.init_weights)}"
                            " yet; analyses need a run that has started.")
    hp = ExperimentHparams.from_dict(files.read_json(run.hparams))
    dataset = experiment.load_dataset(hp.dataset, data_dir=data_dir) if load_data else None
    spe = hp.training.steps_per_epoch(data_lib.train_examples(
        hp.dataset.dataset, validation_size=hp.dataset.validation_size,
        synthetic_size=hp.dataset.synthetic_size))
    k = hp.pruning.rewind.iterations(spe)
    if k > 0 and not os.path.exists(rep.rewind_weights):
        raise ArgumentError("run_dir", run_dir,
                            f"`run_dir` {rep.path!r} has no "
                            f"{os.path.basename(rep.rewind_weights)} (theta_k of the run's "
                            f"rewind point {hp.pruning.rewind}) yet; wait until the dense "
                            "level has passed the rewind point.")
    return RunContext(run.path, rep.path, rep.index, hp,
                      experiment.replicate_seed(hp, rep.index), dataset, k)


# ------------------------------------------------------------------ argument checks


def check_levels(levels, ctx: RunContext, kind: str, default) -> list[int]:
    """The levels to analyse, checked against the replicate's masks.

    Args:
        levels: an int, a sequence of ints >= 0, or ``None`` for ``default``.
        ctx: the replicate.
        kind: the ``mask`` argument, one of ``MASK_KINDS``.
        default: ``default(levels with a mask) -> list`` used when ``levels`` is None.

    Raises:
        ValueError: naming ``levels`` (not integers >= 0, or a level without a ticket
            mask, listing those with one) or ``mask`` (not one of ``MASK_KINDS``).
    """
    available = ctx.mask_levels()
    if levels is None:
        levels = default(available)
    if isinstance(levels, int):
        levels = [levels]
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
            raise ArgumentError("levels", levels,
                                "`levels` must list levels (integers >= 0, 0 = dense); "
                                f"received {levels!r}.")
        if level not in available:
            raise ArgumentError("levels", levels,
                                f"`levels` {level} has no ticket mask in {ctx.replicate_dir}; "
                                f"levels with a mask: {available}.")
    if kind not in MASK_KINDS:
        raise ArgumentError("mask", kind,
                            f"`mask` must be one of {list(MASK_KINDS)}; received {kind!r}.")
    return [int(level) for level in levels]


def check_int(name: str, value, low: int) -> int:
    """``value`` as an int; raises ``ValueError`` naming ``name`` unless it is an integer
    >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ArgumentError(name, value,
                            f"`{name}` must be an integer >= {low}; received {value!r}.")
    return int(value)


def training_for(ctx: RunContext, training_steps, eval_every, dataset):
    """The run's ``TrainingHparams`` with the budget and evaluation period overridden.

    Args:
        ctx: the replicate.
        training_steps, eval_every: step strings (or ``Steps``), ``None`` for the run's.
        dataset: the dataset trained on (its training split fixes the epoch length).

    Returns:
        ``(training, steps_per_epoch)``.

    Raises:
        ValueError: naming ``training_steps`` or ``eval_every`` for a bad step string,
            or ``training_steps`` for a budget shorter than the run's schedule (warmup,
            learning-rate drops).
    """
    training = ctx.hparams.training
    changes = {}
    if training_steps is not None:
        changes["training_steps"] = Steps.parse(training_steps, "training_steps")
    if eval_every is not None:
        changes["eval_every"] = Steps.parse(eval_every, "eval_every")
    training = dataclasses.replace(training, **changes)
    spe = training.steps_per_epoch(len(dataset.y_train))
    try:
        training.check_against(spe)
    except ValueError as err:
        raise ArgumentError("training_steps", training_steps,
                            f"{err} Choose a `training_steps` that covers the run's schedule, "
                            "or leave it at the run's budget.") from None
    return training, spe


def rewind_points_for(rewind_points, ctx: RunContext, spe: int,
                      budget: int) -> list[tuple[str, int]]:
    """The rewind points ``k`` as ``[(step string, iteration)]``, duplicates dropped.

    Args:
        rewind_points: a step string, a sequence of them, or ``None`` for the run's.
        ctx: the replicate.
        spe: iterations per epoch; budget: the training budget in iterations.

    Raises:
        ValueError: naming ``rewind_points`` for a bad step string or a point at or
            past ``budget``.
    """
    if rewind_points is None:
        rewind_points = [ctx.hparams.pruning.rewind]
    if isinstance(rewind_points, (str, Steps)):
        rewind_points = [rewind_points]
    out = []
    for text in rewind_points:
        steps = Steps.parse(text, "rewind_points")
        k = steps.iterations(spe)
        if k >= budget:
            raise ArgumentError("rewind_points", str(steps),
                                f"`rewind_points` {str(steps)!r} is iteration {k}, not before "
                                f"the end of training ({budget} iterations); use a smaller "
                                "rewind point or a larger `training_steps`.")
        if (str(steps), k) not in out:
            out.append((str(steps), k))
    return out


# ---------------------------------------------------------------- training setup


def make_trainer(ctx: RunContext, dataset, training, rewinds, runtime: Runtime | None,
                 seed=None, model_fn=None) -> Trainer:
    """A ``tf_lottery.trainer.Trainer`` for the analyses of ``ctx``.

    Args:
        ctx: the replicate.
        dataset: the data trained on.
        training: its ``TrainingHparams`` (``training_for``).
        rewinds: ``[(name, iteration)]`` of the rewind points trained from; the
            trainer's own rewind point is their greatest common divisor, so each is an
            event of its schedule.
        runtime: a ``Runtime`` (default ``Runtime()``); ``deterministic=True`` seeds Keras
            with ``ctx.seed`` and turns on op determinism for the whole process.
        seed: the trainer's seed (default ``ctx.seed``).
        model_fn: ``seed -> keras.Model`` (default ``ctx.build``).
    """
    g = 0
    for _, k in rewinds:
        g = math.gcd(g, k)
    runtime = runtime or Runtime()
    if runtime.deterministic:
        keras.utils.set_random_seed(ctx.seed)
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    return Trainer(model_fn or ctx.build, dataset, training,
                   seed=ctx.seed if seed is None else seed, rewind=f"{g}it", runtime=runtime)


def theta_k(ctx: RunContext, trainer: Trainer, k: int, theta_0: list, ones: dict,
            cache: dict) -> list:
    """``theta_k`` as a ``get_weights()`` list.

    ``theta_0`` for ``k = 0``; the run's rewind weights when ``k`` is the run's rewind
    point; otherwise the dense network (``ones``) trained by ``trainer`` from
    ``theta_0`` to ``k`` with the run's data order and schedule. Results are kept in
    ``cache`` (``{k: weights}``).
    """
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


def short_summary(summary: dict) -> dict:
    """The ``SHORT_KEYS`` of a training summary (missing ones ``None``)."""
    return {k: summary.get(k) for k in SHORT_KEYS}


def mask_sparsity(masks) -> float:
    """Fraction of pruned entries over all arrays of ``{key: 0/1 array}``, in [0, 1]."""
    total = sum(m.size for m in masks.values())
    return 1.0 - sum(float(m.sum()) for m in masks.values()) / total


# -------------------------------------------------------------- the entry file


class EntryFile:
    """``analysis/<name>.json``: ``{"analysis", "run_dir", "replicate_dir", "entries"}``,
    entries keyed by their settings (``entry["key"]``, a dict of JSON values: step
    fields as step strings such as ``"500it"``), rewritten atomically after each.

    Args:
        path: the JSON file (``RunContext.analysis_path(name)``).
        name: the analysis name.
        ctx: the replicate.
        overwrite: recompute entries found in the file (each once per process).
    """

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
        """The stored entry with ``key``, or ``None``."""
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
