"""``python -m tf_lottery.cli COMMAND [flags]``: every command under one ``python -m``.

``COMMAND`` is ``experiment`` (also ``python -m tf_lottery.main``), ``analyze``,
``report``, ``export``, ``tune`` or ``cluster`` (also ``python -m tf_lottery.cluster``);
the rest of the command line goes to that command, exactly as to its console script
(``tf-lottery``, ``tf-lottery-analyze``, ``tf-lottery-report``, ``tf-lottery-export``,
``tf-lottery-tune``, ``tf-lottery-cluster``).
"""

from __future__ import annotations

import sys

from tf_lottery.cli import analyze, cluster, experiment, export, report, tune

#: Command -> the module that runs it (``run(argv)``).
COMMANDS = {"experiment": experiment, "analyze": analyze, "report": report,
            "export": export, "tune": tune, "cluster": cluster}
USAGE = ("usage: python -m tf_lottery.cli COMMAND [flags]  (COMMAND: "
         + ", ".join(COMMANDS) + "; `python -m tf_lottery.cli COMMAND --help` lists its flags)")


def run(argv=None) -> None:
    """Runs the command named by ``argv[1]`` (default ``sys.argv``) on the rest; exits
    with its exit code. Without a command, or with ``--help``, prints the usage (exit 0);
    an unknown command is one ``error:`` line and exit code 2."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "-help", "--helpfull"):
        print(USAGE)
        sys.exit(0)
    if argv[1] not in COMMANDS:
        print(f"error: unknown command {argv[1]!r}. {USAGE}", file=sys.stderr)
        sys.exit(2)
    COMMANDS[argv[1]].run([f"{argv[0]} {argv[1]}", *argv[2:]])


if __name__ == "__main__":
    run()
