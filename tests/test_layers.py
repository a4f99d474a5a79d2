"""Masked layers: each is its Keras base layer computing with ``weight * mask``.

Every masked class is checked against the *plain* Keras layer it subclasses, built with
the same arguments and given the masked weight (``kernel * mask``) by assignment, so
the reference output never goes through tf_lottery's code.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_lottery
from tf_lottery import layers as tfl_layers

pytestmark = pytest.mark.usefixtures("clean_keras")


# (masked class, Keras base, constructor kwargs, input shape, names of the masked weights)
CASES = [
    (tfl_layers.MaskedDense, keras.layers.Dense, dict(units=3), (2, 4), {"kernel"}),
    (
        tfl_layers.MaskedEinsumDense,
        keras.layers.EinsumDense,
        dict(equation="ab,bc->ac", output_shape=3, bias_axes="c"),
        (2, 4),
        {"kernel"},
    ),
    (tfl_layers.MaskedConv1D, keras.layers.Conv1D, dict(filters=2, kernel_size=2), (2, 5, 3), {"kernel"}),
    (tfl_layers.MaskedConv2D, keras.layers.Conv2D, dict(filters=2, kernel_size=2), (2, 4, 4, 3), {"kernel"}),
    (tfl_layers.MaskedConv3D, keras.layers.Conv3D, dict(filters=2, kernel_size=2), (2, 3, 3, 3, 2), {"kernel"}),
    (
        tfl_layers.MaskedConv1DTranspose,
        keras.layers.Conv1DTranspose,
        dict(filters=2, kernel_size=2),
        (2, 4, 3),
        {"kernel"},
    ),
    (
        tfl_layers.MaskedConv2DTranspose,
        keras.layers.Conv2DTranspose,
        dict(filters=2, kernel_size=2, strides=2),
        (2, 3, 3, 3),
        {"kernel"},
    ),
    (
        tfl_layers.MaskedDepthwiseConv2D,
        keras.layers.DepthwiseConv2D,
        dict(kernel_size=2, depth_multiplier=2),
        (2, 4, 4, 3),
        {"kernel"},
    ),
    (
        tfl_layers.MaskedSeparableConv2D,
        keras.layers.SeparableConv2D,
        dict(filters=2, kernel_size=2, depth_multiplier=2),
        (2, 4, 4, 3),
        {"depthwise_kernel", "pointwise_kernel"},
    ),
    (
        tfl_layers.MaskedEmbedding,
        keras.layers.Embedding,
        dict(input_dim=5, output_dim=3),
        (2, 5),
        {"embeddings"},
    ),
]
IDS = [case[1].__name__ for case in CASES]


def _inputs(base, shape, seed=0):
    rng = np.random.default_rng(seed)
    if base is keras.layers.Embedding:
        # Every row of the 5-row table is looked up, so every row gets a gradient.
        return np.array([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]], dtype="int32")
    return rng.normal(size=shape).astype("float32")


def _random_mask(shape, rng):
    mask = (rng.random(shape) < 0.5).astype("float32")
    mask.reshape(-1)[0] = 0.0  # at least one pruned and one alive entry
    mask.reshape(-1)[-1] = 1.0
    return mask


def _build_pair(masked_cls, base, kwargs, shape, seed=0):
    """Masked and plain layer, built, with random weights; masked weights get masks.

    Returns (masked layer, plain layer, inputs, {weight name: mask}).
    """
    rng = np.random.default_rng(seed)
    x = _inputs(base, shape, seed)
    masked, plain = masked_cls(**kwargs), base(**kwargs)
    masked(x)
    plain(x)
    values = {}
    for var in masked.trainable_weights:  # biases too: make them non-zero
        values[var.name] = rng.normal(size=var.shape).astype("float32")
        var.assign(values[var.name])
    masks = {}
    for name in masked.prunable_weights:
        masks[name] = _random_mask(tuple(getattr(masked, name).shape), rng)
        getattr(masked, f"{name}_mask").assign(masks[name])
    for var in plain.weights:
        value = values[var.name]
        if var.name in masks:
            value = value * masks[var.name]
        var.assign(value)
    return masked, plain, x, masks


@pytest.mark.parametrize("masked_cls, base, kwargs, shape, expected", CASES, ids=IDS)
def test_subclass_and_one_all_ones_mask_per_kernel(masked_cls, base, kwargs, shape, expected):
    assert issubclass(masked_cls, base)
    layer = masked_cls(**kwargs)
    assert isinstance(layer, base) and tf_lottery.is_masked(layer)
    layer(_inputs(base, shape))

    mask_vars = [w for w in layer.weights if w.name.endswith("_mask")]
    assert {w.name for w in mask_vars} == {f"{name}_mask" for name in expected}
    for name in expected:
        weight, mask = getattr(layer, name), getattr(layer, f"{name}_mask")
        assert tuple(mask.shape) == tuple(weight.shape)
        assert not mask.trainable
        assert any(mask is w for w in layer.non_trainable_weights)
        assert not any(mask is w for w in layer.trainable_weights)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mask), 1.0)
    # Outside `call` the attribute is the dense trainable variable itself.
    assert all(
        any(getattr(layer, name) is w for w in layer.trainable_weights) for name in expected
    )
    # Biases are never masked, and the plain layer's weights are all still there.
    plain = base(**kwargs)
    plain(_inputs(base, shape))
    assert sorted(w.name for w in layer.weights if not w.name.endswith("_mask")) == sorted(
        w.name for w in plain.weights
    )


@pytest.mark.parametrize("masked_cls, base, kwargs, shape, expected", CASES, ids=IDS)
def test_output_equals_base_layer_on_masked_weight(masked_cls, base, kwargs, shape, expected):
    masked, plain, x, masks = _build_pair(masked_cls, base, kwargs, shape)
    out = keras.ops.convert_to_numpy(masked(x))
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(plain(x)), rtol=1e-5, atol=1e-6)

    # The mask matters: with all-ones masks the output is different.
    for name in masks:
        getattr(masked, f"{name}_mask").assign(np.ones_like(masks[name]))
    assert not np.allclose(keras.ops.convert_to_numpy(masked(x)), out, atol=1e-4)

    # All-zero masks: only the (unmasked) bias is left.
    for name in masks:
        getattr(masked, f"{name}_mask").assign(np.zeros_like(masks[name]))
    out = keras.ops.convert_to_numpy(masked(x))
    if getattr(masked, "bias", None) is not None:
        bias = keras.ops.convert_to_numpy(masked.bias)
        np.testing.assert_allclose(out, np.broadcast_to(bias, out.shape), rtol=1e-6)
    else:
        np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize("masked_cls, base, kwargs, shape, expected", CASES, ids=IDS)
def test_gradient_is_exactly_zero_at_masked_entries(masked_cls, base, kwargs, shape, expected):
    masked, _, x, masks = _build_pair(masked_cls, base, kwargs, shape)
    out_shape = tuple(masked(x).shape)
    probe = np.random.default_rng(1).normal(size=out_shape).astype("float32")
    weights = [getattr(masked, name) for name in masks]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(masked(x) * probe)
    grads = tape.gradient(loss, weights)
    for name, grad in zip(masks, grads):
        grad = tf.convert_to_tensor(grad).numpy()  # IndexedSlices for Embedding
        assert np.all(grad[masks[name] == 0] == 0.0), name
        assert np.any(grad[masks[name] == 1] != 0.0), name


@pytest.mark.parametrize("masked_cls, base, kwargs, shape, expected", CASES, ids=IDS)
def test_config_round_trip(masked_cls, base, kwargs, shape, expected):
    layer = masked_cls(**kwargs, name="probe")
    config = layer.get_config()
    clone = masked_cls.from_config(config)
    assert type(clone) is masked_cls
    assert clone.get_config() == config
    # The config is the base layer's: a plain layer accepts it unchanged.
    assert base.from_config(config).get_config() == config
    # Serialized under a registered name, so no custom_objects are needed.
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"tf_lottery>{masked_cls.__name__}"
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is masked_cls and restored.name == "probe"


def _single_layer_model(masked_cls, base, kwargs, shape, seed):
    masked, _, x, masks = _build_pair(masked_cls, base, kwargs, shape, seed)
    dtype = "int32" if base is keras.layers.Embedding else "float32"
    layer = masked_cls(**kwargs, name="probe")
    model = keras.Sequential([keras.Input(shape[1:], dtype=dtype), layer])
    for target, source in zip(layer.weights, masked.weights, strict=True):
        target.assign(source)
    return model, x, masks


@pytest.mark.parametrize("masked_cls, base, kwargs, shape, expected", CASES, ids=IDS)
def test_keras_and_weights_files_keep_masks(masked_cls, base, kwargs, shape, expected, tmp_path):
    model, x, masks = _single_layer_model(masked_cls, base, kwargs, shape, seed=3)
    expected_out = keras.ops.convert_to_numpy(model(x))

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    layer = loaded.get_layer("probe")
    assert type(layer) is masked_cls
    for name, mask in masks.items():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(getattr(layer, f"{name}_mask")), mask)
    for a, b in zip(loaded.weights, model.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), expected_out, rtol=1e-6)

    weights_path = str(tmp_path / "model.weights.h5")
    model.save_weights(weights_path)
    fresh, _, _ = _single_layer_model(masked_cls, base, kwargs, shape, seed=4)
    fresh.load_weights(weights_path)
    for name, mask in masks.items():
        got = keras.ops.convert_to_numpy(getattr(fresh.get_layer("probe"), f"{name}_mask"))
        np.testing.assert_array_equal(got, mask)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fresh(x)), expected_out, rtol=1e-6)


@pytest.mark.parametrize("policy, tol", [("mixed_float16", 2e-3), ("mixed_bfloat16", 2e-2)])
@pytest.mark.parametrize("masked_cls, base, kwargs, shape, expected", CASES, ids=IDS)
def test_mixed_precision(policy, tol, masked_cls, base, kwargs, shape, expected):
    keras.config.set_dtype_policy(policy)
    masked, plain, x, masks = _build_pair(masked_cls, base, kwargs, shape)
    compute = policy.split("_")[1]
    out = masked(x)
    assert keras.backend.standardize_dtype(out.dtype) == compute
    for name in masks:
        assert getattr(masked, name).dtype == "float32"
        assert getattr(masked, f"{name}_mask").dtype == "uint8"
    out = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
    ref = keras.ops.convert_to_numpy(keras.ops.cast(plain(x), "float32"))
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
    for name in masks:
        getattr(masked, f"{name}_mask").assign(np.ones_like(masks[name]))
    unmasked = keras.ops.convert_to_numpy(keras.ops.cast(masked(x), "float32"))
    assert np.abs(unmasked - out).max() > 10 * tol


def _tiny_conv_net():
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="relu", name="fc"),
            keras.layers.Dense(2, name="out"),
        ]
    )


def _prune_half(model, seed=0):
    rng = np.random.default_rng(seed)
    masks = {k: _random_mask(v.shape, rng) for k, v in tf_lottery.get_masks(model).items()}
    tf_lottery.set_masks(model, masks)
    return masks


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_jit_compiled_training_keeps_pruned_weights_dead(policy):
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    model = tf_lottery.wrap(_tiny_conv_net())
    masks = _prune_half(model)
    before = tf_lottery.get_prunable_weights(model)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 6, 2)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)

    after = tf_lottery.get_prunable_weights(model)
    for key, mask in masks.items():
        # No gradient reaches pruned entries, so Adam leaves them exactly as they were.
        np.testing.assert_array_equal(after[key][mask == 0], before[key][mask == 0])
        assert np.any(after[key][mask == 1] != before[key][mask == 1]), key
    plain = tf_lottery.strip(model)
    out = keras.ops.convert_to_numpy(keras.ops.cast(model(x), "float32"))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(plain(x), "float32")), out, rtol=1e-5, atol=1e-6
    )


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np, tf_lottery

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        plain = keras.Sequential([keras.Input((4,)),
                                  keras.layers.Dense(8, activation="tanh", name="fc"),
                                  keras.layers.Dense(2, name="out")])
        model = tf_lottery.wrap(plain)
        masks = {k: (np.arange(v.size).reshape(v.shape) % 2).astype("float32")
                 for k, v in tf_lottery.get_masks(model).items()}
        tf_lottery.set_masks(model, masks)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse",
                      jit_compile=False)
    before = tf_lottery.get_prunable_weights(model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.normal(size=(32, 2)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    after = tf_lottery.get_prunable_weights(model)
    mask_var = model.get_layer("fc").kernel_mask.value
    replicas = [np.asarray(v) for v in strategy.experimental_local_results(mask_var)]
    stripped = tf_lottery.strip(model)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "mask_replicas_equal_mask": [bool((r == masks["fc/kernel"]).all()) for r in replicas],
        "pruned_unchanged": all(bool((after[k][m == 0] == before[k][m == 0]).all())
                                for k, m in masks.items()),
        "alive_changed": all(bool((after[k][m == 1] != before[k][m == 1]).any())
                             for k, m in masks.items()),
        "strip_max_diff": float(np.abs(np.asarray(stripped(x))
                                       - np.asarray(model(x))).max()),
    }))
    """
)


def test_mirrored_strategy_on_two_cpu_devices():
    # Logical devices must be configured before TensorFlow initializes, once per
    # process; a subprocess does that without depending on what this process ran first.
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["mask_replicas_equal_mask"] == [True, True]
    assert report["pruned_unchanged"], report
    assert report["alive_changed"], report
    assert report["strip_max_diff"] < 1e-5, report
