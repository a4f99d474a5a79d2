"""The model zoo of the lottery-ticket papers, as plain Keras 3 Functional models.

Every builder returns a `keras.Model` built from `keras.Input` and stock Keras layers
(`Dense`, `Conv2D`, `MaxPooling2D`, `BatchNormalization`, `Add`, ...), so that
`tf_lottery.wrap` can later swap the prunable layers for their masked twins.

Conventions shared by all builders:

* Inputs are channels-last images of shape `(H, W, C)` (float32, already
  preprocessed, see `tf_lottery.data`); `input_shape` and `num_classes` come from the
  caller, so every model runs on every dataset.
* The model outputs **logits** (no softmax) of shape `(batch, num_classes)`. The
  output `Dense` layer is always named `"output"` and is created with
  `dtype="float32"`, so logits are float32 even under a mixed-precision global
  policy such as `"mixed_bfloat16"` (Keras casts its low-precision input up).
* All convolutions are 3x3 with `padding="same"` (ResNet projection shortcuts are
  1x1). Max pools are 2x2, stride 2, also with `padding="same"`: on even sizes this
  is exactly the usual "valid" pool, and on odd sizes (e.g. 7x7 after two pools of a
  28x28 MNIST image) the output is `ceil(H / 2)` instead of failing, so Conv-6 and
  VGG run on 28x28x1 inputs too.
* Kernels use `initializer` (Glorot normal by default, as in Frankle & Carbin 2019);
  biases start at zero. Each kernel initializer and each `Dropout` layer gets its own
  integer seed derived from `seed` and the layer's position (`layer_seed`), so a
  model is a pure function of its arguments: independent of
  `keras.utils.set_random_seed` and of how many models were built before.
* "Prunable weights" are the kernels of the Dense/Conv layers (`count_prunable_weights`);
  biases and BatchNormalization parameters are never pruned.

Prunable-weight counts of the standard configurations (computed by this code):

=================  ============  =======  ==========
model              input         classes  weights
=================  ============  =======  ==========
lenet_300_100      28x28x1       10          266,200
lenet_300_100      32x32x3       10          952,600
conv2              32x32x3       10        4,300,992
conv4              32x32x3       10        2,425,024
conv6              32x32x3       10        2,261,184
conv6              28x28x1       10        2,260,032
resnet20           32x32x3       10          270,896
vgg16              32x32x3       10       14,715,584
vgg19              32x32x3       10       20,024,000
=================  ============  =======  ==========
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable

import keras
import numpy as np

__all__ = [
    "MODELS",
    "build_model",
    "count_prunable_weights",
    "layer_seed",
    "lenet_300_100",
    "conv2",
    "conv4",
    "conv6",
    "resnet20",
    "vgg16",
    "vgg19",
]

_INITIALIZER_EXAMPLES = (
    "'glorot_normal', 'glorot_uniform', 'he_normal', 'he_uniform', 'lecun_normal', "
    "'random_uniform', 'orthogonal', or a keras.initializers.Initializer instance"
)

_VGG_PLANS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512],
}


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


def _check_int(name: str, value: Any, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}. {hint}"
        )
    return int(value)


def _check_input_shape(input_shape: Any, *, images: bool) -> tuple:
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
        raise ValueError(f"`input_shape` must be {need}. Received: input_shape={input_shape!r}. {hint}")
    return tuple(int(d) for d in shape)


def _check_dropout(dropout: Any) -> float:
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


def _resolve_initializer(initializer: Any):
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
            f"keras.initializers.get, e.g. {_INITIALIZER_EXAMPLES}. "
            f"Received: initializer={initializer!r}."
        )
    return init


class _Seeder:
    """Hands out per-layer seeded copies of an initializer, and dropout seeds."""

    def __init__(self, initializer: Any, seed: int):
        self._base = _resolve_initializer(initializer)
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


def _output(x, num_classes: int, seeder: _Seeder):
    """The logits layer: Dense named "output", computing in float32."""
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=seeder.kernel(),
        bias_initializer="zeros",
        dtype="float32",
        name="output",
    )(x)


def _dense(x, units: int, name: str, seeder: _Seeder, dropout: float):
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


def _conv(x, filters: int, name: str, seeder: _Seeder, *, activation=None, use_bias=True,
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


def _pool(x, name: str):
    return keras.layers.MaxPooling2D(2, strides=2, padding="same", name=name)(x)


def _check_common(num_classes, seed, dropout=0.0):
    num_classes = _check_int(
        "num_classes", num_classes, 1, "Pass the number of classes of the dataset, e.g. 10.")
    seed = _check_int("seed", seed, 0, "Pass a non-negative Python int such as 0.")
    return num_classes, seed, _check_dropout(dropout)


# -------------------------------------------------------------------------- builders


def lenet_300_100(input_shape, num_classes, *, initializer="glorot_normal", dropout=0.0,
                  seed=0) -> keras.Model:
    """LeNet-300-100, the fully-connected MNIST network of Frankle & Carbin (2019), Fig. 2.

    Architecture: `Flatten -> fc1 Dense(300, relu) -> fc2 Dense(100, relu) ->
    output Dense(num_classes)` (logits). With `dropout > 0`, a `Dropout(dropout)` layer
    follows fc1 and fc2 (named `fc1_dropout`, `fc2_dropout`).

    Prunable weights: `prod(input_shape) * 300 + 300 * 100 + 100 * num_classes`,
    i.e. **266,200** for 28x28x1 inputs and 10 classes (the paper's count) and
    952,600 for 32x32x3 inputs.

    Args:
      input_shape: shape of one example, e.g. `(28, 28, 1)`; any rank, it is flattened.
      num_classes: number of output logits, int >= 1.
      initializer: kernel initializer, anything `keras.initializers.get` accepts.
      dropout: dropout rate after each hidden layer, float in `[0, 1)`; 0 adds no layer.
      seed: int >= 0; the weights and dropout masks depend only on it.

    Returns:
      A Functional `keras.Model` named `"lenet_300_100"` mapping float32
      `(batch, *input_shape)` to float32 logits `(batch, num_classes)`.

    Raises:
      ValueError: on a malformed `input_shape`, `num_classes < 1`, `seed < 0`,
        `dropout` outside `[0, 1)` or an unknown `initializer`.
    """
    input_shape = _check_input_shape(input_shape, images=False)
    num_classes, seed, dropout = _check_common(num_classes, seed, dropout)
    seeder = _Seeder(initializer, seed)
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = _dense(x, 300, "fc1", seeder, dropout)
    x = _dense(x, 100, "fc2", seeder, dropout)
    outputs = _output(x, num_classes, seeder)
    return keras.Model(inputs, outputs, name="lenet_300_100")


def _conv_n(n_pairs: int, input_shape, num_classes, initializer, dropout, seed) -> keras.Model:
    input_shape = _check_input_shape(input_shape, images=True)
    num_classes, seed, dropout = _check_common(num_classes, seed, dropout)
    seeder = _Seeder(initializer, seed)
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    index = 1
    for pair, filters in enumerate((64, 128, 256)[:n_pairs], start=1):
        for _ in range(2):
            x = _conv(x, filters, f"conv{index}", seeder, activation="relu")
            index += 1
        x = _pool(x, f"pool{pair}")
    x = keras.layers.Flatten(name="flatten")(x)
    x = _dense(x, 256, "fc1", seeder, dropout)
    x = _dense(x, 256, "fc2", seeder, dropout)
    outputs = _output(x, num_classes, seeder)
    return keras.Model(inputs, outputs, name=f"conv{2 * n_pairs}")


_CONV_DOC = """Conv-{n}, the VGG-like CIFAR-10 network of Frankle & Carbin (2019), Fig. 2.

    Architecture: {pairs}, each conv 3x3 `same` with ReLU (`conv1`..`conv{n}`), each pair
    followed by a 2x2 max pool (`pool1`..); then `Flatten`, `fc1 Dense(256, relu)`,
    `fc2 Dense(256, relu)`, `output Dense(num_classes)` (logits). With `dropout > 0`, a
    `Dropout(dropout)` layer follows fc1 and fc2.

    Prunable weights: **{count:,}** on 32x32x3 inputs with 10 classes{note}. Pools use
    `padding="same"` (a pool of an odd size `s` gives `ceil(s / 2)`), so 28x28x1 inputs
    work too: {count28:,} weights with 10 classes.

    Args:
      input_shape: `(height, width, channels)` of one image, e.g. `(32, 32, 3)`.
      num_classes: number of output logits, int >= 1.
      initializer: kernel initializer, anything `keras.initializers.get` accepts.
      dropout: dropout rate after fc1 and fc2, float in `[0, 1)`; 0 adds no layer.
      seed: int >= 0; the weights and dropout masks depend only on it.

    Returns:
      A Functional `keras.Model` named `"conv{n}"` mapping float32
      `(batch, H, W, C)` to float32 logits `(batch, num_classes)`.

    Raises:
      ValueError: if `input_shape` is not 3 positive ints, `num_classes < 1`,
        `seed < 0`, `dropout` outside `[0, 1)` or `initializer` is unknown.
    """


def conv2(input_shape, num_classes, *, initializer="glorot_normal", dropout=0.0,
          seed=0) -> keras.Model:
    return _conv_n(1, input_shape, num_classes, initializer, dropout, seed)


def conv4(input_shape, num_classes, *, initializer="glorot_normal", dropout=0.0,
          seed=0) -> keras.Model:
    return _conv_n(2, input_shape, num_classes, initializer, dropout, seed)


def conv6(input_shape, num_classes, *, initializer="glorot_normal", dropout=0.0,
          seed=0) -> keras.Model:
    return _conv_n(3, input_shape, num_classes, initializer, dropout, seed)


conv2.__doc__ = _CONV_DOC.format(
    n=2, pairs="2x conv64", count=4_300_992, count28=3_316_800, note="")
conv4.__doc__ = _CONV_DOC.format(
    n=4, pairs="2x conv64, 2x conv128", count=2_425_024, count28=1_932_352, note="")
conv6.__doc__ = _CONV_DOC.format(
    n=6, pairs="2x conv64, 2x conv128, 2x conv256", count=2_261_184, count28=2_260_032,
    note=" (the paper's table prints 1.7M; the architecture it describes has 2.26M)")


def resnet20(input_shape, num_classes, *, initializer="glorot_normal", dropout=0.0, seed=0,
             batch_norm=True) -> keras.Model:
    """ResNet-20 for CIFAR-10 (He et al. 2016, Sec. 4.2), as `cifar_resnet_20` in open_lth.

    Architecture: `conv1` 3x3x16 + `bn1` + ReLU; three stages (`conv2_*`, `conv3_*`,
    `conv4_*`) of 3 basic blocks with 16 / 32 / 64 filters. A block is
    `conv 3x3 -> BN -> ReLU -> conv 3x3 -> BN`, added to the shortcut, then ReLU; the
    first block of stages 3 and 4 has stride 2 and a projection shortcut
    (`conv{s}_block1_shortcut`: 1x1 conv stride 2 + BN). Then global average pooling
    and `output Dense(num_classes)` (logits). Convolutions have no bias (BN follows).
    Blocks are named `conv{stage}_block{b}_1`, `conv{stage}_block{b}_2` (convs) and
    `bn{stage}_block{b}_1`, ... (BatchNormalization).

    Prunable weights: **270,896** on 32x32x3 inputs with 10 classes (270,608 on
    28x28x1). The "274K" usually quoted is the total parameter count, 274,042 here,
    which adds the BN parameters and statistics and the output bias. Height and width
    do not change the count; 28x28 inputs work (strided convs use `same` padding).

    Args:
      input_shape: `(height, width, channels)` of one image, e.g. `(32, 32, 3)`.
      num_classes: number of output logits, int >= 1.
      initializer: kernel initializer, anything `keras.initializers.get` accepts.
        (open_lth defaults to `he_normal` for this net; tf_lottery's default is
        Glorot normal like the rest of the zoo.)
      dropout: must be 0: ResNet-20 has no hidden fully-connected layer.
      seed: int >= 0; the weights depend only on it.
      batch_norm: `True` (default) as in the paper; `False` drops every
        BatchNormalization layer and gives the convolutions zero-initialized biases.

    Returns:
      A Functional `keras.Model` named `"resnet20"` mapping float32 `(batch, H, W, C)`
      to float32 logits `(batch, num_classes)`.

    Raises:
      ValueError: if `input_shape` is not 3 positive ints, `num_classes < 1`,
        `seed < 0`, `dropout != 0` or `initializer` is unknown.
    """
    input_shape = _check_input_shape(input_shape, images=True)
    num_classes, seed, dropout = _check_common(num_classes, seed, dropout)
    _check_no_dropout("resnet20", dropout)
    batch_norm = _check_bool("batch_norm", batch_norm)
    seeder = _Seeder(initializer, seed)

    def bn(x, name):
        return keras.layers.BatchNormalization(name=name)(x) if batch_norm else x

    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv(inputs, 16, "conv1", seeder, use_bias=not batch_norm)
    x = bn(x, "bn1")
    x = keras.layers.Activation("relu", name="relu1")(x)
    filters_in = 16
    for stage, filters in enumerate((16, 32, 64), start=2):
        for block in range(1, 4):
            prefix = f"conv{stage}_block{block}"
            bn_prefix = f"bn{stage}_block{block}"
            strides = 2 if (stage > 2 and block == 1) else 1
            shortcut = x
            y = _conv(x, filters, f"{prefix}_1", seeder, strides=strides, use_bias=not batch_norm)
            y = bn(y, f"{bn_prefix}_1")
            y = keras.layers.Activation("relu", name=f"relu{stage}_block{block}_1")(y)
            y = _conv(y, filters, f"{prefix}_2", seeder, use_bias=not batch_norm)
            y = bn(y, f"{bn_prefix}_2")
            if strides != 1 or filters_in != filters:
                shortcut = _conv(x, filters, f"{prefix}_shortcut", seeder, strides=strides,
                                 kernel_size=1, use_bias=not batch_norm)
                shortcut = bn(shortcut, f"{bn_prefix}_shortcut")
            x = keras.layers.Add(name=f"add{stage}_block{block}")([y, shortcut])
            x = keras.layers.Activation("relu", name=f"relu{stage}_block{block}_out")(x)
            filters_in = filters
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = _output(x, num_classes, seeder)
    return keras.Model(inputs, outputs, name="resnet20")


def _vgg(name: str, input_shape, num_classes, initializer, dropout, seed, batch_norm):
    input_shape = _check_input_shape(input_shape, images=True)
    num_classes, seed, dropout = _check_common(num_classes, seed, dropout)
    _check_no_dropout(name, dropout)
    batch_norm = _check_bool("batch_norm", batch_norm)
    seeder = _Seeder(initializer, seed)
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    conv_index, pool_index = 1, 1
    for spec in _VGG_PLANS[name]:
        if spec == "M":
            x = _pool(x, f"pool{pool_index}")
            pool_index += 1
            continue
        if batch_norm:
            x = _conv(x, spec, f"conv{conv_index}", seeder, use_bias=False)
            x = keras.layers.BatchNormalization(name=f"bn{conv_index}")(x)
            x = keras.layers.Activation("relu", name=f"relu{conv_index}")(x)
        else:
            x = _conv(x, spec, f"conv{conv_index}", seeder, activation="relu", use_bias=True)
        conv_index += 1
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = _output(x, num_classes, seeder)
    return keras.Model(inputs, outputs, name=name)


_VGG_DOC = """VGG-{n} for CIFAR-10 (Simonyan & Zisserman 2015), as `cifar_vgg_{n}` in open_lth.

    Architecture: the conv plan `{plan}` ("M" = 2x2 max pool, `same` padding), each
    conv 3x3 `same` (`conv1`..`conv{nconv}`) followed by BatchNormalization (`bn1`..)
    and ReLU; then global average pooling and a single `output Dense(num_classes)`
    (logits). With BN the convs have no bias (open_lth keeps a redundant one); with
    `batch_norm=False` (the "VGG without BN" of GradInit, Zhu et al. 2021) the convs
    have zero-initialized biases and a fused ReLU.

    Prunable weights: **{count:,}** on 32x32x3 inputs with 10 classes ({count28:,} on
    28x28x1; height and width do not change it, and 28x28 inputs work because pools use
    `same` padding: 28 -> 14 -> 7 -> 4 -> 2). Used by Frankle et al. (2019,
    "Stabilizing the LTH") for global IMP at rate 0.2 with rewinding.

    Args:
      input_shape: `(height, width, channels)` of one image, e.g. `(32, 32, 3)`.
      num_classes: number of output logits, int >= 1.
      initializer: kernel initializer, anything `keras.initializers.get` accepts.
      dropout: must be 0: this VGG has no hidden fully-connected layer.
      seed: int >= 0; the weights depend only on it.
      batch_norm: `True` (default) or `False` to build the network without BN.

    Returns:
      A Functional `keras.Model` named `"vgg{n}"` mapping float32 `(batch, H, W, C)`
      to float32 logits `(batch, num_classes)`.

    Raises:
      ValueError: if `input_shape` is not 3 positive ints, `num_classes < 1`,
        `seed < 0`, `dropout != 0` or `initializer` is unknown.
    """


def vgg16(input_shape, num_classes, *, initializer="glorot_normal", dropout=0.0, seed=0,
          batch_norm=True) -> keras.Model:
    return _vgg("vgg16", input_shape, num_classes, initializer, dropout, seed, batch_norm)


def vgg19(input_shape, num_classes, *, initializer="glorot_normal", dropout=0.0, seed=0,
          batch_norm=True) -> keras.Model:
    return _vgg("vgg19", input_shape, num_classes, initializer, dropout, seed, batch_norm)


vgg16.__doc__ = _VGG_DOC.format(
    n=16, nconv=13, count=14_715_584, count28=14_714_432,
    plan="64,64,M,128,128,M,256,256,256,M,512,512,512,M,512,512,512")
vgg19.__doc__ = _VGG_DOC.format(
    n=19, nconv=16, count=20_024_000, count28=20_022_848,
    plan="64,64,M,128,128,M,256x4,M,512x4,M,512x4")


def _check_no_dropout(name: str, dropout: float) -> None:
    if dropout != 0:
        raise ValueError(
            f"`dropout` applies only to hidden fully-connected layers, which {name} does "
            f"not have. Received: dropout={dropout!r}. Use dropout=0.0 with {name}, or "
            "choose lenet_300_100 / conv2 / conv4 / conv6."
        )


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}.")
    return bool(value)


# -------------------------------------------------------------------------- registry

MODELS: dict[str, Callable[..., keras.Model]] = {
    "lenet_300_100": lenet_300_100,
    "conv2": conv2,
    "conv4": conv4,
    "conv6": conv6,
    "resnet20": resnet20,
    "vgg16": vgg16,
    "vgg19": vgg19,
}

_HAS_BATCH_NORM = {"resnet20", "vgg16", "vgg19"}


def build_model(name: str, input_shape, num_classes: int, *, initializer="glorot_normal",
                dropout: float = 0.0, seed: int = 0, batch_norm: bool | None = None
                ) -> keras.Model:
    """Build a model of the zoo by registry name (see `MODELS` and the module docstring).

    Args:
      name: one of `MODELS`: "lenet_300_100", "conv2", "conv4", "conv6", "resnet20",
        "vgg16", "vgg19" (case-insensitive; "-" is read as "_").
      input_shape: shape of one example without the batch axis, channels last,
        e.g. `(28, 28, 1)` or `(32, 32, 3)`.
      num_classes: number of output logits, int >= 1.
      initializer: kernel initializer name, config dict or `keras.initializers`
        instance; it is re-seeded per layer from `seed` (biases are zero).
      dropout: rate of the Dropout after each hidden fully-connected layer, in
        `[0, 1)`; only LeNet and Conv-N have such layers (others require 0).
      seed: int >= 0. The same arguments always give identical weights, whatever the
        global Keras/TF seed; different seeds give different weights.
      batch_norm: `None` for the model's default (BN in resnet20/vgg*, none in
        lenet/conv*); `False` removes BN from resnet20/vgg*; `True` is accepted only
        for the models that have BN.

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
        elif _check_bool("batch_norm", batch_norm):
            raise ValueError(
                f"Model {key!r} has no BatchNormalization variant. Received: "
                f"batch_norm={batch_norm!r}. Use batch_norm=None or False with {key}, "
                f"or one of {', '.join(sorted(_HAS_BATCH_NORM))}."
            )
    return MODELS[key](input_shape, num_classes, **kwargs)


