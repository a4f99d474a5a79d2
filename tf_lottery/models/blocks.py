"""Layer helpers shared by the zoo's builders: argument checks, per-layer seeds, and the
Dense / Conv / pooling / output layers every builder stacks (see ``tf_lottery.models``)."""

from __future__ import annotations

import inspect
import numbers
from typing import Any

import keras
import numpy as np


INITIALIZER_EXAMPLES = (
    "'glorot_normal', 'glorot_uniform', 'he_normal', 'he_uniform', 'lecun_normal', "
    "'random_uniform', 'orthogonal', or a keras.initializers.Initializer instance"
)

# --------------------------------------------------------------------------- helpers


def layer_seed(seed: int, index: int) -> int:
    """Derive the integer seed of the `index`-th seeded layer of a model built with `seed`.

    Uses `numpy.random.SeedSequence([seed, index])`, so distinct `(seed, index)` pairs
    give (with overwhelming probability) distinct, well-mixed seeds and no two models
    built with different `seed` values share a layer seed.

    Args:
      seed: the model seed, a Python int >= 0.
      index: position of the layer among the seeded layers (kernels, then dropout
        layers, in construction order), a Python int >= 0.

    Returns:
      A Python int in `[0, 2**31)`, usable as the `seed` of a Keras initializer or
      `Dropout` layer.
    """
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)
    return int(state[0] >> 1)


def check_int(name: str, value: Any, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}. {hint}"
        )
    return int(value)


def check_input_shape(input_shape: Any, *, images: bool) -> tuple:
    hint = (
        "Pass the shape of one example without the batch dimension, channels last, "
        "e.g. input_shape=(28, 28, 1) for MNIST or (32, 32, 3) for CIFAR-10."
    )
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        not shape
        or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in shape)
        or (images and len(shape) != 3)
    ):
        need = "3 positive integers (height, width, channels)" if images else (
            "a non-empty tuple of positive integers")
        raise ValueError(
            f"`input_shape` must be {need}. Received: input_shape={input_shape!r}. {hint}")
    return tuple(int(d) for d in shape)


def check_dropout(dropout: Any) -> float:
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, numbers.Real)
        or not 0.0 <= float(dropout) < 1.0
    ):
        raise ValueError(
            "`dropout` must be a float in [0, 1): the fraction of hidden fully-connected "
            f"units dropped during training, 0 for none. Received: dropout={dropout!r}."
        )
    return float(dropout)


def resolve_initializer(initializer: Any):
    """Turn `initializer` into a Keras initializer object, or raise ValueError."""
    if initializer is None or isinstance(initializer, (np.ndarray, bool)) or (
        hasattr(initializer, "shape") and hasattr(initializer, "dtype")
    ):
        init = None
    else:
        try:
            init = keras.initializers.get(initializer)
        except (ValueError, TypeError):
            init = None
    if init is None or not callable(init):
        raise ValueError(
            "`initializer` must name a Keras initializer accepted by "
            f"keras.initializers.get, e.g. {INITIALIZER_EXAMPLES}. "
            f"Received: initializer={initializer!r}."
        )
    return init


class Seeder:
    """Hands out per-layer seeded copies of an initializer, and dropout seeds."""

    def __init__(self, initializer: Any, seed: int):
        self._base = resolve_initializer(initializer)
        self._seed = seed
        self._index = 0
        self._seedable = False
        if isinstance(self._base, keras.initializers.Initializer):
            config = self._base.get_config()
            params = inspect.signature(type(self._base).__init__).parameters
            self._seedable = "seed" in config or "seed" in params

    def _next_seed(self) -> int:
        value = layer_seed(self._seed, self._index)
        self._index += 1
        return value

    def kernel(self):
        """A fresh initializer for the next kernel (re-seeded if the class takes a seed)."""
        seed = self._next_seed()
        if not self._seedable:
            return self._base  # Deterministic (zeros, constant, ...) or a plain callable.
        config = dict(self._base.get_config())
        config["seed"] = seed
        return type(self._base).from_config(config)

    def dropout_seed(self) -> int:
        return self._next_seed()


def output(x, num_classes: int, seeder: Seeder):
    """The logits layer: Dense named "output", computing in float32."""
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=seeder.kernel(),
        bias_initializer="zeros",
        dtype="float32",
        name="output",
    )(x)


def dense(x, units: int, name: str, seeder: Seeder, dropout: float):
    x = keras.layers.Dense(
        units,
        activation="relu",
        kernel_initializer=seeder.kernel(),
        bias_initializer="zeros",
        name=name,
    )(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, seed=seeder.dropout_seed(), name=f"{name}_dropout")(x)
    return x


def conv(x, filters: int, name: str, seeder: Seeder, *, activation=None, use_bias=True,
          strides=1, kernel_size=3):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        activation=activation,
        use_bias=use_bias,
        kernel_initializer=seeder.kernel(),
        bias_initializer="zeros",
        name=name,
    )(x)


def pool(x, name: str):
    return keras.layers.MaxPooling2D(2, strides=2, padding="same", name=name)(x)


def check_common(num_classes, seed, dropout=0.0):
    num_classes = check_int(
        "num_classes", num_classes, 1, "Pass the number of classes of the dataset, e.g. 10.")
    seed = check_int("seed", seed, 0, "Pass a non-negative Python int such as 0.")
    return num_classes, seed, check_dropout(dropout)


def check_no_dropout(name: str, dropout: float) -> None:
    if dropout != 0:
        raise ValueError(
            f"`dropout` applies only to hidden fully-connected layers, which {name} does "
            f"not have. Received: dropout={dropout!r}. Use dropout=0.0 with {name}, or "
            "choose lenet_300_100 / conv2 / conv4 / conv6."
        )


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}.")
    return bool(value)
