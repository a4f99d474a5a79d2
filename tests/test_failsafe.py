"""What a run survives: diverged training, chance accuracy, SIGTERM and hard kills."""

import glob
import json
import os
import signal
import time

import numpy as np
import pytest
from helpers import run_main, without_times

from tf_lottery import data, experiment, files, paths, ticket
from tf_lottery.hparams import (
    DatasetHparams,
    ExperimentHparams,
    ModelHparams,
    PruningHparams,
    TrainingHparams,
)
from tf_lottery.summary import chance_accuracy
from tf_lottery.training import Runtime

DATA = data.load("synthetic")
RUNTIME = Runtime(jit_compile=False, deterministic=True)


def _hp(model=ModelHparams("lenet_300_100"), **training):
    return ExperimentHparams(
        model=model, dataset=DatasetHparams("synthetic"),
        training=TrainingHparams(**{"batch_size": 50, "training_steps": "60it",
                                    "eval_every": "20it", **training}),
        pruning=PruningHparams(levels=1, rate=0.5, controls=("reinit",)))


def test_chance_accuracy_is_the_majority_class_with_two_standard_errors():
    chance, threshold = chance_accuracy([0, 0, 0, 1])
    assert chance == 0.75 and threshold == pytest.approx(0.75 + 2 * np.sqrt(0.75 * 0.25 / 4))
    assert chance_accuracy([])[1] == float("-inf")


def test_diverged_dense_network_stops_the_run_before_any_pruning(tmp_path):
    hp = _hp(optimizer="sgd", learning_rate=1e4)
    with pytest.raises(ticket.DivergedError, match="level 0 lottery diverged") as info:
        experiment.run_experiment(hp, tmp_path, dataset=DATA, runtime=RUNTIME)
    err = info.value
    assert "`learning_rate`" in str(err) and "`warmup`" in str(err)
    rep = paths.RunDir.of(tmp_path, hp.run_name()).replicate(0)
    summary = files.read_json(rep.branch(0, "lottery").summary)
    assert summary["diverged"] and summary["diverged_iteration"] == err.iteration
    assert 1 <= err.iteration <= 20  # the first chunk stops at the first non-finite loss
    assert rep.levels() == [0]  # no level-1 mask computed from non-finite weights
    assert "diverged at" in err.result.table()
    with pytest.raises(ticket.DivergedError):  # a rerun does not prune it either
        experiment.run_experiment(hp, tmp_path, dataset=DATA, runtime=RUNTIME)
    assert rep.levels() == [0]


def test_a_diverged_control_keeps_the_levels_before_it(tmp_path):
    hp = _hp()

    def model_fn(seed):  # the reinit control's network starts with huge weights
        model = experiment.build_model(hp.model, DATA.input_shape, DATA.num_classes,
                                       seed=seed)
        if _reinit[0]:  # theta_0 is read back from init.weights.h5 over this one
            model.set_weights([w * 1e30 for w in model.get_weights()])
        return model

    _reinit = [False]
    rep = paths.ReplicateDir.at(tmp_path / "replicate_0")
    ticket.fit(model_fn, DATA, training=hp.training, pruning_hparams=PruningHparams(),
               run_dir=rep.path, runtime=RUNTIME)  # level 0 only
    level0 = files.read_json(rep.branch(0, "lottery").summary)
    stamp = os.path.getmtime(rep.branch(0, "lottery").summary)
    _reinit[0] = True
    with pytest.raises(ticket.DivergedError, match="level 1 reinit diverged"):
        ticket.fit(model_fn, DATA, training=hp.training, pruning_hparams=hp.pruning,
                   run_dir=rep.path, runtime=RUNTIME)
    assert os.path.getmtime(rep.branch(0, "lottery").summary) == stamp
    assert files.read_json(rep.branch(0, "lottery").summary) == level0
    assert files.read_json(rep.branch(1, "reinit").summary)["diverged"]
    assert not os.path.exists(rep.branch(1, "lottery").summary)
    results = files.read_json(rep.results)
    assert results["levels"][1]["branches"]["reinit"]["diverged"]


