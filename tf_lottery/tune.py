"""Hyperparameter search over lottery-ticket experiments with keras-tuner.

    python -m tf_lottery.tune --flagfile=configs/quickstart.flags \\
        --tune=learning_rate,warmup,rewind,prune_rate --max_trials=10 --tuner=hyperband
    tf-lottery-tune ...   (the same command as a console script)

Each keras-tuner trial is a whole, short lottery experiment (``tf_lottery.ticket.fit``):
the dense network and as many pruning levels as it takes to reach
``target_sparsity`` (no control branches), with the trial's values of the tuned flags
and every other setting from the base flags. Its score is the accuracy of the lottery
ticket at the first level at or beyond ``target_sparsity``, at its early-stopping
iteration (minimum validation loss): the **validation** accuracy by default
(``objective="val"``). ``objective="test"`` selects on the test set and exists only for
analyses; a search that selects on test reports an optimistic test accuracy.

Search spaces (``search_space``), around the base experiment:

* ``learning_rate``: log-uniform in ``[lr / lr_factor, lr * lr_factor]``
  (``lr_factor = 4``), rounded to 4 significant digits.
* ``warmup``: linear warmup of 0, 1, 5 or 10 % of the training budget (iterations,
  multiples of 10).
* ``rewind``: rewinding to iteration 0 or 0.5, 1, 2, 5 % of the budget (Frankle et al.
  2019 rewind to 0.1-7 %), multiples of 10 iterations, all before the end of training.
* ``prune_rate``: 0.2 to 0.6 in steps of 0.05 per level; ``prune_rate_output`` and
  ``prune_rate_conv`` (when set) keep their ratio to ``prune_rate``.

keras-tuner drives the search (``BayesianOptimizationOracle``, which needs scikit-learn,
``HyperbandOracle`` or ``RandomSearchOracle``);
``LotteryTuner`` is a ``keras_tuner.Tuner`` whose ``run_trial`` runs the experiment.
With Hyperband a trial trains ``tuner/epochs / hyperband_max_epochs`` of the budget
(warmup and rewind scaled alike; the full-budget values go to the best flagfile), from
scratch (a lottery run cannot continue with a longer schedule).

Files under ``tune_dir`` (default: ``<run_root>/<project>``, the run root of the
experiments, ``<project> = tune_<model>_<dataset>_<hash of the base experiment and the
search settings>``): ``<project>/`` (keras-tuner's project: oracle state and one
``trial_<id>/`` per trial, with ``trial_info.json``), ``runs/<model>_<dataset>_<hash>/``
(each trial's lottery run, as written by ``tf_lottery.main``), ``best.flags`` (the best
trial's flags over the base flags, ready for ``python -m tf_lottery.main
--flagfile=...``), ``trials.md`` and ``trials.csv``. Rerunning the same search resumes
it: keras-tuner reloads its project (``overwrite=False``), finished trials are kept, an
interrupted trial reruns and its lottery run resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os

import keras
import keras_tuner
from absl import logging

from tf_lottery import masking, pruning, files
from tf_lottery.hparams import ExperimentHparams, Steps, derive_seed

__all__ = [
    "TUNABLE",
    "TUNERS",
    "OBJECTIVES",
    "TuneResult",
    "LotteryTuner",
    "search_space",
    "levels_to_reach",
    "trial_hparams",
    "trial_flags",
    "search_name",
    "tune",
]

#: Flags the search can tune.
TUNABLE = ("learning_rate", "warmup", "rewind", "prune_rate")
#: keras-tuner oracles: Bayesian optimization (Gaussian process; needs scikit-learn,
#: the ``keras-tuner[bayesian]`` extra), Hyperband, or random search.
TUNERS = ("bayesian", "hyperband", "random")
#: What a trial is scored on: the ticket's validation or test accuracy at early stopping.
OBJECTIVES = ("val", "test")

_WARMUP_FRACTIONS = (0.0, 0.01, 0.05, 0.1)
_REWIND_FRACTIONS = (0.0, 0.005, 0.01, 0.02, 0.05)
_PRUNE_RANGE = (0.2, 0.6, 0.05)


def _round_to(value: float, grid: int = 10) -> int:
    return int(grid * round(value / grid))


def _sig(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def search_space(base: ExperimentHparams, names, steps_per_epoch: int, *,
                 lr_factor: float = 4.0) -> keras_tuner.HyperParameters:
    """The keras-tuner search space of ``names`` around ``base``.

    Args:
        base: the base experiment (its values centre the learning-rate range and fix the
            budget the warmup and rewind choices are fractions of).
        names: flags to tune, a subset of ``TUNABLE``.
        steps_per_epoch: iterations per epoch of the training split (to read ``"ep"``
            step strings).
        lr_factor: the learning rate ranges over ``[lr / lr_factor, lr * lr_factor]``.

    Returns:
        A ``keras_tuner.HyperParameters`` with one entry per name: ``learning_rate``
        (Float, log sampling), ``warmup`` and ``rewind`` (Choice of iterations, int),
        ``prune_rate`` (Float, step 0.05).

    Raises:
        ValueError: a name outside ``TUNABLE`` or ``lr_factor <= 1``.
    """
    _check_names(names)
    if not lr_factor > 1:
        raise ValueError(f"`lr_factor` must be > 1; received lr_factor={lr_factor!r}.")
    budget = base.training.iterations("training_steps", steps_per_epoch)
    hp = keras_tuner.HyperParameters()
    for name in names:
        if name == "learning_rate":
            lr = base.training.learning_rate
            hp.Float("learning_rate", lr / lr_factor, lr * lr_factor, sampling="log")
        elif name == "warmup":
            choices = sorted({_round_to(f * budget) for f in _WARMUP_FRACTIONS})
            hp.Choice("warmup", [c for c in choices if c <= budget], ordered=True)
        elif name == "rewind":
            choices = {0} | {max(10, _round_to(f * budget)) for f in _REWIND_FRACTIONS if f}
            hp.Choice("rewind", sorted(c for c in choices if c < budget), ordered=True)
        elif name == "prune_rate":
            low, high, step = _PRUNE_RANGE
            hp.Float("prune_rate", low, high, step=step)
    return hp


def _check_names(names):
    names = list(names)
    if not names:
        raise ValueError(f"`tune` (--tune) names no flag; choose from {list(TUNABLE)}.")
    for name in names:
        if name not in TUNABLE:
            raise ValueError(
                f"`tune` (--tune) names {name!r}, which is not a tunable flag; choose from "
                f"{list(TUNABLE)}, e.g. --tune=learning_rate,prune_rate."
            )
    if len(set(names)) != len(names):
        raise ValueError(f"`tune` (--tune) lists a flag twice; received {names}.")


def _layer_sizes_and_rates(base: ExperimentHparams, dataset, rate: float, rate_conv, rate_output):
    """``[(size, rate)]`` per prunable tensor of the base model under IMP's schedule."""
    from tf_lottery import models as models_lib

    m = base.model
    initializer = m.base_initializer if m.initializer == "gradinit" else m.initializer
    model = masking.wrap(models_lib.build_model(
        m.model, dataset.input_shape, dataset.num_classes, initializer=initializer,
        dropout=m.dropout, batch_norm=m.batch_norm,
    ))
    masks = masking.get_masks(model)
    output = pruning.output_mask_key(model)
    conv_layers = {name for name, layer in masking.masked_layers(model)
                   if "Conv" in type(layer).masked_base.__name__}
    sizes = []
    for key, mask in masks.items():
        layer = key.rsplit("/", 1)[0]
        if any(e in (key, layer) for e in base.pruning.exclude):
            sizes.append((mask.size, 0.0))
        elif base.pruning.scope == "global":
            sizes.append((mask.size, rate))
        elif key == output and rate_output is not None:
            sizes.append((mask.size, rate_output))
        elif layer in conv_layers and rate_conv is not None:
            sizes.append((mask.size, rate_conv))
        else:
            sizes.append((mask.size, rate))
    return sizes


