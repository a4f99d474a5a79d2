"""``python -m tf_lottery.export``: the command (``tf_lottery.cli.export``), run through
``tf_lottery.main``."""

from tf_lottery import main

main.run("export")
