"""The tfmot bridge: tf_keras twins, the GMP baseline, prune-preserving QAT export."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tf_lottery as tfl
from tf_lottery import data, experiment, export, files, main, models, paths, tfmot_bridge  # noqa: F401, E501 (main: lazy)
from tf_lottery import training as training_lib
from tf_lottery.hparams import (
    DatasetHparams,
    ExperimentHparams,
    ModelHparams,
    PruningHparams,
    TrainingHparams,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = data.load("synthetic")
TFMOT_LOADED_AT_IMPORT = {"tensorflow_model_optimization", "tf_keras"} & set(sys.modules)


def keras_logits(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, -1) == labels))


def test_tfmot_is_imported_lazily():
    # Recorded when pytest imported this module, before any test could load tfmot:
    # importing tf_lottery, its export module, the bridge and the CLI must not load it.
    assert not TFMOT_LOADED_AT_IMPORT


def _randomize_batch_norm(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])


def _residual(seed=1):
    """A small residual block as the model zoo builds them (conv, BN, ReLU, Add, GAP)."""
    init = keras.initializers.GlorotNormal(seed)
    inputs = keras.Input(DATA.input_shape, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, kernel_initializer=init,
                            name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    shortcut = keras.layers.Activation("relu", name="relu1")(x)
    y = keras.layers.Conv2D(8, 3, strides=1, padding="same", kernel_initializer=init,
                            name="conv2")(shortcut)
    y = keras.layers.BatchNormalization(name="bn2")(y)
    x = keras.layers.Add(name="add")([y, shortcut])
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(DATA.num_classes, name="output")(x)
    return keras.Model(inputs, outputs, name="mini_resnet")


def test_twin_of_a_pruned_residual_network_gives_the_same_outputs():
    model = _residual()
    _randomize_batch_norm(model)
    masked = tfl.wrap(model)
    tfl.set_masks(masked, tfl.prune(masked, rate=0.5))
    twin = tfmot_bridge.to_tf_keras(masked)
    x = DATA.x_test[:16]
    np.testing.assert_allclose(twin(x, training=False).numpy(), keras_logits(masked, x),
                               atol=1e-5, rtol=0)
    assert [layer.name for layer in twin.layers if layer.weights] == [
        layer.name for layer in model.layers if layer.weights]
    kernel = twin.get_layer("conv2").kernel.numpy()
    assert np.array_equal(kernel == 0, tfl.get_masks(masked)["conv2/kernel"] == 0)


def test_twin_of_a_sequential_model_with_every_other_layer_type():
    model = keras.Sequential([
        keras.Input(DATA.input_shape),
        keras.layers.Conv2D(4, 3, padding="same", name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(max_value=6.0, name="relu6"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(16, name="fc"),
        keras.layers.Activation("tanh", name="tanh"),
        keras.layers.Dropout(0.5, name="dropout"),
        keras.layers.Dense(DATA.num_classes, name="output"),
    ])
    _randomize_batch_norm(model, seed=2)
    twin = tfmot_bridge.to_tf_keras(model)
    x = DATA.x_test[:16]
    np.testing.assert_allclose(twin(x, training=False).numpy(), keras_logits(model, x),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["lenet_300_100", "conv2", "resnet20"])
def test_twin_of_a_model_zoo_ticket_has_its_weights_and_outputs(name):
    model = models.build_model(name, DATA.input_shape, DATA.num_classes, seed=4)
    _randomize_batch_norm(model, seed=3)
    masked = tfl.wrap(model)
    tfl.set_masks(masked, tfl.prune(masked, rate=0.7))
    stripped = tfl.strip(masked)
    twin = tfmot_bridge.to_tf_keras(masked)
    assert type(twin).__module__.startswith("tf_keras")
    for layer in stripped.layers:
        values = [keras.ops.convert_to_numpy(w) for w in layer.weights]
        twin_values = twin.get_layer(layer.name).get_weights()
        assert len(values) == len(twin_values), layer.name
        for a, b in zip(values, twin_values):
            np.testing.assert_array_equal(a, b)
    x = DATA.x_test[:16]
    np.testing.assert_allclose(twin(x, training=False).numpy(), keras_logits(masked, x),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer, message", [
    (keras.layers.LayerNormalization(name="norm"), "'norm' of type .*LayerNormalization"),
    (keras.layers.Dense(3, activation=lambda t: t * 2, name="odd"), "activation"),
])
def test_unsupported_layers_are_named(layer, message):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="fc"), layer])
    with pytest.raises(ValueError, match=message):
        tfmot_bridge.to_tf_keras(model)


def _lenet(seed):
    return models.build_model("lenet_300_100", DATA.input_shape, DATA.num_classes, seed=seed)


def test_gmp_baseline_prunes_gradually_with_tfmot_to_each_layer_target(monkeypatch):
    """Spies on tfmot: every named layer goes through prune_low_magnitude with a
    PolynomialDecay from 0 to its target over [begin_step, end_step]; unnamed layers
    stay dense."""
    tfmot, _ = tfmot_bridge._tfmot()
    api = tfmot.sparsity.keras
    real_schedule, real_prune = api.PolynomialDecay, api.prune_low_magnitude
    schedules, wrapped = [], []

    def schedule(**kwargs):
        schedules.append(kwargs)
        return real_schedule(**kwargs)

    def prune(layer, **kwargs):
        wrapped.append((layer.name, kwargs["pruning_schedule"]))
        return real_prune(layer, **kwargs)

    monkeypatch.setattr(api, "PolynomialDecay", schedule)
    monkeypatch.setattr(api, "prune_low_magnitude", prune)
    targets = {"fc1": 0.8, "output/kernel": 0.4}  # fc2 not named: it stays dense
    # Default window: 0.75 * 60 = 45, down to the last mask update at or before it: 40.
    result = tfmot_bridge.gmp_baseline(
        _lenet, DATA, target_sparsity=targets, training_steps=60, batch_size=32,
        learning_rate=2e-3, frequency=10)
    assert [name for name, _ in wrapped] == ["fc1", "output"]
    assert schedules == [
        dict(initial_sparsity=0.0, final_sparsity=target, begin_step=0, end_step=40,
             frequency=10) for target in (0.8, 0.4)]
    # Gradual, not one-shot: halfway through the window the cubic schedule asks for
    # 0.8 - 0.8 * (1 - 20/40)^3 = 0.7 of fc1, and updates only every 10 iterations.
    fc1_schedule = wrapped[0][1]
    update, sparsity = fc1_schedule(np.int64(20))
    assert bool(update) and float(sparsity) == pytest.approx(0.7)
    assert not bool(fc1_schedule(np.int64(25))[0])
    assert result.layer_sparsity["fc1/kernel"] == pytest.approx(0.8, abs=0.005)
    assert result.layer_sparsity["output/kernel"] == pytest.approx(0.4, abs=0.005)
    assert result.layer_sparsity["fc2/kernel"] == 0.0
    assert result.target_sparsity == {"fc1/kernel": 0.8, "output/kernel": 0.4}
    assert result.training_steps == 60 and result.end_step == 40
    assert accuracy_above_chance(result.test_accuracy)


def test_gmp_frequency_longer_than_the_budget_is_rejected():
    with pytest.raises(ValueError, match="`frequency` 200"):
        tfmot_bridge.gmp_baseline(_lenet(0), DATA, target_sparsity=0.5, training_steps=130,
                                  batch_size=32, learning_rate=1e-3, frequency=200)


def test_gmp_learning_rate_schedule_matches_the_ticket_schedule():
    import tensorflow as tf

    _, tf_keras = tfmot_bridge._tfmot()
    twin = tfmot_bridge._learning_rate(tf, tf_keras, 0.1, 10, (50, 80), 0.5)
    reference = training_lib.StepSchedule(0.1, warmup=10, drops=(50, 80), drop_factor=0.5)
    # Hand values: warmup 0.1 * t / 10, then 0.1, 0.05 from 50, 0.025 from 80.
    for step, expected in [(0, 0.0), (5, 0.05), (10, 0.1), (49, 0.1), (50, 0.05),
                           (79, 0.05), (80, 0.025), (120, 0.025)]:
        assert float(twin(step)) == pytest.approx(expected)
        assert float(reference(step)) == pytest.approx(expected)
    assert tfmot_bridge._learning_rate(tf, tf_keras, 0.1, 0, (), 0.5) == 0.1


def accuracy_above_chance(value):
    return 1.0 / DATA.num_classes + 0.2 < value <= 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(target_sparsity=1.0), "`target_sparsity`"),
    (dict(target_sparsity={"bn": 0.5}), "not a Dense/Conv2D layer"),
    (dict(end_step=500), "`end_step`"),
    (dict(end_step=75), "multiple of `frequency`"),
    (dict(training_steps=0), "`training_steps`"),
    (dict(optimizer="rmsprop"), "`optimizer`"),
    (dict(lr_drops=[150]), "`lr_drops`"),
    (dict(lr_drop_factor=2.0), "`lr_drop_factor`"),
    (dict(warmup_steps=-1), "`warmup_steps`"),
    (dict(weight_decay=-0.1), "`weight_decay`"),
])
def test_gmp_baseline_bad_arguments(kwargs, message):
    args = dict(target_sparsity=0.5, training_steps=100, batch_size=32, learning_rate=1e-3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        tfmot_bridge.gmp_baseline(_lenet(0), DATA, **args)


@pytest.fixture(scope="module")
def ticket():
    keras.utils.set_random_seed(1)
    masked = tfl.wrap(_lenet(3))
    masked.compile(optimizer=keras.optimizers.Adam(2e-3),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    masked.fit(DATA.x_train, DATA.y_train, batch_size=32, epochs=3, verbose=0)
    tfl.set_masks(masked, tfl.prune(masked, rate=0.9))
    masked.fit(DATA.x_train, DATA.y_train, batch_size=32, epochs=3, verbose=0)
    return masked


def test_prune_preserving_qat_exports_an_int8_model_that_keeps_the_pruned_zeros(ticket, tmp_path):
    report = export.to_tflite(
        ticket, tmp_path / "qat.tflite", quantization="int8",
        qat_data=(DATA.x_train, DATA.y_train), qat_steps=25, qat_batch_size=32,
        sample_inputs=DATA.x_val[:32], latency_runs=2)
    assert report.qat and report.reference == "tfmot QAT model"
    assert report.pruned_zeros_preserved
    weights = [t for t in report.tensors if t.keras_weight]
    assert len(weights) == 3 and all(t.dtype == "int8" for t in weights)
    # The sparse int8 encoding fails LiteRT's default delegate, so the file written is
    # the dense one (which runs everywhere), and the report says so.
    assert all(t.stored_sparse == (report.encoding == "sparse") for t in weights)
    assert report.encoding == "dense" and "default delegates" in report.encoding_reason
    lite = export.predict(report.path, DATA.x_test, delegate=report.delegate)
    assert accuracy(lite, DATA.y_test) >= accuracy(keras_logits(ticket, DATA.x_test),
                                                   DATA.y_test) - 0.01


def test_keras3_keeps_working_after_tfmot(ticket, tmp_path):
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    tfmot, tf_keras = tfmot_bridge._tfmot()
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before
    assert tfmot.sparsity.keras.prune_low_magnitude is not None
    assert keras.__version__.startswith("3.")
    # Train, prune, strip and export a Keras 3 model in this same process.
    model = tfl.wrap(_lenet(5))
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(DATA.x_train, DATA.y_train, batch_size=64, epochs=2, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    tfl.set_masks(model, tfl.prune(model, rate=0.5))
    stripped = tfl.strip(model)
    assert isinstance(stripped.get_layer("fc1"), keras.layers.Dense)
    assert not isinstance(stripped.get_layer("fc1"), tf_keras.layers.Dense)
    report = export.to_tflite(model, tmp_path / "after.tflite", latency_runs=1,
                              sample_inputs=DATA.x_val[:16])
    assert report.max_abs_diff <= 1e-5 and report.pruned_zeros_preserved


def test_compare_tfmot_tool_prints_ticket_and_gmp_at_matched_sparsity(tmp_path):
    """tools/compare_tfmot.py on a finished two-level synthetic run (60% per level)."""
    hp = ExperimentHparams(
        model=ModelHparams("lenet_300_100"), dataset=DatasetHparams("synthetic"),
        training=TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="60it",
                                 eval_every="30it"),
        pruning=PruningHparams(levels=1, rate=0.6),
    )
    experiment.run_experiment(hp, tmp_path, dataset=DATA,
                              runtime=training_lib.Runtime(jit_compile=False))
    root = paths.RunDir.of(tmp_path, hp.run_name()).path
    output = tmp_path / "compare.json"
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "compare_tfmot.py"), f"--run_dir={root}",
         "--level=1", "--training_steps=40", "--frequency=10", f"--output={output}"],
        cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(output.read_text())
    summary = files.read_json(paths.RunDir(root).replicate(0).branch(1, "lottery").summary)
    assert result["sparsity"] == pytest.approx(summary["sparsity"], abs=1e-3)
    assert result["ticket_test_accuracy"] == pytest.approx(summary["final_test_accuracy"],
                                                           abs=1e-6)
    gmp = result["gmp"]
    assert gmp["training_steps"] == 40 and gmp["end_step"] == 30  # 0.75 * 40 on the grid
    assert gmp["target_sparsity"] == result["layer_sparsity"]
    for key, target in result["layer_sparsity"].items():
        assert gmp["layer_sparsity"][key] == pytest.approx(target, abs=0.005)
    assert f"| {gmp['test_accuracy']:.4f} |" in done.stdout
    assert "lottery ticket, level 1 | 60it per level, 2 levels" in done.stdout
