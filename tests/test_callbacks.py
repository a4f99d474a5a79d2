"""tf_lottery.callbacks: IMP inside model.fit (LotteryTicket) and TensorBoard sparsity
summaries (SparsitySummaries), on a 4-8-3 Dense net: fc1 has 32 kernel weights and
output 24, so the sparsity ladder can be counted by hand."""

import glob

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_lottery
from tf_lottery.callbacks import LotteryTicket, SparsitySummaries

pytestmark = pytest.mark.usefixtures("clean_keras")

STEPS = 3  # batches per epoch: 48 examples, batch 16


def _plain():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu", name="fc1",
                           kernel_initializer=keras.initializers.GlorotNormal(seed=1))(inputs)
    outputs = keras.layers.Dense(3, name="output",
                                 kernel_initializer=keras.initializers.GlorotNormal(seed=2))(x)
    return keras.Model(inputs, outputs)


def _compiled(model):
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _wrapped():
    return _compiled(tf_lottery.wrap(_plain()))


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16 * STEPS, 4)).astype("float32")
    return x, np.argmax(x[:, :3], axis=1).astype("int32")


def _fit(model, callbacks, epochs):
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0,
              callbacks=callbacks)


def _moments(optimizer):
    return [v.numpy() for v in optimizer.variables
            if "momentum" in v.path or "velocity" in v.path]


class _Hook(keras.callbacks.Callback):
    def __init__(self, **hooks):
        super().__init__()
        for name, fn in hooks.items():
            setattr(self, name, fn)


def test_sparsity_ladder_matches_repeated_prune_of_the_trained_weights():
    model = _wrapped()
    lottery = LotteryTicket(rate=0.5, levels=2, epochs_per_level=1)
    expected, got = [], []
    before = _Hook(on_epoch_end=lambda epoch, logs=None: expected.append(
        tf_lottery.prune(model, rate=0.5)))
    after = _Hook(on_epoch_end=lambda epoch, logs=None: got.append(tf_lottery.get_masks(model)))
    _fit(model, [before, lottery, after], epochs=3)

    assert [h["level"] for h in lottery.history] == [1, 2]
    assert [h["epoch"] for h in lottery.history] == [0, 1]
    assert [h["sparsity"] for h in lottery.history] == [0.5, 0.75]
    for h in lottery.history:
        assert set(h["masks_sparsity_per_layer"].values()) == {h["sparsity"]}
    # Level l keeps (1 - 0.5) ** l of each layer: fc1 32 -> 16 -> 8, output 24 -> 12 -> 6.
    alive = [{k: int(m.sum()) for k, m in masks.items()} for masks in got]
    assert alive == [{"fc1/kernel": 16, "output/kernel": 12},
                     {"fc1/kernel": 8, "output/kernel": 6},
                     {"fc1/kernel": 8, "output/kernel": 6}]  # epoch 3 trains level 2
    for level in range(2):  # the masks are those prune gives on the weights just trained
        for key in got[level]:
            np.testing.assert_array_equal(got[level][key], expected[level][key])
    for key in got[0]:  # pruned weights stay pruned
        assert np.all(got[1][key] <= got[0][key])


def test_level_switch_rewinds_weights_and_resets_the_optimizer():
    model = _wrapped()
    start = model.get_weights()
    start_kernels = tf_lottery.get_prunable_weights(model)
    seen = []

    def before(epoch, logs=None):
        assert int(model.optimizer.iterations.numpy()) == STEPS  # counted from the reset
        assert any(np.any(m) for m in _moments(model.optimizer))

    def after(epoch, logs=None):
        if epoch >= 2:
            return
        seen.append(epoch)
        assert int(model.optimizer.iterations.numpy()) == 0
        assert not any(np.any(m) for m in _moments(model.optimizer))
        masks = tf_lottery.get_masks(model)
        for key, kernel in tf_lottery.get_prunable_weights(model).items():
            np.testing.assert_array_equal(kernel, start_kernels[key])
            effective = kernel * masks[key]
            np.testing.assert_array_equal(effective, start_kernels[key] * masks[key])
            assert np.count_nonzero(effective) == masks[key].sum()
        for name in ("fc1", "output"):  # biases are rewound too
            np.testing.assert_array_equal(model.get_layer(name).bias.numpy(), 0.0)

    lottery = LotteryTicket(rate=0.5, levels=2, epochs_per_level=1)
    _fit(model, [_Hook(on_epoch_end=before), lottery, _Hook(on_epoch_end=after)], epochs=3)
    assert seen == [0, 1]
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), start))