def count_prunable_weights(model: keras.Model) -> int:
    """Count the prunable weights of `model`: the kernel entries of its Dense and Conv layers.

    Counts every layer (recursing into nested models and layers) that is an instance of
    `keras.layers.Dense`, `EinsumDense`, or a convolution (`Conv1D/2D/3D`,
    `Conv*Transpose`, `DepthwiseConv*`, `SeparableConv*`: depthwise and pointwise
    kernels), so masked subclasses of these are counted too. Biases, BatchNormalization
    and embedding weights are not counted. A layer shared by several models is counted
    once.

    Args:
      model: a built `keras.Model` (or any `keras.layers.Layer`).

    Returns:
      The number of kernel entries, a Python int (e.g. 266,200 for LeNet-300-100 on
      28x28x1 with 10 classes).

    Raises:
      ValueError: if `model` is not a Keras layer/model or is not built yet.
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "`model` must be a keras.Model or keras.layers.Layer. "
            f"Received: model={model!r} of type {type(model).__name__}."
        )
    if not model.built:
        raise ValueError(
            f"`model` {model.name!r} is not built, so its kernels have no shape yet. "
            "Build it first, e.g. by calling it on a batch or with model.build(input_shape)."
        )
    kernel_layers = (
        keras.layers.Dense,
        keras.layers.EinsumDense,
        keras.layers.Conv1D,
        keras.layers.Conv2D,
        keras.layers.Conv3D,
        keras.layers.Conv1DTranspose,
        keras.layers.Conv2DTranspose,
        keras.layers.Conv3DTranspose,
        keras.layers.DepthwiseConv1D,
        keras.layers.DepthwiseConv2D,
        keras.layers.SeparableConv1D,
        keras.layers.SeparableConv2D,
    )
    kernel_attrs = ("kernel", "depthwise_kernel", "pointwise_kernel")
    total = 0
    seen: set[int] = set()
    for layer in _iter_layers(model):
        if id(layer) in seen or not isinstance(layer, kernel_layers):
            continue
        seen.add(id(layer))
        for attr in kernel_attrs:
            try:
                kernel = getattr(layer, attr, None)
            except (AttributeError, ValueError):  # e.g. quantized Dense without `_kernel`
                kernel = None
            if kernel is not None and hasattr(kernel, "shape"):
                total += int(np.prod(kernel.shape))
    return total


def _iter_layers(layer):
    """Yield `layer` and every layer nested in it (sub-models, custom composite layers)."""
    yield layer
    flatten = getattr(layer, "_flatten_layers", None)  # Keras 3 Layer method.
    if flatten is not None:
        yield from flatten(include_self=False, recursive=True)
    else:
        for sub in getattr(layer, "layers", []):
            yield from _iter_layers(sub)