def levels_to_reach(sizes_and_rates, target_sparsity: float, max_levels: int = 200) -> int:
    """The fewest IMP levels whose total sparsity reaches ``target_sparsity``.

    Args:
        sizes_and_rates: ``[(weights in the tensor, per-level pruning rate)]``.
        target_sparsity: fraction in (0, 1).
        max_levels: give up beyond this many levels.

    Returns:
        ``n >= 1`` with ``1 - sum(size * (1 - rate)^n) / sum(size) >= target_sparsity``
        (to 1e-9; per-layer rounding in the pruner can leave a level a hair short).

    Raises:
        ValueError: if the target is not in (0, 1) or not reachable within
            ``max_levels`` (e.g. every rate is 0, or too many weights are excluded).
    """
    if not 0 < target_sparsity < 1:
        raise ValueError(
            "`target_sparsity` (--tune_target_sparsity) must be a fraction in (0, 1); "
            f"received {target_sparsity!r}."
        )
    total = sum(size for size, _ in sizes_and_rates)
    for n in range(1, max_levels + 1):
        kept = sum(size * (1 - rate) ** n for size, rate in sizes_and_rates)
        if 1 - kept / total >= target_sparsity - 1e-9:
            return n
    raise ValueError(
        f"`target_sparsity` (--tune_target_sparsity) {target_sparsity} is not reached in "
        f"{max_levels} pruning levels at these rates; lower it, raise --prune_rate or "
        "exclude fewer layers."
    )


