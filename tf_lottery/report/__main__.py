"""``python -m tf_lottery.report``: the command (``tf_lottery.cli.report``), run through
``tf_lottery.main``."""

from tf_lottery import main

main.run("report")
