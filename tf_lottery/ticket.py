"""The lottery-ticket driver: iterative magnitude pruning (IMP) with rewinding and controls.

``fit`` runs the algorithm of Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR
2019, with the rewinding of Frankle et al., "Stabilizing the Lottery Ticket Hypothesis"
/ "Linear Mode Connectivity and the LTH" (2019, 2020):

1. initialize ``theta_0`` (saved); 2. train the dense network (level 0) for ``T``
iterations, saving ``theta_k`` at the rewind point ``k``; 3. prune a fraction of the
surviving weights (magnitude of the trained weights by default); 4. reset the survivors
to ``theta_k`` and train from iteration ``k`` to ``T``; repeat 3-4 for each level. Each
level also trains the control branches ``reinit`` (same mask, fresh initialization;
``reinit_draws`` independent draws, ``reinit``, ``reinit_1``, ...) and ``random_prune``
(random mask with the same per-layer counts, on ``theta_k``).

Variants, all with the same controls, run layout and results: ``prune_at="init"``
chooses every level's mask from ``theta_k`` itself (pruning at initialization with
SNIP, GraSP, SynFlow, magnitude or random; the sanity checks of Frankle et al., ICLR
2021, are the controls); ``early_bird`` draws each next mask as soon as it stops
changing (You et al., ICLR 2020); ``movement_score`` and ``accumulated_change`` prune by
scores the engine accumulates while each level trains (Sanh et al., NeurIPS 2020).

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
from tf_lottery.early_bird import EarlyBird
from tf_lottery.hparams import CONTROLS, PruningHparams, TrainingHparams, derive_seed
from tf_lottery.training import Runtime, _check_dataset, _Engine, stop_on_sigterm

__all__ = [
    "LotteryResult",
    "DivergedError",
    "fit",
]


@dataclasses.dataclass
class LotteryResult:
    """What ``fit`` returns: every level's and branch's summary, and where files are.

    Attributes:
        run_dir: the replicate directory holding ``level_<k>/<branch>/``.
        levels: ``levels[k][branch]`` is the ``summary.json`` dict of that branch, keyed
            by its directory name (``"reinit_1"``, ``"reinit_2"`` for the further reinit
            draws, see ``paths.branch_dir_name``).
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
        accuracy there and at the end, one row per level and branch. A branch whose loss
        became non-finite shows ``diverged at <iteration>``; a final accuracy no better
        than the most frequent class is marked ``(chance)``. With several reinit draws,
        each has its row (``reinit draw 1``, ...) and a row ``reinit mean of <n>``
        follows them: the mean of each column over the draws (early-stopping iteration
        rounded; a metric missing from a draw is left out of its mean)."""
        rows = [
            "| level | branch | remaining % | sparsity | early-stop it | test acc @ES | final test acc |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]

        def row(level, branch, s):
            es = s.get("early_stop_iteration")
            acc = s.get("early_stop_test_accuracy")
            if s.get("diverged"):
                es = f"diverged at {s.get('diverged_iteration')}"
            final = f"{s['final_test_accuracy']:.4f}" + (" (chance)" if s.get("at_chance")
                                                          else "")
            return (
                f"| {level} | {branch} | {100 * (1 - s['sparsity']):.1f} | {s['sparsity']:.4f} | "
                f"{'-' if es is None else es} | {'-' if acc is None else f'{acc:.4f}'} | "
                f"{final} |"
            )

        def mean_row(level, draws):
            def mean(key):
                values = [s[key] for s in draws if s.get(key) is not None]
                return float(np.mean(values)) if values else None

            es = mean("early_stop_iteration")
            return row(level, f"reinit mean of {len(draws)}", {
                "sparsity": mean("sparsity"),
                "early_stop_iteration": None if es is None else round(es),
                "early_stop_test_accuracy": mean("early_stop_test_accuracy"),
                "final_test_accuracy": mean("final_test_accuracy")})

        for level, branches in enumerate(self.levels):
            reinit = [n for n in branches if paths.parse_branch_dir_name(n)[0] == "reinit"]
            for name, summary in branches.items():
                branch, draw = paths.parse_branch_dir_name(name)
                rows.append(row(level, f"{branch} draw {draw}" if draw else name, summary))
                if len(reinit) > 1 and name == reinit[-1]:
                    rows.append(mean_row(level, [branches[n] for n in reinit]))
        for target, summary in sorted(self.one_shot.items()):
            rows.append(row(f"one-shot {target:g}", "lottery", summary))
        return "\n".join(rows)


class DivergedError(RuntimeError):
    """A branch's training loss became non-finite; ``fit`` stops there.

    The branch's summary (``"diverged": true``, ``"diverged_iteration"``) is written and
    every level finished before it is kept; no mask is computed from its weights.
    Rerunning the same experiment raises it again: change the hyperparameters (a lower
    ``learning_rate``, a ``warmup``), which makes another run directory.

    Attributes:
        level, branch: the branch that diverged.
        iteration: iterations done at the end of the compiled call (at most
            ``steps_per_execution`` iterations) in which its loss became non-finite.
        result: the ``LotteryResult`` up to and including that branch.
    """

    def __init__(self, level, branch: str, iteration, result: LotteryResult):
        super().__init__(
            f"level {level} {branch} diverged: its training loss became non-finite at "
            f"iteration {iteration}. Lower `learning_rate` or add a `warmup`; finished "
            f"levels are kept in {result.run_dir}.")
        self.level, self.branch, self.iteration, self.result = level, branch, iteration, result


def _load_finished(branch_dir: paths.BranchDir):
    """The summary of a finished branch, or ``None`` if it must be (re)trained."""
    if not branch_dir.is_finished():
        return None
    try:
        return files.read_json(branch_dir.summary)
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
    one-shot tickets. Everything is written under ``run_dir`` (laid out as
    ``tf_lottery.paths.ReplicateDir`` says), and a rerun with the same arguments skips
    finished branches and resumes the one in progress from its last checkpoint.

    Args:
        model_fn: ``model_fn(seed: int) -> keras.Model`` building a fresh, initialized
            Sequential or Functional model (plain layers are wrapped with
            ``tf_lottery.wrap``) that maps a batch of ``dataset`` inputs to logits of
            shape ``(batch, classes)``. Called under ``strategy.scope()`` and the
            global dtype policy in force.
        dataset: a ``tf_lottery.data.Dataset`` (float32 inputs, int labels; the
            validation split drives early stopping and may be empty).
        training: how each network is trained (``TrainingHparams``).
        pruning_hparams: levels, rates, criterion, rewind point and controls (with
            ``reinit_draws`` reinit networks per level); ``prune_at="init"`` chooses
            every mask from ``theta_k`` (a class-balanced ``score_batch`` for ``snip``
            and ``grasp``), ``early_bird`` stops each level but the last at its draw,
            and ``movement_score``/``accumulated_change`` prune by the scores the
            previous level's lottery branch accumulated (``scores.npz``).
        run_dir: the replicate directory to write (created if needed).
        seed: fixes initialization, data order, augmentation and the controls.
        strategy: a ``tf.distribute.Strategy`` (default: the current one).
        runtime: speed and logging options (``Runtime``).
        augment: apply ``tf_lottery.data.augment`` (flip and crop) to training batches.

    Returns:
        A ``LotteryResult`` with each level's and branch's summary.

    ``SIGTERM`` during ``fit`` writes a checkpoint of the branch in training and raises
    ``tf_lottery.training.Preempted``; the rerun resumes from it.

    Raises:
        DivergedError: a branch's training loss became non-finite (after writing its
            summary); nothing is pruned from its weights.
        tf_lottery.training.Preempted: on ``SIGTERM``, after the checkpoint.
        ValueError: before any file is written, for inconsistent lengths (a rewind point
            past the budget, ...), a dataset without the needed arrays, or a
            ``model_fn`` that does not return a keras.Model.
    """
    _check_dataset(dataset)
    runtime = runtime or Runtime()
    training.check_against(training.steps_per_epoch(len(dataset.y_train)),
                           pruning_hparams.rewind)
    strategy = strategy or tf.distribute.get_strategy()
    if runtime.deterministic:
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
    engine = _Engine(model_fn, dataset, training, pruning_hparams, seed, strategy, runtime, augment)
    run_dir = os.fspath(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    with stop_on_sigterm():
        return _Driver(engine, pruning_hparams, run_dir).run()


class _Driver:
    """The level loop of ``fit``: which weights and masks each branch starts from."""

    def __init__(self, engine: _Engine, hp: PruningHparams, run_dir: str):
        self.engine = engine
        self.hp = hp
        self.dir = paths.ReplicateDir.at(run_dir)
        self.model = engine.model
        self.result = LotteryResult(run_dir, [])

    def _save_weights(self, path):
        with files.atomic_path(path) as tmp:
            self.model.save_weights(tmp)

    def _load_weights(self, path) -> list[np.ndarray]:
        self.model.load_weights(path)
        return self.model.get_weights()

    def _write_results(self):
        files.atomic_write_json(self.dir.results, self.result.to_dict())

    def _branch(self, level, branch, branch_dir: paths.BranchDir, **kwargs):
        """Trains one branch, or reads its summary if it finished."""
        done = _load_finished(branch_dir)
        if done is None:
            logging.info("level %d %s: training", level, branch)
            done = self.engine.train_branch(branch_dir.path, level=level, branch=branch,
                                            **kwargs)
            logging.info(
                "level %d %s: sparsity %.4f, early-stop iteration %s, test accuracy %.4f",
                level, branch, done["sparsity"], done["early_stop_iteration"],
                done["final_test_accuracy"],
            )
        return done

    def _stop_if_diverged(self, level, branch: str, done: dict, so_far: dict,
                          target: float | None = None) -> None:
        """Raises ``DivergedError`` (after recording the branch in ``results.json``) when
        ``done`` is the summary of a diverged branch."""
        if not done.get("diverged"):
            return
        if target is None:
            self.result.levels.append({**so_far, branch: done})
        else:
            self.result.one_shot[target] = done
        self._write_results()
        raise DivergedError(level if target is None else f"one-shot {target:g}", branch,
                            done.get("diverged_iteration"), self.result)

    def run(self) -> LotteryResult:
        e, hp, rep = self.engine, self.hp, self.dir
        if os.path.exists(rep.init_weights):
            theta_0 = self._load_weights(rep.init_weights)
        else:
            theta_0 = self.model.get_weights()
            self._save_weights(rep.init_weights)
        ones = {k: np.ones_like(v) for k, v in masking.get_masks(self.model).items()}

        def capture():
            self._save_weights(rep.rewind_weights)

        dense_dir = rep.branch(0, "lottery")
        if e.k > 0 and not os.path.exists(rep.rewind_weights) and _load_finished(dense_dir):
            os.remove(dense_dir.summary)  # rewind point lost: redo
        dense = self._branch(
            0, "lottery", dense_dir, start=0, end=e.T, weights=theta_0, masks=ones,
            offset=0, frozen=False, capture_at=e.k if e.k > 0 else None, on_capture=capture,
            **self._watch(0),
        )
        self._stop_if_diverged(0, "lottery", dense, {})
        self.result.levels.append({"lottery": dense})
        self._write_results()
        theta_k = theta_0 if e.k == 0 else self._load_weights(rep.rewind_weights)
        self.theta_k = theta_k
        reference = self._prunable(theta_k)
        previous = self._load_weights(dense_dir.final_weights)
        dense_final = previous

        for level in range(1, hp.levels + 1):
            if hp.prune_at == "init":
                masks = self._masks_at_init(rep.branch(level, "lottery").mask,
                                            target=None, level=level)
            else:
                masks = self._next_masks(level, previous, reference)
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
                        masks, seed=derive_seed(e.seed, "random_prune", level),
                        structure=hp.structure, model=self.model,
                    )
                summaries[control] = self._branch(
                    level, control, rep.branch(level, control), weights=weights,
                    masks=control_masks, **common,
                )
                self._stop_if_diverged(level, control, summaries[control], summaries)
                if control == "reinit":
                    self._further_reinit_draws(level, masks, summaries, common)
            lottery = self._branch(
                level, "lottery", rep.branch(level, "lottery"), weights=start_weights,
                masks=masks, **common, **self._watch(level),
            )
            self._stop_if_diverged(level, "lottery", lottery, summaries)
            summaries = {"lottery": lottery, **summaries}
            self.result.levels.append(summaries)
            self._write_results()
            previous = self._load_weights(rep.branch(level, "lottery").final_weights)

        for target in hp.one_shot:
            out = rep.one_shot(target)
            if hp.prune_at == "init":
                masks = self._masks_at_init(out.mask, target=target)
            elif os.path.exists(out.mask):
                masks = masking.load_masks(out.mask)
            else:
                self.model.set_weights(dense_final)
                masks = pruning.one_shot_masks(
                    self.model, target, hp, reference_weights=reference,
                    seed=derive_seed(e.seed, "one_shot", target), **self._evidence(0))
            start_weights = theta_k if hp.retrain == "rewind" else dense_final
            done = self._branch(
                -1, "one_shot", out, start=e.k, end=e.T, weights=start_weights, masks=masks,
                offset=e.T if hp.retrain == "finetune" else e.k, frozen=hp.retrain == "finetune",
            )
            self._stop_if_diverged(-1, "lottery", done, {}, target=target)
            self.result.one_shot[target] = done
            self._write_results()
        return self.result

    def _further_reinit_draws(self, level, masks, summaries: dict, common: dict) -> None:
        """Trains draws 1..``reinit_draws - 1`` of the reinit control of ``level``
        into ``level_<k>/reinit_<d>/`` (``paths.branch_dir_name``), each from a fresh
        network of seed ``derive_seed(seed, "reinit", level, d)`` under the ticket's
        mask, and adds their summaries to ``summaries`` under those names.

        Draw 0 is the ``reinit`` branch itself (seed ``derive_seed(seed, "reinit",
        level)``), so a run with one draw is unchanged and can be extended in place.
        The engine's random state outside the weights (the dropout layers' seed
        generators, ``[seed, counter]``) starts each draw at ``[derive_seed(seed,
        "reinit", level, d, "dropout", i), 0]`` and is put back after the draws: a draw
        trains the same whatever ran before it (a rerun that adds draws to a finished
        level reproduces them), and the other branches train exactly as without draws.
        """
        e = self.engine
        if self.hp.reinit_draws < 2:
            return
        generators = e._other_variables()  # dropout seed-generator states
        state = [v.numpy() for v in generators]
        for draw in range(1, self.hp.reinit_draws):
            for i, variable in enumerate(generators):
                if tuple(variable.shape) == (2,):
                    variable.assign(np.asarray(
                        [derive_seed(e.seed, "reinit", level, draw, "dropout", i), 0],
                        dtype=state[i].dtype))
            name = paths.branch_dir_name("reinit", draw)
            summaries[name] = self._branch(
                level, name, self.dir.branch(level, "reinit", draw),
                weights=e.fresh_weights(derive_seed(e.seed, "reinit", level, draw)),
                masks=masks, **common,
            )
            self._stop_if_diverged(level, name, summaries[name], summaries)
        for variable, value in zip(generators, state):
            variable.assign(value)

    def _prunable(self, weights):
        self.model.set_weights(weights)
        return masking.get_prunable_weights(self.model)

    def _next_masks(self, level, previous, reference):
        """Level ``level``'s mask: pruned from level ``level-1``'s trained lottery network."""
        path = self.dir.branch(level, "lottery").mask
        if os.path.exists(path):
            try:
                return masking.load_masks(path)
            except ValueError as err:
                logging.warning("%s; recomputing the mask.", err)
        self.model.set_weights(previous)  # weights and masks of the previous level
        return self._prune_current(level, reference, **self._evidence(level - 1))

    def _prune_current(self, level, reference, **evidence):
        """The mask of level ``level`` pruned from the model's current weights and masks."""
        hp = self.hp
        layer_rates, output_rate = pruning.layer_rates_for(self.model, hp)
        return pruning.prune(
            self.model, rate=hp.rate, scope=hp.scope, criterion=hp.criterion,
            layer_rates=layer_rates, output_rate=output_rate, exclude=list(hp.exclude),
            reference_weights=reference, seed=derive_seed(self.engine.seed, "prune", level),
            structure=hp.structure, **evidence,
        )

    def _feeds_next_level(self, level) -> bool:
        """Whether level ``level``'s trained lottery network chooses another mask."""
        hp = self.hp
        return hp.prune_at == "trained" and (level < hp.levels or (level == 0 and hp.one_shot))

    def _watch(self, level) -> dict:
        """``train_branch`` arguments of level ``level``'s lottery branch: its early-bird
        watch and whether it keeps its accumulated scores (for the next level's mask)."""
        hp, e = self.hp, self.engine
        if not self._feeds_next_level(level):
            return {}
        watch = {"keep_scores": e.accumulator is not None}
        if hp.early_bird and level < hp.levels:
            watch["early_bird"] = EarlyBird(lambda: self._prune_current(level + 1, None),
                                            hp.early_bird_epsilon)
        return watch

    def _evidence(self, level) -> dict:
        """What the criterion scores besides the weights: a batch of training data
        (``snip``, ``grasp``) or the scores level ``level``'s lottery branch
        accumulated (``movement_score``, ``accumulated_change``)."""
        criterion = self.hp.criterion
        if criterion in pruning.DATA_CRITERIA:
            return {"data": score_batch(self.engine.data,
                                        derive_seed(self.engine.seed, "score_batch"))}
        if criterion in pruning.SCORED_CRITERIA:
            return {"scores": files.read_arrays(self.dir.branch(level, "lottery").scores)}
        return {}

    def _masks_at_init(self, path, *, target: float | None, level: int | None = None):
        """Pruning at initialization: the weights at the rewind point, all-ones masks,
        pruned straight to one-shot ``target`` or to the sparsity of ``level`` on the
        ladder (each key at ``1 - (1 - rate_key) ** level``, globally ``1 - (1 - rate)
        ** level``). Read back from ``path`` when it was chosen before."""
        if os.path.exists(path):
            try:
                return masking.load_masks(path)
            except ValueError as err:
                logging.warning("%s; recomputing the mask.", err)
        hp, e = self.hp, self.engine
        self.model.set_weights(self.theta_k)
        ones = {k: np.ones_like(v) for k, v in masking.get_masks(self.model).items()}
        masking.set_masks(self.model, ones)
        evidence = self._evidence(0)
        if target is not None:
            return pruning.one_shot_masks(
                self.model, target, hp, seed=derive_seed(e.seed, "one_shot", target),
                **evidence)
        return pruning.level_masks(self.model, level, hp,
                                   seed=derive_seed(e.seed, "prune", level), **evidence)


#: Training examples per class that ``snip`` and ``grasp`` score on (GraSP's code samples
#: 10 per class; SNIP scores one mini-batch).
SCORE_EXAMPLES_PER_CLASS = 10


def score_batch(dataset, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced batch of the training split for data criteria: ``(x, y)``,
    float32 ``(n, *input_shape)`` and int32 ``(n,)``, ``SCORE_EXAMPLES_PER_CLASS``
    examples of every class present (fewer where a class has fewer), drawn with
    ``seed`` and sorted by index."""
    rng = np.random.default_rng(seed)
    y = np.asarray(dataset.y_train)
    picked = []
    for label in np.unique(y):
        where = np.flatnonzero(y == label)
        picked.append(rng.choice(where, min(SCORE_EXAMPLES_PER_CLASS, where.size),
                                 replace=False))
    index = np.sort(np.concatenate(picked))
    return np.asarray(dataset.x_train[index], np.float32), y[index].astype(np.int32)
