"""Several reinit draws per level (``reinit_draws``, the paper averages three): their own
directories and seeds, draw 0 unchanged, runs extended in place, the report's means, and
bad values refused before any directory exists."""

import dataclasses
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import without_times

from tf_lottery import experiment, files, masking, paths, report, training
from tf_lottery.hparams import (ArgumentError, DatasetHparams, ExperimentHparams,
                                ModelHparams, PruningHparams, TrainingHparams)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Dropout makes the engine's random state matter: the draws must leave it as they found it.
HP = ExperimentHparams(
    model=ModelHparams("lenet_300_100", dropout=0.5),
    dataset=DatasetHparams("synthetic"),
    training=TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="60it",
                             eval_every="20it"),
    pruning=PruningHparams(levels=2, rate=0.5, rate_output=0.25,
                           controls=("reinit", "random_prune"), reinit_draws=3),
)
ONE_DRAW = dataclasses.replace(HP, pruning=dataclasses.replace(HP.pruning, reinit_draws=1))
RUNTIME = training.Runtime(deterministic=True, jit_compile=False, steps_per_execution=20)


def run(hp, run_root):
    return experiment.run_experiment(hp, run_root, runtime=RUNTIME)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(three draws, one draw) of the same tiny experiment, each in its own run root."""
    three, one = tmp_path_factory.mktemp("three"), tmp_path_factory.mktemp("one")
    return (three, run(HP, three)), (one, run(ONE_DRAW, one))


def replicate(run_root):
    return paths.RunDir.of(run_root, HP.run_name()).replicate(0)


def test_draws_train_under_the_ticket_mask_from_different_initializations(runs):
    (three, result), _ = runs
    rep = replicate(three)
    for level in (1, 2):
        assert rep.draws(level) == [0, 1, 2]
        dirs = [rep.branch(level, "reinit", d) for d in (0, 1, 2)]
        assert [os.path.basename(d.path) for d in dirs] == ["reinit", "reinit_1", "reinit_2"]
        assert all(d.is_finished() for d in dirs)
        ticket = masking.load_masks(rep.branch(level, "lottery").mask)
        for d in dirs:  # every draw trains the ticket's mask ...
            mask = masking.load_masks(d.mask)
            assert all(np.array_equal(mask[k], ticket[k]) for k in ticket)
        # ... from its own initialization: the evaluations before any training differ.
        initial = [files.read_csv(d.metrics)[0] for d in dirs]
        assert all(row["iteration"] == 0 for row in initial)
        losses = [row["test_loss"] for row in initial]
        assert len(set(losses)) == 3, losses
        assert list(result.levels[level]) == ["lottery", "reinit", "reinit_1", "reinit_2",
                                              "random_prune"]


def test_draw_0_and_every_other_branch_equal_the_run_with_one_draw(runs):
    (three, result), (one, single) = runs
    assert ONE_DRAW.run_name() == HP.run_name()  # the draws only add branches
    extra = {"reinit_1", "reinit_2"}
    trimmed = [{b: s for b, s in level.items() if b not in extra} for level in result.levels]
    assert without_times(trimmed) == without_times(single.levels)
    assert "reinit_draws" not in files.read_json(paths.RunDir.of(one, HP.run_name()).hparams)[
        "pruning"]
    assert files.read_json(paths.RunDir.of(three, HP.run_name()).hparams)["pruning"][
        "reinit_draws"] == 3


def test_more_draws_extend_a_finished_run_in_place(runs, tmp_path):
    (three, result), (one, _) = runs
    root = tmp_path / "extended"
    os.makedirs(root)
    shutil.copytree(paths.RunDir.of(one, HP.run_name()).path, root / HP.run_name())
    lottery = replicate(root).branch(2, "lottery").summary
    before = os.path.getmtime(lottery)
    extended = run(HP, root)
    assert os.path.getmtime(lottery) == before  # finished branches are not retrained
    assert without_times(extended.levels) == without_times(result.levels)


def test_results_table_shows_each_draw_and_their_mean(runs):
    (_, result), _ = runs
    table = result.table()
    draws = [result.levels[1][name] for name in ("reinit", "reinit_1", "reinit_2")]
    for label in ("| 1 | reinit |", "| 1 | reinit draw 1 |", "| 1 | reinit draw 2 |",
                  "| 2 | reinit draw 2 |"):
        assert label in table
    (mean_row,) = [line for line in table.splitlines() if line.startswith("| 1 | reinit mean")]
    cells = [c.strip() for c in mean_row.strip("|").split("|")]
    assert cells[1] == "reinit mean of 3"
    assert cells[5] == f"{np.mean([s['early_stop_test_accuracy'] for s in draws]):.4f}"
    assert cells[6] == f"{np.mean([s['final_test_accuracy'] for s in draws]):.4f}"
    assert cells[4] == str(round(np.mean([s["early_stop_iteration"] for s in draws])))


def test_report_averages_the_draws_into_the_reinit_line(runs, tmp_path):
    (three, result), _ = runs
    run_dir = paths.RunDir.of(three, HP.run_name()).path
    (loaded,) = report.load_runs(run_dir)
    rows = {(r["branch"], r["level"]): r for r in report.aggregate(loaded)}
    draws = [result.levels[1][name] for name in ("reinit", "reinit_1", "reinit_2")]
    reinit = rows[("reinit", 1)]
    assert (reinit["n"], reinit["replicates"]) == (3, 1)
    accuracies = [s["early_stop_test_accuracy"] for s in draws]
    assert reinit["early_stop_test_accuracy"] == {
        "mean": pytest.approx(np.mean(accuracies)), "min": min(accuracies),
        "max": max(accuracies), "n": 3}
    assert (rows[("lottery", 1)]["n"], rows[("random_prune", 1)]["n"]) == (1, 1)
    assert not any(b.startswith("reinit_") for b, _ in rows)  # draws are not branches
    (line,) = [s for s in report.plots.branch_series([loaded], "early_stop_test_accuracy")
               if s["branch"] == "reinit"]
    assert line["n"] == 3 and line["mean"][1] == pytest.approx(np.mean(accuracies))
    written = report.make_report(run_dir, tmp_path)
    markdown = open(written["markdown"]).read()
    assert "| replicate_0 | 1 | reinit draw 2 |" in markdown
    assert "| 1 | reinit | 3 |" in markdown  # the table of means over networks
    assert f"{np.mean(accuracies):.4f} [{min(accuracies):.4f}, {max(accuracies):.4f}]" \
        in markdown
    assert "draws" in files.read_json(written["json"])["runs"][0]["replicates"][0]


@pytest.mark.parametrize("value, message", [
    (0, "must be >= 1"), (-1, "must be >= 1"), (1.5, "must be an integer"),
    (True, "must be an integer"),
])
def test_bad_reinit_draws_name_the_argument(value, message):
    with pytest.raises(ArgumentError, match=f"^`reinit_draws` {message}") as info:
        PruningHparams(controls=("reinit",), reinit_draws=value)
    assert info.value.argument == "reinit_draws" and "--" not in str(info.value)
    with pytest.raises(ArgumentError, match="`reinit_draws` applies to the reinit control"):
        PruningHparams(controls=("random_prune",), reinit_draws=3)


def cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "tf_lottery.main", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_reinit_draws_from_the_command_line(tmp_path):
    done = cli("--dataset=synthetic", "--batch_size=32", "--training_steps=40it",
               "--eval_every=20it", "--levels=1", "--controls=reinit", "--reinit_draws=2",
               f"--run_root={tmp_path}")
    assert done.returncode == 0, done.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rep = paths.RunDir(str(run_dir)).replicate(0)
    assert rep.draws(1) == [0, 1] and rep.branch(1, "reinit", 1).is_finished()
    assert "| 1 | reinit draw 1 |" in done.stdout and "| 1 | reinit mean of 2 |" in done.stdout
    assert "--reinit_draws=2" in open(paths.RunDir(str(run_dir)).flags).read()


@pytest.mark.parametrize("value", ["0", "-1", "1.5"])
def test_bad_reinit_draws_flag_exits_2_before_any_directory(tmp_path, value):
    done = cli("--dataset=synthetic", "--levels=1", "--controls=reinit",
               f"--reinit_draws={value}", f"--run_root={tmp_path / 'runs'}")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--reinit_draws" in errors[0], done.stderr
    assert not os.path.exists(tmp_path / "runs")


def test_reinit_draws_flag_keeps_the_run_name_and_reaches_flags_txt():
    from tf_lottery.cli import experiment_flags as ef

    try:
        preset = f"--flagfile={os.path.join(ROOT, 'configs', 'conv2.flags')}"
        ef.FLAGS.unparse_flags()
        ef.FLAGS(["tf-lottery", preset])
        name = ef.hparams().run_name()
        ef.FLAGS.unparse_flags()
        ef.FLAGS(["tf-lottery", preset, "--reinit_draws=3"])
        hp = ef.hparams()
        assert hp.pruning.reinit_draws == 3 and hp.run_name() == name
        assert "--reinit_draws=3" in ef.flagfile_text().splitlines()
        assert ExperimentHparams.from_dict(hp.to_dict()) == hp
    finally:
        ef.FLAGS.unparse_flags()
