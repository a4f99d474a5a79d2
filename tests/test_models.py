"""Tests for tf_lottery.models: architectures, weight counts, seeding, initializers."""

import math

import keras
import numpy as np
import pytest

from tf_lottery import models


def _kernel_layers(model):
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]


# Small inputs keep the big nets cheap; 28x28x1 also checks that pooling works on MNIST.
@pytest.mark.parametrize(
    "name, input_shape",
    [
        ("lenet_300_100", (28, 28, 1)),
        ("lenet_300_100", (32, 32, 3)),
        ("conv2", (28, 28, 1)),
        ("conv4", (28, 28, 1)),
        ("conv6", (28, 28, 1)),
        ("resnet20", (28, 28, 1)),
        ("vgg16", (28, 28, 1)),
        ("vit_tiny", (28, 28, 1)),
        ("lstm", (28, 28, 1)),
    ],
)
def test_logits_shape_dtype_and_output_layer(name, input_shape):
    model = models.build_model(name, input_shape, 7)
    x = np.random.default_rng(0).uniform(size=(2, *input_shape)).astype("float32")
    logits = model(x, training=False)
    assert tuple(logits.shape) == (2, 7)
    assert logits.dtype == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))
    assert model.name == name
    # Functional model ending in the Dense "output" with no activation: logits.
    assert len(model.inputs) == 1 and tuple(model.inputs[0].shape[1:]) == input_shape
    out = model.layers[-1]
    assert out.name == "output" and isinstance(out, keras.layers.Dense)
    assert out.get_config()["activation"] == "linear"
    # Logits are not probabilities: rows do not sum to 1.
    assert not np.allclose(keras.ops.convert_to_numpy(keras.ops.sum(logits, axis=1)), 1.0)


def test_vgg19_forward_and_count_on_cifar_shape():
    model = models.build_model("vgg19", (32, 32, 3), 10)
    logits = model(np.zeros((2, 32, 32, 3), "float32"), training=False)
    assert tuple(logits.shape) == (2, 10)
    plan = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
    expected = sum(9 * cin * cout for cin, cout in zip([3] + plan[:-1], plan)) + 512 * 10
    assert expected == 20_024_000
    assert models.count_prunable_weights(model) == expected
    assert "20,024,000" in models.vgg19.__doc__
    convs = [l.name for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert convs == [f"conv{i}" for i in range(1, 17)]
    assert sum(isinstance(l, keras.layers.BatchNormalization) for l in model.layers) == 16


def test_lenet_layers_and_exact_weight_count():
    model = models.lenet_300_100((28, 28, 1), 10)
    assert [l.name for l in _kernel_layers(model)] == ["fc1", "fc2", "output"]
    assert [l.units for l in _kernel_layers(model)] == [300, 100, 10]
    assert models.count_prunable_weights(model) == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
    # Biases are not prunable weights.
    assert model.count_params() == 266_200 + 300 + 100 + 10
    assert "266,200" in models.lenet_300_100.__doc__


@pytest.mark.parametrize(
    "name, convs, flat",
    [
        ("conv2", [(3, 64), (64, 64)], 16 * 16 * 64),
        ("conv4", [(3, 64), (64, 64), (64, 128), (128, 128)], 8 * 8 * 128),
        ("conv6", [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256)], 4 * 4 * 256),
    ],
)
def test_conv_n_weight_counts_on_cifar(name, convs, flat):
    model = models.build_model(name, (32, 32, 3), 10)
    expected = sum(9 * a * b for a, b in convs) + flat * 256 + 256 * 256 + 256 * 10
    assert models.count_prunable_weights(model) == expected
    assert f"{expected:,}" in models.MODELS[name].__doc__
    n = len(convs)
    assert [l.name for l in _kernel_layers(model)] == [f"conv{i}" for i in range(1, n + 1)] + [
        "fc1", "fc2", "output"]
    if name == "conv6":
        assert expected == 2_261_184


def test_conv6_on_28x28_uses_ceil_pooling():
    # 28 -> 14 -> 7 -> 4 with `same` pools: fc1 sees 4 * 4 * 256 features.
    model = models.conv6((28, 28, 1), 10)
    assert model.get_layer("fc1").kernel.shape == (4 * 4 * 256, 256)


