"""``python -m tf_lottery.report``: a thin entry point to ``tf_lottery.cli.report``."""

from tf_lottery.cli.report import run

run()
