"""Distributed search: tf_lottery.tune under keras-tuner's distributed mode (a chief serving
the oracle, workers running trials) on 127.0.0.1, through the cluster launcher and as raw
processes (a worker killed and restarted)."""

import csv
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tf_lottery import paths
from tf_lottery.cluster import free_ports
from tf_lottery.hparams import ArgumentError
from tf_lottery.tune import distributed_role

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
for _name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT",
              "TF_CONFIG"):
    ENV.pop(_name, None)


def search_flags(run_root, steps="20it", trials=4):
    """A random search of --learning_rate whose trials are one short level (the target
    sparsity 0.4 is reached at level 1) on synthetic data."""
    return ["--dataset=synthetic", "--batch_size=32", f"--training_steps={steps}",
            "--eval_every=10it" if steps == "20it" else "--eval_every=100it", "--levels=1",
            "--prune_rate=0.5", "--nojit_compile", "--tune=learning_rate", "--tuner=random",
            f"--max_trials={trials}", "--tune_target_sparsity=0.4", f"--run_root={run_root}"]


def the_search(run_root):
    (tune_dir,) = glob.glob(os.path.join(str(run_root), "tune_lenet_300_100_synthetic_*"))
    return paths.TuneDir(tune_dir)


def rows(search):
    with open(search.trials_csv) as f:
        return list(csv.DictReader(f))


def trials_run(out, name):
    """The trial ids process ``name`` ran, in order (its `trial <id>:` log lines)."""
    return re.findall(rf"^\[{name}\] .*search\.py:\d+\] trial (\d+):", out, re.M)


def test_chief_and_two_workers_run_four_trials_and_the_chief_writes_the_results(tmp_path):
    run_root = tmp_path / "runs"
    command = [sys.executable, "-m", "tf_lottery.cluster", "--workers=2", "--timeout=240",
               "--grace=10", "--", "tune", *search_flags(run_root)]
    run = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=300)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    for name in ("chief", "worker 0", "worker 1"):
        assert f"[cluster] {name} exited with code 0\n" in out
    # The chief serves the oracle and runs no trial; each trial ran once, on a worker.
    assert trials_run(out, "chief") == []
    ran = trials_run(out, "worker 0") + trials_run(out, "worker 1")
    assert sorted(ran) == ["0", "1", "2", "3"], out
    # Only the chief reports the search; the workers say who does.
    assert re.search(r"^\[chief\] Best flagfile: ", out, re.M)
    assert not re.search(r"^\[worker \d\] (Best flagfile|\| trial \|)", out, re.M)
    for i in range(2):
        assert (f"[worker {i}] keras-tuner worker tuner{i}: no trial left. The chief "
                "(KERASTUNER_TUNER_ID=chief) writes best.flags") in out
    search = the_search(run_root)
    table = rows(search)
    assert [r["trial"] for r in table] == ["0", "1", "2", "3"]
    assert {r["status"] for r in table} == {"COMPLETED"}
    for row in table:  # the workers' trial_info.json reached the chief's table
        assert float(row["score"]) == pytest.approx(float(row["val_accuracy"]))
        assert os.path.isdir(row["run_dir"]) and row["training_steps"] == "20it"
    assert "| trial |" in open(search.trials_md).read()

    # The best flagfile reruns as it is (its own run root).
    best = subprocess.run(
        [sys.executable, "-m", "tf_lottery.main", f"--flagfile={search.best_flags}",
         f"--run_root={tmp_path / 'best'}"], cwd=ROOT, env=ENV, capture_output=True,
        text=True, timeout=180)
    assert best.returncode == 0, best.stdout + best.stderr
    assert len(glob.glob(str(tmp_path / "best" / "*" / "replicate_0" / "results.json"))) == 1


def _start(tuner_id, port, flags, log):
    env = dict(ENV, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
               KERASTUNER_ORACLE_PORT=str(port))
    return subprocess.Popen([sys.executable, "-m", "tf_lottery.cli", "tune", *flags],
                            cwd=ROOT, env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)


def _wait(process, log, timeout=150):
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"timed out; log:\n{open(log).read()}")


