"""One experiment from its hyperparameters: the model, the data and the run, built one way.

Every caller that turns ``ExperimentHparams`` into something (the CLI, the search, the
analyses, the export, the tests) uses these functions:

- ``load_dataset(hp.dataset)``: the dataset, split as the experiment splits it.
- ``build_model(hp.model, input_shape, num_classes, seed=...)``: a fresh, unwrapped
  network of the zoo, kernels drawn from ``hp.model.kernel_initializer``.
- ``model_fn(hp.model, dataset, cache_dir=...)``: ``seed -> keras.Model`` as
  ``ticket.fit`` wants it, GradInit applied when ``hp.model.initializer == "gradinit"``.
- ``run_experiment(hp, run_root, replicate=...)``: writes ``hparams.json`` (and
  ``flags.txt``) and runs ``ticket.fit`` into ``<run_root>/<name>_<hash>/replicate_<r>``.

The optimizer is built from ``hp.training`` by ``tf_lottery.optimizers.build_optimizer``,
which the training engine calls, since the engine owns the schedule it rewinds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import keras

from tf_lottery import data as data_lib
from tf_lottery import files, models, multi_worker, paths, run_lock
from tf_lottery.hparams import ExperimentHparams, ModelHparams, derive_seed

__all__ = [
    "Experiment",
    "load_dataset",
    "build_model",
    "model_fn",
    "replicate_seed",
    "check",
    "run_experiment",
]


def load_dataset(dataset_hparams, *, data_dir=None) -> data_lib.Dataset:
    """The dataset of ``dataset_hparams`` (a ``DatasetHparams``), split as the run splits it.

    Raises:
        ValueError: an unknown dataset, or files that cannot be found or read (see
            ``tf_lottery.data.load``).
    """
    return data_lib.load(dataset_hparams.dataset, data_dir=data_dir,
                         validation_size=dataset_hparams.validation_size,
                         synthetic_size=dataset_hparams.synthetic_size)


def build_model(model_hparams: ModelHparams, input_shape, num_classes: int, *,
                seed: int = 0) -> keras.Model:
    """A fresh, unwrapped network of the zoo for ``model_hparams``.

    Kernels are drawn from ``model_hparams.kernel_initializer`` (for a GradInit model its
    base initializer, without GradInit's rescaling: use ``model_fn`` for that).

    Args:
        model_hparams: a ``ModelHparams``.
        input_shape: one example's shape without the batch axis, e.g. ``(28, 28, 1)``.
        num_classes: number of output logits, >= 1.
        seed: int >= 0; the same seed gives the same weights.

    Returns:
        A Functional ``keras.Model`` mapping a float32 batch to logits
        ``(batch, num_classes)``.

    Raises:
        ValueError: model options the zoo rejects (see ``tf_lottery.models.build_model``).
    """
    m = model_hparams
    return models.build_model(m.model, input_shape, num_classes,
                              initializer=m.kernel_initializer, dropout=m.dropout,
                              seed=seed, batch_norm=m.batch_norm)


def model_fn(model_hparams: ModelHparams, dataset,
             *, cache_dir: str | os.PathLike | None = None) -> Callable[[int], keras.Model]:
    """``model_fn(seed) -> keras.Model`` for ``ticket.fit``: ``build_model``, then, for
    ``initializer="gradinit"``, GradInit's rescaling (Zhu et al., NeurIPS 2021) learned
    on ``dataset``'s training split with a seed derived from ``seed``.

    With ``cache_dir`` (a replicate directory), the learned scales of each seed are kept
    in ``gradinit_<seed>.json`` there and replayed when the same seed is built again, so
    a resumed run does not rerun GradInit.

    Args:
        model_hparams: a ``ModelHparams``.
        dataset: a ``tf_lottery.data.Dataset`` (its shapes, and GradInit's data).
        cache_dir: directory of the per-seed scale files, or ``None``.
    """
    hp = model_hparams
    replicate = paths.ReplicateDir(os.fspath(cache_dir)) if cache_dir is not None else None

    def build(seed: int) -> keras.Model:
        model = build_model(hp, dataset.input_shape, dataset.num_classes, seed=seed)
        if hp.gradinit is None:
            return model
        from tf_lottery import gradinit

        path = replicate.gradinit_scales(seed) if replicate is not None else None
        if path and os.path.exists(path):
            try:
                gradinit.apply_scales(model, files.read_json(path)["scales"])
                return model
            except (ValueError, KeyError, TypeError):
                pass  # unreadable or stale: learn the scales again
        g = hp.gradinit
        result = gradinit.gradinit(
            model, dataset, steps=g.steps, eta=g.eta, gamma=g.gamma, scale_lr=g.scale_lr,
            min_scale=g.min_scale, optimizer=g.optimizer,
            batch_size=min(g.batch_size, len(dataset.y_train) // 2),
            seed=derive_seed(seed, "gradinit"), variant=g.variant,
            normalize_grad=g.normalize_grad,
        )
        if path:
            files.atomic_write_json(path, result.to_dict())
        return model

    return build


def replicate_seed(hp: ExperimentHparams, replicate: int) -> int:
    """The seed ``ticket.fit`` gets for replicate ``replicate`` of ``hp``."""
    return derive_seed(hp.seed, "replicate", replicate)


def check(hp: ExperimentHparams, dataset) -> None:
    """Checks what can only be checked with the data in hand, before any directory exists:
    lengths against the epoch (a rewind point, warmup or drop past the budget), the
    model's options (by building it once) and, for a channel or N:M ``structure``, what
    pruning makes of the model (one prune of the built model).

    Raises:
        ValueError: naming the hyperparameter at fault.
    """
    spe = hp.training.steps_per_epoch(len(dataset.y_train))
    hp.training.check_against(spe, hp.pruning.rewind)
    model = build_model(hp.model, dataset.input_shape, dataset.num_classes)
    if hp.pruning.structure != "unstructured" and hp.pruning.criterion in ("magnitude",
                                                                           "random"):
        # What a structure makes of this model (tied channels, layers it leaves as they
        # are) is known only with the model: one dry prune, so its errors and warnings
        # come now rather than after level 0 has trained.
        from tf_lottery import masking, pruning

        pruning.level_masks(masking.wrap(model), 1, hp.pruning, seed=0)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Where one replicate of an experiment lives: its run and replicate directories."""

    hparams: ExperimentHparams
    run: paths.RunDir
    replicate: paths.ReplicateDir

    @classmethod
    def at(cls, hp: ExperimentHparams, run_root: str | os.PathLike,
           replicate: int = 0) -> Experiment:
        """The directories of ``hp``'s replicate ``replicate`` under ``run_root``."""
        if isinstance(replicate, bool) or not isinstance(replicate, int) or replicate < 0:
            raise ValueError(f"`replicate` must be an integer >= 0; received {replicate!r}.")
        run = paths.RunDir.of(run_root, hp.run_name())
        return cls(hp, run, run.replicate(replicate))


def run_experiment(hp: ExperimentHparams, run_root: str | os.PathLike, *,
                   replicate: int = 0, dataset=None, data_dir=None, runtime=None,
                   strategy=None, flags_text: str | None = None):
    """Runs (or resumes) replicate ``replicate`` of the experiment ``hp`` under ``run_root``.

    Writes ``<run_root>/<name>_<hash>/hparams.json`` (and ``flags.txt`` when
    ``flags_text`` is given), then ``ticket.fit`` into ``replicate_<replicate>/``. A rerun
    skips finished branches and resumes the one in progress. While it trains, the process
    holds the replicate's lock file (``tf_lottery.run_lock``): a second process started on
    the same replicate raises ``ReplicateLocked`` before writing anything.

    Under ``MultiWorkerMirroredStrategy`` (``tf_lottery.multi_worker``) every worker calls
    this with the same arguments; the workers first check that they agree on the
    experiment, the chief alone writes the run directory and holds the lock, and the
    other workers train in private copies that they remove at the end.

    Args:
        hp: the experiment.
        run_root: directory holding run directories.
        replicate: replicate index ``r`` >= 0; its seed is ``replicate_seed(hp, r)``.
        dataset: the loaded dataset (default: ``load_dataset(hp.dataset, data_dir=...)``).
        data_dir: where the dataset's files are, when ``dataset`` is not given.
        runtime: a ``tf_lottery.training.Runtime`` (speed and logging options).
        strategy: a ``tf.distribute.Strategy`` (default: the current one).
        flags_text: the text of ``flags.txt``, a flagfile that reruns the experiment.

    Returns:
        The ``ticket.LotteryResult``.

    Raises:
        ValueError: before any directory is created, for a bad ``replicate``, data that
            cannot be loaded, or lengths and model options that do not fit the data;
            under multi-worker, for workers started with different experiments.
        tf_lottery.run_lock.ReplicateLocked: another live process trains this replicate.
    """
    import tensorflow as tf

    where = Experiment.at(hp, run_root, replicate)
    if dataset is None:
        dataset = load_dataset(hp.dataset, data_dir=data_dir)
    check(hp, dataset)
    strategy = strategy or tf.distribute.get_strategy()
    if not multi_worker.is_chief(strategy):
        return _run_as_worker(hp, where, replicate, dataset, runtime, strategy)
    with run_lock.replicate_lock(where.replicate.lock):
        multi_worker.check_agreement(strategy, _description(hp, replicate, runtime))
        files.atomic_write_json(where.run.hparams, hp.to_dict())
        if flags_text is not None:
            files.atomic_write_text(where.run.flags, flags_text)
        return _fit(hp, where.replicate.path, replicate, dataset, runtime, strategy)


def _fit(hp, replicate_dir, replicate, dataset, runtime, strategy):
    from tf_lottery import ticket

    return ticket.fit(
        model_fn(hp.model, dataset, cache_dir=replicate_dir), dataset,
        training=hp.training, pruning_hparams=hp.pruning, run_dir=replicate_dir,
        seed=replicate_seed(hp, replicate), strategy=strategy, runtime=runtime,
        augment=hp.dataset.augment,
    )


def _description(hp: ExperimentHparams, replicate: int, runtime) -> str:
    """What every worker of a multi-worker run must share: hyperparameters, replicate
    and the runtime options that decide when collectives run."""
    options = dataclasses.asdict(runtime) if runtime is not None else {}
    options.pop("progress", None)  # display only
    return json.dumps({"hparams": hp.to_dict(), "replicate": replicate,
                       "runtime": options}, sort_keys=True, default=str)


def _run_as_worker(hp, where: Experiment, replicate, dataset, runtime, strategy):
    """A non-chief worker of a multi-worker run: the same training, in a private copy of
    the replicate taken before the first collective (``paths.RunDir.worker_copy``), so
    it resumes exactly where the chief does; the copy is removed at the end."""
    index = multi_worker.worker_index(strategy)
    copy = where.run.worker_copy(replicate, index)
    try:
        multi_worker.check_agreement(strategy, _description(hp, replicate, runtime))
        return _fit(hp, copy.replicate(replicate).path, replicate, dataset, runtime, strategy)
    finally:
        where.run.remove_worker_copy(index)