def _full_values(base: ExperimentHparams, values: dict) -> dict:
    """Trial values as they go into hparams and flags (rounded, derived rates added)."""
    out = {}
    for name, value in values.items():
        if name.startswith("tuner/"):
            continue
        if name == "learning_rate":
            out["learning_rate"] = _sig(value)
        elif name in ("warmup", "rewind"):
            out[name] = f"{int(value)}it"
        elif name == "prune_rate":
            rate = _sig(value)
            out["prune_rate"] = rate
            p = base.pruning
            for derived, base_value in (("prune_rate_output", p.rate_output),
                                        ("prune_rate_conv", p.rate_conv)):
                if base_value is not None and p.rate > 0:
                    out[derived] = _sig(min(0.99, rate * base_value / p.rate))
    return out


def trial_hparams(base: ExperimentHparams, values: dict, *, levels: int,
                  budget_fraction: float = 1.0, steps_per_epoch: int = 1) -> ExperimentHparams:
    """``base`` with a trial's values, ``levels`` pruning levels and no controls.

    Args:
        base: the base experiment.
        values: ``{flag name: value}`` from a keras-tuner trial (``"tuner/..."`` entries
            are ignored).
        levels: pruning levels of the trial.
        budget_fraction: in (0, 1]; the trial trains this fraction of the budget
            (Hyperband), rounded to whole evaluation periods, with warmup and rewind
            scaled alike.
        steps_per_epoch: iterations per epoch (to read ``"ep"`` step strings).

    Returns:
        A validated ``ExperimentHparams``.

    Raises:
        ValueError: from the hparams checks (e.g. a rewind past the budget).
    """
    full = _full_values(base, values)
    t, p = base.training, base.pruning
    training = dataclasses.replace(
        t, learning_rate=full.get("learning_rate", t.learning_rate),
        warmup=full.get("warmup", t.warmup),
    )
    pruning_hp = dataclasses.replace(
        p, rate=full.get("prune_rate", p.rate),
        rate_output=full.get("prune_rate_output", p.rate_output),
        rate_conv=full.get("prune_rate_conv", p.rate_conv),
        rewind=full.get("rewind", p.rewind), levels=levels, controls=(), one_shot=(),
    )
    if budget_fraction < 1:
        spe = steps_per_epoch
        budget = t.iterations("training_steps", spe)
        period = t.iterations("eval_every", spe)
        short = max(period, period * round(budget * budget_fraction / period))
        scale = short / budget
        warmup = min(short, round(training.iterations("warmup", spe) * scale))
        rewind = Steps.parse(pruning_hp.rewind).iterations(spe)
        rewind = min(_round_to(rewind * scale), short - period) if rewind else 0
        training = dataclasses.replace(training, training_steps=f"{short}it",
                                       warmup=f"{warmup}it")
        pruning_hp = dataclasses.replace(pruning_hp, rewind=f"{max(0, rewind)}it")
    return dataclasses.replace(base, training=training, pruning=pruning_hp)


