"""Multi-worker experiments over 127.0.0.1: real processes through the local launcher.

``python -m tf_lottery.cluster --workers=N -- ARGS`` starts N processes of
``python -m tf_lottery.cli experiment ARGS --distribution=multi_worker``, each with its
own ``TF_CONFIG``. Every test bounds its processes' time.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import run_main, without_times

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One level and a control; the global batch (32) is split 16 + 16 on two workers.
SMALL = [
    "--dataset=synthetic", "--batch_size=32", "--training_steps=200it", "--eval_every=50it",
    "--learning_rate=0.002", "--levels=1", "--prune_rate=0.5", "--rewind=50it", "--seed=7",
    "--jit_compile=false", "--deterministic",
]


def launch(workers, *args, wait=True, timeout=170):
    command = [sys.executable, "-m", "tf_lottery.cluster", f"--workers={workers}",
               f"--timeout={timeout - 10}", "--grace=5", "--", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_dir(root):
    (path,) = glob.glob(os.path.join(str(root), "*", "replicate_0"))
    return path


def masks_and_metrics(replicate):
    """``{branch dir: (mask arrays, metric rows)}`` of a finished replicate."""
    out = {}
    for branch in sorted(glob.glob(os.path.join(replicate, "level_*", "*"))):
        with np.load(os.path.join(branch, "mask.npz")) as f:
            masks = {k: f[k] for k in f.files}
        with open(os.path.join(branch, "metrics.csv")) as f:
            header, *lines = f.read().split()
        rows = [dict(zip(header.split(","), map(float, line.split(",")))) for line in lines]
        out[os.path.relpath(branch, replicate)] = (masks, rows)
    return out


def test_two_workers_give_the_one_worker_results_and_one_set_of_artifacts(tmp_path):
    args = SMALL + ["--controls=random_prune"]
    two = launch(2, *args, f"--run_root={tmp_path / 'two'}")
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert "[cluster] worker 0: pid" in two.stdout and "[cluster] worker 1: pid" in two.stdout
    assert "| 1 | random_prune |" in two.stdout  # the chief's closing table
    assert "[worker 1] worker 1: done; the chief wrote" in two.stdout
    one = launch(1, *args, f"--run_root={tmp_path / 'one'}")
    assert one.returncode == 0, one.stdout[-3000:]

    replicate = run_dir(tmp_path / "two")
    run = os.path.dirname(replicate)
    # One set of artifacts: no worker copies, no lock, nothing beside the run directory.
    assert sorted(os.listdir(run)) == ["flags.txt", "hparams.json", "replicate_0"]
    assert not os.path.exists(os.path.join(replicate, "lock.json"))
    assert sorted(os.listdir(tmp_path / "two")) == [os.path.basename(run)]

    got, want = masks_and_metrics(replicate), masks_and_metrics(run_dir(tmp_path / "one"))
    assert sorted(got) == sorted(want) == ["level_0/lottery", "level_1/lottery",
                                           "level_1/random_prune"]
    for branch, (masks, rows) in want.items():
        other_masks, other_rows = got[branch]
        assert masks.keys() == other_masks.keys()
        for key in masks:  # masks: exactly the same
            np.testing.assert_array_equal(masks[key], other_masks[key], err_msg=branch)
        # Metrics to float tolerance: two workers sum their half-batch gradients with a
        # collective, one worker sums the whole batch; the float32 sums differ in the
        # last bits (measured: at most 2.4e-7 on these losses), far below 1e-4.
        assert [r["iteration"] for r in rows] == [r["iteration"] for r in other_rows]
        for a, b in zip(rows, other_rows):
            for column in a:
                np.testing.assert_allclose(b[column], a[column], rtol=1e-4, atol=1e-5,
                                           err_msg=f"{branch} {column}")


def _drain(job):
    """The launcher's output lines, read by a thread so its pipe never fills."""
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(job.stdout), daemon=True)
    reader.start()
    return lines, reader


def _pid(lines, worker, deadline):
    pattern = re.compile(rf"^\[cluster\] worker {worker}: pid (\d+)")
    while time.time() < deadline:
        for line in list(lines):
            if (m := pattern.match(line)):
                return int(m.group(1))
        time.sleep(0.1)
    raise AssertionError("the launcher printed no pid")


