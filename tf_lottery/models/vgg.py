"""VGG-16 and VGG-19 for CIFAR-10 (Simonyan & Zisserman 2015), as in open_lth."""

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
    pool,
)


_VGG_PLANS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512],
}



def _vgg(name: str, input_shape, num_classes, initializer, dropout, seed, batch_norm):
    input_shape = check_input_shape(input_shape, images=True)
    num_classes, seed, dropout = check_common(num_classes, seed, dropout)
    check_no_dropout(name, dropout)
    batch_norm = check_bool("batch_norm", batch_norm)
    seeder = Seeder(initializer, seed)
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    conv_index, pool_index = 1, 1
    for spec in _VGG_PLANS[name]:
        if spec == "M":
            x = pool(x, f"pool{pool_index}")
            pool_index += 1
            continue
        if batch_norm:
            x = conv(x, spec, f"conv{conv_index}", seeder, use_bias=False)
            x = keras.layers.BatchNormalization(name=f"bn{conv_index}")(x)
            x = keras.layers.Activation("relu", name=f"relu{conv_index}")(x)
        else:
            x = conv(x, spec, f"conv{conv_index}", seeder, activation="relu", use_bias=True)
        conv_index += 1
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = output(x, num_classes, seeder)
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
