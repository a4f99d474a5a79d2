"""``python -m tf_lottery.tune``: a thin entry point to ``tf_lottery.cli.tune``."""

from tf_lottery.cli.tune import run

run()
