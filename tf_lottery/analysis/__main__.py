"""``python -m tf_lottery.analysis``: the old spelling of ``python -m tf_lottery.analyze``."""

from tf_lottery.cli.analyze import run

run()
