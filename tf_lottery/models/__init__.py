"""The model zoo of the lottery-ticket papers, as plain Keras 3 Functional models.

Every builder returns a `keras.Model` built from `keras.Input` and stock Keras layers
(`Dense`, `Conv2D`, `MaxPooling2D`, `BatchNormalization`, `Add`, `MultiHeadAttention`,
`LSTM`, ...; `vit_tiny` adds one small registered layer, `ClassTokenAndPosition`), so
that `tf_lottery.wrap` can later swap the prunable layers for their masked twins.

Conventions shared by all builders:

* Inputs are channels-last images of shape `(H, W, C)` (float32, already
  preprocessed, see `tf_lottery.data`); `input_shape` and `num_classes` come from the
  caller, so every model runs on every dataset.
* The model outputs **logits** (no softmax) of shape `(batch, num_classes)`. The
  output `Dense` layer is always named `"output"` and is created with
  `dtype="float32"`, so logits are float32 even under a mixed-precision global
  policy such as `"mixed_bfloat16"` (Keras casts its low-precision input up).
* All convolutions are 3x3 with `padding="same"` (ResNet projection shortcuts are
  1x1; ViT's patch embedding is a `patch_size` x `patch_size` convolution of equal
  stride). Max pools are 2x2, stride 2, also with `padding="same"`: on even sizes this
  is exactly the usual "valid" pool, and on odd sizes (e.g. 7x7 after two pools of a
  28x28 MNIST image) the output is `ceil(H / 2)` instead of failing, so Conv-6 and
  VGG run on 28x28x1 inputs too.
* Kernels use `initializer` (Glorot normal by default, as in Frankle & Carbin 2019);
  biases start at zero (see `vit_tiny` and `lstm` for their other weights). Each kernel initializer and each `Dropout` layer gets its own
  integer seed derived from `seed` and the layer's position (`layer_seed`), so a
  model is a pure function of its arguments: independent of
  `keras.utils.set_random_seed` and of how many models were built before.
* "Prunable weights" are the kernels of the Dense/Conv layers, of the attention
  projections and of the recurrent cells (`count_prunable_weights`); biases,
  normalization parameters and ViT's class token and position embedding are never
  pruned.

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
vit_tiny           28x28x1       10          134,848
lstm               28x28x1       10           81,152
=================  ============  =======  ==========

vit_tiny is a scaled-down Vision Transformer (7x7 patches, width 64, 4 blocks, 4 heads;
its kernels include the attention's EinsumDense projections) and lstm the row-by-row
LSTM(128) classifier; the lstm count includes its input and recurrent kernels.

One module per family: `lenet`, `conv` (Conv-2/4/6), `resnet`, `vgg`, `vit`,
`recurrent` (the LSTM); `blocks` holds
the layer helpers they share, `registry` the `MODELS` table and `build_model`, and
`counting` `count_prunable_weights`.
"""

from tf_lottery.models.blocks import layer_seed
from tf_lottery.models.conv import conv2, conv4, conv6
from tf_lottery.models.counting import count_prunable_weights
from tf_lottery.models.lenet import lenet_300_100
from tf_lottery.models.recurrent import lstm
from tf_lottery.models.registry import MODELS, build_model
from tf_lottery.models.resnet import resnet20
from tf_lottery.models.vgg import vgg16, vgg19
from tf_lottery.models.vit import ClassTokenAndPosition, vit_tiny

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
    "vit_tiny",
    "lstm",
    "ClassTokenAndPosition",
]