def test_a_killed_worker_fails_the_job_in_bounded_time_and_a_rerun_resumes(tmp_path):
    args = SMALL + ["--checkpoint_every=50it"]
    root = tmp_path / "killed"
    job = launch(2, *args, f"--run_root={root}", wait=False)
    lines, reader = _drain(job)
    deadline = time.time() + 150
    victim = _pid(lines, 1, deadline)
    pattern = str(root / "*" / "replicate_0" / "level_*" / "lottery" / "checkpoint.json")
    while not glob.glob(pattern):  # the chief's first checkpoint of level 0
        assert job.poll() is None, "".join(lines)[-3000:]
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    job.wait(timeout=90)
    reader.join(timeout=10)
    output = "".join(lines)
    # The chief sees the lost worker by the coordination service's heartbeats (seconds),
    # not by waiting forever: well inside the launcher's grace and timeout.
    assert job.returncode != 0
    assert time.time() - killed_at < 60
    assert "the cluster lost a worker" in output or "[cluster]" in output
    assert not os.path.exists(os.path.join(run_dir(root), "results.json"))

    resumed = launch(2, *args, f"--run_root={root}")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resuming level 0 lottery" in resumed.stdout
    whole = run_main(*args, "--fast_loop=false", f"--run_root={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    with open(os.path.join(run_dir(root), "results.json")) as f:
        got = without_times(json.load(f))
    with open(os.path.join(run_dir(tmp_path / "whole"), "results.json")) as f:
        want = without_times(json.load(f))
    # Same decisions; metrics to the tolerance of the test above (sums in another order).
    assert len(got["levels"]) == len(want["levels"]) == 2
    for a, b in zip(got["levels"], want["levels"]):
        a, b = a["branches"]["lottery"], b["branches"]["lottery"]
        assert (a["sparsity"], a["alive"], a["early_stop_iteration"]) == (
            b["sparsity"], b["alive"], b["early_stop_iteration"])
        for key in ("final_test_loss", "final_val_loss", "final_train_loss"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5, err_msg=key)
    got_masks = masks_and_metrics(run_dir(root))
    for branch, (masks, _) in masks_and_metrics(run_dir(tmp_path / "whole")).items():
        for key in masks:
            np.testing.assert_array_equal(masks[key], got_masks[branch][0][key])


def _tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def test_workers_started_with_different_experiments_are_refused_before_training(tmp_path):
    from tf_lottery.cluster import free_ports

    ports = free_ports(2)
    processes = []
    for index, seed in ((0, 7), (1, 8)):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=_tf_config(ports, index))
        argv = [a for a in SMALL if not a.startswith("--seed")] + [
            f"--seed={seed}", "--distribution=multi_worker", f"--run_root={tmp_path}"]
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "tf_lottery.main", *argv], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 2, err[-2000:]
        assert "the workers were started with different experiments" in err
    assert not glob.glob(str(tmp_path / "*" / "hparams.json"))
    assert not glob.glob(str(tmp_path / "*" / "replicate_0" / "*"))


@pytest.mark.parametrize("tf_config, message", [
    (None, "TF_CONFIG is not set"),
    ("{not json", "TF_CONFIG is not JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
     "which is not in its cluster"),
])
def test_a_bad_tf_config_is_one_line_exit_2_and_nothing_written(tmp_path, tf_config, message):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    done = subprocess.run(
        [sys.executable, "-m", "tf_lottery.main", *SMALL, "--distribution=multi_worker",
         f"--run_root={tmp_path / 'runs'}"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


def test_cluster_task_reads_tf_config():
    from tf_lottery.multi_worker import cluster_task

    two = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    task = cluster_task({"TF_CONFIG": json.dumps(two)})
    assert (task.index, task.num_workers, task.is_chief) == (1, 2, False)
    with_chief = {"cluster": {"chief": ["c:0"], "worker": ["a:1"]},
                  "task": {"type": "chief", "index": 0}}
    assert cluster_task({"TF_CONFIG": json.dumps(with_chief)}).is_chief
    for bad in ({"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}},
                {"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}},
                {"cluster": {"worker": ["a:1"]}}):
        with pytest.raises(ValueError, match="TF_CONFIG"):
            cluster_task({"TF_CONFIG": json.dumps(bad)})
