"""Tests for tf_lottery.optimizers: coupled vs decoupled weight decay, gradient clipping,
pruned weights under decay, tf.distribute, and the flags that set them."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_lottery as tfl
from tf_lottery.hparams import ArgumentError, TrainingHparams
from tf_lottery.optimizers import TorchAdam, TorchSGD, build_optimizer, paper_gradients

pytestmark = pytest.mark.usefixtures("clean_keras")


def one_weight(value=1.0):
    """``y = w * x`` with one weight ``w`` (masked, all-ones mask), no bias."""
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(1, use_bias=False, name="w",
                           kernel_initializer=keras.initializers.Constant(value)),
    ])
    return tfl.wrap(model)


def train(model, training, x, y, *, steps_per_execution=100):
    """``len(x)`` iterations at batch 1 through Keras's compiled (XLA) train step."""
    optimizer, _ = build_optimizer(training, steps_per_epoch=len(x), model=model)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=True,
                  steps_per_execution=steps_per_execution)
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0)
    return optimizer


def sgd(**kwargs):
    values = dict(optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4,
                  batch_size=1, training_steps="1000it")
    values.update(kwargs)
    return TrainingHparams(**values)


@pytest.mark.parametrize("mode, expected", [("coupled", 0.906), ("decoupled", 0.990)])
def test_coupled_decay_goes_through_momentum_decoupled_does_not(mode, expected):
    # x = 0: the loss gradient is exactly zero, only the decay moves w. 1,000 steps at
    # lr 0.1, momentum 0.9, wd 1e-4. Coupled (PyTorch): v <- 0.9 v + wd w,
    # w <- w - lr v, about exp(-1000 * lr * wd / (1 - 0.9)) = exp(-0.1), 0.906 after
    # momentum's warm-up; decoupled (Keras): w <- (1 - lr wd) w, (1 - 1e-5)^1000 = 0.990.
    model = one_weight()
    optimizer = train(model, sgd(weight_decay_mode=mode), np.zeros((1000, 1), "float32"),
                      np.ones((1000, 1), "float32"))
    assert type(optimizer) is (TorchSGD if mode == "coupled" else keras.optimizers.SGD)
    w = float(model.get_layer("w").kernel.numpy()[0, 0])
    assert w == pytest.approx(expected, abs=1e-3)
    v, by_hand = 0.0, 1.0
    for _ in range(1000):
        if mode == "coupled":
            v = 0.9 * v + 1e-4 * by_hand
            by_hand -= 0.1 * v
        else:
            by_hand *= 1 - 0.1 * 1e-4
    assert w == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_coupled_decay_never_moves_pruned_weights(optimizer):
    # A masked MLP: the layers multiply the gradient by the mask, and the decay term is
    # masked too, so a pruned weight's gradient is exactly 0 and its stored value stays
    # bit for bit, while the surviving weights decay (and learn).
    keras.utils.set_random_seed(0)
    model = tfl.wrap(keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(8, activation="tanh", name="fc"),
        keras.layers.Dense(2, name="out")]))
    masks = {k: (np.arange(m.size).reshape(m.shape) % 2).astype("float32")
             for k, m in tfl.get_masks(model).items()}
    tfl.set_masks(model, masks)
    theta = model.get_weights()
    before = tfl.get_prunable_weights(model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = rng.normal(size=(64, 2)).astype("float32")
    hp = sgd(optimizer=optimizer, learning_rate=0.05, weight_decay=0.5,
             weight_decay_mode="coupled",
             **({"momentum": 0.0} if optimizer == "adam" else {}))
    train(model, hp, x, y, steps_per_execution=16)
    after = tfl.get_prunable_weights(model)
    for key, mask in masks.items():
        np.testing.assert_array_equal(after[key][mask == 0], before[key][mask == 0])
        assert np.all(after[key][mask == 1] != before[key][mask == 1]), key

    # The decay reaches the surviving weights: without it they end elsewhere.
    keras.utils.clear_session(free_memory=False)
    plain = tfl.wrap(keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(8, activation="tanh", name="fc"),
        keras.layers.Dense(2, name="out")]))
    plain.set_weights(theta)
    train(plain, dataclasses.replace(hp, weight_decay=0.0), x, y, steps_per_execution=16)
    undecayed = tfl.get_prunable_weights(plain)
    assert np.abs(undecayed["fc/kernel"] - after["fc/kernel"]).max() > 1e-3