def trial_flags(base: ExperimentHparams, values: dict) -> dict[str, str]:
    """``{flag name: flag value text}`` of a trial's tuned flags, for a flagfile."""
    return {name: str(value) for name, value in _full_values(base, values).items()}


def _write_flagfile(path, base_lines, overrides: dict, header: list[str]):
    lines = ["# " + h for h in header]
    done = set()
    for line in base_lines:
        name = line[2:].split("=", 1)[0] if line.startswith("--") else None
        if name in overrides:
            lines.append(f"--{name}={overrides[name]}")
            done.add(name)
        else:
            lines.append(line)
    lines += [f"--{name}={value}" for name, value in overrides.items() if name not in done]
    files.atomic_write_text(path, "\n".join(lines) + "\n")


@dataclasses.dataclass
class TuneResult:
    """What ``tune`` returns.

    Attributes:
        best_flags: ``{flag: value text}`` of the best trial's tuned flags.
        best_score: its objective value (accuracy in [0, 1]).
        best_trial: its keras-tuner trial id.
        flagfile: path of ``best.flags``.
        tune_dir: the directory of the search.
        table: the trials table (markdown), also in ``trials.md``.
        trials: one dict per trial (the rows of ``trials.csv``).
        project_dir: the keras-tuner project directory.
    """

    best_flags: dict
    best_score: float
    best_trial: str
    flagfile: str
    table: str
    trials: list
    project_dir: str
    tune_dir: str


class LotteryTuner(keras_tuner.Tuner):
    """A ``keras_tuner.Tuner`` whose trials are lottery experiments (``ticket.fit``).

    ``run_trial`` builds the trial's ``ExperimentHparams`` (``trial_hparams``), runs
    ``tf_lottery.ticket.fit`` into ``<tune_dir>/runs/<run name>/replicate_0`` and returns
    ``{"val_accuracy", "test_accuracy"}`` of the lottery ticket at the first level at or
    beyond the target sparsity, at its early-stopping iteration. The oracle's objective
    is one of the two (``val_accuracy`` unless asked otherwise).

    Args:
        oracle: a keras-tuner oracle whose space is ``search_space(...)``.
        base: the base ``ExperimentHparams``.
        dataset: a ``tf_lottery.data.Dataset``.
        target_sparsity: fraction in (0, 1).
        runs_dir: where trials' lottery runs go.
        seed: the experiment seed (a trial runs replicate 0 of it).
        runtime, strategy: as for ``ticket.fit``.
        hyperband_max_epochs: budget units of the full ``training_steps`` (Hyperband).
        **kwargs: ``directory``, ``project_name``, ``overwrite`` of ``keras_tuner.Tuner``.
    """

    def __init__(self, oracle, *, base, dataset, target_sparsity, runs_dir, seed=0,
                 runtime=None, strategy=None, hyperband_max_epochs=None, **kwargs):
        super().__init__(oracle, **kwargs)
        self.base = base
        self.dataset = dataset
        self.target_sparsity = target_sparsity
        self.runs_dir = runs_dir
        self.seed = seed
        self.runtime = runtime
        self.strategy = strategy
        self.hyperband_max_epochs = hyperband_max_epochs
        self.steps_per_epoch = math.ceil(len(dataset.y_train) / base.training.batch_size)

    def trial_experiment(self, values: dict) -> ExperimentHparams:
        """The ``ExperimentHparams`` a trial with these values runs."""
        return _trial_experiment(self.base, self.dataset, values, self.target_sparsity,
                                 self.steps_per_epoch, self.hyperband_max_epochs)

    def run_trial(self, trial, *args, **kwargs):
        """Runs the trial's lottery experiment; returns its accuracies at the target."""
        from tf_lottery import gradinit, ticket

        values = dict(trial.hyperparameters.values)
        hp = self.trial_experiment(values)
        root = os.path.join(self.runs_dir, hp.run_name())
        run_dir = os.path.join(root, "replicate_0")
        os.makedirs(run_dir, exist_ok=True)
        files.atomic_write_json(os.path.join(root, "hparams.json"), hp.to_dict())
        keras.utils.clear_session(free_memory=True)
        logging.info("trial %s: %s -> %s", trial.trial_id, trial_flags(self.base, values), run_dir)
        result = ticket.fit(
            gradinit.make_model_fn(hp.model, self.dataset, cache_dir=run_dir), self.dataset,
            training=hp.training, pruning_hparams=hp.pruning, run_dir=run_dir,
            seed=derive_seed(hp.seed, "replicate", 0), strategy=self.strategy,
            runtime=self.runtime, augment=hp.dataset.augment,
        )
        level = hp.pruning.levels
        summary = result.levels[level]["lottery"]
        info = {
            "trial_id": trial.trial_id,
            "flags": trial_flags(self.base, values),
            "training_steps": hp.training.training_steps,
            "levels": level,
            "sparsity": summary["sparsity"],
            "early_stop_iteration": summary["early_stop_iteration"],
            "val_accuracy": summary["early_stop_val_accuracy"],
            "test_accuracy": summary["early_stop_test_accuracy"],
            "dense_val_accuracy": result.levels[0]["lottery"]["early_stop_val_accuracy"],
            "run_dir": run_dir,
        }
        files.atomic_write_json(os.path.join(self.get_trial_dir(trial.trial_id),
                                            "trial_info.json"), info)
        metrics = {"val_accuracy": info["val_accuracy"], "test_accuracy": info["test_accuracy"]}
        return {k: float("nan") if v is None else float(v) for k, v in metrics.items()}


