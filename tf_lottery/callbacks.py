"""Keras callbacks: iterative magnitude pruning inside one ``model.fit``, and sparsity
summaries for TensorBoard.

``LotteryTicket`` runs the lottery-ticket procedure of Frankle & Carbin, "The Lottery
Ticket Hypothesis", ICLR 2019 (with the rewinding of Frankle et al., "Linear Mode
Connectivity and the Lottery Ticket Hypothesis", ICML 2020) as an ordinary Keras
callback on a model returned by ``tf_lottery.wrap``. Its API follows PyTorch Lightning's
``ModelPruning(use_lottery_ticket_hypothesis=True)``. For controls, early-stopping
iterations, resumable runs and result files use ``tf_lottery.ticket.fit``.
"""

from __future__ import annotations

import numbers
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_lottery import masking, pruning

__all__ = ["LotteryTicket", "SparsitySummaries"]


def _check_int(name: str, value, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}; received {name}={value!r}. {hint}")
    return int(value)


class LotteryTicket(keras.callbacks.Callback):
    """Iterative magnitude pruning with rewinding (IMP) inside one ``model.fit`` call.

    The model trains ``epochs_per_level`` epochs per level. At the end of each level,
    while pruning levels remain, the callback

    1. computes new masks with ``tf_lottery.prune(model, rate=rate, ...)`` from the
       weights just trained (``rate`` of each layer's *surviving* weights go, so after
       ``n`` levels a layer keeps ``(1 - rate) ** n`` of them, Frankle & Carbin 2019,
       Sec. 2);
    2. rewinds **all** model weights (kernels, biases, BatchNorm statistics, and the
       masks, which are then replaced) to the rewind snapshot taken after
       ``rewind_iteration`` optimizer steps of this ``fit`` (0: the weights at
       ``on_train_begin``), and sets the new masks with ``tf_lottery.set_masks``;
    3. resets every optimizer variable to the value it had at ``on_train_begin``: Adam's
       moments and momentum buffers return to zero (so no stale state moves a weight) and
       ``optimizer.iterations`` to its start value, so a learning-rate schedule restarts.
       With ``rewind_iteration = k > 0``, ``iterations`` is then set to its value at the
       snapshot (start + k): the schedule resumes at iteration ``k`` as in Frankle et al.
       (2020), while the optimizer's moments still start from zero, as in
       ``tf_lottery.ticket.fit``. (Lightning's ``ModelPruning`` does not reset the
       optimizer; this callback does.)

    and appends ``{"level", "epoch", "sparsity", "masks_sparsity_per_layer"}`` to
    ``history``: the level just entered (1, 2, ...), the 0-based ``fit`` epoch after
    which it was pruned, the total sparsity and ``{mask key: sparsity}`` (fractions in
    ``[0, 1]``). After the last level the model trains on with its final masks for the
    rest of ``fit``. Ask ``fit`` for ``epochs_per_level * (levels + 1)`` epochs: the dense
    level 0 and ``levels`` pruned levels of ``epochs_per_level`` epochs each (counted from
    the first epoch this ``fit`` runs; a warning says which levels a smaller ``epochs``
    leaves out, and no level is pruned at the end of ``fit``'s last epoch, which would
    return an untrained, rewound model). Each ``fit`` call starts over: the snapshot,
    optimizer values and ``history`` are taken anew from the model at ``on_train_begin``.

    Example (5 levels of 20%, 2 epochs each)::

        model = tf_lottery.wrap(build())
        model.compile(optimizer="adam", loss=..., metrics=["accuracy"])
        ticket = LotteryTicket(rate=0.2, levels=5, epochs_per_level=2)
        model.fit(x, y, epochs=2 * (5 + 1),
                  callbacks=[ticket, SparsitySummaries("logs/sparsity")])
        ticket.history[-1]["sparsity"]  # 1 - 0.8 ** 5 = 0.67232

    Differences from ``tf_lottery.ticket.fit``: one ``fit`` call and one network, so no
    ``reinit``/``random_prune`` control branches, no one-shot tickets, no
    early-stopping iteration, no files or resuming; levels last whole epochs and every
    level after a rewind to ``k > 0`` still trains ``epochs_per_level`` full epochs
    (``ticket.fit`` trains iterations ``k..T``). Metrics of the epoch that ends a level
    describe the weights before pruning. Callbacks later in the list see the rewound
    weights at that epoch's end: do not combine with ``EarlyStopping`` or
    ``ReduceLROnPlateau`` (each level restarts from the rewind point, and the reset
    restores the initial learning-rate variable).

    Args:
      rate: fraction in ``[0, 1)`` of the surviving weights pruned per level.
      levels: pruning levels after the dense level 0, an integer >= 1.
      epochs_per_level: training epochs of every level, an integer >= 1.
      rewind_iteration: optimizer step ``k`` (counted by ``optimizer.iterations`` from
        the start of ``fit``) whose weights every level rewinds to; integer >= 0. It
        must fall inside level 0; with ``steps_per_execution > 1`` the snapshot is
        taken at the first callback at or after ``k`` (a warning names the step).
      scope: ``"layerwise"``, ``"global"`` or ``"erk"`` (see ``tf_lottery.prune``).
      criterion: a key of ``tf_lottery.CRITERIA`` that needs neither data nor
        accumulated scores (``magnitude``, ``random``, ``large_init``, ...); criteria that
        compare with the initial weights get the weights of ``on_train_begin``.
      output_rate: rate of the output layer (layerwise only); ``None`` uses ``rate``.
      exclude: layer names or mask keys never pruned.
      seed: seed of the ``random`` criterion (level ``l`` uses ``seed + l``); ``None``
        draws fresh randomness.

    Raises:
      ValueError: at construction, for any argument out of range; at the start of
        ``fit``, for a model without masked layers (use ``tf_lottery.wrap``), an
        ``exclude`` naming no masked layer, or a ``rewind_iteration`` beyond level 0.
    """

    def __init__(self, rate, levels, epochs_per_level, rewind_iteration=0, scope="layerwise",
                 criterion="magnitude", output_rate=None, exclude=None, seed=None):
        super().__init__()
        self.rate = pruning._check_rate("rate", rate)
        self.levels = _check_int("levels", levels, 1, "Pass the number of pruning levels, "
                                 "e.g. levels=5.")
        self.epochs_per_level = _check_int(
            "epochs_per_level", epochs_per_level, 1,
            "Pass the number of epochs each level trains, e.g. epochs_per_level=2.")
        self.rewind_iteration = _check_int(
            "rewind_iteration", rewind_iteration, 0,
            "Pass 0 to rewind to the initial weights, or an optimizer step of level 0.")
        if scope not in pruning.SCOPES:
            raise ValueError(f"`scope` must be one of {list(pruning.SCOPES)}; received "
                             f"scope={scope!r}.")
        if criterion not in pruning.CRITERIA:
            raise ValueError(f"`criterion` must be one of {sorted(pruning.CRITERIA)}; "
                             f"received criterion={criterion!r}.")
        if criterion in pruning.DATA_CRITERIA or criterion in pruning.SCORED_CRITERIA:
            raise ValueError(
                f"criterion={criterion!r} needs training data or scores accumulated during "
                "training, which LotteryTicket does not collect. Use a weight criterion "
                "such as 'magnitude', or tf_lottery.ticket.fit for this one.")
        if output_rate is not None:
            output_rate = pruning._check_rate("output_rate", output_rate)
            if scope != "layerwise":
                raise ValueError(
                    f"`output_rate` applies to scope='layerwise' only; received "
                    f"output_rate={output_rate!r} with scope={scope!r}. Pass "
                    "output_rate=None, or exclude=[the output layer's name].")
        if isinstance(exclude, str):
            exclude = [exclude]
        if exclude is not None and not all(isinstance(name, str) for name in exclude):
            raise ValueError(f"`exclude` must be a layer name or a list of layer names or "
                             f"mask keys; received exclude={exclude!r}.")
        if seed is not None:
            seed = _check_int("seed", seed, 0, "Pass a non-negative int or None.")
        self.scope, self.criterion, self.output_rate = scope, criterion, output_rate
        self.exclude, self.seed = list(exclude or []), seed
        self.history: list[dict] = []
        self._rewind_weights = None

    # ------------------------------------------------------------------- fit hooks
    def on_train_begin(self, logs=None):
        model = self.model
        if not masking.mask_keys(model):
            raise ValueError(
                f"LotteryTicket needs a model with masked layers, but {model.name!r} has "
                "none. Train the model returned by tf_lottery.wrap(model) instead.")
        pruning._match(masking.mask_keys(model), self.exclude, "exclude")
        steps = (self.params or {}).get("steps")
        if steps and self.rewind_iteration > steps * self.epochs_per_level:
            raise ValueError(
                f"`rewind_iteration`={self.rewind_iteration} is past level 0, which trains "
                f"{steps * self.epochs_per_level} steps ({self.epochs_per_level} epochs of "
                f"{steps}). Pass a rewind_iteration <= {steps * self.epochs_per_level}.")
        epochs = (self.params or {}).get("epochs")
        needed = self.epochs_per_level * (self.levels + 1)
        if epochs is not None and epochs < needed:
            pruned = min(self.levels, max(epochs - 1, 0) // self.epochs_per_level)
            what = (f"only levels 1..{pruned} are pruned, and level {pruned} trains "
                    f"{epochs - pruned * self.epochs_per_level} of its "
                    f"{self.epochs_per_level} epochs" if pruned else "no level is pruned")
            warnings.warn(
                f"LotteryTicket(levels={self.levels}, epochs_per_level="
                f"{self.epochs_per_level}) needs fit(epochs={needed}) to train every "
                f"level; with epochs={epochs} {what}. Pass epochs={needed}.",
                UserWarning, stacklevel=2)
        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self._optimizer_start = [np.array(v.numpy()) for v in optimizer.variables]
        self._iterations_start = int(optimizer.iterations.numpy())
        self._rewind_iterations = self._iterations_start
        self._reference = masking.get_prunable_weights(model)  # for e.g. large_init
        self._rewind_weights = model.get_weights() if self.rewind_iteration == 0 else None
        self._epochs = 0
        self.history = []

    def on_train_batch_end(self, batch, logs=None):
        if self._rewind_weights is not None:
            return
        step = int(self.model.optimizer.iterations.numpy()) - self._iterations_start
        if step < self.rewind_iteration:
            return
        if step > self.rewind_iteration:
            warnings.warn(
                f"LotteryTicket took the rewind snapshot after step {step}, not "
                f"rewind_iteration={self.rewind_iteration}: callbacks run only every "
                "`steps_per_execution` steps. Pick a multiple of it.", UserWarning,
                stacklevel=2)
        self._rewind_weights = self.model.get_weights()
        self._rewind_iterations = self._iterations_start + step

    def on_epoch_end(self, epoch, logs=None):
        self._epochs += 1
        level = len(self.history) + 1
        if self._epochs % self.epochs_per_level or level > self.levels:
            return
        if epoch + 1 >= (self.params or {}).get("epochs", epoch + 2):
            return  # fit ends here: a pruned, rewound model would be returned untrained.
        if self._rewind_weights is None:
            raise ValueError(
                f"`rewind_iteration`={self.rewind_iteration} was not reached in level 0 "
                f"({self._epochs} epochs). Pass a smaller rewind_iteration.")
        model = self.model
        masks = pruning.prune(
            model, rate=self.rate, scope=self.scope, criterion=self.criterion,
            output_rate=self.output_rate, exclude=self.exclude or None,
            reference_weights=self._reference,
            seed=None if self.seed is None else self.seed + level)
        model.set_weights(self._rewind_weights)
        masking.set_masks(model, masks)
        self._reset_optimizer()
        report = masking.sparsity_report(model)
        self.history.append({
            "level": level,
            "epoch": int(epoch),
            "sparsity": report.sparsity,
            "masks_sparsity_per_layer": {k: s.sparsity for k, s in report.layers.items()},
        })

    def _reset_optimizer(self):
        optimizer = self.model.optimizer
        for variable, value in zip(optimizer.variables, self._optimizer_start, strict=True):
            variable.assign(value)
        optimizer.iterations.assign(self._rewind_iterations)


class SparsitySummaries(keras.callbacks.Callback):
    """Writes each layer's sparsity and the total to TensorBoard at every epoch end.

    Scalars (fractions in ``[0, 1]``, from ``tf_lottery.sparsity_report``) are named
    ``"sparsity/<mask key>"`` (e.g. ``"sparsity/fc1/kernel"``) and ``"sparsity/total"``,
    at step = the 0-based epoch index, in event files under ``log_dir`` (a
    ``tf.summary`` file writer; point ``tensorboard --logdir`` at it or at its parent).
    Works on masked models (the masks count) and on plain ones (nonzero kernel entries).
    Place it after ``LotteryTicket`` in the callback list to log the sparsity the next
    epoch trains with.

    Args:
      log_dir: directory for the event files (created if needed), a str or PathLike.

    Raises:
      ValueError: at construction for an empty ``log_dir``; at an epoch end for a model
        without prunable layers (from ``sparsity_report``).
    """

    def __init__(self, log_dir):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
            raise ValueError(f"`log_dir` must be a directory path; received "
                             f"log_dir={log_dir!r}.")
        self.log_dir = os.fspath(log_dir)
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        report = masking.sparsity_report(self.model)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for key, layer in report.layers.items():
                tf.summary.scalar(f"sparsity/{key}", layer.sparsity, step=int(epoch))
            tf.summary.scalar("sparsity/total", report.sparsity, step=int(epoch))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
