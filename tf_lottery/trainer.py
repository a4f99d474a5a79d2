"""``Trainer``: the training engine as a public class, for analyses and searches.

It trains masked networks on one compiled model (``tf_lottery.training``'s engine, the
one ``ticket.fit`` uses): instability, noise robustness, transfer and the search build
one and call ``train`` with the weights and masks of each network they study.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_lottery.hparams import PruningHparams, Steps, TrainingHparams
from tf_lottery.runtime import Runtime
from tf_lottery.training import _check_dataset, _Engine

__all__ = ["Trainer"]


class Trainer:
    """Trains masked networks on one compiled model: the engine under ``fit``, public
    for analyses (instability, noise robustness, transfer) and searches.

    Args:
        model_fn, dataset, training, seed, strategy, runtime, augment: as for
            ``tf_lottery.ticket.fit``.
        rewind: the rewind point, a ``Steps`` or step string (``rewind_iteration``;
            ``train`` can start at any iteration).

    Attributes:
        model: the compiled masked ``keras.Model`` (its weights are the last trained).
        iterations: the budget ``T`` in iterations; ``eval_every`` in iterations.
    """

    def __init__(self, model_fn, dataset, training: TrainingHparams, *, seed: int = 0,
                 rewind: Steps | str = "0it", strategy=None, runtime: Runtime | None = None,
                 augment: bool = False):
        _check_dataset(dataset)
        runtime = runtime or Runtime()
        training.check_against(training.steps_per_epoch(len(dataset.y_train)), rewind)
        self._engine = _Engine(
            model_fn, dataset, training, PruningHparams(rewind=rewind), seed,
            strategy or tf.distribute.get_strategy(), runtime, augment,
        )
        self.model = self._engine.model
        self.iterations = self._engine.T
        self.eval_every = self._engine.E
        self.rewind_iteration = self._engine.k

    def fresh_weights(self, seed: int) -> list[np.ndarray]:
        """``get_weights()`` of a newly built network from ``model_fn(seed)``."""
        return self._engine.fresh_weights(seed)

    def set_data_order(self, seed: int) -> None:
        """Uses another shuffling of the training data (e.g. for instability)."""
        self._engine.set_data_order(seed)

    def evaluate(self) -> dict:
        """``{"val_loss", "val_accuracy", "test_loss", "test_accuracy"}`` of ``model``."""
        return self._engine.evaluate()

    def train(self, *, weights, masks, start: int = 0, end: int | None = None,
              out_dir: str | None = None, finetune: bool = False) -> dict:
        """Trains ``model`` from ``weights`` (a ``get_weights()`` list) under ``masks``
        for iterations ``[start, end)`` (default: to the budget), with the learning-rate
        schedule at ``start`` (or frozen at its final value if ``finetune``).

        Returns the summary dict of ``fit`` plus ``"metrics"`` (the evaluation rows)
        when ``out_dir`` is None; with ``out_dir`` it writes the branch files there and
        resumes from a checkpoint found there.
        """
        end = self.iterations if end is None else end
        if not 0 <= start < end <= self.iterations:
            raise ValueError(
                f"`start`={start} and `end`={end} must satisfy 0 <= start < end <= "
                f"{self.iterations} (the training budget)."
            )
        e = self._engine
        return e.train_branch(
            out_dir, start=start, end=end, weights=weights, masks=masks,
            offset=e.T if finetune else start, frozen=finetune, level=-1, branch="train",
        )
