"""ViT-Tiny: a scaled-down Vision Transformer (Dosovitskiy et al., ICLR 2021) for 28x28 images."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tf_lottery.models.blocks import Seeder, check_common, check_input_shape, check_int, output


@keras.saving.register_keras_serializable(package="tf_lottery")
class ClassTokenAndPosition(keras.layers.Layer):
    """Prepends a learned class token to a token sequence and adds learned positions.

    Maps `(batch, tokens, width)` to `(batch, tokens + 1, width)`: token 0 is the class
    token `class_token` (shape `(1, 1, width)`, zeros at start as in the ViT code), and
    `position_embedding` (shape `(1, tokens + 1, width)`) is added to every token
    (Dosovitskiy et al. 2021, Eq. 1). Neither weight is a kernel: like biases they stay
    dense (`tf_lottery_prunable = ()` tells `tf_lottery.wrap` so) and
    `count_prunable_weights` does not count them.

    Args:
      position_initializer: initializer of `position_embedding`, anything
        `keras.initializers.get` accepts; default `RandomNormal(stddev=0.02)` (the ViT
        code's). Pass a seeded one for reproducible weights.
      **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Raises:
      ValueError: at build, if the input is not `(batch, tokens, width)` with known
        `tokens` and `width`.
    """

    tf_lottery_prunable = ()  # no prunable weights (see tf_lottery.masked_wrapper)

    def __init__(self, position_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.position_initializer = keras.initializers.get(
            position_initializer or keras.initializers.RandomNormal(stddev=0.02))

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                "ClassTokenAndPosition expects token sequences of shape (batch, tokens, "
                f"width) with known tokens and width. Received: input_shape={input_shape}.")
        tokens, width = int(input_shape[1]), int(input_shape[2])
        self.class_token = self.add_weight(
            name="class_token", shape=(1, 1, width), initializer="zeros")
        self.position_embedding = self.add_weight(
            name="position_embedding", shape=(1, tokens + 1, width),
            initializer=self.position_initializer)

    def call(self, inputs):
        token = ops.zeros_like(inputs[:, :1, :]) + ops.cast(self.class_token, inputs.dtype)
        tokens = ops.concatenate([token, inputs], axis=1)
        return tokens + ops.cast(self.position_embedding, inputs.dtype)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], tokens, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config["position_initializer"] = keras.initializers.serialize(self.position_initializer)
        return config


def _init_attention(attention, seeder: Seeder) -> None:
    """Re-initializes the four projections of a built MultiHeadAttention, each with its own
    seed, as the 2-D `(in, out)` matrices they are (query/key/value: `(width, heads *
    key_dim)`, output: `(heads * key_dim, width)`).

    Keras clones one seeded initializer for all four, which would start query, key and
    value equal, and computes glorot/he fans from the 3-D einsum shape (3-4x too small).
    """
    for dense in (attention.query_dense, attention.key_dense, attention.value_dense,
                  attention.output_dense):
        shape = tuple(dense.kernel.shape)
        split = 1 if dense is not attention.output_dense else 2
        matrix = (int(np.prod(shape[:split])), int(np.prod(shape[split:])))
        value = seeder.kernel()(matrix, dtype=dense.kernel.dtype)
        dense.kernel.assign(ops.reshape(value, shape))


def _dropout(x, rate: float, name: str, seeder: Seeder):
    if rate > 0:
        x = keras.layers.Dropout(rate, seed=seeder.dropout_seed(), name=name)(x)
    return x


def vit_tiny(input_shape, num_classes, *, initializer="glorot_normal", dropout=0.0, seed=0,
             patch_size=7, width=64, depth=4, heads=4, mlp_dim=128) -> keras.Model:
    """ViT-Tiny, a small Vision Transformer after Dosovitskiy et al., "An Image is Worth
    16x16 Words", ICLR 2021 (ViT-B has width 768, depth 12, 12 heads, MLP 3072).

    Architecture: `patch_embedding` Conv2D(width, patch_size, strides=patch_size) cuts the
    image into non-overlapping patches (28x28 with 7x7 patches: 16 tokens), `tokens`
    Reshape to `(patches, width)`, `embedding` (`ClassTokenAndPosition`: a learned class
    token in front, learned position embeddings added), then `depth` pre-norm Transformer
    encoder blocks `block{i}` (i = 1..depth)::

        x = x + attention(norm1(x))            # MultiHeadAttention(heads, width // heads)
        x = x + mlp2(gelu(mlp1(norm2(x))))     # Dense(mlp_dim, gelu), Dense(width)

    and a final LayerNormalization `norm`; the class token (`Cropping1D` + `Flatten`,
    `class_token`) goes to `output Dense(num_classes)` (logits). LayerNormalization uses
    epsilon 1e-6 as in ViT. With `dropout > 0`, `Dropout(dropout)` follows the embedding,
    the attention output and both MLP layers (ViT, Appendix B.1: after every dense layer
    except the query/key/value projections).

    Prunable weights (kernels of the Conv2D, Dense and the attention's EinsumDense
    projections): `patch_size**2 * C * width + depth * (4 * width**2 + 2 * width *
    mlp_dim) + width * num_classes`, i.e. **134,848** for 28x28x1 inputs, 10 classes and
    the defaults (3,136 patch embedding + 4 x 32,768 per block + 640 output); 139,018
    parameters in all with the biases, LayerNorm scales, class token and 17 x 64 position
    embeddings.

    Initialization: kernels use `initializer`, re-seeded per kernel from `seed` (the four
    attention projections each as a 2-D `(in, out)` matrix); biases, LayerNorm offsets and
    the class token start at zero, LayerNorm scales at one, position embeddings from
    `RandomNormal(stddev=0.02)` (seeded too).

    Args:
      input_shape: `(height, width, channels)` of one image, e.g. `(28, 28, 1)`; height
        and width must be multiples of `patch_size`.
      num_classes: number of output logits, int >= 1.
      initializer: kernel initializer, anything `keras.initializers.get` accepts.
      dropout: dropout rate, float in `[0, 1)` (see above); 0 adds no layer.
      seed: int >= 0; the weights and dropout masks depend only on it.
      patch_size: side of the square patches, int >= 1.
      width: token width (the paper's hidden size D), int >= 1, a multiple of `heads`.
      depth: number of encoder blocks, int >= 1.
      heads: attention heads, int >= 1; each has `width // heads` dimensions.
      mlp_dim: hidden units of each block's MLP, int >= 1.

    Returns:
      A Functional `keras.Model` named `"vit_tiny"` mapping float32 `(batch, H, W, C)`
      to float32 logits `(batch, num_classes)`.

    Raises:
      ValueError: if `input_shape` is not 3 positive ints or its height or width is not
        a multiple of `patch_size`, `width` is not a multiple of `heads`, any size is not
        a positive int, `num_classes < 1`, `seed < 0`, `dropout` outside `[0, 1)` or
        `initializer` is unknown.
    """
    input_shape = check_input_shape(input_shape, images=True)
    num_classes, seed, dropout = check_common(num_classes, seed, dropout)
    sizes = {name: check_int(name, value, 1, "Pass a positive Python int.")
             for name, value in (("patch_size", patch_size), ("width", width),
                                 ("depth", depth), ("heads", heads), ("mlp_dim", mlp_dim))}
    patch_size, width, depth, heads, mlp_dim = sizes.values()
    rows, cols = input_shape[:2]
    if rows % patch_size or cols % patch_size:
        divisors = sorted(d for d in range(1, min(rows, cols) + 1)
                          if rows % d == 0 and cols % d == 0)
        raise ValueError(
            f"`patch_size` must divide the image height and width, {rows}x{cols}, so that "
            f"the patches tile the image. Received: patch_size={patch_size!r} with "
            f"input_shape={input_shape}. Use one of {divisors}.")
    if width % heads:
        raise ValueError(
            f"`width` must be a multiple of `heads` (each head gets width // heads "
            f"dimensions). Received: width={width!r}, heads={heads!r}.")
    seeder = Seeder(initializer, seed)
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(
        width, patch_size, strides=patch_size, padding="valid",
        kernel_initializer=seeder.kernel(), bias_initializer="zeros",
        name="patch_embedding")(inputs)
    patches = (rows // patch_size) * (cols // patch_size)
    x = keras.layers.Reshape((patches, width), name="tokens")(x)
    position = keras.initializers.RandomNormal(stddev=0.02, seed=seeder.dropout_seed())
    x = ClassTokenAndPosition(position_initializer=position, name="embedding")(x)
    x = _dropout(x, dropout, "embedding_dropout", seeder)
    for i in range(1, depth + 1):
        y = keras.layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm1")(x)
        attention = keras.layers.MultiHeadAttention(
            heads, width // heads, kernel_initializer=seeder.kernel(),
            name=f"block{i}_attention")
        y = attention(y, y)
        _init_attention(attention, seeder)
        y = _dropout(y, dropout, f"block{i}_attention_dropout", seeder)
        x = keras.layers.Add(name=f"block{i}_add1")([x, y])
        y = keras.layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm2")(x)
        y = keras.layers.Dense(mlp_dim, activation="gelu", kernel_initializer=seeder.kernel(),
                               name=f"block{i}_mlp1")(y)
        y = _dropout(y, dropout, f"block{i}_mlp1_dropout", seeder)
        y = keras.layers.Dense(width, kernel_initializer=seeder.kernel(),
                               name=f"block{i}_mlp2")(y)
        y = _dropout(y, dropout, f"block{i}_mlp2_dropout", seeder)
        x = keras.layers.Add(name=f"block{i}_add2")([x, y])
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = keras.layers.Cropping1D((0, patches), name="class_token_crop")(x)
    x = keras.layers.Flatten(name="class_token")(x)
    outputs = output(x, num_classes, seeder)
    return keras.Model(inputs, outputs, name="vit_tiny")
