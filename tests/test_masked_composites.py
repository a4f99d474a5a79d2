"""Masking composite layers (attention, recurrent, wrappers, custom): MaskedWrapper, and
the warnings that name every weight matrix left dense."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_lottery as tfl
from tf_lottery.masked_wrapper import MaskedWrapper, prunable_variables
from tf_lottery.unmasked import UnmaskedWeightsWarning

pytestmark = pytest.mark.usefixtures("clean_keras")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(4, 5, 6)).astype("float32")  # (batch, time, features)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _model(kind):
    """A tiny model with one composite layer ``c`` on (5, 6) sequences, and a Dense head.

    Returns the model and the expected mask keys with their shapes.
    """
    inp = keras.Input((5, 6))
    if kind == "mha":
        layer = keras.layers.MultiHeadAttention(2, 3, name="c")
        x = keras.layers.GlobalAveragePooling1D()(layer(inp, inp))
        keys = {"c/query/kernel": (6, 2, 3), "c/key/kernel": (6, 2, 3),
                "c/value/kernel": (6, 2, 3), "c/attention_output/kernel": (2, 3, 6)}
    elif kind in ("lstm", "gru", "simple_rnn"):
        cls = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU,
               "simple_rnn": keras.layers.SimpleRNN}[kind]
        x = cls(4, name="c")(inp)
        gates = {"lstm": 4, "gru": 3, "simple_rnn": 1}[kind]
        cell = f"c/{kind}_cell"
        keys = {f"{cell}/kernel": (6, 4 * gates), f"{cell}/recurrent_kernel": (4, 4 * gates)}
    elif kind == "bidi":
        x = keras.layers.Bidirectional(keras.layers.LSTM(3), name="c")(inp)
        keys = {f"c/{d}_lstm/lstm_cell/{w}": shape
                for d in ("forward", "backward")
                for w, shape in (("kernel", (6, 12)), ("recurrent_kernel", (3, 12)))}
    else:
        assert kind == "time_distributed"
        x = keras.layers.TimeDistributed(keras.layers.Dense(2, name="d"), name="c")(inp)
        x = keras.layers.Flatten()(x)
        keys = {"c/d/kernel": (6, 2)}
    out = keras.layers.Dense(3, name="out")(x)
    keys["out/kernel"] = (int(x.shape[-1]), 3)
    return keras.Model(inp, out), keys


KINDS = ["mha", "lstm", "gru", "simple_rnn", "bidi", "time_distributed"]


@pytest.mark.parametrize("kind", KINDS)
def test_wrap_masks_every_weight_matrix_and_keeps_outputs(kind):
    model, expected = _model(kind)
    wrapped = tfl.wrap(model)
    assert tfl.mask_keys(wrapped) == list(expected)
    assert {k: m.shape for k, m in tfl.get_masks(wrapped).items()} == expected
    assert isinstance(wrapped.get_layer("c"), MaskedWrapper)
    assert wrapped.get_layer("c").masked_base is type(model.get_layer("c"))
    np.testing.assert_allclose(_np(wrapped(X)), _np(model(X)), atol=1e-6)
    report = tfl.sparsity_report(wrapped)
    assert report.weights == sum(int(np.prod(s)) for s in expected.values())
    assert report.unmasked == {}
    # Biases stay dense; the original model is untouched.
    assert not any("bias" in key for key in expected)
    assert not any(tfl.is_masked(layer) for layer in model.layers)


def _effective(stripped, key):
    """The value of mask key ``key`` in a stripped model (the inner layer's variable)."""
    layer_name, weight = key.split("/", 1)
    return _np(prunable_variables(stripped.get_layer(layer_name))[weight])


@pytest.mark.parametrize("kind", KINDS)
def test_pruned_weights_stay_zero_through_jit_training_and_strip(kind):
    model, expected = _model(kind)
    wrapped = tfl.wrap(model)
    masks = tfl.prune(wrapped, rate=0.5)
    for key, mask in masks.items():
        assert mask.sum() == mask.size - round(0.5 * mask.size)
    tfl.set_masks(wrapped, masks)
    before = tfl.get_prunable_weights(wrapped)
    wrapped.compile(keras.optimizers.Adam(0.05), "mse", jit_compile=True)
    y = RNG.normal(size=(4, 3)).astype("float32")
    wrapped.fit(X, y, epochs=3, batch_size=2, verbose=0)
    after = tfl.get_prunable_weights(wrapped)
    stripped = tfl.strip(wrapped)
    for key, mask in masks.items():
        pruned = mask == 0
        # No gradient reaches a pruned entry, so Adam never moves its hidden value ...
        np.testing.assert_array_equal(after[key][pruned], before[key][pruned])
        # ... while the surviving ones train.
        assert np.any(after[key][~pruned] != before[key][~pruned]), key
        # The stripped model holds exact zeros there and the trained values elsewhere.
        effective = _effective(stripped, key)
        assert np.all(effective[pruned] == 0.0)
        np.testing.assert_array_equal(effective[~pruned], after[key][~pruned])
    assert not any(tfl.is_masked(layer) for layer in stripped.layers)
    np.testing.assert_allclose(_np(stripped(X)), _np(wrapped(X)), atol=1e-5)


def test_masked_forward_equals_zeroed_weights_and_gradient_is_zero_when_pruned():
    model, _ = _model("mha")
    wrapped = tfl.wrap(model)
    masks = tfl.prune(wrapped, rate=0.5, criterion="random", seed=1)
    tfl.set_masks(wrapped, masks)
    # Zeroing the pruned weights of the plain model by hand gives the same outputs.
    layer = model.get_layer("c")
    for weight, variable in prunable_variables(layer).items():
        variable.assign(_np(variable) * masks[f"c/{weight}"])
    model.get_layer("out").kernel.assign(_np(model.get_layer("out").kernel) * masks["out/kernel"])
    np.testing.assert_allclose(_np(wrapped(X)), _np(model(X)), atol=1e-6)

    inner = wrapped.get_layer("c")
    variables = [inner.dense_weight(w).value for w in inner.prunable_weights]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(wrapped(X) ** 2)
    grads = tape.gradient(loss, variables)
    for name, grad in zip(inner.prunable_weights, grads):
        mask = masks[f"c/{name}"]
        assert np.all(_np(grad)[mask == 0] == 0.0)
        assert np.any(_np(grad)[mask == 1] != 0.0)


def test_keras_file_round_trip_keeps_masks_and_outputs(tmp_path):
    inp = keras.Input((5, 6))
    x = keras.layers.MultiHeadAttention(2, 3, name="mha")(inp, inp)
    x = keras.layers.Bidirectional(keras.layers.LSTM(3), name="bidi")(x)
    wrapped = tfl.wrap(keras.Model(inp, keras.layers.Dense(3, name="out")(x)))
    tfl.set_masks(wrapped, tfl.prune(wrapped, rate=0.5))
    path = tmp_path / "m.keras"
    wrapped.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    assert isinstance(loaded.get_layer("mha"), MaskedWrapper)
    assert tfl.mask_keys(loaded) == tfl.mask_keys(wrapped)
    for key, mask in tfl.get_masks(wrapped).items():
        np.testing.assert_array_equal(tfl.get_masks(loaded)[key], mask)
        np.testing.assert_array_equal(tfl.get_prunable_weights(loaded)[key],
                                      tfl.get_prunable_weights(wrapped)[key])
    np.testing.assert_allclose(_np(loaded(X)), _np(wrapped(X)), atol=1e-6)


def test_issue_example_masks_attention_and_lstm():
    inp = keras.Input((16, 32))
    x = keras.layers.MultiHeadAttention(4, 8, name="mha")(inp, inp)
    x = keras.layers.LSTM(16, name="lstm")(x)
    model = keras.Model(inp, keras.layers.Dense(10, name="out")(x))
    report = tfl.sparsity_report(tfl.wrap(model))
    # 4 projections of 32*4*8 = 1024, LSTM 32x64 + 16x64, head 16x10.
    assert report.weights == 4 * 1024 + 2048 + 1024 + 160
    masked_layers = {key.split("/")[0] for key in report.layers}
    assert masked_layers == {"mha", "lstm", "out"}
    non_bias = sum(int(np.prod(w.shape)) for w in model.trainable_weights if len(w.shape) >= 2
                   and not w.name.endswith("bias"))
    assert report.weights == non_bias
    assert report.weights / model.count_params() > 0.95


def test_attention_dropout_draws_new_patterns_each_step():
    inp = keras.Input((5, 6))
    x = keras.layers.MultiHeadAttention(2, 3, dropout=0.5, name="mha")(inp, inp)
    wrapped = tfl.wrap(keras.Model(inp, x))
    first, second = wrapped(X, training=True), wrapped(X, training=True)
    assert np.abs(_np(first) - _np(second)).max() > 1e-3
    # Inference is deterministic and matches the unmasked layer.
    np.testing.assert_array_equal(_np(wrapped(X)), _np(wrapped(X)))

    @tf.function(jit_compile=True)
    def step(x):
        return wrapped(x, training=True)

    assert np.abs(_np(step(X)) - _np(step(X))).max() > 1e-3


def test_prune_selects_nested_keys_by_layer_name():
    model, expected = _model("bidi")
    wrapped = tfl.wrap(model)
    masks = tfl.prune(wrapped, rate=0.5, exclude=["c"])
    assert all(masks[k].all() for k in expected if k.startswith("c/"))
    assert not masks["out/kernel"].all()
    masks = tfl.prune(wrapped, rate=0.5, layer_rates={"c/forward_lstm": 0.0})
    assert all(masks[k].all() for k in expected if k.startswith("c/forward_lstm/"))
    assert not masks["c/backward_lstm/lstm_cell/kernel"].all()


def test_wrong_mask_shape_for_an_attention_kernel_is_refused():
    wrapped = tfl.wrap(_model("mha")[0])
    with pytest.raises(ValueError, match=r"c/query/kernel.*shape \(6, 6\).*\(6, 2, 3\)"):
        tfl.set_masks(wrapped, {"c/query/kernel": np.ones((6, 6))})


class Scaled(keras.layers.Layer):
    """Holds a (4, units) matrix; get_config misses the required `scale`, so it cannot
    be rebuilt from its config."""

    def __init__(self, units, scale, **kwargs):
        super().__init__(**kwargs)
        self.units, self.scale = units, scale

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1], self.units))

    def call(self, x):
        return self.scale * keras.ops.matmul(x, self.w)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class Block(keras.layers.Layer):
    """A rebuildable custom layer: a Dense sublayer and its own (units, units) matrix."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.proj = keras.layers.Dense(units, name="proj")

    def build(self, input_shape):
        self.proj.build(input_shape)
        self.mix = self.add_weight(name="mix", shape=(self.units, self.units))
        self.gain = self.add_weight(name="gain", shape=(self.units,))

    def call(self, x):
        return keras.ops.matmul(self.proj(x), self.mix) * self.gain

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_rebuildable_custom_layer_is_wrapped():
    inp = keras.Input((4,))
    model = keras.Model(inp, Block(3, name="block")(inp))
    wrapped = tfl.wrap(model)
    assert tfl.mask_keys(wrapped) == ["block/mix", "block/proj/kernel"]  # own ones first
    x = RNG.normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(_np(wrapped(x)), _np(model(x)), atol=1e-6)
    tfl.set_masks(wrapped, {"block/mix": np.zeros((3, 3))})
    np.testing.assert_array_equal(_np(wrapped(x)), 0.0)


def test_unmaskable_custom_layer_is_named_in_warnings_and_report():
    inp = keras.Input((4,))
    x = Scaled(6, 2.0, name="scaled")(inp)  # 4x6 = 24 weights
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(x))  # 6x2 + 2 = 14
    with pytest.warns(UnmaskedWeightsWarning,
                      match=r"63\.2% of the model's 38 weights stay dense.*scaled/w \(4, 6\): "
                            r"24 weights \(63\.2%\).*cannot be rebuilt.*scale"):
        wrapped = tfl.wrap(model)
    assert tfl.mask_keys(wrapped) == ["out/kernel"]
    x = RNG.normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(_np(wrapped(x)), _np(model(x)), atol=1e-6)
    report = tfl.sparsity_report(wrapped)
    assert report.unmasked == {"scaled/w": 24}
    assert report.weights == 12
    assert "scaled/w" in str(report) and "dense" in str(report)
    with pytest.warns(UnmaskedWeightsWarning, match=r"tf_lottery\.prune.*scaled/w \(4, 6\)"):
        tfl.prune(wrapped, rate=0.5)
    # strip keeps the layer it could not rebuild.
    np.testing.assert_allclose(_np(tfl.strip(wrapped)(x)), _np(wrapped(x)), atol=1e-6)
    # Left out on purpose: no warning from wrap or prune, still listed as dense.
    kept = tfl.wrap(model, exclude=["scaled"])
    assert kept.get_layer("scaled") is model.get_layer("scaled")  # cannot be copied
    assert tfl.sparsity_report(kept).unmasked == {"scaled/w": 24}
    tfl.prune(kept, rate=0.5)


def test_layers_left_out_on_purpose_are_reported_but_not_warned_about():
    model, _ = _model("lstm")
    wrapped = tfl.wrap(model, exclude=["c"])  # no warning (pytest makes it an error)
    assert tfl.mask_keys(wrapped) == ["out/kernel"]
    assert tfl.sparsity_report(wrapped).unmasked == {
        "c/lstm_cell/kernel": 6 * 16, "c/lstm_cell/recurrent_kernel": 4 * 16}
    tfl.prune(wrapped, rate=0.5)  # no warning either
    assert tfl.mask_keys(tfl.wrap(model, include=["c"])) == [
        "c/lstm_cell/kernel", "c/lstm_cell/recurrent_kernel"]


def test_model_without_anything_to_mask_is_refused():
    inp = keras.Input((4,))
    only_custom = keras.Model(inp, Scaled(3, 2.0, name="scaled")(inp))
    with pytest.raises(ValueError, match=r"nothing tf_lottery.wrap can mask.*'scaled'.*"
                                         r"\(4, 3\).*cannot be rebuilt"):
        tfl.wrap(only_custom)
    norm_only = keras.Model(inp, keras.layers.LayerNormalization()(inp))
    with pytest.raises(ValueError, match="no weights with two or more dimensions"):
        tfl.wrap(norm_only)


def test_state_updated_inside_the_wrapped_layer_is_kept():
    # A stateful RNN carries its state (an untracked variable) from call to call.
    inp = keras.Input((5, 6), batch_size=4)
    model = keras.Model(inp, keras.layers.SimpleRNN(3, stateful=True, name="rnn")(inp))
    wrapped = tfl.wrap(model)
    first, second = _np(wrapped(X)), _np(wrapped(X))
    model.get_layer("rnn").reset_states()
    np.testing.assert_allclose(first, _np(model(X)), atol=1e-6)
    np.testing.assert_allclose(second, _np(model(X)), atol=1e-6)
    assert np.abs(first - second).max() > 1e-3


def test_keras_masks_from_an_embedding_reach_the_wrapped_lstm():
    inp = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(10, 4, mask_zero=True, name="emb")(inp)
    model = keras.Model(inp, keras.layers.LSTM(3, name="lstm")(x))
    wrapped = tfl.wrap(model)
    assert tfl.mask_keys(wrapped) == ["emb/embeddings", "lstm/lstm_cell/kernel",
                                      "lstm/lstm_cell/recurrent_kernel"]
    tokens = np.array([[1, 2, 0, 0, 0], [3, 4, 5, 0, 0]])
    np.testing.assert_allclose(_np(wrapped(tokens)), _np(model(tokens)), atol=1e-6)
    # Padding is skipped: the final state is that of the unpadded prefix.
    lstm, emb = wrapped.get_layer("lstm"), wrapped.get_layer("emb")
    prefix = _np(lstm(emb(tokens[1:, :3])))
    np.testing.assert_allclose(_np(wrapped(tokens))[1:], prefix, atol=1e-6)
