"""ResNet-20 for CIFAR-10 (He et al. 2016), as in Frankle et al. (2019, 2020)."""

from __future__ import annotations

import keras

from tf_lottery.models.blocks import (
    Seeder,
    check_bool,
    check_common,
    check_input_shape,
    check_no_dropout,
    conv,
    output,
)


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
    input_shape = check_input_shape(input_shape, images=True)
    num_classes, seed, dropout = check_common(num_classes, seed, dropout)
    check_no_dropout("resnet20", dropout)
    batch_norm = check_bool("batch_norm", batch_norm)
    seeder = Seeder(initializer, seed)

    def bn(x, name):
        return keras.layers.BatchNormalization(name=name)(x) if batch_norm else x

    inputs = keras.Input(shape=input_shape, name="image")
    x = conv(inputs, 16, "conv1", seeder, use_bias=not batch_norm)
    x = bn(x, "bn1")
    x = keras.layers.Activation("relu", name="relu1")(x)
    filters_in = 16
    for stage, filters in enumerate((16, 32, 64), start=2):
        for block in range(1, 4):
            prefix = f"conv{stage}_block{block}"
            bn_prefix = f"bn{stage}_block{block}"
            strides = 2 if (stage > 2 and block == 1) else 1
            shortcut = x
            y = conv(x, filters, f"{prefix}_1", seeder, strides=strides, use_bias=not batch_norm)
            y = bn(y, f"{bn_prefix}_1")
            y = keras.layers.Activation("relu", name=f"relu{stage}_block{block}_1")(y)
            y = conv(y, filters, f"{prefix}_2", seeder, use_bias=not batch_norm)
            y = bn(y, f"{bn_prefix}_2")
            if strides != 1 or filters_in != filters:
                shortcut = conv(x, filters, f"{prefix}_shortcut", seeder, strides=strides,
                                 kernel_size=1, use_bias=not batch_norm)
                shortcut = bn(shortcut, f"{bn_prefix}_shortcut")
            x = keras.layers.Add(name=f"add{stage}_block{block}")([y, shortcut])
            x = keras.layers.Activation("relu", name=f"relu{stage}_block{block}_out")(x)
            filters_in = filters
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = output(x, num_classes, seeder)
    return keras.Model(inputs, outputs, name="resnet20")
