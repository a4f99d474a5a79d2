"""One process per replicate: the lock file, its stale-lock rule, and two real launches."""

import glob
import json
import os
import socket
import time

import pytest
from helpers import run_main

from tf_lottery import run_lock
from tf_lottery.run_lock import ReplicateLocked, replicate_lock


def _write(path, **holder):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(holder, f)


def test_the_lock_is_held_for_the_block_and_removed_after(tmp_path):
    path = str(tmp_path / "replicate_0" / "lock.json")
    with replicate_lock(path):
        with open(path) as f:
            holder = json.load(f)
        assert (holder["host"], holder["pid"]) == (socket.gethostname(), os.getpid())
        with pytest.raises(ReplicateLocked, match=f"process {os.getpid()} on host"):
            with replicate_lock(path):
                pass
    assert not os.path.exists(path)


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    path = str(tmp_path / "lock.json")
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    _write(path, host=socket.gethostname(), pid=dead, started="then", token="old")
    with replicate_lock(path):
        with open(path) as f:
            assert json.load(f)["pid"] == os.getpid()


def test_a_fresh_lock_of_another_host_holds_and_a_silent_one_goes_stale(tmp_path, monkeypatch):
    path = str(tmp_path / "lock.json")
    _write(path, host="elsewhere", pid=1, started="then", token="theirs")
    with pytest.raises(ReplicateLocked, match="host 'elsewhere'"):
        with replicate_lock(path):
            pass
    old = time.time() - run_lock.STALE_SECONDS - 5  # no heartbeat for too long
    os.utime(path, (old, old))
    with replicate_lock(path):
        with open(path) as f:
            assert json.load(f)["host"] == socket.gethostname()


def test_the_holder_touches_its_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_SECONDS", 0.05)
    path = str(tmp_path / "lock.json")
    with replicate_lock(path):
        os.utime(path, (0, 0))
        assert os.stat(path).st_mtime == 0
        deadline = time.time() + 10
        while os.stat(path).st_mtime == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert os.stat(path).st_mtime > 0, "the holder did not touch its lock in 10 s"


def test_a_second_launch_of_the_same_replicate_fails_fast_and_the_first_finishes(tmp_path):
    # Long enough (tens of seconds) for the second launch to start while it trains.
    args = ["--dataset=synthetic", "--batch_size=32", "--training_steps=100000it",
            "--eval_every=25000it", "--levels=0", "--seed=3", f"--run_root={tmp_path}"]
    first = run_main(*args, wait=False)
    deadline = time.time() + 120
    while not glob.glob(str(tmp_path / "*" / "replicate_0" / "lock.json")):
        assert first.poll() is None, first.communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.1)
    second = run_main(*args, timeout=120)
    assert second.returncode == 1
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, second.stderr[-2000:]
    assert f"already being trained by process {first.pid} on host" in errors[0]
    assert "--replicate" in errors[0]  # the library's `replicate`, as the flag
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert "| 0 | lottery |" in out
    (replicate,) = glob.glob(str(tmp_path / "*" / "replicate_0"))
    assert os.path.exists(os.path.join(replicate, "results.json"))
    assert not os.path.exists(os.path.join(replicate, "lock.json"))