def test_resnet20_structure_and_count():
    model = models.resnet20((32, 32, 3), 10)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    # Stem + 18 block convs + 2 projection shortcuts.
    assert len(convs) == 21 and all(l.name.startswith("conv") for l in convs)
    assert sum(l.name.endswith("shortcut") for l in convs) == 2
    expected = (
        9 * 3 * 16
        + 6 * 9 * 16 * 16
        + 9 * 16 * 32 + 5 * 9 * 32 * 32 + 16 * 32
        + 9 * 32 * 64 + 5 * 9 * 64 * 64 + 32 * 64
        + 64 * 10
    )
    assert models.count_prunable_weights(model) == expected == 270_896
    assert "270,896" in models.resnet20.__doc__
    assert sum(isinstance(l, keras.layers.BatchNormalization) for l in model.layers) == 21
    assert sum(isinstance(l, keras.layers.Add) for l in model.layers) == 9
    # Stride-2 stage starts: 32 -> 16 -> 8 before the global pool.
    assert tuple(model.get_layer("add4_block3").output.shape[1:]) == (8, 8, 64)


def test_count_prunable_weights_nested_model():
    inner = models.lenet_300_100((28, 28, 1), 10)
    inputs = keras.Input((28, 28, 1))
    outer = keras.Model(inputs, inner(inputs))
    assert models.count_prunable_weights(outer) == 266_200
    with pytest.raises(ValueError, match="model"):
        models.count_prunable_weights("lenet")


def test_same_seed_same_weights_regardless_of_global_seed():
    keras.utils.set_random_seed(1)
    a = models.build_model("conv2", (8, 8, 1), 3, seed=5, dropout=0.5)
    keras.utils.set_random_seed(2)
    b = models.build_model("conv2", (8, 8, 1), 3, seed=5, dropout=0.5)
    c = models.build_model("conv2", (8, 8, 1), 3, seed=6, dropout=0.5)
    for la, lb, lc in zip(_kernel_layers(a), _kernel_layers(b), _kernel_layers(c)):
        ka, kb, kc = (keras.ops.convert_to_numpy(l.kernel) for l in (la, lb, lc))
        np.testing.assert_array_equal(ka, kb)
        assert not np.allclose(ka, kc), la.name
        assert not np.any(keras.ops.convert_to_numpy(la.bias)), "biases start at zero"
    # Layers of one model get different seeds: two same-shape kernels differ.
    r = models.resnet20((8, 8, 1), 10, seed=0)
    k1, k2 = (r.get_layer(n).kernel.numpy() for n in ("conv2_block1_1", "conv2_block1_2"))
    assert k1.shape == k2.shape == (3, 3, 16, 16) and not np.allclose(k1, k2)
    # Dropout masks are seeded too: same model seed -> same training-mode output.
    x = np.ones((4, 8, 8, 1), "float32")
    np.testing.assert_array_equal(a(x, training=True), b(x, training=True))


@pytest.mark.parametrize(
    "initializer, std",
    [
        ("glorot_normal", math.sqrt(2.0 / (784 + 300))),
        ("he_normal", math.sqrt(2.0 / 784)),
        ("lecun_normal", math.sqrt(1.0 / 784)),
        ("he_uniform", math.sqrt(2.0 / 784)),  # U(-sqrt(6/fan_in), +): std sqrt(2/fan_in)
    ],
)
def test_initializer_sets_kernel_std(initializer, std):
    model = models.lenet_300_100((28, 28, 1), 10, initializer=initializer)
    kernel = model.get_layer("fc1").kernel.numpy()  # 235,200 samples: std within ~0.5%.
    assert kernel.std() == pytest.approx(std, rel=0.03)
    assert abs(kernel.mean()) < 0.02 * std


def test_initializer_instance_is_reseeded_per_model_seed():
    init = keras.initializers.HeNormal(seed=123)
    a = models.lenet_300_100((10,), 10, initializer=init, seed=0)
    b = models.lenet_300_100((10,), 10, initializer=init, seed=1)
    assert not np.allclose(a.get_layer("fc1").kernel.numpy(), b.get_layer("fc1").kernel.numpy())
    # A seedless initializer is used as is.
    z = models.lenet_300_100((10,), 10, initializer="zeros")
    assert not np.any(z.get_layer("fc2").kernel.numpy())


@pytest.mark.parametrize("name", ["lenet_300_100", "conv4"])
def test_dropout_layers_only_when_rate_positive(name):
    without = models.build_model(name, (16, 16, 1), 10, dropout=0.0)
    assert not any(isinstance(l, keras.layers.Dropout) for l in without.layers)
    with_ = models.build_model(name, (16, 16, 1), 10, dropout=0.3)
    drops = [l for l in with_.layers if isinstance(l, keras.layers.Dropout)]
    assert [l.name for l in drops] == ["fc1_dropout", "fc2_dropout"]
    assert all(l.rate == 0.3 for l in drops)
    names = [l.name for l in with_.layers]
    assert names.index("fc1_dropout") == names.index("fc1") + 1
    assert names.index("fc2_dropout") == names.index("fc2") + 1
    # Inference ignores dropout.
    x = np.ones((2, 16, 16, 1), "float32")
    np.testing.assert_array_equal(with_(x, training=False), with_(x, training=False))


