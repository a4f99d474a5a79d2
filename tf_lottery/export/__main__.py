"""``python -m tf_lottery.export``: a thin entry point to ``tf_lottery.cli.export``."""

from tf_lottery.cli.export import run

run()
