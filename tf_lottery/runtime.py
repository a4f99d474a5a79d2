"""Options that change how fast an experiment runs and what it logs, never its results."""

from __future__ import annotations

import dataclasses

from tf_lottery.hparams import Steps

__all__ = ["Runtime"]


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Options that change speed and logging, never results.

    Attributes:
        jit_compile: XLA-compile the train and eval steps.
        steps_per_execution: iterations run per call of the compiled train function;
            a call stops early at an evaluation, the rewind point or the end (its batch
            stream ends there), so events land exactly whatever this divides.
        eval_batch_size: batch size of validation and test evaluation.
        checkpoint_every: step string; a resumable checkpoint of the level in progress
            is written at the first evaluation at or after each multiple (default: ten
            evaluation periods).
        checkpoint_minutes: wall-clock period of checkpoints as well (minutes, > 0, or
            ``None``: iterations only), taken at the next chunk of iterations, so a
            killed run loses at most about that much training. Default 5.
        tensorboard: write TensorBoard logs (Keras ``TensorBoard`` callback) per branch.
        deterministic: turn on TensorFlow op determinism (``enable_op_determinism``).
        fast_loop: run each call's iterations in one compiled ``tf.while_loop`` that
            gathers its batches from the training set cached as tensors (one XLA
            computation per call with ``jit_compile``), instead of Keras's train function
            fed batch by batch from ``tf.data``. Same batches and the same Keras
            ``train_step``: LeNet-300-100 trains bit for bit as on Keras's path
            (``tests/test_speed.py``, with and without XLA); a convolutional network can
            differ in the last bits (another graph around the same ops). About 1.45x
            faster per LeNet-300-100 iteration on CPU. Evaluation likewise runs Keras's
            ``test_step`` in a compiled loop over the cached validation and test splits
            instead of ``model.evaluate`` (same batches, same values; 1.4x faster).
            Used under the default strategy; ignored under any ``tf.distribute``
            strategy.
        progress: show a progress bar per branch of an experiment
            (``tf_lottery.progress``: iterations, iterations per second, time left, the
            latest validation and test accuracy); on the chief only under multi-worker.
    """

    jit_compile: bool = True
    steps_per_execution: int = 100
    eval_batch_size: int = 1000
    checkpoint_every: Steps | str | None = None
    tensorboard: bool = False
    deterministic: bool = False
    fast_loop: bool = True
    checkpoint_minutes: float | None = 5.0
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.steps_per_execution, bool) or not (
            isinstance(self.steps_per_execution, int) and self.steps_per_execution >= 1
        ):
            raise ValueError(
                "`steps_per_execution` must be an integer >= 1; received "
                f"{self.steps_per_execution!r}."
            )
        if not (isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1):
            raise ValueError(
                f"`eval_batch_size` must be an integer >= 1; received {self.eval_batch_size!r}."
            )
        if self.checkpoint_minutes is not None and (
                isinstance(self.checkpoint_minutes, bool)
                or not isinstance(self.checkpoint_minutes, (int, float))
                or not self.checkpoint_minutes > 0):
            raise ValueError("`checkpoint_minutes` must be a number of minutes > 0, or None; "
                             f"received {self.checkpoint_minutes!r}.")
        if not isinstance(self.progress, bool):
            raise ValueError(f"`progress` must be True or False; received {self.progress!r}.")
        if self.checkpoint_every is not None:
            object.__setattr__(self, "checkpoint_every",
                               Steps.parse(self.checkpoint_every, "checkpoint_every"))
