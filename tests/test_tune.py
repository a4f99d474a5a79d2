"""Tests for tf_lottery.tune: keras-tuner search over short lottery experiments."""

import csv
import dataclasses
import glob
import json
import os
import subprocess
import sys

import pytest

from tf_lottery import data, paths
from tf_lottery import tune as tune_lib
from tf_lottery.hparams import (
    ArgumentError,
    DatasetHparams,
    ExperimentHparams,
    ModelHparams,
    PruningHparams,
    TrainingHparams,
)

# 90 iterations per level, evaluated every 10: Hyperband's first bracket trains 1/9 of
# the budget (10 iterations) per trial.
BASE_FLAGS = [
    "--dataset=synthetic", "--batch_size=32", "--training_steps=90it", "--eval_every=10it",
    "--learning_rate=0.002", "--levels=2", "--prune_rate=0.5", "--prune_rate_output=0.25",
    "--controls=reinit", "--initializer=gradinit", "--gradinit_optimizer=adam",
    "--gradinit_eta=0.002", "--gradinit_gamma=100", "--gradinit_steps=3",
    "--gradinit_batch_size=32", "--nojit_compile",
]


def _has_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def _cli():
    """The command line's modules: the tune and experiment commands and their flags."""
    from tf_lottery.cli import experiment as experiment_command
    from tf_lottery.cli import experiment_flags
    from tf_lottery.cli import tune as tune_command

    return tune_command, experiment_command, experiment_flags


