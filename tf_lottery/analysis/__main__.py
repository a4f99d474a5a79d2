"""``python -m tf_lottery.analysis``: the old spelling of ``python -m tf_lottery.analyze``."""

from tf_lottery import main

main.run("analyze")
