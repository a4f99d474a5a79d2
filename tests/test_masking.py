"""wrap / strip / get_masks / set_masks / save_masks / load_masks / sparsity_report."""

import keras
import numpy as np
import pytest

import tf_lottery
from tf_lottery import layers as tfl_layers

pytestmark = pytest.mark.usefixtures("clean_keras")

RNG = np.random.default_rng(0)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _values(model):
    return [_np(w).copy() for w in model.weights]


def _sequential():
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, activation="relu", name="fc1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(3, name="out"),
        ],
        name="seq",
    )


def _multi_input_residual_shared_nested():
    """Two inputs through one shared Dense, a residual Add, a nested Sequential."""
    inner = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4, name="in1"), keras.layers.Dense(4, name="in2")],
        name="inner",
    )
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    shared = keras.layers.Dense(4, activation="tanh", name="shared")
    h = keras.layers.Add(name="residual")([shared(a), shared(b), a])
    h = inner(h)
    conv_in = keras.layers.Reshape((4, 1), name="reshape")(h)
    h = keras.layers.Conv1D(2, 2, name="conv")(conv_in)
    out = keras.layers.Dense(2, name="out")(keras.layers.Flatten()(h))
    return keras.Model([a, b], out, name="func")


def _inputs_for(model):
    if len(model.inputs) == 1:
        return RNG.normal(size=(3, 5)).astype("float32")
    return [RNG.normal(size=(3, 4)).astype("float32") for _ in model.inputs]


@pytest.mark.parametrize("build", [_sequential, _multi_input_residual_shared_nested])
def test_wrap_keeps_outputs_and_leaves_the_model_alone(build):
    model = build()
    x = _inputs_for(model)
    classes = [type(layer) for layer in model.layers]
    values = _values(model)
    expected = _np(model(x))

    wrapped = tf_lottery.wrap(model)
    np.testing.assert_array_equal(_np(wrapped(x)), expected)
    # The caller's model is untouched: same layers, same values, no masks, and it does
    # not share variables with the wrapped copy.
    assert [type(layer) for layer in model.layers] == classes
    assert not tf_lottery.masked_layers(model)
    for w in wrapped.trainable_weights:
        w.assign(np.zeros(w.shape))
    for before, after in zip(values, _values(model), strict=True):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(_np(model(x)), expected)


def test_wrap_masks_every_prunable_layer_once_including_shared_and_nested():
    model = _multi_input_residual_shared_nested()
    x = _inputs_for(model)
    wrapped = tf_lottery.wrap(model)
    assert tf_lottery.mask_keys(wrapped) == [
        "shared/kernel", "inner/in1/kernel", "inner/in2/kernel", "conv/kernel", "out/kernel",
    ]
    assert type(wrapped.get_layer("shared")) is tfl_layers.MaskedDense
    assert type(wrapped.get_layer("conv")) is tfl_layers.MaskedConv1D
    assert type(wrapped.get_layer("inner").get_layer("in1")) is tfl_layers.MaskedDense
    assert type(wrapped.get_layer("residual")) is keras.layers.Add

    assert [layer.name for layer in wrapped.layers].count("shared") == 1
    np.testing.assert_array_equal(_np(wrapped(x)), _np(model(x)))


def test_shared_layer_has_one_mask_used_by_both_call_sites():
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    shared = keras.layers.Dense(2, name="shared")
    model = keras.Model([a, b], [shared(a), shared(b)])
    wrapped = tf_lottery.wrap(model)
    assert tf_lottery.mask_keys(wrapped) == ["shared/kernel"]
    mask = np.array([[1, 0], [0, 1], [1, 1]], "float32")
    tf_lottery.set_masks(wrapped, {"shared/kernel": mask})
    layer = wrapped.get_layer("shared")
    kernel, bias = _np(layer.kernel), _np(layer.bias)
    x = [RNG.normal(size=(2, 3)).astype("float32") for _ in range(2)]
    out_a, out_b = (_np(t) for t in wrapped(x))
    np.testing.assert_allclose(out_a, x[0] @ (kernel * mask) + bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_b, x[1] @ (kernel * mask) + bias, rtol=1e-5, atol=1e-6)


