"""``python -m tf_lottery.analyze``: analyses of a run (see ``tf_lottery.cli.analyze``).

A thin entry point; the command lives in ``tf_lottery.cli``.
"""

from tf_lottery.cli.analyze import run

if __name__ == "__main__":
    run()