def _trial_experiment(base, dataset, values, target_sparsity, steps_per_epoch,
                      hyperband_max_epochs=None) -> ExperimentHparams:
    full = _full_values(base, values)
    p = base.pruning
    sizes = _layer_sizes_and_rates(
        base, dataset, full.get("prune_rate", p.rate), full.get("prune_rate_conv", p.rate_conv),
        full.get("prune_rate_output", p.rate_output),
    )
    levels = levels_to_reach(sizes, target_sparsity)
    fraction = 1.0
    if hyperband_max_epochs and "tuner/epochs" in values:
        fraction = min(1.0, values["tuner/epochs"] / hyperband_max_epochs)
    return trial_hparams(base, values, levels=levels, budget_fraction=fraction,
                         steps_per_epoch=steps_per_epoch)


def search_name(base: ExperimentHparams, names, tuner: str, target_sparsity: float,
                objective: str, hyperband_max_epochs: int | None = None) -> str:
    """``tune_<model>_<dataset>_<hash>``: the keras-tuner project name of a search.

    The hash covers the base experiment (without its ``levels``, ``controls`` and
    ``one_shot``, which trials do not use), the tuned flags, the tuner, the target
    sparsity, the objective and (Hyperband) ``hyperband_max_epochs``: the same search
    gets the same name, so rerunning it resumes it.
    """
    max_epochs = hyperband_max_epochs if tuner == "hyperband" else None
    key = json.dumps([base.digest(16), list(names), tuner, target_sparsity, objective,
                      base.seed, max_epochs])
    return f"tune_{base.model.model}_{base.dataset.dataset}_" + hashlib.sha256(
        key.encode()).hexdigest()[:10]


