"""The zoo's registry: ``MODELS`` by name and ``build_model``, which builds one by name."""

from __future__ import annotations

from typing import Any, Callable

import keras

from tf_lottery.models.blocks import check_bool
from tf_lottery.models.conv import conv2, conv4, conv6
from tf_lottery.models.lenet import lenet_300_100
from tf_lottery.models.recurrent import lstm
from tf_lottery.models.resnet import resnet20
from tf_lottery.models.vgg import vgg16, vgg19
from tf_lottery.models.vit import vit_tiny


MODELS: dict[str, Callable[..., keras.Model]] = {
    "lenet_300_100": lenet_300_100,
    "conv2": conv2,
    "conv4": conv4,
    "conv6": conv6,
    "resnet20": resnet20,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "vit_tiny": vit_tiny,
    "lstm": lstm,
}

_HAS_BATCH_NORM = {"resnet20", "vgg16", "vgg19"}


def build_model(name: str, input_shape, num_classes: int, *, initializer="glorot_normal",
                dropout: float = 0.0, seed: int = 0, batch_norm: bool | None = None
                ) -> keras.Model:
    """Build a model of the zoo by registry name (see `MODELS` and the module docstring).

    Args:
      name: one of `MODELS`: "lenet_300_100", "conv2", "conv4", "conv6", "resnet20",
        "vgg16", "vgg19", "vit_tiny", "lstm" (case-insensitive; "-" is read as "_").
      input_shape: shape of one example without the batch axis, channels last,
        e.g. `(28, 28, 1)` or `(32, 32, 3)`.
      num_classes: number of output logits, int >= 1.
      initializer: kernel initializer name, config dict or `keras.initializers`
        instance; it is re-seeded per layer from `seed` (biases are zero).
      dropout: rate of the Dropout after each hidden fully-connected layer, in
        `[0, 1)`; only LeNet, Conv-N, ViT (see `vit_tiny`) and the LSTM (after its
        output) have such layers (others require 0).
      seed: int >= 0. The same arguments always give identical weights, whatever the
        global Keras/TF seed; different seeds give different weights.
      batch_norm: `None` for the model's default (BN in resnet20/vgg*, none in
        lenet/conv*/vit_tiny/lstm); `False` removes BN from resnet20/vgg*; `True` is
        accepted only for the models that have BN.

    Returns:
      A Functional `keras.Model` whose float32 output `(batch, num_classes)` is logits.

    Raises:
      ValueError: on an unknown `name` (the message lists `MODELS`), `batch_norm=True`
        for a model without BN, or any invalid argument of the builder.
    """
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if key not in MODELS:
        raise ValueError(
            f"Unknown model `name`. Received: name={name!r}. "
            f"Expected one of: {', '.join(sorted(MODELS))}."
        )
    kwargs: dict[str, Any] = dict(initializer=initializer, dropout=dropout, seed=seed)
    if batch_norm is not None:
        if key in _HAS_BATCH_NORM:
            kwargs["batch_norm"] = batch_norm
        elif check_bool("batch_norm", batch_norm):
            raise ValueError(
                f"Model {key!r} has no BatchNormalization variant. Received: "
                f"batch_norm={batch_norm!r}. Use batch_norm=None or False with {key}, "
                f"or one of {', '.join(sorted(_HAS_BATCH_NORM))}."
            )
    return MODELS[key](input_shape, num_classes, **kwargs)
