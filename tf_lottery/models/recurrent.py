"""The row-sequential LSTM classifier: an image read one row of pixels per time step."""

from __future__ import annotations

import keras

from tf_lottery.models.blocks import Seeder, check_common, check_input_shape, check_int, output


def lstm(input_shape, num_classes, *, initializer="glorot_normal", dropout=0.0, seed=0,
         units=128) -> keras.Model:
    """A one-layer LSTM (Hochreiter & Schmidhuber 1997) reading an image row by row.

    The classic row-by-row sequential-image classifier, a small recurrent net for
    lottery-ticket experiments (Yu et al., "Playing the Lottery with Rewards and
    Multiple Languages", ICLR 2020, find tickets in LSTM language models): a
    `(H, W, C)` image is `rows` Reshape'd to `H` time steps of `W * C` features, read by
    `lstm` LSTM(units) (tanh cell, sigmoid gates, last hidden state only), then
    `output Dense(num_classes)` (logits). With `dropout > 0`, a `Dropout(dropout)` layer
    (`lstm_dropout`) follows the LSTM's output.

    Weights for 28x28x1 inputs, 10 classes and `units=128`: LSTM kernel `(W*C, 4*units)`
    = 28 x 512 = 14,336, recurrent kernel `(units, 4*units)` = 128 x 512 = 65,536, output
    kernel 128 x 10 = 1,280: **81,152** kernel entries (in general
    `4 * units * (W*C + units) + units * num_classes`), 81,674 parameters with the LSTM
    bias (512) and the output bias (10); `count_prunable_weights` gives the 81,152.

    Initialization: the input kernel uses `initializer`, the recurrent kernel is
    orthogonal (Keras's default, Saxe et al. 2014), each with its own seed derived from
    `seed`; biases start at zero except the forget gate's, at one (Jozefowicz et al.
    2015, Keras's `unit_forget_bias`).

    Args:
      input_shape: `(height, width, channels)` of one image, e.g. `(28, 28, 1)`.
      num_classes: number of output logits, int >= 1.
      initializer: input-kernel initializer, anything `keras.initializers.get` accepts.
      dropout: rate of the dropout after the LSTM, float in `[0, 1)`; 0 adds no layer.
      seed: int >= 0; the weights and dropout masks depend only on it.
      units: LSTM units (hidden state size), int >= 1.

    Returns:
      A Functional `keras.Model` named `"lstm"` mapping float32 `(batch, H, W, C)` to
      float32 logits `(batch, num_classes)`.

    Raises:
      ValueError: if `input_shape` is not 3 positive ints, `units < 1`,
        `num_classes < 1`, `seed < 0`, `dropout` outside `[0, 1)` or `initializer` is
        unknown.
    """
    input_shape = check_input_shape(input_shape, images=True)
    num_classes, seed, dropout = check_common(num_classes, seed, dropout)
    units = check_int("units", units, 1, "Pass a positive Python int such as 128.")
    seeder = Seeder(initializer, seed)
    rows, cols, channels = input_shape
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Reshape((rows, cols * channels), name="rows")(inputs)
    kernel = seeder.kernel()
    recurrent = keras.initializers.Orthogonal(seed=seeder.dropout_seed())  # a fresh seed
    x = keras.layers.LSTM(units, kernel_initializer=kernel, recurrent_initializer=recurrent,
                          name="lstm")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, seed=seeder.dropout_seed(), name="lstm_dropout")(x)
    outputs = output(x, num_classes, seeder)
    return keras.Model(inputs, outputs, name="lstm")