def tune(
    base: ExperimentHparams,
    dataset,
    *,
    names,
    tune_dir: str | None = None,
    run_root: str = "runs",
    base_flag_lines=(),
    tuner: str = "bayesian",
    max_trials: int = 10,
    target_sparsity: float = 0.8,
    objective: str = "val",
    hyperband_max_epochs: int = 9,
    runtime=None,
    strategy=None,
    overwrite: bool = False,
) -> TuneResult:
    """Searches the flags ``names`` with keras-tuner; each trial is a lottery experiment.

    See the module docstring for the search spaces, the score and the files written.

    Args:
        base: the base experiment (``ExperimentHparams``); its ``levels``, ``controls``
            and ``one_shot`` go to the best flagfile, not to the trials.
        dataset: a ``tf_lottery.data.Dataset``; its validation split must not be empty
            when ``objective="val"``.
        names: flags to tune, a non-empty subset of ``TUNABLE``.
        tune_dir: directory of the search (created); default
            ``<run_root>/<search_name(...)>``.
        run_root: the run root holding the default ``tune_dir``.
        base_flag_lines: the base flags as flagfile lines (``"--name=value"``), the
            body of ``best.flags``; tuned flags are replaced.
        tuner: ``"bayesian"`` (``BayesianOptimizationOracle``; needs scikit-learn),
            ``"hyperband"`` or ``"random"``.
        max_trials: total trials (a resumed search counts the finished ones), >= 1.
        target_sparsity: the ticket scored is the first level at or beyond this
            fraction of pruned weights, in (0, 1).
        objective: ``"val"`` (default; never select on test unless analysing) or
            ``"test"``: the ticket's accuracy at its early-stopping iteration.
        hyperband_max_epochs: Hyperband's ``max_epochs``: the full budget in units.
        runtime, strategy: as for ``ticket.fit``.
        overwrite: start the search afresh instead of resuming it.

    Returns:
        A ``TuneResult``.

    Raises:
        ValueError: before any trial or directory, for an unknown or repeated flag in
            ``names``, an unknown ``tuner`` or ``objective`` (or ``"bayesian"`` without
            scikit-learn), ``max_trials < 1``, a target sparsity outside (0, 1) or
            unreachable, ``objective="val"`` with an empty validation split, or an
            inconsistent trial (e.g. a rewind past the budget).
        RuntimeError: if no trial finished (keras-tuner stops after 3 failed trials in a
            row; the trial's error is in ``<project>/trial_<id>/trial.json``).
    """
    _check_names(names)
    if tuner not in TUNERS:
        raise ValueError(f"`tuner` (--tuner) must be one of {list(TUNERS)}; received {tuner!r}.")
    if tuner == "bayesian":
        try:
            import sklearn  # noqa: F401  (keras-tuner's Gaussian process)
        except ImportError:
            raise ValueError(
                "`tuner` (--tuner) bayesian needs scikit-learn, which is not installed; "
                "install keras-tuner[bayesian] (pip install scikit-learn) or use "
                "--tuner=hyperband or --tuner=random."
            ) from None
    if objective not in OBJECTIVES:
        raise ValueError(
            f"`objective` (--tune_objective) must be one of {list(OBJECTIVES)}; "
            f"received {objective!r}."
        )
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"`max_trials` (--max_trials) must be an integer >= 1; "
                         f"received {max_trials!r}.")
    if isinstance(hyperband_max_epochs, bool) or not isinstance(hyperband_max_epochs, int) \
            or hyperband_max_epochs < 1:
        raise ValueError("`hyperband_max_epochs` (--hyperband_max_epochs) must be an integer "
                         f">= 1; received {hyperband_max_epochs!r}.")
    if objective == "val" and len(dataset.y_val) == 0:
        raise ValueError(
            "`objective` (--tune_objective) is val but the dataset has no validation split; "
            "set --validation_size > 0 (selecting on test is optimistic)."
        )
    steps_per_epoch = math.ceil(len(dataset.y_train) / base.training.batch_size)
    space = search_space(base, names, steps_per_epoch)
    metric = f"{objective}_accuracy"
    kt_objective = keras_tuner.Objective(metric, direction="max")
    seed = derive_seed(base.seed, "tune")
    if tuner == "bayesian":
        oracle = keras_tuner.oracles.BayesianOptimizationOracle(
            objective=kt_objective, max_trials=max_trials, hyperparameters=space,
            seed=seed, tune_new_entries=False, allow_new_entries=False,
        )
    elif tuner == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(
            objective=kt_objective, max_trials=max_trials, hyperparameters=space,
            seed=seed, tune_new_entries=False, allow_new_entries=False,
        )
    else:
        oracle = keras_tuner.oracles.HyperbandOracle(
            objective=kt_objective, max_epochs=hyperband_max_epochs, factor=3,
            hyperparameters=space, seed=seed, tune_new_entries=False,
            allow_new_entries=False,
        )
        oracle.max_trials = max_trials  # Hyperband has no such argument; cap it too
    # Every value of the space must give a valid experiment: check the extremes first.
    for name in names:
        for value in _extremes(space, name):
            _trial_experiment(base, dataset, {name: value}, target_sparsity, steps_per_epoch)
    project = search_name(base, names, tuner, target_sparsity, objective,
                          hyperband_max_epochs)
    tune_dir = tune_dir or os.path.join(run_root, project)
    os.makedirs(tune_dir, exist_ok=True)
    search = LotteryTuner(
        oracle, base=base, dataset=dataset, target_sparsity=target_sparsity,
        runs_dir=os.path.join(tune_dir, "runs"), seed=base.seed, runtime=runtime,
        strategy=strategy, hyperband_max_epochs=hyperband_max_epochs if tuner == "hyperband"
        else None, directory=tune_dir, project_name=project, overwrite=overwrite,
    )
    search.search()

    trials = _trial_rows(search, names)
    best = [t for t in search.oracle.get_best_trials(1)
            if not math.isnan(t.score if t.score is not None else float("nan"))]
    if not best:
        raise RuntimeError(
            f"No trial of the search in {search.project_dir} finished; see the trial.json "
            "files there for the errors."
        )
    best = best[0]
    best_flags = trial_flags(base, best.hyperparameters.values)
    flagfile = os.path.join(tune_dir, "best.flags")
    _write_flagfile(flagfile, list(base_flag_lines), best_flags, header=[
        f"Best of {len(trials)} trials of tf_lottery.tune ({tuner}, {project}): trial "
        f"{best.trial_id},",
        f"{metric} {best.score:.4f} of the lottery ticket at sparsity >= {target_sparsity} "
        "(at early stopping).",
        "Tuned: " + ", ".join(f"--{k}={v}" for k, v in best_flags.items()),
        "Run: python -m tf_lottery.main --flagfile=<this file>",
    ])
    table = _write_tables(tune_dir, trials, names, metric)
    return TuneResult(best_flags=best_flags, best_score=float(best.score),
                      best_trial=best.trial_id, flagfile=flagfile, table=table,
                      trials=trials, project_dir=search.project_dir, tune_dir=tune_dir)


