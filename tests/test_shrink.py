"""strip(model, shrink=True): removed channels physically gone, outputs unchanged.

Every test builds a channel mask by hand (whole kernel columns zero: Dense units,
convolution filters), shrinks, and checks the outputs against the masked model (float32,
1e-5) and the parameter count against a count worked out in the test.
"""

import keras
import numpy as np
import pytest

import tf_lottery as tfl
from tf_lottery.models import build_model
from tf_lottery.shrink import ChannelsKeptWarning

pytestmark = pytest.mark.usefixtures("clean_keras")

RNG = np.random.default_rng(0)


def drop_channels(model, drops):
    """Zeroes whole output columns of kernel masks: ``{"conv/kernel": [channel, ...]}``."""
    masks = tfl.get_masks(model)
    for key, channels in drops.items():
        masks[key][..., list(channels)] = 0
    tfl.set_masks(model, masks)


def outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def assert_same_outputs(masked, shrunk, x):
    expected = outputs(masked, x)
    np.testing.assert_allclose(outputs(shrunk, x), expected, rtol=0,
                               atol=1e-5 * max(1.0, float(np.abs(expected).max())))


def widths(model):
    return {layer.name: layer.get_config().get("units") or layer.get_config().get("filters")
            for layer in model.layers if isinstance(layer, (keras.layers.Dense,
                                                            keras.layers.Conv2D))}


def randomize(model, biases=True):
    """Random BatchNormalization statistics and (optionally) biases: removed channels then
    compute nonzero constants, which shrinking has to fold into the next layer."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([RNG.uniform(0.5, 1.5, n), RNG.normal(size=n),
                               0.1 * RNG.normal(size=n), RNG.uniform(0.5, 2.0, n)])
        elif biases and getattr(layer, "bias", None) is not None:
            layer.bias.assign(RNG.uniform(0.1, 1.0, layer.bias.shape))


# ----------------------------------------------------------------------- small models
def test_sequential_dense():
    model = tfl.wrap(keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(5, activation="relu", name="a"),
        keras.layers.Dense(4, activation="tanh", name="b"),
        keras.layers.Dense(3, name="output"),
    ]))
    randomize(model)
    drop_channels(model, {"a/kernel": [0, 2], "b/kernel": [1]})
    shrunk = tfl.strip(model, shrink=True)
    assert isinstance(shrunk, keras.Sequential)
    assert widths(shrunk) == {"a": 3, "b": 3, "output": 3}
    # a: 6*3 + 3; b: 3*3 + 3; output: 3*3 + 3
    assert shrunk.count_params() == 21 + 12 + 12
    assert_same_outputs(model, shrunk, RNG.normal(size=(16, 6)).astype("float32"))
    assert tfl.get_masks(model)["a/kernel"][:, 1].all()  # the masked model is unchanged


def test_removed_unit_bias_is_folded_into_the_next_bias():
    """a's unit 1 is pruned but still outputs relu(3.0) = 3 in the masked model: the
    next layer's bias takes 3 * its kernel row (1 + 3 * 100 = 301)."""
    model = tfl.wrap(keras.Sequential([
        keras.Input((2,)),
        keras.layers.Dense(2, activation="relu", name="a"),
        keras.layers.Dense(1, name="output"),
    ]))
    layer_a, output = model.get_layer("a"), model.get_layer("output")
    layer_a.kernel.assign([[1.0, 5.0], [2.0, 6.0]])
    layer_a.bias.assign([0.5, 3.0])
    output.kernel.assign([[10.0], [100.0]])
    output.bias.assign([1.0])
    drop_channels(model, {"a/kernel": [1]})
    shrunk = tfl.strip(model, shrink=True)
    np.testing.assert_array_equal(shrunk.get_layer("a").kernel.numpy(), [[1.0], [2.0]])
    np.testing.assert_array_equal(shrunk.get_layer("a").bias.numpy(), [0.5])
    np.testing.assert_array_equal(shrunk.get_layer("output").kernel.numpy(), [[10.0]])
    np.testing.assert_array_equal(shrunk.get_layer("output").bias.numpy(), [301.0])
    x = np.array([[1.0, -1.0], [0.5, 2.0]], np.float32)
    # By hand: relu(x @ [1, 2] + 0.5) * 10 + relu(3) * 100 + 1.
    np.testing.assert_allclose(outputs(shrunk, x), [[301.0], [351.0]])
    assert_same_outputs(model, shrunk, x)


def test_functional_conv_batchnorm_flatten_dense():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(5, activation="relu", name="fc")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="output")(x))
    randomize(model)
    model = tfl.wrap(model)
    drop_channels(model, {"c1/kernel": [1, 3], "fc/kernel": [2]})
    shrunk = tfl.strip(model, shrink=True)
    assert widths(shrunk) == {"c1": 2, "fc": 4, "output": 3}
    assert shrunk.get_layer("bn1").gamma.shape == (2,)
    # c1: 3*3*2*2 + 2; bn1: 4 * 2; fc reads 3*3*2 flattened: 18*4 + 4; output: 4*3 + 3
    assert shrunk.count_params() == 38 + 8 + 76 + 15
    assert_same_outputs(model, shrunk, RNG.normal(size=(8, 6, 6, 2)).astype("float32"))