def test_paper_gradients_clip_the_global_norm_then_add_the_decay():
    grads = [tf.constant([3.0]), tf.constant([0.0, 4.0])]  # global norm 5
    weights = [tf.Variable([2.0]), tf.Variable([1.0, -1.0])]
    mask = tf.Variable([0.0, 1.0])
    out = paper_gradients(grads, weights, weight_decay=0.1, clip_grad_norm=1.0,
                          masks=[None, mask])
    np.testing.assert_allclose(out[0].numpy(), [3 / 5 + 0.1 * 2.0], rtol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), [0.0, 4 / 5 - 0.1], rtol=1e-6)
    below = paper_gradients(grads, weights, clip_grad_norm=10.0)  # norm 5 < 10: unchanged
    np.testing.assert_array_equal(below[1].numpy(), [0.0, 4.0])


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_clip_grad_norm_bounds_the_update_of_one_weight(mode):
    # w = 1, x = 10, y = 0: the mse gradient is 2 * 10w * 10 = 200. Clipped to norm 1,
    # plain SGD at lr 0.1 moves w by 0.1 (and coupled decay 0.5 adds 0.1 * 0.5 * w after
    # the clipping, as PyTorch's clip_grad_norm_ then SGD.step do); unclipped it would
    # move by 20.
    model = one_weight()
    hp = sgd(momentum=0.0, weight_decay=0.5, weight_decay_mode=mode, clip_grad_norm=1.0)
    optimizer = train(model, hp, np.full((1, 1), 10.0, "float32"), np.zeros((1, 1), "float32"),
                      steps_per_execution=1)
    assert type(optimizer) is TorchSGD
    w = float(model.get_layer("w").kernel.numpy()[0, 0])
    expected = 1 - 0.1 * (1 + 0.5) if mode == "coupled" else (1 - 0.1 * 0.5) - 0.1
    assert w == pytest.approx(expected, rel=1e-6)


def test_build_optimizer_kinds_and_errors():
    model = one_weight()
    plain, _ = build_optimizer(sgd(), 10, model=model)
    assert type(plain) is keras.optimizers.SGD and plain.weight_decay == pytest.approx(1e-4)
    adam, _ = build_optimizer(sgd(optimizer="adam", momentum=0.0, weight_decay_mode="coupled"),
                              10, model=model)
    assert type(adam) is TorchAdam and adam.weight_decay is None
    assert adam.coupled_weight_decay == pytest.approx(1e-4)
    assert adam.get_config()["coupled_weight_decay"] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="`model` is needed for weight_decay_mode='coupled'"):
        build_optimizer(sgd(weight_decay_mode="coupled"), 10)
    with pytest.raises(ArgumentError, match="`weight_decay_mode` must be one of") as err:
        sgd(weight_decay_mode="l2")
    assert err.value.argument == "weight_decay_mode"
    for bad in (0, -1.0, float("inf"), "1"):
        with pytest.raises(ArgumentError, match="`clip_grad_norm`"):
            sgd(clip_grad_norm=bad)