def _extremes(space, name):
    (hp,) = [hp for hp in space.space if hp.name == name]
    if hasattr(hp, "min_value"):
        return [hp.min_value, hp.max_value]
    return [hp.values[0], hp.values[-1]]


def _trial_rows(search, names):
    rows = []
    for trial_id in sorted(search.oracle.trials):
        trial = search.oracle.trials[trial_id]
        path = os.path.join(search.get_trial_dir(trial_id), "trial_info.json")
        info = files.read_json(path) if os.path.exists(path) else {}
        flags = trial_flags(search.base, trial.hyperparameters.values)
        row = {"trial": trial_id, "status": str(trial.status)}
        row.update({name: flags.get(name, "") for name in names})
        for key in ("training_steps", "levels", "sparsity", "early_stop_iteration",
                    "val_accuracy", "test_accuracy", "dense_val_accuracy", "run_dir"):
            row[key] = info.get(key, "")
        row["score"] = trial.score if trial.score is not None else ""
        rows.append(row)
    return rows


def _write_tables(tune_dir, rows, names, metric):
    columns = (["trial", "status"] + list(names) + [
        "training_steps", "levels", "sparsity", "early_stop_iteration", "val_accuracy",
        "test_accuracy", "dense_val_accuracy", "score", "run_dir"])
    files.write_csv(os.path.join(tune_dir, "trials.csv"), columns, rows)

    def fmt(value):
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [
        f"Trials (score: the ticket's {metric} at early stopping; test accuracy for "
        "information only).",
        "",
        "| " + " | ".join(columns[:-1]) + " |",
        "|" + "---|" * (len(columns) - 1),
    ]
    for row in sorted(rows, key=lambda r: -r["score"] if isinstance(r["score"], float) else 1):
        lines.append("| " + " | ".join(fmt(row[c]) for c in columns[:-1]) + " |")
    text = "\n".join(lines) + "\n"
    files.atomic_write_text(os.path.join(tune_dir, "trials.md"), text)
    return text


if __name__ == "__main__":
    from tf_lottery import main

    main.run_tune()
