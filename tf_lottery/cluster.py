"""A local cluster of processes on one machine: plan them, start them, watch them.

``plan("experiment", args, workers)`` gives the processes of one multi-worker
experiment (each with its own ``TF_CONFIG``, free ports on 127.0.0.1, worker 0 the
chief) and ``plan("tune", args, workers)`` those of one keras-tuner distributed search (a
chief serving the oracle and ``workers`` workers, with the ``KERASTUNER_*`` variables).
``launch(processes)`` starts them, streams their output line by line with a
``[worker i]`` / ``[chief]`` prefix, stops the others when one fails and returns the
first failure's code. The same processes, one per machine with its own ``TF_CONFIG`` (or
keras-tuner variables), form a real cluster; ``launch`` prints each command line.

``python -m tf_lottery.cluster --workers=N -- ARGS`` runs the command ``cluster`` of the
command line (``tf_lottery.cli.cluster``, the ``tf-lottery-cluster`` script), whose flags
are ``--workers``, ``--timeout`` and ``--grace``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

__all__ = ["COMMANDS", "TIMEOUT_EXIT_CODE", "PROGRAM", "Process", "free_ports", "plan",
           "launch"]

#: Commands a cluster runs.
COMMANDS = ("experiment", "tune")
#: Exit code when ``--timeout`` is exceeded (as coreutils' ``timeout``).
TIMEOUT_EXIT_CODE = 124
#: What the processes run: ``<program> <command> ARGS`` (``python -m tf_lottery.cli``).
PROGRAM = (sys.executable, "-m", "tf_lottery.cli")
_PREFIX = "[cluster] "


@dataclasses.dataclass(frozen=True)
class Process:
    """One process of a local cluster.

    Attributes:
        name: ``"worker <i>"`` or ``"chief"``: its output prefix ``[name] ``.
        argv: its command line.
        env: the environment variables it gets on top of the launcher's own
            (``TF_CONFIG`` or ``KERASTUNER_*``).
    """

    name: str
    argv: tuple
    env: dict

    def command_line(self) -> str:
        """``VAR=value ... argv`` as a shell runs it (to start it again by hand)."""
        return " ".join([f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
                        + [shlex.join(self.argv)])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports of ``host`` that were free a moment ago (bound to port 0
    together, then released for the processes to bind)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _distribution(args) -> str | None:
    """The value of ``--distribution`` in ``args`` (the last one), or None."""
    value = None
    for i, arg in enumerate(args):
        name, eq, text = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or name != "distribution":
            continue
        value = text if eq else (args[i + 1] if i + 1 < len(args) else "")
    return value


def plan(command: str, args, workers: int, *, program=None,
         host: str = "127.0.0.1") -> list[Process]:
    """The processes of a local cluster running ``command`` with ``args``.

    Args:
        command: ``"experiment"`` (``workers`` processes with ``TF_CONFIG``; worker 0 is
            the chief of ``MultiWorkerMirroredStrategy``; ``--distribution=multi_worker``
            is appended to ``args`` unless they set it) or ``"tune"`` (a keras-tuner
            chief, ``KERASTUNER_TUNER_ID=chief``, and ``workers`` workers ``tuner<i>``,
            all with ``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT``).
        args: the command's arguments (strings).
        workers: number of workers, >= 1.
        program: what runs ``command`` (default ``python -m tf_lottery.cli``); tests
            put a small script here.
        host: the address every process listens on.

    Returns:
        The processes, chief (``tune``) or worker 0 first.

    Raises:
        ValueError: for ``workers < 1``, an unknown ``command``, or ``--distribution``
            in ``args`` set to anything but ``multi_worker`` for ``experiment``.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`workers` must be an integer >= 1; received {workers!r}.")
    if command not in COMMANDS:
        raise ValueError(f"the command {command!r} cannot run on a cluster; name one of "
                         f"{', '.join(COMMANDS)} after `--` (or start with a flag for "
                         "experiment).")
    program = tuple(PROGRAM if program is None else program)
    args = list(args)
    if command == "experiment":
        distribution = _distribution(args)
        if distribution is None:
            args.append("--distribution=multi_worker")
        elif distribution != "multi_worker":
            raise ValueError(f"--distribution={distribution} cannot run on a cluster; the "
                             "launcher runs --distribution=multi_worker (leave the flag out).")
        addresses = [f"{host}:{port}" for port in free_ports(workers, host)]
        argv = (*program, command, *args)
        return [Process(f"worker {i}", argv, {"TF_CONFIG": json.dumps(
            {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}})})
            for i in range(workers)]
    (port,) = free_ports(1, host)
    oracle = {"KERASTUNER_ORACLE_IP": host, "KERASTUNER_ORACLE_PORT": str(port)}
    argv = (*program, command, *args)
    return [Process("chief", argv, {"KERASTUNER_TUNER_ID": "chief", **oracle})] + [
        Process(f"worker {i}", argv, {"KERASTUNER_TUNER_ID": f"tuner{i}", **oracle})
        for i in range(workers)]


