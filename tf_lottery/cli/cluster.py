"""``tf-lottery-cluster`` / ``python -m tf_lottery.cluster``: a local cluster on 127.0.0.1.

    python -m tf_lottery.cluster --workers=2 -- --flagfile=configs/quickstart.flags
    python -m tf_lottery.cluster --workers=2 -- tune --flagfile=... --tune=learning_rate

Starts the processes of one multi-worker experiment (``experiment``, the default when
the arguments after ``--`` start with a flag) or of one distributed keras-tuner search
(``tune``) on this machine, streams their output line by line with a ``[worker i]`` /
``[chief]`` prefix, stops the others when one fails and exits with the first failure's
code. The same processes, one per machine with its own ``TF_CONFIG`` (or keras-tuner
variables), form a real cluster; the launcher prints each command line it starts.
"""

from __future__ import annotations

import sys

from absl import flags

from tf_lottery import cluster
from tf_lottery.cli.errors import UsageError, exit_with, parse_or_exit, usage_errors
from tf_lottery.cluster import COMMANDS, PROGRAM, TIMEOUT_EXIT_CODE, Process, free_ports, launch

__all__ = ["USAGE", "COMMANDS", "PROGRAM", "TIMEOUT_EXIT_CODE", "Process", "flag_values",
           "free_ports", "plan", "launch", "main", "run"]

USAGE = """Runs one experiment or search on a local cluster of processes (127.0.0.1).

    python -m tf_lottery.cluster --workers=N [--timeout=SECONDS] [--grace=SECONDS] \\
        -- [experiment|tune] ARGS...

experiment (the default when ARGS start with a flag): N processes of
`python -m tf_lottery.cli experiment ARGS --distribution=multi_worker`, each with its own
TF_CONFIG (free ports on 127.0.0.1; worker 0 is the chief).
tune: a keras-tuner oracle (KERASTUNER_TUNER_ID=chief) and N workers (tuner0 ...) of
`python -m tf_lottery.cli tune ARGS`.
Output is prefixed [worker i] / [chief]. When a process fails the others are stopped
(SIGTERM, SIGKILL after --grace) and the launcher exits with its code (1 for a signal);
124 after --timeout; SIGINT/SIGTERM are passed on to the processes.
"""

def flag_values() -> flags.FlagValues:
    """The launcher's flags, in a FlagValues of their own (the command's follow ``--``)."""
    fv = flags.FlagValues()
    flags.DEFINE_integer("workers", None, "Worker processes (>= 1): the experiment's "
                         "workers, or the search's workers besides its chief.", flag_values=fv)
    flags.DEFINE_float("timeout", None, "Seconds after which every process is stopped "
                       "and the launcher exits 124 (default: no limit).", flag_values=fv)
    flags.DEFINE_float("grace", 30.0, "Seconds between SIGTERM and SIGKILL when processes "
                       "are stopped.", flag_values=fv)
    flags.mark_flag_as_required("workers", flag_values=fv)
    return fv


def plan(command: str, args, workers: int, *, program=None,
         host: str = "127.0.0.1") -> list[Process]:
    """``tf_lottery.cluster.plan``, its errors as ``UsageError`` naming the flags."""
    with usage_errors({"workers": "workers"}):
        return cluster.plan(command, args, workers, program=program, host=host)


def main(fv: flags.FlagValues, args: list[str], *, program=None) -> int:
    """Plans and launches the cluster ``fv`` and ``args`` (after ``--``) describe;
    returns the exit code."""
    if fv.timeout is not None and not fv.timeout > 0:
        raise UsageError(f"--timeout must be > 0 seconds; received {fv.timeout:g}.")
    if not fv.grace >= 0:
        raise UsageError(f"--grace must be >= 0 seconds; received {fv.grace:g}.")
    if not args:
        raise UsageError("no command to run: put the experiment's flags (or `tune` and its "
                         "flags) after `--`, e.g. --workers=2 -- --flagfile=configs/"
                         "quickstart.flags.")
    command, rest = ("experiment", args) if args[0].startswith("-") else (args[0], args[1:])
    processes = plan(command, rest, fv.workers, program=program)
    return launch(processes, timeout=fv.timeout, grace=fv.grace)


def run(argv=None, *, program=None) -> None:
    """Entry point of ``python -m tf_lottery.cluster``, ``python -m tf_lottery.cli
    cluster`` and the ``tf-lottery-cluster`` script; exits with ``launch``'s code, or 2
    after one ``error: ...`` line on bad input (before any process starts).

    ``program`` replaces ``python -m tf_lottery.cli`` as what the processes run (tests).
    """
    argv = list(sys.argv if argv is None else argv)
    own, args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    fv = flag_values()
    extra = parse_or_exit(fv, own, USAGE, positional=True)
    if extra:
        print(f"error: unexpected arguments {extra} before `--`; the command and its flags "
              "go after `--`: --workers=N -- [experiment|tune] ARGS.", file=sys.stderr)
        sys.exit(2)
    sys.exit(exit_with(lambda: main(fv, args, program=program)))