def test_residual_add_removes_only_channels_every_input_drops():
    inputs = keras.Input((5, 5, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="ca")(inputs)
    b = keras.layers.Conv2D(4, 1, name="cb")(inputs)
    x = keras.layers.Add(name="add")([a, b])
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="output")(x))
    randomize(model)
    model = tfl.wrap(model)
    # ca drops 0, 1, 2; cb drops 1, 2: the Add keeps 0 (cb still uses it) and 3.
    drop_channels(model, {"ca/kernel": [0, 1, 2], "cb/kernel": [1, 2]})
    shrunk = tfl.strip(model, shrink=True)
    assert widths(shrunk) == {"ca": 2, "cb": 2, "output": 2}
    np.testing.assert_array_equal(  # ca's kept filters are 0 (zero, kept) and 3
        shrunk.get_layer("ca").kernel.numpy()[..., 0], 0.0)
    # ca: 3*3*3*2 + 2; cb: 1*1*3*2 + 2; output: 2*2 + 2
    assert shrunk.count_params() == 56 + 8 + 6
    assert_same_outputs(model, shrunk, RNG.normal(size=(8, 5, 5, 3)).astype("float32"))


@pytest.mark.parametrize("padding, kept", [("same", 2), ("valid", 1)])
def test_padded_convolution_keeps_one_carrier_channel(padding, kept):
    """Removed filters 0 and 1 of c1 output relu(1) and relu(2). A 'valid' c2 folds them
    into its bias; a 'same' c2 sees them only inside the image, so the larger (filter 1)
    stays and c2's slice for it absorbs filter 0's (K[1] += 1/2 * K[0])."""
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(2, 3, padding=padding, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = tfl.wrap(keras.Model(inputs, keras.layers.Dense(2, name="output")(x)))
    model.get_layer("c1").bias.assign([1.0, 2.0, -1.0])
    drop_channels(model, {"c1/kernel": [0, 1]})
    shrunk = tfl.strip(model, shrink=True)
    assert widths(shrunk)["c1"] == kept
    # c1: 3*3*2*kept + kept; c2: 3*3*kept*2 + 2; output: 2*2 + 2
    assert shrunk.count_params() == 19 * kept + (18 * kept + 2) + 6
    if padding == "same":
        np.testing.assert_array_equal(shrunk.get_layer("c1").bias.numpy(), [2.0, -1.0])
    assert_same_outputs(model, shrunk, RNG.normal(size=(8, 5, 5, 2)).astype("float32"))


def test_conv_without_bias_folds_into_the_next_batchnorm():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(3, 1, use_bias=False, name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="output")(x))
    randomize(model)
    model = tfl.wrap(model)
    drop_channels(model, {"c1/kernel": [0]})
    shrunk = tfl.strip(model, shrink=True)
    assert not shrunk.get_layer("c2").use_bias  # no new bias: the BN mean moved instead
    # c1: 3*3*2*2 + 2; c2: 2*3; bn: 4*3; output: 3*2 + 2
    assert shrunk.count_params() == 38 + 6 + 12 + 8
    assert_same_outputs(model, shrunk, RNG.normal(size=(8, 4, 4, 2)).astype("float32"))


# ------------------------------------------------------------------------- the zoo
def test_zoo_lenet_300_100():
    model = tfl.wrap(build_model("lenet_300_100", (28, 28, 1), 10))
    randomize(model)
    drop_channels(model, {"fc1/kernel": range(150), "fc2/kernel": range(0, 100, 2)})
    shrunk = tfl.strip(model, shrink=True)
    assert widths(shrunk) == {"fc1": 150, "fc2": 50, "output": 10}
    assert shrunk.count_params() == (784 * 150 + 150) + (150 * 50 + 50) + (50 * 10 + 10)
    assert_same_outputs(model, shrunk, RNG.uniform(size=(8, 28, 28, 1)).astype("float32"))


def test_zoo_conv2():
    """Positive biases: conv1's removed filters output relu(bias) > 0, and conv2 is 'same'
    padded, so one of them stays as the carrier (33 filters, not 32)."""
    model = tfl.wrap(build_model("conv2", (8, 8, 1), 10))
    randomize(model)
    drop_channels(model, {"conv1/kernel": range(32), "conv2/kernel": range(48),
                          "fc1/kernel": range(128), "fc2/kernel": range(192)})
    shrunk = tfl.strip(model, shrink=True)
    assert widths(shrunk) == {"conv1": 33, "conv2": 16, "fc1": 128, "fc2": 64, "output": 10}
    # conv1: 9*33 + 33; conv2: 9*33*16 + 16; fc1 reads 4*4*16: 256*128 + 128;
    # fc2: 128*64 + 64; output: 64*10 + 10
    assert shrunk.count_params() == 330 + 4768 + 32896 + 8256 + 650
    assert_same_outputs(model, shrunk, RNG.uniform(size=(8, 8, 8, 1)).astype("float32"))


