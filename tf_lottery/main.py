"""The program's entry: ``python -m tf_lottery.main`` and every other ``python -m`` spelling.

``python -m tf_lottery.main`` runs a lottery-ticket experiment (``tf_lottery.cli.experiment``).
``python -m tf_lottery.analyze``, ``tf_lottery.report``, ``tf_lottery.export`` and
``tf_lottery.tune`` hand their command line to ``run`` here, so this module is the one
place outside ``tf_lottery.cli`` that reaches the command-line layer; no library module
imports it.
"""

from tf_lottery.cli import analyze, experiment, export, report, tune

#: ``python -m`` command -> the ``tf_lottery.cli`` module that runs it.
COMMANDS = {"experiment": experiment, "analyze": analyze, "report": report,
            "export": export, "tune": tune}


def run(command: str = "experiment", argv=None) -> None:
    """Runs ``command`` (a key of ``COMMANDS``) on ``argv`` (default ``sys.argv``); exits
    with the command's exit code."""
    COMMANDS[command].run(argv)


if __name__ == "__main__":
    run()