def _die_with_parent():  # pragma: no cover  (runs in the child, before exec)
    """On Linux, the child gets SIGTERM if the launcher dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001  (best effort; not on every system)
        pass


class _Cluster:
    """The running processes, their output threads and the stop logic of ``launch``."""

    def __init__(self, processes, out, grace):
        self.processes = list(processes)
        self.out = out
        self.grace = grace
        self.lock = threading.Lock()
        self.popens = []
        self.threads = []
        self.signals = []  # signals the launcher received, in order
        self.kill_at = None  # when stopping: the time of SIGKILL

    def say(self, text: str, prefix: str = _PREFIX) -> None:
        with self.lock:
            self.out.write(prefix + text + ("" if text.endswith("\n") else "\n"))
            self.out.flush()

    def start(self) -> None:
        for process in self.processes:
            self.say(f"{process.name}: {process.command_line()}")
        env_base = dict(os.environ, PYTHONUNBUFFERED="1")
        for process in self.processes:
            popen = subprocess.Popen(
                list(process.argv), env={**env_base, **process.env}, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            self.popens.append(popen)
            self.say(f"{process.name}: pid {popen.pid}")
        for process, popen in zip(self.processes, self.popens):
            thread = threading.Thread(target=self._stream, args=(process.name, popen.stdout),
                                      daemon=True)
            thread.start()
            self.threads.append(thread)

    def _stream(self, name, pipe) -> None:
        for line in iter(pipe.readline, b""):
            self.say(line.decode("utf-8", errors="replace"), prefix=f"[{name}] ")
        pipe.close()

    def send(self, signum) -> None:
        """Sends ``signum`` to every process still running (and its process group)."""
        for popen in self.popens:
            if popen.poll() is None:
                try:
                    os.killpg(popen.pid, signum)
                except OSError:
                    try:
                        popen.send_signal(signum)
                    except OSError:
                        pass

    def stop(self, reason: str) -> None:
        """SIGTERM now, SIGKILL after ``grace`` seconds (once)."""
        if self.kill_at is not None:
            return
        self.say(f"{reason}; stopping the other processes (SIGTERM, then SIGKILL after "
                 f"{self.grace:g}s)")
        self.kill_at = time.monotonic() + self.grace
        self.send(signal.SIGTERM)

    def finish(self) -> None:
        for thread in self.threads:
            thread.join(timeout=10)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def launch(processes, *, timeout: float | None = None, grace: float = 30.0,
           out=None, poll_seconds: float = 0.05) -> int:
    """Starts ``processes`` (from ``plan``), streams their output and waits for them.

    Prints ``[cluster] <name>: <command line>`` for each process, then
    ``[cluster] <name>: pid <pid>`` as each starts, then every line a process writes
    (stdout and stderr) prefixed ``[<name>] ``, all on ``out`` (default ``sys.stdout``).

    Args:
        processes: ``Process`` list.
        timeout: seconds (> 0) after which all processes are stopped; None: no limit.
        grace: seconds (>= 0) between SIGTERM and SIGKILL when stopping processes.
        out: a text stream.
        poll_seconds: how often the processes are checked.

    Returns:
        0 when every process exited 0; the exit code of the first process that failed
        (1 if a signal killed it), after stopping the others; ``TIMEOUT_EXIT_CODE``
        (124) after ``timeout``; ``128 + signal`` when the launcher received SIGINT or
        SIGTERM (passed on to the processes; a second one kills them).
    """
    cluster = _Cluster(processes, sys.stdout if out is None else out, grace)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            handlers[signum] = signal.signal(signum, lambda s, f: cluster.signals.append(s))
    start = time.monotonic()
    failure = timed_out = None
    forwarded = 0
    reported = set()
    try:
        cluster.start()
        while True:
            running = 0
            for process, popen in zip(cluster.processes, cluster.popens):
                code = popen.poll()
                if code is None:
                    running += 1
                    continue
                if popen.pid in reported:
                    continue
                reported.add(popen.pid)
                cluster.threads[cluster.popens.index(popen)].join(timeout=5)  # its last lines
                cluster.say(f"{process.name} {_describe(code)}")
                if code != 0 and failure is None and cluster.kill_at is None:
                    failure = 1 if code < 0 else code
                    cluster.stop(f"{process.name} failed")
            if not running:
                break
            if forwarded < len(cluster.signals):
                signum = cluster.signals[forwarded]
                forwarded += 1
                if forwarded > 1:
                    cluster.say(f"{signal.Signals(signum).name} again: SIGKILL")
                    cluster.send(signal.SIGKILL)
                else:
                    cluster.say(f"{signal.Signals(signum).name} received; passing it on "
                                f"(SIGKILL after {grace:g}s)")
                    cluster.send(signum)
                    cluster.kill_at = time.monotonic() + grace
            now = time.monotonic()
            if timeout is not None and timed_out is None and now - start > timeout:
                timed_out = True
                cluster.stop(f"timeout: {timeout:g}s passed")
            if cluster.kill_at is not None and now > cluster.kill_at:
                cluster.send(signal.SIGKILL)
            time.sleep(poll_seconds)
    except BaseException:
        cluster.send(signal.SIGKILL)
        raise
    finally:
        cluster.finish()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    if timed_out:
        code = TIMEOUT_EXIT_CODE
    elif cluster.signals:
        code = 128 + cluster.signals[0]
    else:
        code = failure or 0
    cluster.say(f"exit code {code}" + (" (every process exited 0)" if code == 0 else ""))
    return code


if __name__ == "__main__":  # python -m tf_lottery.cluster: the command line's `cluster`
    import runpy

    sys.argv[1:1] = ["cluster"]
    runpy.run_module("tf_lottery.cli", run_name="__main__")
