"""The program's entry: ``python -m tf_lottery.main`` runs a lottery-ticket experiment.

It is ``tf_lottery.cli.experiment`` (the ``tf-lottery`` script). The other commands run
as ``python -m tf_lottery.cli COMMAND`` or their console scripts; no library module
imports this entry or the command-line layer.
"""

from tf_lottery.cli import experiment

if __name__ == "__main__":
    experiment.run()
