"""Hyperparameter search over lottery-ticket experiments with keras-tuner.

    from tf_lottery import experiment, tune
    result = tune.tune(hp, experiment.load_dataset(hp.dataset),
                       names=["learning_rate", "warmup", "rewind", "prune_rate"],
                       max_trials=10, tuner="hyperband", run_root="runs")

Each keras-tuner trial is a whole, short lottery experiment, run by
``tf_lottery.experiment.run_experiment``: the dense network and as many pruning levels
as it takes to reach ``target_sparsity`` (no control branches), with the trial's values
of the tuned hyperparameters and every other setting from the base experiment. Its
score is the accuracy of the lottery ticket at the first level at or beyond
``target_sparsity``, at its early-stopping iteration (minimum validation loss): the
**validation** accuracy by default (``objective="val"``). ``objective="test"`` selects
on the test set and exists only for analyses; a search that selects on test reports an
optimistic test accuracy.

The search spaces, and how a trial's values become its experiment and flags, are in
``tf_lottery.tune.space``. keras-tuner drives the search
(``BayesianOptimizationOracle``, which needs scikit-learn, ``HyperbandOracle`` or
``RandomSearchOracle``); ``LotteryTuner`` is a ``keras_tuner.Tuner`` whose ``run_trial``
runs the experiment. With Hyperband a trial trains ``tuner/epochs /
hyperband_max_epochs`` of the budget (warmup and rewind scaled alike; the full-budget
values go to the best flagfile), from scratch (a lottery run cannot continue with a
longer schedule).

Files (``tf_lottery.paths.TuneDir``) under ``tune_dir`` (default:
``<run_root>/<project>``, the run root of the experiments, ``<project> =
tune_<model>_<dataset>_<hash of the base experiment and the search settings>``):
``<project>/`` (keras-tuner's project: oracle state and one ``trial_<id>/`` per trial,
with ``trial_info.json``), ``runs/<model>_<dataset>_<hash>/`` (each trial's lottery run,
as ``run_experiment`` writes it), ``best.flags`` (the best trial's flags over the base
flags, a flagfile of the command line), ``trials.md`` and ``trials.csv``. Rerunning the
same search resumes it: keras-tuner reloads its project (``overwrite=False``), finished
trials are kept, an interrupted trial reruns and its lottery run resumes from its last
checkpoint.

Distributed search (keras-tuner's own mode, ``python -m tf_lottery.cluster --workers=N
-- tune ...`` on one machine): every process runs the same ``tune`` call with
``KERASTUNER_TUNER_ID`` (``chief``, or one id per worker), ``KERASTUNER_ORACLE_IP`` and
``KERASTUNER_ORACLE_PORT`` set, over a filesystem they share. The chief serves the
oracle, runs no trial, and alone writes ``best.flags``, ``trials.md`` and
``trials.csv`` once every trial has ended; each worker runs trials (their lottery runs
and ``trial_info.json``) and returns None. A worker restarted with the same
``KERASTUNER_TUNER_ID`` gets its unfinished trial back from the oracle, and the trial's
lottery run resumes from its last checkpoint; a restarted chief hands unfinished trials
out again.
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

from tf_lottery import experiment, files, paths
from tf_lottery.hparams import ArgumentError, ExperimentHparams, derive_seed
from tf_lottery.tune.space import (
    check_names,
    search_space,
    trial_experiment,
    trial_flags,
    write_flagfile,
)

__all__ = ["TUNERS", "OBJECTIVES", "TuneResult", "LotteryTuner", "search_name",
           "distributed_role", "tune"]

#: keras-tuner oracles: Bayesian optimization (Gaussian process; needs scikit-learn,
#: the ``keras-tuner[bayesian]`` extra), Hyperband, or random search.
TUNERS = ("bayesian", "hyperband", "random")
#: What a trial is scored on: the ticket's validation or test accuracy at early stopping.
OBJECTIVES = ("val", "test")

#: Columns of ``trials.csv`` after ``trial``, ``status`` and the tuned names.
_INFO_COLUMNS = ("training_steps", "levels", "sparsity", "early_stop_iteration",
                 "val_accuracy", "test_accuracy", "dense_val_accuracy")


@dataclasses.dataclass
class TuneResult:
    """What ``tune`` returns.

    Attributes:
        best_flags: ``{flag: value text}`` of the best trial's tuned values.
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
    """A ``keras_tuner.Tuner`` whose trials are lottery experiments.

    ``run_trial`` builds the trial's ``ExperimentHparams``
    (``search_space.trial_experiment``), runs replicate 0 of it with
    ``tf_lottery.experiment.run_experiment`` under ``runs_dir`` and returns
    ``{"val_accuracy", "test_accuracy"}`` of the lottery ticket at the first level at or
    beyond the target sparsity, at its early-stopping iteration. The oracle's objective
    is one of the two (``val_accuracy`` unless asked otherwise).

    Args:
        oracle: a keras-tuner oracle whose space is ``search_space(...)``.
        base: the base ``ExperimentHparams``.
        dataset: a ``tf_lottery.data.Dataset``.
        target_sparsity: fraction in (0, 1).
        runs_dir: the run root of the trials' experiments (``TuneDir.runs``).
        seed: the experiment seed (kept for reference; a trial runs replicate 0 of its
            experiment, whose seed is ``base.seed``).
        runtime, strategy: as for ``run_experiment``.
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

    def trial_experiment(self, values: dict) -> ExperimentHparams:
        """The ``ExperimentHparams`` a trial with these values runs."""
        return trial_experiment(self.base, self.dataset, values, self.target_sparsity,
                                hyperband_max_epochs=self.hyperband_max_epochs)

    def run_trial(self, trial, *args, **kwargs):
        """Runs the trial's lottery experiment; returns its accuracies at the target."""
        values = dict(trial.hyperparameters.values)
        hp = self.trial_experiment(values)
        where = experiment.Experiment.at(hp, self.runs_dir, 0)
        keras.utils.clear_session(free_memory=True)
        logging.info("trial %s: %s -> %s", trial.trial_id, trial_flags(self.base, values),
                     where.replicate.path)
        result = experiment.run_experiment(
            hp, self.runs_dir, replicate=0, dataset=self.dataset, runtime=self.runtime,
            strategy=self.strategy,
        )
        level = hp.pruning.levels
        summary = result.levels[level]["lottery"]
        info = {
            "trial_id": trial.trial_id,
            "flags": trial_flags(self.base, values),
            "training_steps": str(hp.training.training_steps),
            "levels": level,
            "sparsity": summary["sparsity"],
            "early_stop_iteration": summary["early_stop_iteration"],
            "val_accuracy": summary["early_stop_val_accuracy"],
            "test_accuracy": summary["early_stop_test_accuracy"],
            "dense_val_accuracy": result.levels[0]["lottery"]["early_stop_val_accuracy"],
            "run_dir": where.replicate.path,
        }
        files.atomic_write_json(paths.TuneDir.trial_info(self.get_trial_dir(trial.trial_id)),
                                info)
        metrics = {"val_accuracy": info["val_accuracy"], "test_accuracy": info["test_accuracy"]}
        return {k: float("nan") if v is None else float(v) for k, v in metrics.items()}


