"""Conv-2, Conv-4 and Conv-6, the VGG-like CIFAR-10 networks of Frankle & Carbin (2019)."""

from __future__ import annotations

import keras

from tf_lottery.models.blocks import (
    Seeder,
    check_common,
    check_input_shape,
    conv,
    dense,
    output,
    pool,
)


def _conv_n(n_pairs: int, input_shape, num_classes, initializer, dropout, seed) -> keras.Model:
    input_shape = check_input_shape(input_shape, images=True)
    num_classes, seed, dropout = check_common(num_classes, seed, dropout)
    seeder = Seeder(initializer, seed)
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    index = 1
    for pair, filters in enumerate((64, 128, 256)[:n_pairs], start=1):
        for _ in range(2):
            x = conv(x, filters, f"conv{index}", seeder, activation="relu")
            index += 1
        x = pool(x, f"pool{pair}")
    x = keras.layers.Flatten(name="flatten")(x)
    x = dense(x, 256, "fc1", seeder, dropout)
    x = dense(x, 256, "fc2", seeder, dropout)
    outputs = output(x, num_classes, seeder)
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