def test_rewind_iteration_k_restores_step_k_weights_and_counter():
    model = _wrapped()
    at_k, checked = {}, []

    def record(batch, logs=None):
        if int(model.optimizer.iterations.numpy()) == 2 and not at_k:
            at_k.update(tf_lottery.get_prunable_weights(model))

    def check(epoch, logs=None):
        if epoch == 0:
            checked.append(epoch)
            assert int(model.optimizer.iterations.numpy()) == 2
            assert not any(np.any(m) for m in _moments(model.optimizer))
            for key, kernel in tf_lottery.get_prunable_weights(model).items():
                np.testing.assert_array_equal(kernel, at_k[key])

    lottery = LotteryTicket(rate=0.5, levels=1, epochs_per_level=1, rewind_iteration=2)
    _fit(model, [_Hook(on_train_batch_end=record), lottery, _Hook(on_epoch_end=check)],
         epochs=2)
    assert at_k and checked == [0] and lottery.history[0]["sparsity"] == 0.5


def test_pruned_weights_stay_exactly_zero_while_training():
    model = _wrapped()
    state = {}

    def watch(batch, logs=None):
        if "masks" not in state:
            return
        masks = tf_lottery.get_masks(model)
        kernels = tf_lottery.get_prunable_weights(model)
        for key, mask in masks.items():
            np.testing.assert_array_equal(mask, state["masks"][key])
            pruned = mask == 0
            # Zero gradient and a reset Adam: the value under a pruned entry never moves.
            np.testing.assert_array_equal(kernels[key][pruned], state["kernels"][key][pruned])
            assert not np.array_equal(kernels[key][~pruned], state["kernels"][key][~pruned])
        state["batches"] = state.get("batches", 0) + 1

    def level_start(epoch, logs=None):
        state["masks"] = tf_lottery.get_masks(model)
        state["kernels"] = tf_lottery.get_prunable_weights(model)

    lottery = LotteryTicket(rate=0.5, levels=2, epochs_per_level=1)
    _fit(model, [lottery, _Hook(on_epoch_end=level_start, on_train_batch_end=watch)],
         epochs=3)
    assert state["batches"] == 2 * STEPS
    plain = tf_lottery.strip(model)
    for key, mask in tf_lottery.get_masks(model).items():
        kernel = plain.get_layer(key.split("/")[0]).kernel.numpy()
        assert np.all(kernel[mask == 0] == 0.0) and np.all(kernel[mask == 1] != 0.0)
    x, _ = _data()
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


def _scalars(log_dir):
    values = {}
    for path in glob.glob(f"{log_dir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, {})[event.step] = float(
                    tf.make_ndarray(value.tensor))
    return values


def test_sparsity_summaries_write_readable_scalars(tmp_path):
    model = _wrapped()
    lottery = LotteryTicket(rate=0.5, levels=2, epochs_per_level=1)
    _fit(model, [lottery, SparsitySummaries(tmp_path)], epochs=3)
    ladder = {0: 0.5, 1: 0.75, 2: 0.75}
    assert _scalars(tmp_path) == {
        "sparsity/fc1/kernel": ladder, "sparsity/output/kernel": ladder,
        "sparsity/total": ladder}