def test_wrap_include_and_exclude():
    model = _multi_input_residual_shared_nested()
    x = _inputs_for(model)
    assert tf_lottery.mask_keys(tf_lottery.wrap(model, include=["in1", "out"])) == [
        "inner/in1/kernel", "out/kernel",
    ]
    assert tf_lottery.mask_keys(tf_lottery.wrap(model, include="inner/in2")) == ["inner/in2/kernel"]
    wrapped = tf_lottery.wrap(model, exclude=["shared", "inner/in1", "conv"])
    assert tf_lottery.mask_keys(wrapped) == ["inner/in2/kernel", "out/kernel"]
    assert type(wrapped.get_layer("shared")) is keras.layers.Dense
    np.testing.assert_array_equal(_np(wrapped(x)), _np(model(x)))

    for arg in ("include", "exclude"):
        with pytest.raises(ValueError, match=f"`{arg}`.*nope"):
            tf_lottery.wrap(model, **{arg: ["nope"]})
    with pytest.raises(ValueError, match="`include`.*residual"):  # not prunable
        tf_lottery.wrap(model, include=["residual"])


def test_wrap_rejects_subclassed_unbuilt_and_non_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed.*Functional or Sequential"):
        tf_lottery.wrap(net)
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        tf_lottery.wrap(unbuilt)
    with pytest.raises(ValueError, match="keras.Model"):
        tf_lottery.wrap(keras.layers.Dense(2))
    with pytest.raises(ValueError, match="not built"):
        tf_lottery.strip(unbuilt)


def test_wrapping_a_wrapped_model_keeps_masks_and_hidden_weights():
    wrapped = tf_lottery.wrap(_sequential())
    masks = {"fc1/kernel": (np.arange(20).reshape(5, 4) % 3 == 0).astype("float32")}
    tf_lottery.set_masks(wrapped, masks)
    again = tf_lottery.wrap(wrapped)
    np.testing.assert_array_equal(tf_lottery.get_masks(again)["fc1/kernel"], masks["fc1/kernel"])
    np.testing.assert_array_equal(tf_lottery.get_masks(again)["out/kernel"], 1.0)
    for key, value in tf_lottery.get_prunable_weights(wrapped).items():
        np.testing.assert_array_equal(tf_lottery.get_prunable_weights(again)[key], value)
    x = _inputs_for(wrapped)
    np.testing.assert_array_equal(_np(again(x)), _np(wrapped(x)))


OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(0.05),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "adamw": lambda: keras.optimizers.AdamW(0.05, weight_decay=0.5),
    "sgd_weight_decay": lambda: keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=0.5),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_training_never_revives_pruned_weights_and_strip_matches(optimizer):
    keras.utils.set_random_seed(0)
    wrapped = tf_lottery.wrap(_multi_input_residual_shared_nested())
    masks = tf_lottery.prune(wrapped, rate=0.5)
    tf_lottery.set_masks(wrapped, masks)
    before = tf_lottery.get_prunable_weights(wrapped)
    # XLA training is covered in test_layers; this is the plain tf.function path.
    wrapped.compile(optimizer=OPTIMIZERS[optimizer](), loss="mse", jit_compile=False)
    rng = np.random.default_rng(1)
    x = [rng.normal(size=(32, 4)).astype("float32") for _ in range(2)]
    y = rng.normal(size=(32, 2)).astype("float32")
    wrapped.fit(x, y, batch_size=8, epochs=2, verbose=0)

    after = tf_lottery.get_prunable_weights(wrapped)
    for name, layer in tf_lottery.masked_layers(wrapped):
        effective = _np(layer.kernel) * _np(layer.kernel_mask)
        mask = masks[f"{name}/kernel"]
        assert np.all(effective[mask == 0] == 0.0)
        assert np.any(after[f"{name}/kernel"][mask == 1] != before[f"{name}/kernel"][mask == 1])
        if "weight_decay" not in optimizer and optimizer != "adamw":
            # No gradient and no decay: the hidden dense values do not move at all.
            np.testing.assert_array_equal(
                after[f"{name}/kernel"][mask == 0], before[f"{name}/kernel"][mask == 0]
            )

    plain = tf_lottery.strip(wrapped)
    assert not any(tf_lottery.is_masked(layer) for layer in _all_layers(plain))
    assert type(plain.get_layer("shared")) is keras.layers.Dense
    assert type(plain.get_layer("inner").get_layer("in1")) is keras.layers.Dense
    assert type(plain.get_layer("conv")) is keras.layers.Conv1D
    for name, layer in tf_lottery.masked_layers(wrapped):
        stripped = _layer_by_path(plain, name)
        np.testing.assert_array_equal(
            _np(stripped.kernel), _np(layer.kernel) * _np(layer.kernel_mask)
        )
    np.testing.assert_allclose(_np(plain(x)), _np(wrapped(x)), rtol=1e-5, atol=1e-6)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _layer_by_path(model, path):
    for part in path.split("/"):
        model = model.get_layer(part)
    return model


