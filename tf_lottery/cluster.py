"""``python -m tf_lottery.cluster --workers=N -- ARGS``: a local cluster of processes.

It is ``tf_lottery.cli.cluster`` (the ``tf-lottery-cluster`` script).
"""

from tf_lottery.cli import cluster

if __name__ == "__main__":
    cluster.run()