def test_a_worker_restarted_with_its_id_continues_its_trial(tmp_path):
    run_root = tmp_path / "runs"
    flags = search_flags(run_root, steps="1500it", trials=2)
    (port,) = free_ports(1)
    chief = _start("chief", port, flags, tmp_path / "chief.log")
    worker = _start("tuner0", port, flags, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 150
        pattern = os.path.join(str(run_root), "tune_*", "runs", "*", "replicate_0")
        while not glob.glob(os.path.join(pattern, "level_0", "lottery", "summary.json")):
            assert time.monotonic() < deadline and worker.poll() is None, \
                open(tmp_path / "first.log").read()
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)  # during level 1 of trial 0
        worker.wait(timeout=30)
        (replicate,) = glob.glob(pattern)
        assert not os.path.exists(os.path.join(replicate, "level_1", "lottery", "summary.json"))
        (trial,) = glob.glob(os.path.join(str(run_root), "tune_*", "tune_*", "trial_0",
                                          "trial.json"))
        assert json.load(open(trial))["status"] == "RUNNING"

        worker = _start("tuner0", port, flags, tmp_path / "again.log")
        assert _wait(worker, tmp_path / "again.log") == 0
        assert _wait(chief, tmp_path / "chief.log") == 0
    finally:
        for process in (worker, chief):
            process.kill()
    again = open(tmp_path / "again.log").read()
    # The oracle handed trial 0 back to tuner0; its run kept level 0 and trained level 1.
    assert re.findall(r"trial (\d+): ", again) == ["0", "1"], again
    trial_0 = again[again.index("trial 0: "):again.index("trial 1: ")]
    assert "level 0 lottery: training" not in trial_0
    assert "level 1 lottery: training" in trial_0
    table = rows(the_search(run_root))
    assert [(r["trial"], r["status"]) for r in table] == [("0", "COMPLETED"), ("1", "COMPLETED")]
    assert table[0]["run_dir"] == replicate

    # Rerunning the finished search resumes it: no trial runs again, both exit 0.
    (port,) = free_ports(1)
    chief = _start("chief", port, flags, tmp_path / "chief_rerun.log")
    worker = _start("tuner0", port, flags, tmp_path / "rerun.log")
    try:
        assert _wait(worker, tmp_path / "rerun.log") == 0
        assert _wait(chief, tmp_path / "chief_rerun.log") == 0
    finally:
        for process in (worker, chief):
            process.kill()
    rerun = open(tmp_path / "rerun.log").read()
    assert "Reloading Tuner" in rerun and re.findall(r"trial (\d+): ", rerun) == [], rerun
    assert rows(the_search(run_root)) == table


def test_a_worker_of_another_search_is_refused_before_any_trial(tmp_path):
    (port,) = free_ports(1)
    chief = _start("chief", port, search_flags(tmp_path / "a"), tmp_path / "chief.log")
    worker = _start("tuner0", port, search_flags(tmp_path / "b") + ["--learning_rate=0.01"],
                    tmp_path / "worker.log")
    try:
        assert _wait(worker, tmp_path / "worker.log") == 2
    finally:
        worker.kill()
        chief.send_signal(signal.SIGTERM)
        chief.wait(timeout=60)
    last = open(tmp_path / "worker.log").read().strip().splitlines()[-1]
    assert last.startswith("error: the chief at 127.0.0.1:") and "serves another search" in last
    assert "--tune_dir on a filesystem they share" in last
    assert not os.path.exists(tmp_path / "b")  # the worker left nothing behind


def test_distributed_role_follows_keras_tuner_variables():
    oracle = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}
    assert distributed_role({}) is None
    assert distributed_role({**oracle, "KERASTUNER_TUNER_ID": "chief"}) == "chief"
    assert distributed_role({**oracle, "KERASTUNER_TUNER_ID": "tuner3"}) == "worker"
    for env, name in [
        ({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_TUNER_ID": "tuner0"},
         "KERASTUNER_ORACLE_PORT"),
        (oracle, "KERASTUNER_TUNER_ID"),
        ({**oracle, "KERASTUNER_TUNER_ID": ""}, "KERASTUNER_TUNER_ID"),
        ({**oracle, "KERASTUNER_TUNER_ID": "tuner0", "KERASTUNER_ORACLE_PORT": "http"},
         "KERASTUNER_ORACLE_PORT"),
    ]:
        with pytest.raises(ArgumentError, match=name) as err:
            distributed_role(env)
        assert err.value.argument == name


def test_half_set_keras_tuner_variables_are_one_line_and_exit_2(tmp_path):
    env = dict(ENV, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_TUNER_ID="tuner0")
    run = subprocess.run([sys.executable, "-m", "tf_lottery.cli", "tune",
                          *search_flags(tmp_path / "r")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "error: KERASTUNER_ORACLE_IP is set ('127.0.0.1') but KERASTUNER_ORACLE_PORT is not: "
        "a distributed search needs KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, "
        "KERASTUNER_ORACLE_PORT on every process (KERASTUNER_TUNER_ID=chief on the "
        "oracle's), or none of them for a search in one process.")
    assert not os.path.exists(tmp_path / "r")
