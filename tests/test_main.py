"""End-to-end tests of the command line: python -m tf_lottery.main on synthetic data."""

import glob
import json
import os
import re
import signal
import time

import pytest
from helpers import run_main, without_times

SMALL = [
    "--dataset=synthetic", "--batch_size=32", "--training_steps=300it", "--eval_every=50it",
    "--learning_rate=0.002", "--levels=2", "--prune_rate=0.5", "--prune_rate_output=0.25",
    "--controls=reinit,random_prune", "--rewind=50it", "--seed=7",
]


cli = run_main


def results(run_root):
    (path,) = glob.glob(os.path.join(run_root, "*", "replicate_0", "results.json"))
    with open(path) as f:
        return json.load(f)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    args = SMALL + ["--deterministic", "--checkpoint_every=50it", "--training_steps=600it"]
    whole = cli(*args, f"--run_root={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert "| 2 | random_prune |" in whole.stdout  # the closing table

    root = tmp_path / "killed"
    process = cli(*args, f"--run_root={root}", wait=False)
    deadline = time.time() + 300
    pattern = str(root / "*" / "replicate_0" / "level_1" / "*" / "checkpoint.json")
    while not glob.glob(pattern):
        assert process.poll() is None, "run ended before it could be killed mid-level"
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (killed_branch,) = [os.path.dirname(p) for p in glob.glob(pattern)]
    assert not os.path.exists(os.path.join(killed_branch, "summary.json"))

    resumed = cli(*args, f"--run_root={root}")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming level 1 " in resumed.stderr and "from iteration" in resumed.stderr
    assert without_times(results(root)) == without_times(results(tmp_path / "whole"))
    run_dir = glob.glob(str(root / "*"))[0]
    assert json.load(open(os.path.join(run_dir, "hparams.json")))["pruning"]["rewind"] == "50it"
    flags_txt = open(os.path.join(run_dir, "flags.txt")).read()
    assert "--rewind=50it" in flags_txt and "--controls=reinit,random_prune" in flags_txt


def test_mirrored_strategy_over_two_cpu_devices(tmp_path):
    run = cli(*SMALL, "--levels=1", "--controls=", "--distribution=mirrored",
              "--cpu_devices=2", f"--run_root={tmp_path}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Using MirroredStrategy with devices" in run.stderr and "CPU:1" in run.stderr
    summary = results(tmp_path)["levels"][1]["branches"]["lottery"]
    assert summary["sparsity"] > 0.45 and summary["final_test_accuracy"] > 0.5


def test_mixed_bfloat16_on_cpu(tmp_path):
    run = cli(*SMALL, "--levels=1", "--controls=", "--precision=mixed_bfloat16",
              f"--run_root={tmp_path}")
    assert run.returncode == 0, run.stdout + run.stderr
    summary = results(tmp_path)["levels"][1]["branches"]["lottery"]
    assert summary["final_test_accuracy"] > 0.5


@pytest.mark.parametrize("flag, message", [
    ("--model=resnet99", "--model"),
    ("--criterion=biggest", "--criterion"),
    ("--distribution=cluster", "--distribution"),
    ("--prune_rate=1.5", "--prune_rate"),
    ("--prune_rate=-0.1", "--prune_rate"),
    ("--rewind=300it", "--rewind"),
    ("--rewind=5 iterations", "--rewind"),
    ("--training_steps=12", "--training_steps"),
    ("--one_shot=lots", "--one_shot"),
    ("--initializer=glorious", "--initializer"),
    ("--controls=reinit,shuffle", "--controls"),
    ("--analyses=transfer", "--analyses"),
])
def test_bad_flags_exit_2_with_one_line_before_any_directory(tmp_path, flag, message):
    run = cli(*SMALL, flag, f"--run_root={tmp_path / 'runs'}")
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], run.stderr
    assert not os.path.exists(tmp_path / "runs")


def test_missing_data_files_exit_2(tmp_path):
    run = cli("--dataset=mnist", f"--data_dir={tmp_path / 'nowhere'}",
              f"--run_root={tmp_path / 'runs'}")
    assert run.returncode == 2
    assert "--data_dir" in run.stderr  # the library argument `data_dir`, as its flag
    assert not os.path.exists(tmp_path / "runs")


def test_analyses_run_as_part_of_the_experiment(tmp_path):
    run = cli(*SMALL, "--levels=1", "--controls=",
              "--analyses=instability,one_shot,adversarial", f"--run_root={tmp_path}")
    assert run.returncode == 0, run.stdout + run.stderr
    (replicate,) = glob.glob(str(tmp_path / "*" / "replicate_0"))
    with open(os.path.join(replicate, "analysis", "instability.json")) as f:
        entries = json.load(f)["entries"]
    assert sorted(e["key"]["level"] for e in entries) == [0, 1]  # dense and deepest ticket
    for entry in entries:
        errors = entry["test_error"]
        assert len(errors) == 30
        assert entry["instability"] == pytest.approx(
            max(errors) - (errors[0] + errors[-1]) / 2)
    with open(os.path.join(replicate, "analysis", "one_shot.json")) as f:
        (one_shot,) = json.load(f)["entries"]
    level_1 = results(tmp_path)["levels"][1]["branches"]["lottery"]
    assert one_shot["sparsity"] == pytest.approx(level_1["sparsity"], abs=0.01)
    assert "instability: 2 entries" in run.stdout and "one_shot: 1 entries" in run.stdout
    with open(os.path.join(replicate, "analysis", "adversarial.json")) as f:
        attacked = json.load(f)["entries"]
    assert {e["key"]["level"] for e in attacked} == {0, 1}  # every level's lottery branch
    assert "adversarial:" in run.stdout


def test_progress_is_one_line_per_branch_when_not_a_terminal_and_verbosity_quiets_it(tmp_path):
    args = ["--dataset=synthetic", "--batch_size=32", "--training_steps=200it",
            "--eval_every=50it", "--levels=1", "--rewind=50it", "--controls=reinit",
            "--seed=7"]
    done = cli(*args, f"--run_root={tmp_path / 'a'}")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    bars = [line for line in lines if re.match(r"^\d+/\d+ - ", line)]
    # Keras's Progbar, not on a terminal: one line per branch when it ends, with
    # iterations done / total, the rate and the latest validation and test accuracy.
    assert len(bars) == 3, done.stdout
    for title, bar, total in zip(("level 0 lottery", "level 1 ", "level 1 "), bars,
                                 (200, 150, 150)):
        assert lines[lines.index(bar) - 1].startswith(title)
        assert bar.startswith(f"{total}/{total} - ")
        assert re.search(r"it/s: \d+(\.\d+)? - val_accuracy: \d\.\d{4} - "
                         r"test_accuracy: \d\.\d{4}$", bar), bar
    # TensorFlow's C++ start-up lines are off by default.
    assert "oneDNN" not in done.stderr and "absl::InitializeLog" not in done.stderr
    quiet = cli(*args, "--verbosity=-1", f"--run_root={tmp_path / 'b'}")
    assert quiet.returncode == 0
    assert not [line for line in quiet.stdout.splitlines() if re.match(r"^\d+/\d+ - ", line)]
    assert "| 1 | reinit |" in quiet.stdout  # the results table still prints
