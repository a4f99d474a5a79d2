"""``python -m tf_lottery.main``: a lottery-ticket experiment (see ``tf_lottery.cli.experiment``).

A thin entry point; the command lives in ``tf_lottery.cli``.
"""

from tf_lottery.cli.experiment import run

if __name__ == "__main__":
    run()