def cli(capfd, *args):
    """Runs the tune command in this process (as `python -m tf_lottery.cli tune` would);
    returns (exit code, stdout, stderr)."""
    tune_command, _, ef = _cli()
    capfd.readouterr()
    try:
        tune_command.run(["tf_lottery.tune", *args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        ef.FLAGS.unparse_flags()
    out, err = capfd.readouterr()
    return code, out, err


def base(**training):
    return ExperimentHparams(
        model=ModelHparams("lenet_300_100"), dataset=DatasetHparams("synthetic"),
        training=TrainingHparams(batch_size=32, training_steps="1000it", eval_every="100it",
                                 **training),
        pruning=PruningHparams(levels=2, rate=0.4, rate_output=0.2),
    )


def parse_flagfile(path):
    """The experiment the flagfile describes, as the experiment command reads it."""
    _, _, ef = _cli()
    try:
        ef.FLAGS(["tf_lottery.main", f"--flagfile={path}"])
        return ef.hparams(), ef.FLAGS.levels, list(ef.FLAGS.controls)
    finally:
        ef.FLAGS.unparse_flags()


@pytest.mark.parametrize("tuner", [
    "hyperband",
    pytest.param("bayesian", marks=pytest.mark.skipif(
        not _has_sklearn(), reason="keras-tuner's Bayesian oracle needs scikit-learn")),
])
def test_two_trial_search_writes_a_runnable_best_flagfile_and_resumes(tmp_path, capfd, tuner):
    run_root = tmp_path / "runs"
    args = [*BASE_FLAGS, "--tune=learning_rate,warmup,rewind,prune_rate", "--max_trials=2",
            f"--tuner={tuner}", "--tune_target_sparsity=0.5", f"--run_root={run_root}"]
    code, out, err = cli(capfd, *args)
    assert code == 0, out + err
    (tune_dir,) = glob.glob(str(run_root / "tune_lenet_300_100_synthetic_*"))  # in the run root
    search = paths.TuneDir(tune_dir)
    with open(search.trials_csv) as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    budget = "10it" if tuner == "hyperband" else "90it"  # Hyperband: 1/9 of 90 iterations
    for row in rows:
        assert row["training_steps"] == budget
        assert float(row["sparsity"]) >= 0.5 - 1e-3
        assert 0 <= float(row["val_accuracy"]) <= 1
        # Scored on the ticket's validation accuracy at the target, never on test.
        assert float(row["score"]) == pytest.approx(float(row["val_accuracy"]))
        # Each trial is an experiment of the runs/ root: hparams.json names its directory.
        run, replicate = paths.resolve_replicate(row["run_dir"])
        assert os.path.dirname(run.path) == os.path.abspath(search.runs)
        trial_hp = ExperimentHparams.from_dict(json.load(open(run.hparams)))
        assert trial_hp.run_name() == run.name and replicate.index == 0
        assert str(trial_hp.training.training_steps) == budget
        with open(replicate.results) as f:
            last = json.load(f)["levels"][-1]  # the trial stopped at the scored level
        assert last["level"] == int(row["levels"]) and list(last["branches"]) == ["lottery"]
        scored = last["branches"]["lottery"]
        assert float(row["val_accuracy"]) == pytest.approx(scored["early_stop_val_accuracy"])
        assert float(row["sparsity"]) == pytest.approx(scored["sparsity"])
    best = max(rows, key=lambda r: float(r["score"]))
    assert "| trial |" in open(search.trials_md).read()

    flagfile = search.best_flags
    hp, levels, controls = parse_flagfile(flagfile)
    assert hp.training.learning_rate == pytest.approx(float(best["learning_rate"]))
    assert str(hp.training.warmup) == best["warmup"]
    assert str(hp.pruning.rewind) == best["rewind"]
    assert hp.pruning.rate == pytest.approx(float(best["prune_rate"]))
    # prune_rate_output keeps its ratio (0.25 / 0.5) to prune_rate.
    assert hp.pruning.rate_output == pytest.approx(hp.pruning.rate / 2, rel=1e-3)
    assert hp.model.initializer == "gradinit" and hp.model.gradinit.steps == 3
    assert str(hp.training.training_steps) == "90it"  # the full budget, not the trial's
    assert levels == 2 and controls == ["reinit"]  # the full experiment, not the trial's

    # The best flagfile runs as it is (only the run root is ours).
    _, experiment_command, ef = _cli()
    try:
        ef.FLAGS(["tf_lottery.main", f"--flagfile={flagfile}",
                  f"--run_root={tmp_path / 'best'}"])
        assert experiment_command.main([]) == 0
    finally:
        ef.FLAGS.unparse_flags()
    (best_run,) = [paths.RunDir(p) for p in glob.glob(str(tmp_path / "best" / "*"))]
    levels_run = json.load(open(best_run.replicate(0).results))["levels"]
    assert [entry["level"] for entry in levels_run] == [0, 1, 2]
    assert sorted(levels_run[2]["branches"]) == ["lottery", "reinit"]

    code, out, err = cli(capfd, *args)  # resumes: keras-tuner reloads, no trial reruns
    assert code == 0, out + err
    assert "Reloading Tuner" in out + err
    assert "Trial 3" not in out + err and "trial 2:" not in err
    with open(search.trials_csv) as f:
        assert len(list(csv.DictReader(f))) == 2


@pytest.mark.parametrize("flag, message", [
    ("--tune=learning_rate,bogus", "--tune=bogus is not a flag"),
    ("--tune=batch_size", "--tune=batch_size cannot be tuned"),
    ("--tune=", "--tune names no flag"),
    ("--tuner=grid", "--tuner"),
    ("--max_trials=0", "max_trials"),
    ("--tune_target_sparsity=1.2", "tune_target_sparsity"),
    ("--gradinit_eta=0", "gradinit_eta"),
    ("--gradinit_gamma=-1", "gradinit_gamma"),
    ("--gradinit_steps=0", "gradinit_steps"),
    ("--base_initializer=glorious", "--base_initializer='glorious'"),
])
def test_bad_cli_input_is_one_line_and_exit_2(tmp_path, capfd, flag, message):
    args = [*BASE_FLAGS, "--tune=learning_rate", "--tuner=hyperband",
            f"--run_root={tmp_path / 'r'}", flag]
    code, out, err = cli(capfd, *args)
    assert code == 2, out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert not os.path.exists(tmp_path / "r")  # nothing written, no trial run


def test_python_m_tf_lottery_tune_is_the_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tf_lottery.cli", "tune", "--dataset=synthetic",
         "--tune=learning_rate,momentum", f"--run_root={tmp_path}"],
        capture_output=True, text=True, timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 2, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == ("error: --tune=momentum cannot be tuned; tunable flags: "
                    "learning_rate,warmup,rewind,prune_rate.")
    assert os.listdir(tmp_path) == []


def test_search_space_is_centred_on_the_base_and_within_the_budget():
    hp = base(learning_rate=2e-3)
    space = tune_lib.search_space(hp, ["learning_rate", "warmup", "rewind", "prune_rate"], 30)
    by_name = {p.name: p for p in space.space}
    assert by_name["learning_rate"].min_value == pytest.approx(5e-4)
    assert by_name["learning_rate"].max_value == pytest.approx(8e-3)
    assert by_name["learning_rate"].sampling == "log"
    assert list(by_name["warmup"].values) == [0, 10, 50, 100]
    rewinds = list(by_name["rewind"].values)
    assert rewinds[0] == 0 and max(rewinds) < 1000 and rewinds == sorted(set(rewinds))
    assert (by_name["prune_rate"].min_value, by_name["prune_rate"].max_value) == (0.2, 0.6)


def test_trial_hparams_apply_values_and_derive_rates():
    hp = base()
    trial = tune_lib.trial_hparams(
        hp, {"learning_rate": 0.0012345678, "warmup": 50, "rewind": 20, "prune_rate": 0.6},
        levels=3)
    assert trial.training.learning_rate == 0.001235
    assert str(trial.training.warmup) == "50it" and str(trial.pruning.rewind) == "20it"
    assert trial.pruning.rate == 0.6 and trial.pruning.rate_output == pytest.approx(0.3)
    assert trial.pruning.levels == 3 and trial.pruning.controls == ()
    short = tune_lib.trial_hparams(hp, {"rewind": 20, "warmup": 100}, levels=1,
                                   budget_fraction=1 / 3)
    assert str(short.training.training_steps) == "300it"  # whole evaluation periods
    assert str(short.training.warmup) == "30it" and str(short.pruning.rewind) == "10it"


def test_levels_to_reach_the_target_sparsity():
    sizes = [(900, 0.5), (100, 0.25)]
    n = tune_lib.levels_to_reach(sizes, 0.8)
    kept = lambda k: (900 * 0.5 ** k + 100 * 0.75 ** k) / 1000  # noqa: E731
    assert 1 - kept(n) >= 0.8 > 1 - kept(n - 1)
    with pytest.raises(ArgumentError, match="`target_sparsity` must be a fraction") as err:
        tune_lib.levels_to_reach(sizes, 1.0)
    assert err.value.argument == "target_sparsity"
    with pytest.raises(ValueError, match="not reached"):
        tune_lib.levels_to_reach([(10, 0.0)], 0.5)


def test_library_rejects_bad_searches_before_any_trial(tmp_path):
    ds = data.load("synthetic", validation_size=100)
    hp = base()
    (tmp_path / "a_file").write_text("")
    cases = [
        (dict(names=["momentum"]), "`names` holds 'momentum', which is not a tunable flag"),
        (dict(names=[]), "`names` names no flag"),
        (dict(names=["learning_rate", "learning_rate"]), "`names` lists a flag twice"),
        (dict(names=["learning_rate"], tuner="grid"), "`tuner` must be one of"),
        (dict(names=["learning_rate"], tuner="random", objective="train"),
         "`objective` must be one of"),
        (dict(names=["learning_rate"], tuner="random", max_trials=0), "`max_trials`"),
        (dict(names=["learning_rate"], tuner="hyperband", hyperband_max_epochs=0),
         "`hyperband_max_epochs`"),
        (dict(names=["learning_rate"], tuner="random", target_sparsity=1.5),
         "`target_sparsity` must be a fraction"),
        (dict(names=["learning_rate"], tuner="random", tune_dir=str(tmp_path / "a_file")),
         "`tune_dir` must be a directory"),
    ]
    try:
        import sklearn  # noqa: F401
    except ImportError:  # keras-tuner's Bayesian oracle needs it: a clear error instead
        cases.append((dict(names=["learning_rate"], tuner="bayesian"), "scikit-learn"))
    for kwargs, message in cases:
        kwargs.setdefault("tune_dir", str(tmp_path / "t"))
        with pytest.raises(ValueError, match=message) as err:
            tune_lib.tune(hp, ds, **kwargs)
        assert "(--" not in str(err.value)  # library errors name arguments, not flags
        argument = message.split("`")[1] if "`" in message else "tuner"
        assert isinstance(err.value, ArgumentError) and err.value.argument == argument
    frozen = dataclasses.replace(hp, pruning=dataclasses.replace(
        hp.pruning, exclude=("fc1", "fc2", "output")))
    with pytest.raises(ValueError, match="`target_sparsity` 0.8 is not reached"):
        tune_lib.tune(frozen, ds, names=["prune_rate"], tuner="random",
                      tune_dir=str(tmp_path / "t"))
    no_val = dataclasses.replace(ds, x_val=ds.x_val[:0], y_val=ds.y_val[:0])
    with pytest.raises(ValueError, match="no validation split"):
        tune_lib.tune(hp, no_val, names=["learning_rate"], tuner="random",
                      tune_dir=str(tmp_path / "t"))
    assert not os.path.exists(tmp_path / "t")
