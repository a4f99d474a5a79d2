"""The lottery-ticket driver: iterative magnitude pruning (IMP) with rewinding and controls.

``fit`` runs the algorithm of Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR
2019, with the rewinding of Frankle et al., "Stabilizing the Lottery Ticket Hypothesis"
/ "Linear Mode Connectivity and the LTH" (2019, 2020):

1. initialize ``theta_0`` (saved); 2. train the dense network (level 0) for ``T``
iterations, saving ``theta_k`` at the rewind point ``k``; 3. prune a fraction of the
surviving weights (magnitude of the trained weights by default); 4. reset the survivors
to ``theta_k`` and train from iteration ``k`` to ``T``; repeat 3-4 for each level. Each
level also trains the control branches ``reinit`` (same mask, fresh initialization) and
``random_prune`` (random mask with the same per-layer counts, on ``theta_k``).

One compiled model serves every level and branch: weights, masks and optimizer state are
*assigned*, never rebuilt, so nothing is retraced or recompiled between levels. Training
data order is a function of the iteration number only (a fixed permutation stream), so a
level resumed from a checkpoint sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_lottery import files, masking, paths, pruning
from tf_lottery.hparams import CONTROLS, PruningHparams, TrainingHparams, derive_seed
from tf_lottery.training import Runtime, _check_dataset, _Engine

__all__ = [
    "LotteryResult",
    "fit",
]


@dataclasses.dataclass
class LotteryResult:
    """What ``fit`` returns: every level's and branch's summary, and where files are.

    Attributes:
        run_dir: the replicate directory holding ``level_<k>/<branch>/``.
        levels: ``levels[k][branch]`` is the ``summary.json`` dict of that branch.
        one_shot: ``{target sparsity: summary}`` of one-shot tickets.
    """

    run_dir: str
    levels: list[dict[str, dict]]
    one_shot: dict[float, dict] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "run_dir": self.run_dir,
            "levels": [{"level": k, "branches": b} for k, b in enumerate(self.levels)],
            "one_shot": [{"target": t, "summary": s} for t, s in sorted(self.one_shot.items())],
        }

    def table(self) -> str:
        """Markdown table: level, weights remaining, early-stopping iteration, test
        accuracy there and at the end, one row per level and branch."""
        rows = [
            "| level | branch | remaining % | sparsity | early-stop it | test acc @ES | final test acc |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]

        def row(level, branch, s):
            es = s.get("early_stop_iteration")
            acc = s.get("early_stop_test_accuracy")
            return (
                f"| {level} | {branch} | {100 * (1 - s['sparsity']):.1f} | {s['sparsity']:.4f} | "
                f"{'-' if es is None else es} | {'-' if acc is None else f'{acc:.4f}'} | "
                f"{s['final_test_accuracy']:.4f} |"
            )

        for level, branches in enumerate(self.levels):
            for branch, summary in branches.items():
                rows.append(row(level, branch, summary))
        for target, summary in sorted(self.one_shot.items()):
            rows.append(row(f"one-shot {target:g}", "lottery", summary))
        return "\n".join(rows)


def _load_finished(out_dir: str):
    """The summary of a finished branch, or ``None`` if it must be (re)trained."""
    path = os.path.join(out_dir, "summary.json")
    needed = [path, os.path.join(out_dir, "final.weights.h5"), os.path.join(out_dir, "mask.npz")]
    if not all(os.path.exists(p) for p in needed):
        return None
    try:
        return files.read_json(path)
    except ValueError as err:
        logging.warning("%s; retraining that branch.", err)
        return None


def fit(
    model_fn,
    dataset,
    *,
    training: TrainingHparams,
    pruning_hparams: PruningHparams,
    run_dir: str | os.PathLike,
    seed: int = 0,
    strategy: tf.distribute.Strategy | None = None,
    runtime: Runtime | None = None,
    augment: bool = False,
) -> LotteryResult:
    """Finds lottery tickets by iterative magnitude pruning with rewinding.

    Runs level 0 (dense) and ``pruning_hparams.levels`` pruned levels, each training the
    ``lottery`` branch and the requested control branches for the same budget, then the
    one-shot tickets. Everything is written under ``run_dir`` (see ``runs``), and a
    rerun with the same arguments skips finished branches and resumes the one in
    progress from its last checkpoint.

    Args:
        model_fn: ``model_fn(seed: int) -> keras.Model`` building a fresh, initialized
            Sequential or Functional model (plain layers are wrapped with
            ``tf_lottery.wrap``) that maps a batch of ``dataset`` inputs to logits of
            shape ``(batch, classes)``. Called under ``strategy.scope()`` and the
            global dtype policy in force.
        dataset: a ``tf_lottery.data.Dataset`` (float32 inputs, int labels; the
            validation split drives early stopping and may be empty).
        training: how each network is trained (``TrainingHparams``).
        pruning_hparams: levels, rates, criterion, rewind point and controls.
        run_dir: the replicate directory to write (created if needed).
        seed: fixes initialization, data order, augmentation and the controls.
        strategy: a ``tf.distribute.Strategy`` (default: the current one).
        runtime: speed and logging options (``Runtime``).
        augment: apply ``tf_lottery.data.augment`` (flip and crop) to training batches.

    Returns:
        A ``LotteryResult`` with each level's and branch's summary.

    Raises:
        ValueError: before any file is written, for inconsistent lengths (a rewind point
            past the budget, ...), a dataset without the needed arrays, or a
            ``model_fn`` that does not return a keras.Model.
    """
    _check_dataset(dataset)
    runtime = runtime or Runtime()
    steps_per_epoch = math.ceil(len(dataset.y_train) / training.batch_size)
    training.check_against(steps_per_epoch, pruning_hparams.rewind)
    strategy = strategy or tf.distribute.get_strategy()
    if runtime.deterministic:
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
    engine = _Engine(model_fn, dataset, training, pruning_hparams, seed, strategy, runtime, augment)
    run_dir = os.fspath(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    return _Driver(engine, pruning_hparams, run_dir).run()


class _Driver:
    """The level loop of ``fit``: which weights and masks each branch starts from."""

    def __init__(self, engine: _Engine, hp: PruningHparams, run_dir: str):
        self.engine = engine
        self.hp = hp
        self.run_dir = run_dir
        self.model = engine.model
        self.result = LotteryResult(run_dir, [])

    def _weights_file(self, name):
        return os.path.join(self.run_dir, f"{name}.weights.h5")

    def _save_weights(self, name):
        with files.atomic_path(self._weights_file(name), ".weights.h5") as tmp:
            self.model.save_weights(tmp)

    def _load_weights(self, path) -> list[np.ndarray]:
        self.model.load_weights(path)
        return self.model.get_weights()

    def _write_results(self):
        files.atomic_write_json(os.path.join(self.run_dir, "results.json"), self.result.to_dict())

    def _branch(self, level, branch, out_dir, **kwargs):
        done = _load_finished(out_dir)
        if done is None:
            logging.info("level %d %s: training", level, branch)
            done = self.engine.train_branch(out_dir, level=level, branch=branch, **kwargs)
            logging.info(
                "level %d %s: sparsity %.4f, early-stop iteration %s, test accuracy %.4f",
                level, branch, done["sparsity"], done["early_stop_iteration"],
                done["final_test_accuracy"],
            )
        return done

    def run(self) -> LotteryResult:
        e, hp = self.engine, self.hp
        init_file = self._weights_file("init")
        if os.path.exists(init_file):
            theta_0 = self._load_weights(init_file)
        else:
            theta_0 = self.model.get_weights()
            self._save_weights("init")
        ones = {k: np.ones_like(v) for k, v in masking.get_masks(self.model).items()}
        rewind_file = self._weights_file("rewind")

        def capture():
            self._save_weights("rewind")

        level_dir = lambda k: os.path.join(self.run_dir, f"level_{k}")  # noqa: E731
        dense_dir = os.path.join(level_dir(0), "lottery")
        if e.k > 0 and not os.path.exists(rewind_file) and _load_finished(dense_dir):
            os.remove(os.path.join(dense_dir, "summary.json"))  # rewind point lost: redo
        dense = self._branch(
            0, "lottery", dense_dir, start=0, end=e.T, weights=theta_0, masks=ones,
            offset=0, frozen=False, capture_at=e.k if e.k > 0 else None, on_capture=capture,
        )
        self.result.levels.append({"lottery": dense})
        self._write_results()
        theta_k = theta_0 if e.k == 0 else self._load_weights(rewind_file)
        reference = self._prunable(theta_k)
        previous = self._load_weights(os.path.join(dense_dir, "final.weights.h5"))
        dense_final = previous

        for level in range(1, hp.levels + 1):
            out = level_dir(level)
            masks = self._next_masks(out, previous, reference, level)
            start_weights = theta_k if hp.retrain == "rewind" else previous
            common = dict(start=e.k, end=e.T, offset=e.T if hp.retrain == "finetune" else e.k,
                          frozen=hp.retrain == "finetune")
            summaries = {}
            for control in [c for c in CONTROLS if c in hp.controls]:
                if control == "reinit":
                    weights = e.fresh_weights(derive_seed(e.seed, "reinit", level))
                    control_masks = masks
                else:
                    weights = start_weights
                    control_masks = pruning.random_masks_like(
                        masks, seed=derive_seed(e.seed, "random_prune", level)
                    )
                summaries[control] = self._branch(
                    level, control, os.path.join(out, control), weights=weights,
                    masks=control_masks, **common,
                )
            summaries = {"lottery": self._branch(
                level, "lottery", os.path.join(out, "lottery"), weights=start_weights,
                masks=masks, **common,
            ), **summaries}
            self.result.levels.append(summaries)
            self._write_results()
            previous = self._load_weights(os.path.join(out, "lottery", "final.weights.h5"))

        for target in hp.one_shot:
            out = os.path.join(self.run_dir, "one_shot", f"sparsity_{target:.4f}", "lottery")
            mask_file = os.path.join(out, "mask.npz")
            if os.path.exists(mask_file):
                masks = masking.load_masks(mask_file)
            else:
                self.model.set_weights(dense_final)
                masks = one_shot_masks(self.model, target, hp, reference_weights=reference,
                                       seed=derive_seed(e.seed, "one_shot", target))
            start_weights = theta_k if hp.retrain == "rewind" else dense_final
            self.result.one_shot[target] = self._branch(
                -1, "one_shot", out, start=e.k, end=e.T, weights=start_weights, masks=masks,
                offset=e.T if hp.retrain == "finetune" else e.k, frozen=hp.retrain == "finetune",
            )
            self._write_results()
        return self.result

    def _prunable(self, weights):
        self.model.set_weights(weights)
        return masking.get_prunable_weights(self.model)

    def _next_masks(self, out, previous, reference, level):
        """Level ``level``'s mask: pruned from level ``level-1``'s trained lottery network."""
        path = os.path.join(out, "lottery", "mask.npz")
        if os.path.exists(path):
            try:
                return masking.load_masks(path)
            except ValueError as err:
                logging.warning("%s; recomputing the mask.", err)
        self.model.set_weights(previous)  # weights and masks of the previous level
        hp = self.hp
        layer_rates, output_rate = layer_rates_for(self.model, hp)
        return pruning.prune(
            self.model, rate=hp.rate, scope=hp.scope, criterion=hp.criterion,
            layer_rates=layer_rates, output_rate=output_rate, exclude=list(hp.exclude),
            reference_weights=reference, seed=derive_seed(self.engine.seed, "prune", level),
        )