def test_zoo_vgg16_small_input():
    model = tfl.wrap(build_model("vgg16", (8, 8, 3), 10))
    convs = [k for k in tfl.get_masks(model) if k.startswith("conv")]
    drop_channels(model, {k: range(0, tfl.get_masks(model)[k].shape[-1], 2) for k in convs})
    shrunk = tfl.strip(model, shrink=True)
    plan = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    expected, fan_in = 0, 3
    for filters in plan:  # conv without bias: 9 * in * out; BN: 4 * out
        expected += 9 * fan_in * filters // 2 + 4 * filters // 2
        fan_in = filters // 2
    expected += 256 * 10 + 10
    assert shrunk.count_params() == expected
    randomize(model, biases=False)  # nonzero constants now; same widths plus carriers
    shrunk = tfl.strip(model, shrink=True)
    assert_same_outputs(model, shrunk, RNG.uniform(size=(4, 8, 8, 3)).astype("float32"))


def test_zoo_resnet20():
    """Every conv drops its first half of filters: residual groups (a stage's Adds, the
    convs and shortcut feeding them) drop the same half, so every width halves."""
    model = tfl.wrap(build_model("resnet20", (8, 8, 3), 10))
    masks = tfl.get_masks(model)
    drop_channels(model, {k: range(m.shape[-1] // 2) for k, m in masks.items()
                          if not k.startswith("output")})
    shrunk = tfl.strip(model, shrink=True)
    assert {n: w for n, w in widths(shrunk).items() if n.startswith("conv4")} == {
        "conv4_block1_1": 32, "conv4_block1_2": 32, "conv4_block1_shortcut": 32,
        "conv4_block2_1": 32, "conv4_block2_2": 32, "conv4_block3_1": 32, "conv4_block3_2": 32}
    stem = 9 * 3 * 8 + 4 * 8
    stage2 = 3 * 2 * (9 * 8 * 8 + 4 * 8)
    stage3 = (9 * 8 * 16 + 9 * 16 * 16 + 8 * 16 + 3 * 4 * 16) + 2 * 2 * (9 * 16 * 16 + 4 * 16)
    stage4 = (9 * 16 * 32 + 9 * 32 * 32 + 16 * 32 + 3 * 4 * 32) + 2 * 2 * (9 * 32 * 32 + 4 * 32)
    assert shrunk.count_params() == stem + stage2 + stage3 + stage4 + (32 * 10 + 10) == 69570
    x = RNG.uniform(size=(4, 8, 8, 3)).astype("float32")
    assert_same_outputs(model, shrunk, x)
    randomize(model, biases=False)  # removed channels now carry BN constants
    shrunk = tfl.strip(model, shrink=True)
    assert 69570 < shrunk.count_params() < tfl.strip(model).count_params()
    assert_same_outputs(model, shrunk, x)


# ---------------------------------------------------------------- what cannot shrink
def test_channel_mask_on_the_output_layer_is_an_error():
    model = tfl.wrap(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc"),
                                       keras.layers.Dense(2, name="output")]))
    drop_channels(model, {"output/kernel": [1]})
    with pytest.raises(ValueError, match="'output' produces a model output.*strip"):
        tfl.strip(model, shrink=True)


def test_unknown_layer_keeps_its_channels_with_a_warning():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(3, name="a")(inputs)
    b = keras.layers.Dense(3, name="b")(inputs)
    x = keras.layers.Concatenate(name="concat")([a, b])
    model = tfl.wrap(keras.Model(inputs, keras.layers.Dense(2, name="output")(x)))
    drop_channels(model, {"a/kernel": [0], "b/kernel": [2]})
    with pytest.warns(ChannelsKeptWarning, match="'concat' \\(Concatenate"):
        shrunk = tfl.strip(model, shrink=True)
    assert widths(shrunk) == {"a": 3, "b": 3, "output": 2}
    assert_same_outputs(model, shrunk, RNG.normal(size=(4, 4)).astype("float32"))


def test_shared_layer_is_an_error():
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    model = keras.Model(inputs, keras.layers.Dense(2, name="output")(shared(shared(inputs))))
    model = tfl.wrap(model)
    with pytest.raises(ValueError, match=r"\['shared'\].*strip\(model\)"):
        tfl.strip(model, shrink=True)


def test_shrink_must_be_a_bool():
    model = tfl.wrap(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="output")]))
    with pytest.raises(ValueError, match="`shrink` must be True or False; received 'yes'"):
        tfl.strip(model, shrink="yes")
