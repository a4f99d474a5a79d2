"""Pruning scores accumulated inside the compiled training loop, one update per iteration.

Two criteria score a weight by how it moved during the level, not by where it ended:

* ``movement_score`` (Sanh, Wolf & Rush, "Movement Pruning: Adaptive Sparsity by
  Fine-Tuning", NeurIPS 2020, Eq. 4 with the straight-through estimator):
  ``S = -sum_t w_t * dL/dw_t`` over the level's iterations; weights moving away from
  zero score high and are kept.
* ``accumulated_change``: ``sum_t |w_t - w_{t-1}|``, the distance a weight travelled;
  the weights that changed least, locally and per iteration, are pruned.

``ScoreAccumulator`` keeps one float32 variable per masked weight and updates it where
the optimizer updates that weight (its ``update_step``, which Keras's ``train_step``
reaches through ``apply_gradients``; the gradient there is the one the update uses:
unscaled under mixed precision, clipped when clipping is on; decoupled weight decay,
which Keras applies to the variable before the update, is not counted in
``accumulated_change``). Because it is part of the traced step it runs inside the
compiled loop (XLA with ``jit_compile``). The cost is one more elementwise pass over the
masked weights per iteration (XLA on CPU does not fuse it with the optimizer's own
passes): ``tools/bench_scores.py`` measures it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_lottery import masking

__all__ = ["KINDS", "ScoreAccumulator"]

#: The criteria whose scores are accumulated during training.
KINDS = ("movement_score", "accumulated_change")


class ScoreAccumulator:
    """Accumulates ``kind``'s scores of every masked weight of ``model`` while it trains.

    Args:
        model: a masked, compiled ``keras.Model`` with its optimizer built.
        kind: ``"movement_score"`` or ``"accumulated_change"``.

    Create it once, before the training function is traced; ``reset()`` at the start
    of each network's training, ``get()`` at its end (``{mask key: float32 array of the
    weight's shape}``), ``set()`` to restore a checkpoint.

    Raises:
        ValueError: ``kind`` is not in ``KINDS``, or the model has no optimizer.
    """

    def __init__(self, model, kind: str):
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {list(KINDS)}; received {kind!r}.")
        if getattr(model, "optimizer", None) is None:
            raise ValueError("`model` must be compiled (its optimizer applies the updates "
                             "the scores accumulate); call model.compile first.")
        self.kind = kind
        self._weights = {key: weight for key, (weight, _) in
                         masking._mask_variables(model).items()}
        self.scores = {
            key: tf.Variable(tf.zeros(weight.shape, tf.float32), trainable=False,
                             name=f"{kind}_{i}")
            for i, (key, weight) in enumerate(self._weights.items())
        }
        # Keras's TensorFlow optimizer hands ``update_step`` the backing tf.Variable.
        self._by_variable = {id(w): key for key, w in self._weights.items()}
        self._by_variable.update(
            {id(getattr(w, "value", w)): key for key, w in self._weights.items()})
        optimizer = model.optimizer
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = optimizer.inner_optimizer
        self._install(optimizer)

    def _install(self, optimizer):
        """Wraps this optimizer instance's ``update_step`` (an instance attribute: nothing
        else changes), which Keras's ``train_step`` reaches for every variable through
        ``apply_gradients``, when the step is traced."""
        scores, by_variable, kind = self.scores, self._by_variable, self.kind
        original = optimizer.update_step

        def update_step(gradient, variable, learning_rate):
            key = by_variable.get(id(variable))
            if key is None:
                return original(gradient, variable, learning_rate)
            w = tf.cast(tf.convert_to_tensor(variable), tf.float32)
            if kind == "movement_score":
                scores[key].assign_sub(w * tf.cast(gradient, tf.float32))
                return original(gradient, variable, learning_rate)
            result = original(gradient, variable, learning_rate)
            scores[key].assign_add(tf.abs(tf.cast(tf.convert_to_tensor(variable), tf.float32) - w))
            return result

        object.__setattr__(optimizer, "update_step", update_step)

    def reset(self) -> None:
        """Sets every score to zero (the start of a network's training)."""
        for variable in self.scores.values():
            variable.assign(tf.zeros_like(variable))

    def get(self) -> dict[str, np.ndarray]:
        """``{mask key: float32 array}``: the scores accumulated since ``reset``."""
        return {key: variable.numpy() for key, variable in self.scores.items()}

    def set(self, values) -> None:
        """Restores ``get()``'s result (from a checkpoint).

        Raises:
            ValueError: a key is missing or an array has another shape.
        """
        for key, variable in self.scores.items():
            if key not in values:
                raise ValueError(f"`values` lacks the scores of {key!r}.")
            value = np.asarray(values[key], np.float32)
            if value.shape != tuple(variable.shape):
                raise ValueError(f"`values[{key!r}]` has shape {value.shape}; expected "
                                 f"{tuple(variable.shape)}.")
            variable.assign(value)