def test_sparsity_summaries_of_a_plain_model_count_zeros(tmp_path):
    model = _plain()
    kernel = model.get_layer("fc1").kernel
    kernel.assign(np.where(np.arange(32).reshape(4, 8) < 8, 0.0, kernel.numpy()))
    model.compile(optimizer=keras.optimizers.SGD(0.0),  # the weights do not move
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _fit(model, [SparsitySummaries(str(tmp_path))], epochs=1)
    assert _scalars(tmp_path) == {"sparsity/fc1/kernel": {0: 0.25},
                                  "sparsity/output/kernel": {0: 0.0},
                                  "sparsity/total": {0: np.float32(8 / 56)}}  # float32


@pytest.mark.parametrize("kwargs, match", [
    (dict(rate=1.5), r"(?s)`rate` must be in \[0, 1\).*received 1.5"),
    (dict(rate="0.2"), r"`rate` must be a number"),
    (dict(levels=0), r"`levels` must be an integer >= 1; received levels=0"),
    (dict(levels=2.0), r"levels=2.0"),
    (dict(epochs_per_level=0), r"epochs_per_level=0"),
    (dict(rewind_iteration=-1), r"rewind_iteration=-1"),
    (dict(scope="local"), r"`scope` must be one of .*scope='local'"),
    (dict(criterion="weight"), r"`criterion` must be one of .*criterion='weight'"),
    (dict(criterion="snip"), r"criterion='snip' needs training data"),
    (dict(output_rate=1.0), r"`output_rate` must be in \[0, 1\)"),
    (dict(output_rate=0.1, scope="global"), r"scope='layerwise' only"),
    (dict(exclude=[3]), r"exclude=\[3\]"),
    (dict(seed=-2), r"seed=-2"),
])
def test_bad_arguments_fail_at_construction(kwargs, match):
    args = dict(rate=0.5, levels=2, epochs_per_level=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LotteryTicket(**args)


def test_bad_log_dir():
    with pytest.raises(ValueError, match="log_dir=''"):
        SparsitySummaries("")


def test_model_without_masks_is_refused_naming_wrap():
    model = _compiled(_plain())
    with pytest.raises(ValueError, match=r"tf_lottery\.wrap"):
        _fit(model, [LotteryTicket(0.5, 1, 1)], epochs=2)


def test_unknown_exclude_and_late_rewind_fail_before_training():
    model = _wrapped()
    with pytest.raises(ValueError, match="`exclude` names 'fc9'"):
        _fit(model, [LotteryTicket(0.5, 1, 1, exclude="fc9")], epochs=2)
    with pytest.raises(ValueError, match=r"rewind_iteration`=4 is past level 0.*3 steps"):
        _fit(model, [LotteryTicket(0.5, 1, 1, rewind_iteration=4)], epochs=2)
    assert int(model.optimizer.iterations.numpy()) == 0


def test_too_few_epochs_warns_and_never_prunes_at_the_end_of_fit():
    model = _wrapped()
    lottery = LotteryTicket(rate=0.5, levels=3, epochs_per_level=1)
    with pytest.warns(UserWarning, match=r"needs fit\(epochs=4\).*only levels 1..1 are pruned"):
        _fit(model, [lottery], epochs=2)
    assert [h["level"] for h in lottery.history] == [1]  # not pruned again after epoch 2
    assert tf_lottery.sparsity_report(model).sparsity == 0.5


def test_exclude_and_output_rate():
    model = _wrapped()
    lottery = LotteryTicket(rate=0.5, levels=1, epochs_per_level=1, exclude="output")
    _fit(model, [lottery], epochs=2)
    assert lottery.history[0]["masks_sparsity_per_layer"] == {
        "fc1/kernel": 0.5, "output/kernel": 0.0}
    model = _wrapped()
    lottery = LotteryTicket(rate=0.5, levels=1, epochs_per_level=1, output_rate=0.25)
    _fit(model, [lottery], epochs=2)
    assert lottery.history[0]["masks_sparsity_per_layer"] == {
        "fc1/kernel": 0.5, "output/kernel": 0.25}