def test_new_fields_stay_out_of_the_hash_while_default():
    from tf_lottery.hparams import (
        DatasetHparams,
        ExperimentHparams,
        ModelHparams,
        PruningHparams,
    )

    def experiment(training):
        return ExperimentHparams(ModelHparams("lenet_300_100"), DatasetHparams("synthetic"),
                                 training, PruningHparams())

    base = experiment(sgd())
    training = base.to_dict()["training"]
    assert "weight_decay_mode" not in training and "clip_grad_norm" not in training
    changed = experiment(sgd(weight_decay_mode="coupled", clip_grad_norm=1))
    stored = changed.to_dict()["training"]
    assert stored["weight_decay_mode"] == "coupled" and stored["clip_grad_norm"] == 1.0
    assert changed.run_name() != base.run_name()
    assert ExperimentHparams.from_dict(json.loads(json.dumps(changed.to_dict()))) == changed
    assert ExperimentHparams.from_dict(base.to_dict()) == base


@pytest.fixture
def experiment_flags():
    from tf_lottery.cli import experiment_flags as ef

    def parse(*args):
        ef.FLAGS.unparse_flags()
        ef.FLAGS(["tf-lottery", "--dataset=synthetic", *args])
        return ef

    yield parse
    ef.FLAGS.unparse_flags()


def test_flags_reach_the_training_hparams(experiment_flags):
    from tf_lottery.cli.errors import UsageError

    ef = experiment_flags("--optimizer=sgd", "--weight_decay=1e-4",
                          "--weight_decay_mode=coupled", "--clip_grad_norm=1")
    training = ef.hparams().training
    assert training.weight_decay_mode == "coupled" and training.clip_grad_norm == 1.0
    text = ef.flagfile_text()
    assert "--weight_decay_mode=coupled" in text and "--clip_grad_norm=1.0" in text
    training = experiment_flags("--clip_grad_norm=1", "--clip_grad_norm=none").hparams().training
    assert training.weight_decay_mode == "decoupled" and training.clip_grad_norm is None
    with pytest.raises(UsageError, match="--clip_grad_norm"):
        experiment_flags("--clip_grad_norm=0").hparams()


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np, tf_lottery
    from tf_lottery.hparams import TrainingHparams
    from tf_lottery.optimizers import build_optimizer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = (10 * rng.normal(size=(32, 2))).astype("float32")  # large gradients: clipped
    hp = TrainingHparams(optimizer="sgd", learning_rate=0.05, momentum=0.9,
                         weight_decay=0.05, weight_decay_mode="coupled",
                         clip_grad_norm=1.0, batch_size=8, training_steps="8it")

    def run(strategy, keras_clip=False):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = tf_lottery.wrap(keras.Sequential([
                keras.Input((4,)), keras.layers.Dense(8, activation="tanh", name="fc"),
                keras.layers.Dense(2, name="out")]))
            masks = {k: (np.arange(v.size).reshape(v.shape) % 2).astype("float32")
                     for k, v in tf_lottery.get_masks(model).items()}
            tf_lottery.set_masks(model, masks)
            before = tf_lottery.get_prunable_weights(model)
            if keras_clip:
                optimizer = keras.optimizers.SGD(0.05, momentum=0.9, global_clipnorm=1.0)
            else:
                optimizer, _ = build_optimizer(hp, 4, model=model)
            model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        after = tf_lottery.get_prunable_weights(model)
        pruned_kept = all(bool((after[k][m == 0] == before[k][m == 0]).all())
                          for k, m in masks.items())
        return model.get_weights(), pruned_kept

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    ours_2, kept = run(mirrored)
    ours_1, _ = run(one)
    keras_2, _ = run(mirrored, keras_clip=True)
    keras_1, _ = run(one, keras_clip=True)
    diff = lambda a, b: max(float(np.abs(u - v).max()) for u, v in zip(a, b))
    print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "pruned_kept": kept,
                      "ours": diff(ours_2, ours_1), "keras": diff(keras_2, keras_1)}))
    """
)


def test_two_replicas_decay_once_and_clip_the_global_gradient():
    # Under MirroredStrategy the decay and the clipping act on the gradient summed over
    # the replicas: two replicas train to the weights one device does. (Keras's own
    # global_clipnorm clips each replica's half, and does not.)
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["pruned_kept"], report
    assert report["ours"] < 1e-5, report
    assert report["keras"] > 1e-3, report