def search_name(base: ExperimentHparams, names, tuner: str, target_sparsity: float,
                objective: str, hyperband_max_epochs: int | None = None) -> str:
    """``tune_<model>_<dataset>_<hash>``: the keras-tuner project name of a search.

    The hash covers the base experiment (without its ``levels``, ``controls`` and
    ``one_shot``, which trials do not use), the tuned names, the tuner, the target
    sparsity, the objective and (Hyperband) ``hyperband_max_epochs``: the same search
    gets the same name, so rerunning it resumes it.
    """
    max_epochs = hyperband_max_epochs if tuner == "hyperband" else None
    key = json.dumps([base.digest(16), list(names), tuner, target_sparsity, objective,
                      base.seed, max_epochs])
    return f"tune_{base.model.model}_{base.dataset.dataset}_" + hashlib.sha256(
        key.encode()).hexdigest()[:10]


#: keras-tuner's variables of its distributed mode.
DISTRIBUTED_VARIABLES = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def distributed_role(environ=None) -> str | None:
    """This process's part in a keras-tuner distributed search, from the environment.

    keras-tuner's rule: a search is distributed when ``KERASTUNER_ORACLE_IP`` is set; a
    ``KERASTUNER_TUNER_ID`` containing ``chief`` serves the oracle, any other id is a
    worker that runs trials.

    Args:
        environ: a mapping of environment variables (default ``os.environ``).

    Returns:
        ``None`` (a search in one process), ``"chief"`` or ``"worker"``.

    Raises:
        ValueError: (``hparams.ArgumentError`` naming the variable) when
            ``KERASTUNER_ORACLE_IP`` is set without ``KERASTUNER_TUNER_ID`` or
            ``KERASTUNER_ORACLE_PORT``, or the port is not an integer in [1, 65535].
    """
    env = os.environ if environ is None else environ
    if "KERASTUNER_ORACLE_IP" not in env:
        return None
    for name in DISTRIBUTED_VARIABLES:
        if not env.get(name):
            raise ArgumentError(
                name, env.get(name),
                f"KERASTUNER_ORACLE_IP is set ({env['KERASTUNER_ORACLE_IP']!r}) but {name} is "
                f"{'empty' if name in env else 'not'}: a distributed search needs "
                f"{', '.join(DISTRIBUTED_VARIABLES)} on every process (KERASTUNER_TUNER_ID=chief "
                "on the oracle's), or none of them for a search in one process.")
    port = env["KERASTUNER_ORACLE_PORT"]
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ArgumentError("KERASTUNER_ORACLE_PORT", port,
                            "KERASTUNER_ORACLE_PORT must be a TCP port number in [1, 65535]; "
                            f"received {port!r}.")
    return "chief" if "chief" in env["KERASTUNER_TUNER_ID"] else "worker"


