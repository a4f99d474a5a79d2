"""Tests for the local cluster launcher (python -m tf_lottery.cluster), with small stand-in
processes instead of TensorFlow programs: what each process gets (TF_CONFIG or keras-tuner
variables), the prefixed output, stopping the others when one fails, the timeout, signals
and bad input. The real commands run under it in test_tune_distributed.py."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tf_lottery.cli import cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Stands in for `python -m tf_lottery.cli`: argv[1] is the command. Prints one JSON line
# (its command line, pid and cluster variables) on stdout and one line on stderr, then
# does what the flags say, each `--name=<index>` acting on that process only (index: the
# TF_CONFIG task index, or the number in tuner<i>; the keras-tuner chief is -1).
FAKE = r'''
import json, os, signal, sys, time
args = sys.argv[2:]
if "TF_CONFIG" in os.environ:
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
else:
    tuner = os.environ.get("KERASTUNER_TUNER_ID", "")
    index = -1 if tuner == "chief" else int(tuner[len("tuner"):])
print(json.dumps({"command": sys.argv[1], "args": args, "pid": os.getpid(),
                  "TF_CONFIG": os.environ.get("TF_CONFIG"),
                  "kt": {k: v for k, v in os.environ.items() if k.startswith("KERASTUNER_")}}))
print(f"stderr of {index}", file=sys.stderr)
sys.stdout.flush()
def on(name):
    return any(a == f"--{name}={index}" or a == f"--{name}=all" for a in args)
if on("ignore_term"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if on("exit_on_term"):
    def handler(signum, frame):
        print(f"{index} got {signal.Signals(signum).name}", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, handler)
if on("fail"):
    sys.exit(3)
if on("kill_self"):
    os.kill(os.getpid(), signal.SIGKILL)
if on("sleep"):
    time.sleep(60)
'''


@pytest.fixture
def program(tmp_path):
    path = tmp_path / "fake_cli.py"
    path.write_text(FAKE)
    return [sys.executable, str(path)]


def launch(capfd, program, *argv):
    """Runs the launcher in this process; returns (exit code, stdout, stderr)."""
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cluster.run(["tf_lottery.cluster", *argv], program=program)
    out, err = capfd.readouterr()
    return exit_.value.code, out, err


def reports(out, name):
    """The JSON lines the process ``name`` printed (prefix removed)."""
    prefix = f"[{name}] "
    return [json.loads(line[len(prefix):]) for line in out.splitlines()
            if line.startswith(prefix + "{")]


def test_experiment_workers_get_their_tf_config_and_prefixed_output(capfd, program):
    code, out, err = launch(capfd, program, "--workers=3", "--", "--flagfile=a.flags",
                            "--levels=1")
    assert code == 0, out + err
    configs = []
    for i in range(3):
        (report,) = reports(out, f"worker {i}")
        assert report["command"] == "experiment"  # the default: ARGS start with a flag
        assert report["args"] == ["--flagfile=a.flags", "--levels=1",
                                  "--distribution=multi_worker"]
        config = json.loads(report["TF_CONFIG"])
        assert config["task"] == {"type": "worker", "index": i}
        configs.append(config["cluster"])
        assert f"[cluster] worker {i}: pid {report['pid']}\n" in out
        assert f"[worker {i}] stderr of {i}\n" in out  # stderr, streamed too
        assert report["kt"] == {}
    assert configs[0] == configs[1] == configs[2]  # one cluster, worker 0 the chief
    workers = configs[0]["worker"]
    assert len(workers) == 3 and all(w.startswith("127.0.0.1:") for w in workers)
    assert len({w.split(":")[1] for w in workers}) == 3  # distinct ports
    # Every line is the launcher's or a process's, and the command lines come first.
    lines = out.splitlines()
    assert all(re.match(r"\[(cluster|worker [012])\] ", line) for line in lines), lines
    assert lines[0].startswith("[cluster] worker 0: TF_CONFIG=")
    assert lines[-1] == "[cluster] exit code 0 (every process exited 0)"


def test_tune_runs_a_chief_and_workers_with_keras_tuner_variables(capfd, program):
    code, out, err = launch(capfd, program, "--workers=2", "--", "tune", "--tune=warmup")
    assert code == 0, out + err
    (chief,) = reports(out, "chief")
    workers = [reports(out, f"worker {i}")[0] for i in range(2)]
    port = chief["kt"]["KERASTUNER_ORACLE_PORT"]
    assert chief["kt"] == {"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "127.0.0.1",
                           "KERASTUNER_ORACLE_PORT": port}
    for i, worker in enumerate(workers):
        assert worker["kt"] == {**chief["kt"], "KERASTUNER_TUNER_ID": f"tuner{i}"}
    for report in [chief, *workers]:
        assert report["command"] == "tune" and report["args"] == ["--tune=warmup"]
        assert report["TF_CONFIG"] is None
    assert f"[cluster] chief: pid {chief['pid']}\n" in out


def test_plan_keeps_an_explicit_multi_worker_distribution_and_checks_workers():
    for args in (["--distribution=multi_worker"], ["--distribution", "multi_worker"]):
        (worker,) = cluster.plan("experiment", args, 1, program=["p"])
        assert list(worker.argv) == ["p", "experiment", *args]
    for workers in (0, -1, 1.5, True):
        with pytest.raises(cluster.UsageError, match="--workers must be an integer >= 1"):
            cluster.plan("tune", [], workers)


def test_a_failing_process_stops_the_others_with_its_exit_code(capfd, program):
    code, out, err = launch(capfd, program, "--workers=3", "--grace=5", "--",
                            "--fail=1", "--sleep=0", "--sleep=2")
    assert code == 3, out + err
    assert "[cluster] worker 1 exited with code 3\n" in out
    assert "[cluster] worker 1 failed; stopping the other processes" in out
    for i in (0, 2):
        assert f"[cluster] worker {i} was killed by SIGTERM\n" in out
    assert out.splitlines()[-1] == "[cluster] exit code 3"


def test_a_process_killed_by_a_signal_fails_the_cluster_with_code_1(capfd, program):
    code, out, err = launch(capfd, program, "--workers=2", "--grace=5", "--", "tune",
                            "--kill_self=1", "--sleep=-1", "--sleep=0")
    assert code == 1, out + err
    assert "[cluster] worker 1 was killed by SIGKILL\n" in out
    assert "[cluster] chief was killed by SIGTERM\n" in out


def test_sigkill_after_the_grace_period(capfd, program):
    code, out, err = launch(capfd, program, "--workers=2", "--grace=0.5", "--",
                            "--fail=1", "--sleep=0", "--ignore_term=0")
    assert code == 3, out + err
    assert "[cluster] worker 0 was killed by SIGKILL\n" in out  # SIGTERM was ignored


def test_timeout_stops_every_process_and_exits_124(capfd, program):
    code, out, err = launch(capfd, program, "--workers=2", "--timeout=1", "--grace=5", "--",
                            "--sleep=all")
    assert code == cluster.TIMEOUT_EXIT_CODE == 124, out + err
    assert "[cluster] timeout: 1s passed; stopping the other processes" in out
    assert out.count("was killed by SIGTERM") == 2


@pytest.mark.parametrize("argv, message", [
    (["--workers=0", "--", "--levels=1"], "--workers must be an integer >= 1; received 0."),
    (["--", "--levels=1"], "--workers"),
    (["--workers=2"], "no command to run"),
    (["--workers=2", "--"], "no command to run"),
    (["--workers=2", "experiment"], "unexpected arguments ['experiment']"),
    (["--workers=2", "--", "analyze", "--run_dir=x"], "the command 'analyze' cannot run"),
    (["--workers=2", "--", "--distribution=mirrored"],
     "--distribution=mirrored cannot run on a cluster"),
    (["--workers=2", "--timeout=0", "--", "--levels=1"], "--timeout must be > 0"),
    (["--workers=2", "--grace=-1", "--", "--levels=1"], "--grace must be >= 0"),
    (["--workers=2", "--bogus=1", "--", "--levels=1"], "bogus"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_process(capfd, program, argv, message):
    code, out, err = launch(capfd, program, *argv)
    assert code == 2, out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
    assert "[cluster]" not in out  # nothing started


def _start_launcher(program, *argv):
    """The launcher as its own process (``python -c``, so the stand-in program can be
    passed in), reading its stdout; returns the Popen."""
    code = ("import sys; from tf_lottery.cli import cluster; "
            f"cluster.run(sys.argv, program={program!r})")
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def _read_pids(launcher, names, deadline):
    """Reads the launcher's output until every ``names`` pid line (and its process's
    first line) is there; returns ({name: pid}, lines read)."""
    pids, started, lines = {}, set(), []
    while len(pids) < len(names) or started != set(names):
        assert time.monotonic() < deadline, "".join(lines)
        line = launcher.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        match = re.match(r"\[cluster\] (.+): pid (\d+)$", line)
        if match:
            pids[match.group(1)] = int(match.group(2))
        match = re.match(r"\[(worker \d+|chief)\] \{", line)
        if match:
            started.add(match.group(1))
    return pids, lines


def test_a_worker_killed_by_its_pid_stops_the_launch(program):
    launcher = _start_launcher(program, "--workers=2", "--grace=5", "--", "--sleep=all")
    try:
        pids, lines = _read_pids(launcher, ["worker 0", "worker 1"], time.monotonic() + 60)
        os.kill(pids["worker 1"], signal.SIGKILL)
        out, _ = launcher.communicate(timeout=60)
    finally:
        launcher.kill()
    out = "".join(lines) + out
    assert launcher.returncode == 1, out
    assert "[cluster] worker 1 was killed by SIGKILL\n" in out
    assert "[cluster] worker 0 was killed by SIGTERM\n" in out


def test_sigterm_to_the_launcher_reaches_every_process(program):
    launcher = _start_launcher(program, "--workers=2", "--grace=5", "--", "tune",
                               "--exit_on_term=all", "--sleep=all")
    try:
        pids, lines = _read_pids(launcher, ["chief", "worker 0", "worker 1"],
                                 time.monotonic() + 60)
        launcher.send_signal(signal.SIGTERM)
        out, _ = launcher.communicate(timeout=60)
    finally:
        launcher.kill()
    out = "".join(lines) + out
    assert launcher.returncode == 128 + signal.SIGTERM, out
    assert "[cluster] SIGTERM received; passing it on" in out
    for name, index in (("chief", -1), ("worker 0", 0), ("worker 1", 1)):
        assert f"[{name}] {index} got SIGTERM\n" in out
        assert f"[cluster] {name} exited with code 0\n" in out
    for pid in pids.values():  # none left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