def test_strip_returns_plain_keras_layers_with_zeros():
    wrapped = tf_lottery.wrap(_sequential())
    tf_lottery.set_masks(wrapped, {"out/kernel": np.eye(4, 3)})
    plain = tf_lottery.strip(wrapped)
    assert [type(layer) for layer in plain.layers] == [
        keras.layers.Dense, keras.layers.BatchNormalization, keras.layers.Dense,
    ]
    kernel = _np(wrapped.get_layer("out").kernel)
    np.testing.assert_array_equal(_np(plain.get_layer("out").kernel), kernel * np.eye(4, 3))
    # The wrapped model keeps its masks and dense weights.
    np.testing.assert_array_equal(tf_lottery.get_masks(wrapped)["out/kernel"], np.eye(4, 3))
    assert np.count_nonzero(_np(wrapped.get_layer("out").kernel)) == 12


def test_get_set_save_load_masks_round_trip(tmp_path):
    wrapped = tf_lottery.wrap(_multi_input_residual_shared_nested())
    masks = tf_lottery.get_masks(wrapped)
    assert set(masks) == set(tf_lottery.mask_keys(wrapped))
    for key, mask in masks.items():
        assert mask.dtype == np.float32
        np.testing.assert_array_equal(mask, 1.0)
    new = {k: (RNG.random(v.shape) < 0.5).astype("float32") for k, v in masks.items()}
    tf_lottery.set_masks(wrapped, new)
    got = tf_lottery.get_masks(wrapped)
    for key in new:
        np.testing.assert_array_equal(got[key], new[key])

    path = tmp_path / "masks.npz"
    tf_lottery.save_masks(path, got)
    loaded = tf_lottery.load_masks(path)
    assert set(loaded) == set(new)
    for key in new:
        assert loaded[key].dtype == np.float32
        np.testing.assert_array_equal(loaded[key], new[key])

    # A subset may be set; other masks stay.
    other = tf_lottery.wrap(_multi_input_residual_shared_nested())
    tf_lottery.set_masks(other, {"inner/in2/kernel": loaded["inner/in2/kernel"]})
    np.testing.assert_array_equal(
        tf_lottery.get_masks(other)["inner/in2/kernel"], new["inner/in2/kernel"]
    )
    np.testing.assert_array_equal(tf_lottery.get_masks(other)["out/kernel"], 1.0)


def test_set_masks_rejects_bad_masks_before_changing_anything():
    wrapped = tf_lottery.wrap(_sequential())
    good = np.zeros((5, 4))
    bad_cases = [
        ({"fc1/kernel": good, "out/kernel": np.ones((3, 4))}, r"`masks\['out/kernel'\]`.*shape"),
        ({"fc1/kernel": good, "out/kernel": np.full((4, 3), 0.5)}, r"`masks\['out/kernel'\]`.*0 and 1"),
        ({"fc1/kernel": good, "out/kernel": np.full((4, 3), 2.0)}, r"`masks\['out/kernel'\]`.*0 and 1"),
        ({"fc1/kernel": good, "out/kernel": np.full((4, 3), np.nan)}, r"`masks\['out/kernel'\]`"),
        ({"fc1/kernel": good, "fc2/kernel": np.ones((4, 3))}, r"`masks`.*fc2/kernel"),
        ({"fc1/bias": np.ones(4)}, r"`masks`.*fc1/bias"),
    ]
    for masks, message in bad_cases:
        with pytest.raises(ValueError, match=message):
            tf_lottery.set_masks(wrapped, masks)
        # Validated as a whole: the good fc1 mask was not assigned either.
        np.testing.assert_array_equal(tf_lottery.get_masks(wrapped)["fc1/kernel"], 1.0)
    with pytest.raises(ValueError, match="`masks`"):
        tf_lottery.set_masks(wrapped, [good])
    with pytest.raises(ValueError, match="no masked layers"):
        tf_lottery.set_masks(_sequential(), {"fc1/kernel": good})
    with pytest.raises(ValueError, match="no masked layers"):
        tf_lottery.get_masks(_sequential())
    # Booleans and integers are fine 0/1 values.
    tf_lottery.set_masks(wrapped, {"fc1/kernel": np.eye(5, 4, dtype=bool)})
    np.testing.assert_array_equal(tf_lottery.get_masks(wrapped)["fc1/kernel"], np.eye(5, 4))


