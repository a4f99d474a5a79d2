"""A trained network of a run directory, rebuilt for export: ``load_ticket``.

A run directory is what ``tf_lottery.experiment.run_experiment`` writes; its layout is
``tf_lottery.paths`` (``RunDir``/``ReplicateDir``/``BranchDir``). The network is rebuilt
the one way the experiment builds it (``tf_lottery.experiment.build_model`` on the
dataset of ``tf_lottery.experiment.load_dataset``), wrapped, and the branch's final
weights and masks are loaded.
"""

from __future__ import annotations

import dataclasses
import os

import keras

from tf_lottery import experiment, files, masking, paths
from tf_lottery.hparams import BRANCHES, ExperimentHparams

__all__ = ["Ticket", "load_ticket"]


@dataclasses.dataclass(frozen=True)
class Ticket:
    """A trained network of a run directory, rebuilt (see ``load_ticket``).

    Attributes:
        model: the masked Keras model (``tf_lottery.wrap``) with the branch's final
            weights and masks loaded.
        dataset: the run's ``tf_lottery.data.Dataset``.
        hparams: the run's ``ExperimentHparams``.
        summary: the branch's summary (``BranchDir.summary``) as a dict.
        branch_dir: the branch directory, ``.../replicate_<r>/level_<k>/<branch>``.
    """

    model: keras.Model
    dataset: object
    hparams: object
    summary: dict
    branch_dir: str


def load_ticket(run_dir, level, *, branch="lottery", replicate=None, data_dir=None) -> Ticket:
    """Rebuilds the trained network of one level and branch of a run.

    The run is ``<run_root>/<name>_<hash>`` as ``tf_lottery.experiment.run_experiment``
    writes it (``tf_lottery.paths.RunDir``): its hparams, and per replicate, level and
    branch the final weights and summary. The model is rebuilt with
    ``tf_lottery.experiment.build_model`` from the run's ``ModelHparams`` and the input
    shape and classes of its dataset (``tf_lottery.experiment.load_dataset``), wrapped,
    and the branch's final weights (and masks) are loaded. Mixed-precision runs are
    rebuilt in float32 (weights are float32 variables either way).

    Args:
        run_dir: the ``<name>_<hash>`` directory, or one of its ``replicate_<r>``
            directories.
        level: pruning level ``k`` >= 0 whose branch finished (its summary exists).
        branch: ``"lottery"``, ``"reinit"`` or ``"random_prune"``.
        replicate: replicate index (default 0) when ``run_dir`` is the ``<name>_<hash>``
            directory; must agree with a ``replicate_<r>`` ``run_dir`` if given.
        data_dir: where the dataset's files are (IDX files or TFDS directory), as for
            the experiment.

    Returns:
        A ``Ticket``: ``model`` (masked, float32, logits ``(batch, num_classes)``),
        ``dataset``, ``hparams``, ``summary`` (dict) and ``branch_dir``.

    Raises:
        ValueError: naming the argument (``run_dir``, ``replicate``, ``level``,
            ``branch``) when the directory, level or branch does not exist or has not
            finished, or when the data cannot be loaded.
    """
    run, rep = paths.resolve_replicate(run_dir, replicate)
    if branch not in BRANCHES:
        raise ValueError(f"`branch` must be one of {list(BRANCHES)}; received {branch!r}.")
    done = rep.finished_levels(branch)
    if isinstance(level, bool) or not isinstance(level, int) or level not in done:
        raise ValueError(
            f"`level` {level!r} has no finished {branch!r} branch in {rep.path} (no "
            f"summary written); finished levels: {done or 'none'}."
        )
    where = rep.branch(level, branch)
    if not os.path.exists(where.final_weights):
        raise ValueError(f"`level` {level}: {where.final_weights} is missing.")
    hparams = ExperimentHparams.from_dict(files.read_json(run.hparams))
    dataset = experiment.load_dataset(hparams.dataset, data_dir=data_dir)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = experiment.build_model(hparams.model, dataset.input_shape,
                                       dataset.num_classes)
        model = masking.wrap(model)
    finally:
        keras.config.set_dtype_policy(policy)
    model.load_weights(where.final_weights)
    return Ticket(model=model, dataset=dataset, hparams=hparams,
                  summary=files.read_json(where.summary), branch_dir=where.path)