def test_a_network_at_chance_accuracy_is_flagged(tmp_path, caplog):
    # Zero kernels: every example gets the same logits, so the network predicts one class.
    hp = _hp(model=ModelHparams("lenet_300_100", initializer="zeros"), learning_rate=1e-6)
    result = experiment.run_experiment(hp, tmp_path, dataset=DATA, runtime=RUNTIME)
    dense = result.levels[0]["lottery"]
    assert dense["at_chance"] and not dense["diverged"]
    assert dense["chance_accuracy"] == chance_accuracy(DATA.y_test)[0]
    assert "(chance)" in result.table()
    assert any("ended at chance accuracy" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------- the command line

SMALL = ["--dataset=synthetic", "--batch_size=32", "--eval_every=50it", "--levels=1",
         "--prune_rate=0.5", "--seed=3", "--deterministic", "--jit_compile=false"]


cli = run_main


def results(run_root):
    (path,) = glob.glob(os.path.join(run_root, "*", "replicate_0", "results.json"))
    return files.read_json(path)


def test_cli_diverged_run_exits_1_with_one_line_naming_the_branch(tmp_path):
    run = cli(*SMALL, "--training_steps=100it", "--optimizer=sgd", "--learning_rate=10000",
              f"--run_root={tmp_path}")
    assert run.returncode == 1, run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "level 0 lottery diverged" in errors[0]
    assert "--learning_rate" in errors[0] and "--warmup" in errors[0]
    assert "| 0 | lottery |" in run.stdout and "diverged at" in run.stdout
    (replicate,) = glob.glob(str(tmp_path / "*" / "replicate_0"))
    assert paths.ReplicateDir.at(replicate).levels() == [0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    run = cli(*SMALL, "--training_steps=20000it", f"--run_root={root}")
    assert run.returncode == 0, run.stdout + run.stderr
    return results(root)


def _wait_for(pattern, process, seconds=300):
    deadline = time.time() + seconds
    while not glob.glob(pattern):
        assert process.poll() is None, "the run ended before the event: " + str(
            process.communicate())
        assert time.time() < deadline, f"no {pattern} after {seconds} s"
        time.sleep(0.02)
    return glob.glob(pattern)


def test_sigterm_checkpoints_mid_level_and_the_rerun_ends_the_same(tmp_path, uninterrupted):
    args = [*SMALL, "--training_steps=20000it", "--checkpoint_every=100000it",
            "--checkpoint_minutes=0", f"--run_root={tmp_path}"]
    process = cli(*args, wait=False)
    _wait_for(str(tmp_path / "*" / "replicate_0" / "level_1" / "lottery" / "mask.npz"),
              process)
    time.sleep(1.0)  # level 1 trains 20,000 iterations (seconds): the signal comes inside
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stopped by SIGTERM during level 1 lottery" in errors[0]
    (branch,) = glob.glob(str(tmp_path / "*" / "replicate_0" / "level_1" / "lottery"))
    state = files.read_json(paths.BranchDir(branch).checkpoint)
    # Usually between two evaluations (the period's running metrics are in the checkpoint).
    assert 0 <= state["step"] < 20000 and not os.path.exists(paths.BranchDir(branch).summary)
    assert f"at iteration {state['step']}" in errors[0]

    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming level 1 lottery from iteration {state['step']}" in resumed.stderr
    assert without_times(results(tmp_path)) == without_times(uninterrupted)


def test_a_hard_kill_resumes_from_the_time_based_checkpoint(tmp_path, uninterrupted):
    args = [*SMALL, "--training_steps=20000it", "--checkpoint_every=100000it",
            "--checkpoint_minutes=0.001", f"--run_root={tmp_path}"]  # every 0.06 s
    process = cli(*args, wait=False)
    (checkpoint,) = _wait_for(
        str(tmp_path / "*" / "replicate_0" / "level_0" / "lottery" / "checkpoint.json"),
        process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    step = json.load(open(checkpoint))["step"]  # noqa: SIM115
    assert 0 < step < 20000

    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming level 0 lottery from iteration" in resumed.stderr
    assert without_times(results(tmp_path)) == without_times(uninterrupted)