def test_batch_norm_flag():
    with_bn = models.build_model("vgg16", (8, 8, 3), 10)
    no_bn = models.build_model("vgg16", (8, 8, 3), 10, batch_norm=False)
    assert sum(isinstance(l, keras.layers.BatchNormalization) for l in with_bn.layers) == 13
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in no_bn.layers)
    assert not with_bn.get_layer("conv1").use_bias
    assert no_bn.get_layer("conv1").use_bias
    assert models.count_prunable_weights(with_bn) == models.count_prunable_weights(no_bn)
    # No BN in LeNet/Conv-N; False is accepted (it is their default).
    models.build_model("lenet_300_100", (4, 4, 1), 10, batch_norm=False)
    with pytest.raises(ValueError, match="batch_norm=True"):
        models.build_model("conv2", (8, 8, 1), 10, batch_norm=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="resnet18"), r"name='resnet18'.*lenet_300_100.*vgg19"),
        (dict(initializer="glorot"), r"(?s)(?=.*he_normal).*initializer='glorot'"),
        (dict(initializer=None), r"initializer=None"),
        (dict(dropout=1.0), r"dropout=1.0"),
        (dict(dropout=-0.1), r"dropout=-0.1"),
        (dict(input_shape=(28, 28)), r"input_shape=\(28, 28\)"),
        (dict(input_shape=(28, 0, 1)), r"input_shape=\(28, 0, 1\)"),
        (dict(num_classes=0), r"num_classes=0"),
        (dict(seed=-1), r"seed=-1"),
        (dict(name="resnet20", dropout=0.5), r"dropout=0.5"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    args = dict(name="conv2", input_shape=(8, 8, 1), num_classes=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        models.build_model(**args)


def test_name_lookup_is_forgiving_and_registry_complete():
    assert set(models.MODELS) == {
        "lenet_300_100", "conv2", "conv4", "conv6", "resnet20", "vgg16", "vgg19", "vit_tiny",
        "lstm"}
    assert models.build_model("LeNet-300-100", (4, 4, 1), 10).name == "lenet_300_100"


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", ["lenet_300_100", "conv2", "resnet20"])
def test_logits_are_float32_under_mixed_precision(mixed_bfloat16, name):
    model = models.build_model(name, (8, 8, 1), 10)
    hidden = _kernel_layers(model)[0]
    assert hidden.compute_dtype == "bfloat16"  # The policy is in effect...
    logits = model(np.ones((2, 8, 8, 1), "float32"))
    assert logits.dtype == "float32"  # ...but the logits are float32.


# ------------------------------------------------------------------ ViT-Tiny and LSTM


def _weights(model):
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


def test_vit_tiny_structure_and_exact_weight_count():
    model = models.vit_tiny((28, 28, 1), 10)
    assert model.get_layer("patch_embedding").kernel.shape == (7, 7, 1, 64)
    assert tuple(model.get_layer("embedding").output.shape) == (None, 17, 64)  # 16 + class
    attention = [l for l in model.layers if isinstance(l, keras.layers.MultiHeadAttention)]
    assert [l.name for l in attention] == [f"block{i}_attention" for i in range(1, 5)]
    assert attention[0].query_dense.kernel.shape == (64, 4, 16)
    assert attention[0].output_dense.kernel.shape == (4, 16, 64)
    assert model.get_layer("block4_mlp1").kernel.shape == (64, 128)
    assert model.get_layer("block4_mlp1").get_config()["activation"] == "gelu"
    assert tuple(model.get_layer("class_token").output.shape) == (None, 64)
    per_block = 4 * 64 * 64 + 2 * 64 * 128
    expected = 7 * 7 * 64 + 4 * per_block + 64 * 10
    assert models.count_prunable_weights(model) == expected == 134_848
    assert "134,848" in models.vit_tiny.__doc__
    others = 64 + 64 + 17 * 64 + 4 * (4 * 64 + 4 * 64 + 128 + 64) + 2 * 64 + 10
    assert model.count_params() == expected + others == 139_018
    assert "139,018" in models.vit_tiny.__doc__


def test_lstm_structure_and_exact_weight_count():
    model = models.lstm((28, 28, 1), 10)
    assert tuple(model.get_layer("rows").output.shape) == (None, 28, 28)
    cell = model.get_layer("lstm").cell
    assert cell.kernel.shape == (28, 512) and cell.recurrent_kernel.shape == (128, 512)
    kernels = 28 * 512 + 128 * 512 + 128 * 10
    assert kernels == 81_152 and "81,152" in models.lstm.__doc__
    assert model.count_params() == kernels + 512 + 10 == 81_674
    assert models.count_prunable_weights(model) == kernels
    assert "81,674" in models.lstm.__doc__
    bias = cell.bias.numpy()
    np.testing.assert_array_equal(bias[128:256], 1.0)  # forget gate
    assert not np.any(bias[:128]) and not np.any(bias[256:])
    r = cell.recurrent_kernel.numpy()  # orthogonal rows
    np.testing.assert_allclose(r @ r.T, np.eye(128), atol=1e-4)
    assert models.lstm((10, 3, 2), 4, units=5).get_layer("lstm").cell.kernel.shape == (6, 20)


@pytest.mark.parametrize("name", ["vit_tiny", "lstm"])
def test_new_models_same_seed_same_weights(name):
    keras.utils.set_random_seed(1)
    a = models.build_model(name, (28, 28, 1), 10, seed=3, dropout=0.2)
    keras.utils.set_random_seed(2)
    b = models.build_model(name, (28, 28, 1), 10, seed=3, dropout=0.2)
    c = models.build_model(name, (28, 28, 1), 10, seed=4, dropout=0.2)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert wa.keys() == wb.keys()
    random = [key for key in wa if "kernel" in key or "position_embedding" in key]
    assert len(random) == (1 + 1 + 4 * 6 + 1 if name == "vit_tiny" else 3)
    for key, value in wa.items():
        np.testing.assert_array_equal(value, wb[key])
        if key in random:  # random tensors differ with the seed
            assert not np.allclose(value, wc[key]), key
    x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(a(x, training=True), b(x, training=True))
    assert not np.array_equal(a(x, training=True), a(x, training=False))  # dropout is on


def test_vit_attention_projections_start_different_with_dense_fans():
    attention = models.vit_tiny((28, 28, 1), 10).get_layer("block1_attention")
    kernels = [d.kernel.numpy() for d in (attention.query_dense, attention.key_dense,
                                          attention.value_dense)]
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
    # Glorot normal of a 64x64 matrix: std sqrt(2 / 128) = 0.125 (4,096 samples: ~3%).
    for kernel in kernels + [attention.output_dense.kernel.numpy()]:
        assert kernel.std() == pytest.approx(0.125, rel=0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(patch_size=5), r"(?s)`patch_size` must divide.*28x28.*patch_size=5.*"
                             r"\[1, 2, 4, 7, 14, 28\]"),
        (dict(input_shape=(28, 30, 1)), r"28x30.*patch_size=7.*\[1, 2\]"),
        (dict(width=64, heads=5), r"`width` must be a multiple of `heads`.*heads=5"),
        (dict(depth=0), r"depth=0"),
        (dict(patch_size=0), r"patch_size=0"),
        (dict(input_shape=(28, 28)), r"input_shape=\(28, 28\)"),
    ],
)
def test_vit_bad_arguments(kwargs, match):
    args = dict(input_shape=(28, 28, 1), num_classes=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        models.vit_tiny(**args)


def test_lstm_bad_arguments_and_no_batch_norm():
    with pytest.raises(ValueError, match="units=0"):
        models.lstm((28, 28, 1), 10, units=0)
    for name in ("vit_tiny", "lstm"):
        with pytest.raises(ValueError, match="batch_norm=True"):
            models.build_model(name, (28, 28, 1), 10, batch_norm=True)
        assert models.build_model(name, (28, 28, 1), 10, batch_norm=False).name == name


@pytest.mark.parametrize("name", ["vit_tiny", "lstm"])
def test_new_models_logits_float32_under_mixed_precision(mixed_bfloat16, name):
    model = models.build_model(name, (28, 28, 1), 10)
    hidden = model.get_layer("patch_embedding" if name == "vit_tiny" else "lstm")
    assert hidden.compute_dtype == "bfloat16"
    assert model(np.ones((2, 28, 28, 1), "float32")).dtype == "float32"


def test_vit_round_trips_through_keras_saving(tmp_path):
    model = models.vit_tiny((8, 8, 1), 3, patch_size=4, width=8, depth=1, heads=2, mlp_dim=8)
    path = str(tmp_path / "vit.keras")
    model.save(path)
    again = keras.saving.load_model(path)
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(again(x), model(x), rtol=1e-6)