def _positive_int(argument: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(argument, value,
                            f"`{argument}` must be an integer >= 1; received {value!r}.")


def _check_search(names, tuner, objective, max_trials, hyperband_max_epochs, dataset,
                  tune_dir) -> None:
    """The checks of ``tune``'s arguments that need no trial (see ``tune``)."""
    check_names(names)
    if tuner not in TUNERS:
        raise ArgumentError("tuner", tuner,
                            f"`tuner` must be one of {list(TUNERS)}; received {tuner!r}.")
    if tuner == "bayesian":
        try:
            import sklearn  # noqa: F401  (keras-tuner's Gaussian process)
        except ImportError:
            raise ArgumentError(
                "tuner", tuner,
                "`tuner` 'bayesian' needs scikit-learn, which is not installed; install "
                "keras-tuner[bayesian] (pip install scikit-learn) or use tuner='hyperband' "
                "or tuner='random'.",
            ) from None
    if objective not in OBJECTIVES:
        raise ArgumentError("objective", objective, f"`objective` must be one of "
                            f"{list(OBJECTIVES)}; received {objective!r}.")
    _positive_int("max_trials", max_trials)
    _positive_int("hyperband_max_epochs", hyperband_max_epochs)
    if objective == "val" and len(dataset.y_val) == 0:
        raise ArgumentError(
            "objective", objective,
            "`objective` is 'val' but the dataset has no validation split; load it with "
            "`validation_size` > 0 (selecting on test is optimistic).",
        )
    if tune_dir is not None and os.path.exists(tune_dir) and not os.path.isdir(tune_dir):
        raise ArgumentError("tune_dir", tune_dir, "`tune_dir` must be a directory (or not "
                            f"exist yet); received {tune_dir!r}, a file.")
    distributed_role()


def _oracle(tuner, space, metric, max_trials, hyperband_max_epochs, seed):
    objective = keras_tuner.Objective(metric, direction="max")
    common = dict(objective=objective, hyperparameters=space, seed=seed,
                  tune_new_entries=False, allow_new_entries=False)
    if tuner == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(max_trials=max_trials, **common)
    if tuner == "random":
        return keras_tuner.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=hyperband_max_epochs, factor=3,
                                                 **common)
    oracle.max_trials = max_trials  # Hyperband has no such argument; cap it too
    return oracle


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
) -> TuneResult | None:
    """Searches the hyperparameters ``names`` with keras-tuner; each trial is a lottery
    experiment (``tf_lottery.experiment.run_experiment``).

    See the module docstring for the score and the files written, and
    ``tf_lottery.tune.space`` for the search spaces.

    Args:
        base: the base experiment (``ExperimentHparams``); its ``levels``, ``controls``
            and ``one_shot`` go to the best flagfile, not to the trials.
        dataset: a ``tf_lottery.data.Dataset``; its validation split must not be empty
            when ``objective="val"``.
        names: what to tune, a non-empty subset of ``TUNABLE``.
        tune_dir: directory of the search (created); default
            ``<run_root>/<search_name(...)>``.
        run_root: the run root holding the default ``tune_dir``.
        base_flag_lines: the base experiment as flagfile lines (``"--name=value"``),
            the body of ``best.flags``; tuned flags are replaced.
        tuner: ``"bayesian"`` (``BayesianOptimizationOracle``; needs scikit-learn),
            ``"hyperband"`` or ``"random"``.
        max_trials: total trials (a resumed search counts the finished ones), >= 1.
        target_sparsity: the ticket scored is the first level at or beyond this
            fraction of pruned weights, in (0, 1).
        objective: ``"val"`` (default; never select on test unless analysing) or
            ``"test"``: the ticket's accuracy at its early-stopping iteration.
        hyperband_max_epochs: Hyperband's ``max_epochs``: the full budget in units, >= 1.
        runtime, strategy: as for ``run_experiment``.
        overwrite: start the search afresh instead of resuming it (in a distributed
            search, the chief does it; workers never remove the shared project).

    Returns:
        A ``TuneResult``; None on a worker of a distributed search (see the module
        docstring and ``distributed_role``): the chief writes the results.

    Raises:
        ValueError: (``hparams.ArgumentError``, whose ``argument`` names the argument)
            before any trial or directory, for an unknown or repeated name in ``names``,
            an unknown ``tuner`` or ``objective`` (or ``"bayesian"`` without
            scikit-learn), ``max_trials < 1``, a ``target_sparsity`` outside (0, 1) or
            unreachable, ``objective="val"`` with an empty validation split, a
            ``tune_dir`` that is a file, an inconsistent trial (e.g. a rewind past
            the budget), or keras-tuner's distributed variables half set; on a worker,
            when the chief's search is not the worker's (other arguments, or no shared
            filesystem), before any trial.
        RuntimeError: if no trial finished (keras-tuner stops after 3 failed trials in a
            row; the trial's error is in ``<project>/trial_<id>/trial.json``).
    """
    names = list(names)
    _check_search(names, tuner, objective, max_trials, hyperband_max_epochs, dataset,
                  tune_dir)
    steps_per_epoch = base.training.steps_per_epoch(len(dataset.y_train))
    space = search_space(base, names, steps_per_epoch)
    metric = f"{objective}_accuracy"
    oracle = _oracle(tuner, space, metric, max_trials, hyperband_max_epochs,
                     derive_seed(base.seed, "tune"))
    # Every value of the space must give a valid experiment: check the extremes first
    # (building the trial's model checks its options; lengths against the budget here).
    for name in names:
        for value in _extremes(space, name):
            trial = trial_experiment(base, dataset, {name: value}, target_sparsity)
            trial.training.check_against(steps_per_epoch, trial.pruning.rewind)
    project = search_name(base, names, tuner, target_sparsity, objective,
                          hyperband_max_epochs)
    where = paths.TuneDir(tune_dir) if tune_dir else paths.TuneDir.of(run_root, project)
    role = distributed_role()
    if role == "worker" and overwrite:
        logging.info("keras-tuner worker: `overwrite` is left to the chief")
    created, parent = [], os.path.abspath(where.path)  # what makedirs creates, deepest first
    while not os.path.exists(parent):
        created.append(parent)
        parent = os.path.dirname(parent)
    os.makedirs(where.path, exist_ok=True)
    search = LotteryTuner(
        oracle, base=base, dataset=dataset, target_sparsity=target_sparsity,
        runs_dir=where.runs, seed=base.seed, runtime=runtime, strategy=strategy,
        hyperband_max_epochs=hyperband_max_epochs if tuner == "hyperband" else None,
        directory=where.path, project_name=project,
        overwrite=overwrite and role != "worker",
    )
    if role == "worker":
        _check_chief(search, created)
    search.search()
    if role == "chief":
        # keras-tuner's chief saved its oracle before the last trials left its list of
        # ongoing trials; saved now, a rerun does not retry them.
        search.save()
    if role == "worker":
        logging.info("keras-tuner worker %s: no trial left; the chief writes %s, %s and %s",
                     search.tuner_id, where.best_flags, where.trials_md, where.trials_csv)
        return None

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
    write_flagfile(where.best_flags, list(base_flag_lines), best_flags, header=[
        f"Best of {len(trials)} trials of tf_lottery.tune ({tuner}, {project}): trial "
        f"{best.trial_id},",
        f"{metric} {best.score:.4f} of the lottery ticket at sparsity >= {target_sparsity} "
        "(at early stopping).",
        "Tuned: " + ", ".join(f"--{k}={v}" for k, v in best_flags.items()),
        "Run: tf-lottery --flagfile=<this file>",
    ])
    table = _write_tables(where, trials, names, metric)
    return TuneResult(best_flags=best_flags, best_score=float(best.score),
                      best_trial=best.trial_id, flagfile=where.best_flags, table=table,
                      trials=trials, project_dir=search.project_dir, tune_dir=where.path)


