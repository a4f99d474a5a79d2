"""Multi-worker experiments: the cluster from ``TF_CONFIG``, the strategy, and agreement.

One experiment runs on several processes (machines, or processes on one machine) with
``tf.distribute.MultiWorkerMirroredStrategy``: every worker runs the same program on its
slice of each global batch, and gradients are summed across workers with collectives.
The strategy must exist before any TensorFlow op runs (collectives are configured at
program start), so the command line creates it first, from ``TF_CONFIG``::

    {"cluster": {"worker": ["host0:port", "host1:port"]},
     "task": {"type": "worker", "index": 0}}

Worker 0 is the chief (or the task of type ``"chief"`` when the cluster lists one). Only
the chief writes the run directory; other workers run in a private copy of it
(``paths.worker_copy``) that they remove at the end, as Keras's multi-worker
checkpointing does. Every decision (masks, early stopping, checkpoints, stopping on
``SIGTERM``) is taken from values that are the same on every worker: metrics are read
after a cross-worker reduction, and the host-side triggers go through ``any_worker``.

A worker that dies is noticed by TensorFlow's coordination service, whose heartbeats
stop (about 7 s here; the strategy's own Python health check is off while the service
runs, as in TF 2.21 by default): the collectives of the others are aborted with
``UnavailableError``, the processes exit, and rerunning the same command on every worker
resumes from the chief's last checkpoint. A worker that hangs while alive is not
detected (no collective timeout is set: a slow checkpoint write would trip it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

__all__ = ["ClusterTask", "cluster_task", "create_strategy", "is_multi_worker", "is_chief",
           "worker_index", "check_agreement", "any_worker"]


@dataclasses.dataclass(frozen=True)
class ClusterTask:
    """This process's place in the cluster ``TF_CONFIG`` describes.

    Attributes:
        cluster: ``{task type: [address, ...]}`` (types ``"worker"`` and ``"chief"``).
        task_type: ``"worker"`` or ``"chief"``.
        index: this task's index within its type.
    """

    cluster: dict
    task_type: str
    index: int

    @property
    def is_chief(self) -> bool:
        """The chief: the ``"chief"`` task, or worker 0 when the cluster has none."""
        if "chief" in self.cluster:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.index == 0

    @property
    def num_workers(self) -> int:
        """Processes that train (chief included)."""
        return sum(len(addresses) for addresses in self.cluster.values())


def _fail(reason: str):
    raise ValueError(
        f"TF_CONFIG {reason}. Multi-worker runs need, on every worker, TF_CONFIG = "
        '{"cluster": {"worker": ["host0:port", "host1:port", ...]}, "task": {"type": '
        '"worker", "index": i}}; python -m tf_lottery.cluster sets it for processes on '
        "this machine.")


def cluster_task(environ=None) -> ClusterTask:
    """Reads and checks ``TF_CONFIG`` (from ``environ``, default ``os.environ``).

    Returns:
        A ``ClusterTask``.

    Raises:
        ValueError: naming ``TF_CONFIG`` when it is missing, not JSON, lacks
            ``cluster`` or ``task``, lists task types other than ``worker`` and ``chief``
            or addresses that are not ``host:port``, or names a task outside the cluster.
    """
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG")
    if not text:
        _fail("is not set")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        _fail(f"is not JSON ({err.msg} at character {err.pos}): {text!r}")
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) or (
            not isinstance(config.get("task"), dict)):
        _fail(f"must be an object with 'cluster' and 'task' objects; received {text!r}")
    cluster, task = config["cluster"], config["task"]
    unknown = sorted(set(cluster) - {"worker", "chief"})
    if unknown or not cluster:
        _fail(f"lists task types {sorted(cluster)}; only 'worker' (and one 'chief') are "
              "used by multi-worker training")
    for kind, addresses in cluster.items():
        if not (isinstance(addresses, list) and addresses and all(
                isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses)):
            _fail(f"cluster[{kind!r}] must be a non-empty list of 'host:port' strings; "
                  f"received {addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        _fail(f"lists {len(cluster['chief'])} chiefs; a cluster has at most one")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster or isinstance(index, bool) or not isinstance(index, int) or not (
            0 <= index < len(cluster[kind])):
        _fail(f"names task {{'type': {kind!r}, 'index': {index!r}}}, which is not in its "
              f"cluster {cluster}")
    return ClusterTask(cluster=cluster, task_type=kind, index=index)


def create_strategy():
    """A ``tf.distribute.MultiWorkerMirroredStrategy`` for ``TF_CONFIG``'s cluster.

    Call it before any other TensorFlow op of the process.

    Raises:
        ValueError: a bad ``TF_CONFIG`` (see ``cluster_task``).
    """
    cluster_task()
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def is_multi_worker(strategy) -> bool:
    """Whether ``strategy`` is a ``MultiWorkerMirroredStrategy``."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def worker_index(strategy) -> int:
    """This process's index among the workers of ``strategy`` (0 for any strategy that is
    not multi-worker): the chief first, then the workers in order."""
    if not is_multi_worker(strategy):
        return 0
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    chiefs = len(spec.get("chief", []))
    return resolver.task_id if resolver.task_type == "chief" else chiefs + resolver.task_id


def is_chief(strategy) -> bool:
    """Whether this process writes shared files: always, except on the non-chief workers
    of a ``MultiWorkerMirroredStrategy``."""
    if not is_multi_worker(strategy):
        return True
    return strategy.extended.should_checkpoint


def _per_worker(strategy, values):
    import tensorflow as tf

    return strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(values))


def check_agreement(strategy, description: str) -> None:
    """Refuses to start when the workers were not given the same experiment.

    Every worker hashes ``description`` (its hyperparameters, replicate and runtime
    options) and the hashes are gathered across workers: a collective that also waits
    until every worker has started.

    Raises:
        ValueError: naming the workers whose description differs from the chief's.
    """
    if not is_multi_worker(strategy):
        return
    digest = hashlib.sha256(description.encode()).digest()
    value = int.from_bytes(digest[:8], "little", signed=True)
    hashes = strategy.gather(_per_worker(strategy, [value]), axis=0).numpy().tolist()
    if len(set(hashes)) > 1:
        differ = [i for i, h in enumerate(hashes) if h != hashes[0]]
        raise ValueError(
            f"the workers were started with different experiments: worker(s) {differ} "
            "differ from the chief (worker 0) in their hyperparameters, replicate or "
            "runtime options. Start every worker with the same command.")


def any_worker(strategy, triggers) -> list[bool]:
    """``triggers`` (booleans) or-ed over the workers, so that host-side events (a
    ``SIGTERM``, a wall-clock checkpoint period) lead every worker to the same action.
    Without a multi-worker strategy, ``triggers`` as they are."""
    triggers = [bool(t) for t in triggers]
    if not is_multi_worker(strategy):
        return triggers
    total = strategy.reduce("SUM", _per_worker(strategy, [float(t) for t in triggers]),
                            axis=None)
    return [bool(v > 0) for v in total.numpy().tolist()]
