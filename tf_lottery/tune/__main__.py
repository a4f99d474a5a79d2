"""``python -m tf_lottery.tune``: the command (``tf_lottery.cli.tune``), run through
``tf_lottery.main``."""

from tf_lottery import main

main.run("tune")