def test_load_masks_rejects_corrupt_files(tmp_path):
    path = tmp_path / "masks.npz"
    tf_lottery.save_masks(path, {"fc/kernel": np.ones((40, 40)), "out/kernel": np.eye(8)})
    data = path.read_bytes()
    corrupt = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "garbage": b"not a mask file " * 8,
        # Flip bytes inside the compressed payload of the first member.
        "flipped": data[:64] + bytes(b ^ 0xFF for b in data[64:128]) + data[128:],
    }
    for name, content in corrupt.items():
        bad = tmp_path / f"{name}.npz"
        bad.write_bytes(content)
        with pytest.raises(ValueError, match="Cannot read masks"):
            tf_lottery.load_masks(bad)
    # A plain .npy array is not a mask archive.
    npy = tmp_path / "array.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(ValueError, match="Cannot read masks"):
        tf_lottery.load_masks(npy)
    # An archive whose arrays are not 0/1 is not a mask file either.
    np.savez(tmp_path / "scores.npz", **{"fc/kernel": np.full((2, 2), 0.3)})
    with pytest.raises(ValueError, match="0 and 1"):
        tf_lottery.load_masks(tmp_path / "scores.npz")
    with pytest.raises(FileNotFoundError):
        tf_lottery.load_masks(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="0 and 1"):
        tf_lottery.save_masks(tmp_path / "x.npz", {"fc/kernel": np.full((2, 2), 0.3)})
    with pytest.raises(ValueError, match="npz"):
        tf_lottery.save_masks(tmp_path / "x.npy", {"fc/kernel": np.ones((2, 2))})


def test_sparsity_report_counts_by_hand():
    wrapped = tf_lottery.wrap(_sequential())  # fc1 5x4 = 20 weights, out 4x3 = 12
    fc1 = np.ones((5, 4))
    fc1[0, :] = 0  # 4 pruned
    fc1[1, 0] = 0  # 5 pruned
    out = np.zeros((4, 3))
    out[2, 1] = 1  # 1 alive of 12
    tf_lottery.set_masks(wrapped, {"fc1/kernel": fc1, "out/kernel": out})
    report = tf_lottery.sparsity_report(wrapped)
    assert list(report.layers) == ["fc1/kernel", "out/kernel"]  # no biases, no BN
    assert (report.layers["fc1/kernel"].weights, report.layers["fc1/kernel"].alive) == (20, 15)
    assert (report.layers["out/kernel"].weights, report.layers["out/kernel"].alive) == (12, 1)
    assert report.layers["fc1/kernel"].sparsity == pytest.approx(5 / 20)
    assert report.layers["out/kernel"].sparsity == pytest.approx(11 / 12)
    assert (report.weights, report.alive) == (32, 16)
    assert report.sparsity == pytest.approx(0.5)
    as_dict = report.to_dict()
    assert as_dict["alive"] == 16 and as_dict["layers"]["out/kernel"]["alive"] == 1
    assert "fc1/kernel" in str(report) and "total" in str(report)

    # A stripped model has no masks: zeros are counted instead.
    plain = tf_lottery.strip(wrapped)
    stripped = tf_lottery.sparsity_report(plain)
    assert stripped.to_dict() == as_dict
    # ... including zeros that were not pruned by a mask.
    kernel = _np(plain.get_layer("fc1").kernel).copy()
    kernel[4, :] = 0.0  # 4 more zeros
    plain.get_layer("fc1").kernel.assign(kernel)
    assert tf_lottery.sparsity_report(plain).layers["fc1/kernel"].alive == 11

    with pytest.raises(ValueError, match="no prunable layers"):
        tf_lottery.sparsity_report(
            keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
        )


def test_prunable_weights_round_trip_and_validation():
    wrapped = tf_lottery.wrap(_sequential())
    dense = tf_lottery.get_prunable_weights(wrapped)
    np.testing.assert_array_equal(dense["fc1/kernel"], _np(wrapped.get_layer("fc1").kernel))
    tf_lottery.set_masks(wrapped, {"fc1/kernel": np.zeros((5, 4))})
    # The dense values under a mask are not multiplied.
    np.testing.assert_array_equal(tf_lottery.get_prunable_weights(wrapped)["fc1/kernel"], dense["fc1/kernel"])
    tf_lottery.set_prunable_weights(wrapped, {"fc1/kernel": np.full((5, 4), 0.25)})
    np.testing.assert_array_equal(_np(wrapped.get_layer("fc1").kernel), 0.25)
    with pytest.raises(ValueError, match=r"`weights\['fc1/kernel'\]`.*shape"):
        tf_lottery.set_prunable_weights(wrapped, {"fc1/kernel": np.ones((4, 5))})
    with pytest.raises(ValueError, match="NaN"):
        tf_lottery.set_prunable_weights(wrapped, {"fc1/kernel": np.full((5, 4), np.inf)})