def _check_chief(search: LotteryTuner, created) -> None:
    """On a worker: waits for the chief's oracle, then checks that the chief saved its
    oracle in this worker's project directory (the same search on a shared filesystem);
    if not, removes the empty directories the worker created (``created``) and raises."""
    search.oracle.get_space()  # waits until the chief serves (keras-tuner's timeout)
    saved = os.path.join(search.project_dir, "oracle.json")  # keras-tuner's file name
    if not os.path.exists(saved):
        for path in [search.project_dir, *created]:
            try:
                os.rmdir(path)  # only if empty
            except OSError:
                pass
        raise ArgumentError(
            "KERASTUNER_ORACLE_IP", os.environ.get("KERASTUNER_ORACLE_IP"),
            f"the chief at {os.environ.get('KERASTUNER_ORACLE_IP')}:"
            f"{os.environ.get('KERASTUNER_ORACLE_PORT')} serves another search than this "
            f"worker's: no {saved} (its oracle). Run every process of the search with the "
            "same arguments (flags) and a `tune_dir` on a filesystem they share.")


def _extremes(space, name):
    (hp,) = [hp for hp in space.space if hp.name == name]
    if hasattr(hp, "min_value"):
        return [hp.min_value, hp.max_value]
    return [hp.values[0], hp.values[-1]]


def _trial_rows(search, names):
    rows = []
    for trial_id in sorted(search.oracle.trials):
        trial = search.oracle.trials[trial_id]
        path = paths.TuneDir.trial_info(search.get_trial_dir(trial_id))
        info = files.read_json(path) if os.path.exists(path) else {}
        flags = trial_flags(search.base, trial.hyperparameters.values)
        row = {"trial": trial_id, "status": str(trial.status)}
        row.update({name: flags.get(name, "") for name in names})
        for key in _INFO_COLUMNS + ("run_dir",):
            row[key] = info.get(key, "")
        row["score"] = trial.score if trial.score is not None else ""
        rows.append(row)
    return rows


def _write_tables(where: paths.TuneDir, rows, names, metric):
    columns = ["trial", "status"] + list(names) + list(_INFO_COLUMNS) + ["score", "run_dir"]
    files.write_csv(where.trials_csv, columns, rows)

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
    files.atomic_write_text(where.trials_md, text)
    return text
