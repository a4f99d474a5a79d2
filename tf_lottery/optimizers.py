"""The optimizer of an experiment and its rewindable learning-rate schedule.

``build_optimizer(training, steps_per_epoch)`` is the one place an optimizer is built from
``TrainingHparams``: Adam, or SGD with momentum and Nesterov. Its learning rate is a
``StepSchedule`` (warmup, then step drops) that the IMP driver rewinds by assigning two
variables.

Weight decay is Keras's decoupled ``weight_decay`` (``w -= lr * wd * w`` beside the
update; ``weight_decay_mode="decoupled"``, the default) or, with
``weight_decay_mode="coupled"``, the L2 of PyTorch's ``torch.optim.SGD(weight_decay=)``
that the ResNet and VGG lottery-ticket papers and open_lth train with: ``wd * w`` is
added to the gradient, so it goes through momentum (and Adam's moments). ``TorchSGD``
and ``TorchAdam`` do that, and ``clip_grad_norm``, on the gradient summed over replicas,
in PyTorch's order (``paper_gradients``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_lottery.hparams import TrainingHparams

__all__ = ["StepSchedule", "TorchSGD", "TorchAdam", "paper_gradients", "masked_weights",
           "build_optimizer"]


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


def _read(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


def paper_gradients(grads, weights, *, weight_decay: float = 0.0,
                    clip_grad_norm: float | None = None, masks=None) -> list:
    """The gradients PyTorch's training loop hands its optimizer's update, in its order.

    1. With ``clip_grad_norm = c``, every gradient is multiplied by
       ``min(1, c / ||g||)``, ``||g||`` the global L2 norm of all of them together
       (``tf.clip_by_global_norm``; ``torch.nn.utils.clip_grad_norm_``, which adds 1e-6
       to the norm).
    2. With ``weight_decay = wd > 0``, ``wd * w * m`` is added to each gradient: the
       gradient of the L2 penalty ``wd / 2 * ||w * m||^2`` of the weights the network
       computes with (``torch.optim.SGD``'s coupled ``weight_decay``; He et al. 2016).
       ``m`` is the weight's mask (``masks[i]``; ``None``: no mask), so a pruned weight,
       whose loss gradient is already exactly zero, gets an exactly zero gradient: it is
       neither decayed nor moved by momentum, and its stored value never changes (given
       optimizer state that starts at zero under the mask, as the ``Trainer`` resets it
       for every branch).

    Args:
        grads: one gradient (tensor, ``tf.IndexedSlices`` or ``None``) per weight; a
            ``tf.IndexedSlices`` becomes dense when decay is added.
        weights: the variables, same order and shapes.
        weight_decay: ``wd >= 0``.
        clip_grad_norm: ``None`` or ``c > 0``.
        masks: ``None`` or one mask variable (0/1, the weight's shape) or ``None`` per
            weight.

    Returns:
        The list of new gradients (``None`` where ``grads`` had ``None``).
    """
    grads = list(grads)
    present = [i for i, g in enumerate(grads) if g is not None]
    if clip_grad_norm is not None and present:
        clipped, _ = tf.clip_by_global_norm([grads[i] for i in present], clip_grad_norm)
        for i, g in zip(present, clipped):
            grads[i] = g
    if weight_decay:
        masks = [None] * len(grads) if masks is None else list(masks)
        for i in present:
            g = tf.convert_to_tensor(grads[i])
            decay = tf.cast(weight_decay, g.dtype) * tf.cast(_read(weights[i]), g.dtype)
            if masks[i] is not None:
                decay = decay * tf.cast(_read(masks[i]), g.dtype)
            grads[i] = g + decay
    return grads


class _TorchOrder:
    """Mixin of ``TorchSGD`` and ``TorchAdam``: ``paper_gradients`` on the summed gradient.

    The TensorFlow backend's ``_backend_update_step`` calls ``_all_reduce_sum_gradients``
    once per step, after mixed precision's loss scale is undone and before the update, in
    replica context: the one place where the gradient is the whole batch's (summed over
    ``tf.distribute`` replicas, so the decay is added once and the norm is the global
    one, unlike Keras's own ``global_clipnorm``, which clips each replica's part). It is
    plain tensor code, so it runs inside the XLA-compiled train step.
    """

    def __init__(self, *args, coupled_weight_decay=0.0, clip_grad_norm=None,
                 decay_masks=(), **kwargs):
        super().__init__(*args, **kwargs)  # the Keras optimizer after this mixin
        if not hasattr(super(), "_all_reduce_sum_gradients"):
            raise RuntimeError(f"{type(self).__name__} needs Keras's TensorFlow backend.")
        if coupled_weight_decay < 0:
            raise ValueError("`coupled_weight_decay` must be >= 0; received "
                             f"{coupled_weight_decay!r}.")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"`clip_grad_norm` must be > 0; received {clip_grad_norm!r}.")
        self.coupled_weight_decay = float(coupled_weight_decay)
        self.clip_grad_norm = None if clip_grad_norm is None else float(clip_grad_norm)
        self._decay_masks = {self._var_key(w): m for w, m in decay_masks}

    def _all_reduce_sum_gradients(self, grads_and_vars):
        pairs = list(super()._all_reduce_sum_gradients(grads_and_vars))
        weights = [v for _, v in pairs]
        grads = paper_gradients(
            [g for g, _ in pairs], weights, weight_decay=self.coupled_weight_decay,
            clip_grad_norm=self.clip_grad_norm,
            masks=[self._decay_masks.get(self._var_key(v)) for v in weights])
        return list(zip(grads, weights))

    def get_config(self):
        config = super().get_config()
        config.update(coupled_weight_decay=self.coupled_weight_decay,
                      clip_grad_norm=self.clip_grad_norm)
        return config


_TORCH_ARGS = """
    Args (besides the base class's):
        coupled_weight_decay: ``wd >= 0`` added as ``wd * w * mask`` to the gradient
            before the update (PyTorch's ``weight_decay``); use it instead of the base
            class's decoupled ``weight_decay``.
        clip_grad_norm: ``None`` or ``c > 0``: the gradient's global L2 norm (summed over
            replicas) is clipped to ``c`` before the decay is added.
        decay_masks: ``(weight variable, mask variable)`` pairs (``masked_weights``);
            these weights are decayed only where the mask is 1. Not part of
            ``get_config``.
"""


@keras.saving.register_keras_serializable(package="tf_lottery")
class TorchSGD(_TorchOrder, keras.optimizers.SGD):
    __doc__ = ("``keras.optimizers.SGD`` with PyTorch's coupled weight decay and global "
               "gradient clipping (``paper_gradients``): ``v <- momentum * v - lr * (g + wd "
               "* w)``, ``w <- w + v``, which is ``torch.optim.SGD``'s update for a constant "
               "learning rate.\n" + _TORCH_ARGS)


@keras.saving.register_keras_serializable(package="tf_lottery")
class TorchAdam(_TorchOrder, keras.optimizers.Adam):
    __doc__ = ("``keras.optimizers.Adam`` with PyTorch's coupled weight decay (``g + wd * "
               "w`` enters both moments, ``torch.optim.Adam(weight_decay=)``) and global "
               "gradient clipping (``paper_gradients``).\n" + _TORCH_ARGS)


def masked_weights(model) -> list:
    """``(weight variable, mask variable)`` of every masked weight of ``model`` (a
    ``tf_lottery.wrap``-ed model; ``[]`` for a model without masked layers)."""
    from tf_lottery.masking import masked_layers

    return [(layer.dense_weight(name), mask) for _, layer in masked_layers(model)
            for name, mask in layer.weight_masks.items()]


def build_optimizer(training: TrainingHparams, steps_per_epoch: int, model=None
                    ) -> tuple[keras.optimizers.Optimizer, StepSchedule]:
    """The optimizer ``training`` describes and its ``StepSchedule``.

    Args:
        training: a ``TrainingHparams`` (optimizer, learning rate, momentum, Nesterov,
            weight decay and its mode, gradient clipping, warmup and drops as ``Steps``).
        steps_per_epoch: iterations per epoch, to turn epoch lengths into iterations.
        model: the built model the optimizer will train; needed for
            ``weight_decay_mode="coupled"`` (its masks keep pruned weights from decaying).

    Returns:
        ``(optimizer, schedule)`` whose learning rate is ``schedule`` (peak
        ``learning_rate``, warmup and drops in iterations): a ``keras.optimizers.Adam``
        or ``SGD`` (decoupled ``weight_decay``), or, with coupled decay or
        ``clip_grad_norm``, a ``TorchAdam`` or ``TorchSGD``.

    Raises:
        ValueError: coupled weight decay > 0 without ``model``.
    """
    schedule = StepSchedule(
        training.learning_rate,
        warmup=training.iterations("warmup", steps_per_epoch),
        drops=training.drop_iterations(steps_per_epoch),
        drop_factor=training.lr_drop_factor,
    )
    decay = training.weight_decay or None
    coupled = decay is not None and training.weight_decay_mode == "coupled"
    if training.optimizer == "adam":
        base, torch, kwargs = keras.optimizers.Adam, TorchAdam, {}
    else:
        base, torch = keras.optimizers.SGD, TorchSGD
        kwargs = dict(momentum=training.momentum, nesterov=training.nesterov)
    if not coupled and training.clip_grad_norm is None:
        return base(schedule, weight_decay=decay, **kwargs), schedule
    if coupled and model is None:
        raise ValueError("`model` is needed for weight_decay_mode='coupled': its masks keep "
                         "pruned weights from decaying; pass the model to be trained.")
    optimizer = torch(
        schedule, weight_decay=None if coupled else decay,
        coupled_weight_decay=decay if coupled else 0.0,
        clip_grad_norm=training.clip_grad_norm,
        decay_masks=masked_weights(model) if coupled else (), **kwargs)
    return optimizer, schedule
