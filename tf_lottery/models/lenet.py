"""LeNet-300-100, the fully-connected network of Frankle & Carbin (2019)."""

from __future__ import annotations

import keras

from tf_lottery.models.blocks import Seeder, check_common, check_input_shape, dense, output


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
    input_shape = check_input_shape(input_shape, images=False)
    num_classes, seed, dropout = check_common(num_classes, seed, dropout)
    seeder = Seeder(initializer, seed)
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = dense(x, 300, "fc1", seeder, dropout)
    x = dense(x, 100, "fc2", seeder, dropout)
    outputs = output(x, num_classes, seeder)
    return keras.Model(inputs, outputs, name="lenet_300_100")
