"""The optimizer of an experiment and its rewindable learning-rate schedule.

``build_optimizer(training, steps_per_epoch)`` is the one place an optimizer is built from
``TrainingHparams``: Adam, or SGD with momentum and Nesterov; weight decay is Keras's
decoupled ``weight_decay``. Its learning rate is a ``StepSchedule`` (warmup, then step
drops) that the IMP driver rewinds by assigning two variables.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_lottery.hparams import TrainingHparams

__all__ = ["StepSchedule", "build_optimizer"]


@keras.saving.register_keras_serializable(package="tf_lottery")
class StepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then step drops; rewindable without recompiling.

    ``lr(t) = learning_rate * min(1, t / warmup) * drop_factor ** #{d in drops: t >= d}``
    with ``t = offset + (1 - frozen) * iterations``: the driver sets ``offset`` to the
    rewind iteration ``k`` so a rewound network resumes the schedule at ``k``
    (Frankle et al. 2019), and ``frozen = 1`` with ``offset = T`` for fine-tuning at the
    final learning rate (Renda et al. 2020). ``offset`` and ``frozen`` are variables,
    so changing them does not retrace the compiled train step.
    """

    def __init__(self, learning_rate, warmup=0, drops=(), drop_factor=0.1):
        self.learning_rate = float(learning_rate)
        self.warmup = int(warmup)
        self.drops = tuple(int(d) for d in drops)
        self.drop_factor = float(drop_factor)
        self.offset = keras.Variable(0, dtype="int64", trainable=False, name="lr_offset")
        self.frozen = keras.Variable(0, dtype="int64", trainable=False, name="lr_frozen")

    def __call__(self, step):
        t = tf.cast(self.offset, tf.float32) + tf.cast(
            1 - self.frozen, tf.float32
        ) * tf.cast(step, tf.float32)
        lr = tf.constant(self.learning_rate, tf.float32)
        if self.warmup > 0:
            lr = lr * tf.minimum(1.0, t / float(self.warmup))
        for drop in self.drops:
            lr = lr * tf.where(t >= float(drop), self.drop_factor, 1.0)
        return lr

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "warmup": self.warmup,
            "drops": list(self.drops),
            "drop_factor": self.drop_factor,
        }


def build_optimizer(training: TrainingHparams, steps_per_epoch: int
                    ) -> tuple[keras.optimizers.Optimizer, StepSchedule]:
    """The optimizer ``training`` describes and its ``StepSchedule``.

    Args:
        training: a ``TrainingHparams`` (optimizer, learning rate, momentum, Nesterov,
            weight decay, warmup and drops as ``Steps``).
        steps_per_epoch: iterations per epoch, to turn epoch lengths into iterations.

    Returns:
        ``(optimizer, schedule)``: a ``keras.optimizers.Adam`` or ``SGD`` whose learning
        rate is ``schedule`` (peak ``learning_rate``, warmup and drops in iterations).
    """
    schedule = StepSchedule(
        training.learning_rate,
        warmup=training.iterations("warmup", steps_per_epoch),
        drops=training.drop_iterations(steps_per_epoch),
        drop_factor=training.lr_drop_factor,
    )
    if training.optimizer == "adam":
        optimizer = keras.optimizers.Adam(schedule, weight_decay=training.weight_decay or None)
    else:
        optimizer = keras.optimizers.SGD(
            schedule, momentum=training.momentum, nesterov=training.nesterov,
            weight_decay=training.weight_decay or None,
        )
    return optimizer, schedule
