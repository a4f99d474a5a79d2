"""Sparse TFLite export: every quantization mode run with LiteRT, reports, errors, and
loading a trained ticket of a run directory."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tf_lottery as tfl
from tf_lottery import data, experiment, export, files, paths, training
from tf_lottery.cli import experiment_flags
from tf_lottery.cli import export as cli_export
from tf_lottery.hparams import (
    DatasetHparams,
    ExperimentHparams,
    ModelHparams,
    PruningHparams,
    TrainingHparams,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = data.load("synthetic")
MODES = ("float32", "float16", "dynamic_int8", "int8")


def accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, -1) == labels))


def keras_logits(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.fixture(scope="module")
def pruned():
    """A wrapped MLP trained briefly on synthetic data, pruned to 90%, trained again."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(DATA.input_shape),
        keras.layers.Flatten(),
        keras.layers.Dense(256, activation="relu", name="fc1"),
        keras.layers.Dense(DATA.num_classes, name="output"),
    ])
    masked = tfl.wrap(model)
    masked.compile(optimizer=keras.optimizers.Adam(2e-3),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    masked.fit(DATA.x_train, DATA.y_train, batch_size=32, epochs=3, verbose=0)
    tfl.set_masks(masked, tfl.prune(masked, rate=0.9))
    masked.fit(DATA.x_train, DATA.y_train, batch_size=32, epochs=3, verbose=0)
    assert abs(tfl.sparsity_report(masked).sparsity - 0.9) < 0.01
    return masked


@pytest.fixture(scope="module")
def exports(pruned, tmp_path_factory):
    directory = tmp_path_factory.mktemp("exports")
    return {
        mode: export.to_tflite(
            pruned, directory / f"{mode}.tflite", quantization=mode,
            representative_data=DATA.x_train[:200], sample_inputs=DATA.x_val[:64],
            latency_runs=3)
        for mode in MODES
    }


@pytest.mark.parametrize("mode, tolerance", [("float32", 1e-5), ("float16", 1e-2)])
def test_float_exports_match_keras(pruned, exports, mode, tolerance):
    report = exports[mode]
    lite = export.predict(report.path, DATA.x_test, delegate=report.delegate)
    np.testing.assert_allclose(lite, keras_logits(pruned, DATA.x_test), rtol=0, atol=tolerance)
    assert report.max_abs_diff <= tolerance
    # The file really holds weights of that precision (float16 is not float32 renamed).
    assert {t.dtype for t in report.tensors} == {mode}
    if mode == "float16":
        assert report.file_bytes < exports["float32"].file_bytes


@pytest.mark.parametrize("mode", ["dynamic_int8", "int8"])
def test_int8_exports_lose_at_most_one_point(pruned, exports, mode):
    report = exports[mode]
    lite = export.predict(report.path, DATA.x_test, delegate=report.delegate)
    assert accuracy(lite, DATA.y_test) >= accuracy(keras_logits(pruned, DATA.x_test),
                                                   DATA.y_test) - 0.01
    assert {t.dtype for t in report.tensors if t.keras_weight == "fc1/kernel"} == {"int8"}


@pytest.mark.parametrize("mode", MODES)
def test_pruned_weights_are_still_zero_in_the_file(pruned, exports, mode):
    report = exports[mode]
    kernels = {
        "fc1/kernel": keras.ops.convert_to_numpy(pruned.get_layer("fc1").kernel),
        "output/kernel": keras.ops.convert_to_numpy(pruned.get_layer("output").kernel),
    }
    masks = tfl.get_masks(pruned)
    # Read the file independently of the report: LiteRT's DENSIFY output per tensor.
    found = {}
    for tensor, value in export.weight_tensors(report.path):
        for key, kernel in kernels.items():
            if value is not None and value.shape == kernel.T.shape:
                pruned_zero = masks[key].T == 0
                if np.all(value[pruned_zero] == 0):
                    found[key] = (tensor, value)
    assert set(found) == set(kernels)
    for key, (tensor, value) in found.items():
        assert tensor.stored_sparse
        assert np.count_nonzero(value) == tensor.nonzero <= np.count_nonzero(masks[key])
        pruned_kernel = (kernels[key] * masks[key]).T
        if mode == "float32":  # the surviving weights are stored exactly
            np.testing.assert_array_equal(value, pruned_kernel)
        elif mode == "float16":
            np.testing.assert_array_equal(value, pruned_kernel.astype(np.float16))
    assert report.sparse_tensors == report.densify_ops == 2
    assert report.pruned_zeros_preserved
    assert {t.keras_weight for t in report.tensors} == set(kernels)


def test_float32_sparse_file_is_close_to_its_nonzeros_and_indices(pruned, exports):
    """File size <= 1.3 x (nonzero values as float32 + int32 CSR indices).

    Counted per kernel in TFLite layout (out, in): 4 bytes per nonzero value, 4 bytes
    per nonzero's column index and 4 bytes per row pointer (out + 1). Biases, graph
    and metadata must fit in the remaining 30%.
    """
    report = exports["float32"]
    budget = 0
    for key, mask in tfl.get_masks(pruned).items():
        nonzero = int(np.count_nonzero(mask))
        budget += 4 * nonzero + 4 * nonzero + 4 * (mask.shape[1] + 1)
    assert os.path.getsize(report.path) == report.file_bytes <= 1.3 * budget
    assert report.file_bytes < report.dense_file_bytes / 3


def test_report_fields_serialize_and_print(exports):
    report = exports["int8"]
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["quantization"] == "int8" and len(as_dict["tensors"]) == len(report.tensors)
    assert 0.89 < as_dict["keras_sparsity"] < 0.91
    for field in ("file_bytes", "gzip_bytes", "dense_file_bytes", "dense_gzip_bytes"):
        assert as_dict[field] > 0
    assert report.litert_latency_ms > 0 and report.keras_latency_ms > 0
    text = str(report)
    assert "DENSIFY" in text and report.delegate in text and "fc1/kernel" in text
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.file_bytes = 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(quantization="int4"), "`quantization`"),
    (dict(quantization="int8"), "`representative_data` is required"),
    (dict(path="model.tfl"), "`path`"),
    (dict(sample_inputs=np.zeros((4, 9, 9, 1), np.float32)), "`sample_inputs`"),
    (dict(representative_data=np.zeros((0, 8, 8, 1), np.float32)), "`representative_data`"),
    (dict(quantization="float16", qat_data=(DATA.x_train, DATA.y_train)), "`qat_data`"),
    (dict(latency_runs=0), "`latency_runs`"),
    (dict(model="not a model"), "`model`"),
])
def test_bad_input_fails_before_any_work(pruned, tmp_path, kwargs, message):
    kwargs = dict(kwargs)
    model = kwargs.pop("model", pruned)
    path = tmp_path / kwargs.pop("path", "model.tflite")
    with pytest.raises(ValueError, match=message):
        export.to_tflite(model, path, **kwargs)
    assert os.listdir(tmp_path) == []


def test_mixed_precision_model_is_rejected(tmp_path):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    finally:
        keras.config.set_dtype_policy("float32")
    with pytest.raises(ValueError, match="float32"):
        export.to_tflite(model, tmp_path / "m.tflite")


class _DelegateFails:
    """Stands in for ai_edge_litert's Interpreter; the default delegates always fail."""

    def __init__(self, real, fail_builtin=False):
        self.real, self.fail_builtin = real, fail_builtin
        self.opened = []

    def __call__(self, *args, experimental_op_resolver_type=None, **kwargs):
        resolver = experimental_op_resolver_type
        self.opened.append(resolver.name)
        if resolver.name == "AUTO" or self.fail_builtin:
            raise RuntimeError(f"simulated delegate failure ({resolver.name})")
        return self.real(*args, experimental_op_resolver_type=resolver, **kwargs)


def test_default_delegate_failure_falls_back_to_builtin_kernels(pruned, tmp_path, monkeypatch):
    from ai_edge_litert import interpreter as interpreter_lib

    fake = _DelegateFails(interpreter_lib.Interpreter)
    monkeypatch.setattr(interpreter_lib, "Interpreter", fake)
    report = export.to_tflite(pruned, tmp_path / "m.tflite", sample_inputs=DATA.x_val[:16],
                              latency_runs=1)
    assert report.delegate == "builtin"
    assert "simulated delegate failure (AUTO)" in report.delegate_error
    assert "BUILTIN_WITHOUT_DEFAULT_DELEGATES" in fake.opened
    monkeypatch.undo()
    lite = export.predict(report.path, DATA.x_val[:16], delegate="builtin")
    np.testing.assert_allclose(lite, keras_logits(pruned, DATA.x_val[:16]), atol=1e-5, rtol=0)


def test_model_that_runs_nowhere_is_not_written(pruned, tmp_path, monkeypatch):
    from ai_edge_litert import interpreter as interpreter_lib

    monkeypatch.setattr(interpreter_lib, "Interpreter",
                        _DelegateFails(interpreter_lib.Interpreter, fail_builtin=True))
    with pytest.raises(RuntimeError, match="builtin kernels"):
        export.to_tflite(pruned, tmp_path / "m.tflite", latency_runs=1)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mode", MODES)
def test_reported_delegate_is_what_litert_really_does(exports, mode):
    """Real files, no stand-ins: a report says "xnnpack" exactly when the file runs under
    LiteRT's default delegates, and "builtin" with the real failure otherwise.

    (With ai-edge-litert 2.3, XNNPACK runs the sparse float files and rejects the sparse
    int8 ones; the test holds whichever way a LiteRT release goes.)
    """
    report = exports[mode]
    x = DATA.x_val[:8]
    try:
        export.predict(report.path, x, delegate="xnnpack")
        error = None
    except RuntimeError as err:
        error = str(err).strip().splitlines()[0]
    if error is None:
        assert report.delegate == "xnnpack" and report.delegate_error is None
    else:
        assert report.delegate == "builtin" and error in report.delegate_error
        assert np.isfinite(export.predict(report.path, x, delegate="builtin")).all()


# ---------------------------------------------------------------------- run directories
HP = ExperimentHparams(
    model=ModelHparams("lenet_300_100"), dataset=DatasetHparams("synthetic"),
    training=TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="100it",
                             eval_every="50it"),
    pruning=PruningHparams(levels=1, rate=0.9),
)


def listing(directory):
    """Every file under ``directory`` with its size and modification time."""
    return sorted((os.path.join(d, n), os.path.getsize(os.path.join(d, n)),
                   os.path.getmtime(os.path.join(d, n)))
                  for d, _, names in os.walk(directory) for n in names)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished two-level run (dense, then 90% pruned) on synthetic data."""
    root = tmp_path_factory.mktemp("runs")
    experiment.run_experiment(HP, root, runtime=training.Runtime(jit_compile=False))
    return paths.RunDir.of(root, HP.run_name()).path


def test_load_ticket_exports_and_keeps_accuracy(run_dir, tmp_path):
    """What the export command does: load a level's ticket, export it, compare accuracy."""
    ticket = export.load_ticket(run_dir, 1, branch="lottery", replicate=None, data_dir=None)
    branch = paths.RunDir(run_dir).replicate(0).branch(1, "lottery")
    assert ticket.branch_dir == branch.path and ticket.hparams == HP
    assert ticket.summary == files.read_json(branch.summary)
    # The replicate directory names the same ticket.
    again = export.load_ticket(paths.RunDir(run_dir).replicate(0).path, 1, replicate=0)
    assert again.branch_dir == ticket.branch_dir
    for a, b in zip(again.model.weights, ticket.model.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))

    data_ = ticket.dataset
    path = branch.export("float16", out_dir=str(tmp_path))
    report = export.to_tflite(
        ticket.model, path, quantization="float16", representative_data=data_.x_train[:500],
        sample_inputs=data_.x_test[:256], latency_runs=3)
    assert os.path.getsize(path) == report.file_bytes
    assert report.quantization == "float16" and report.pruned_zeros_preserved
    keras_accuracy = accuracy(ticket.model.predict(data_.x_test, batch_size=1000, verbose=0),
                              data_.y_test)
    litert_accuracy = accuracy(
        export.predict(path, data_.x_test, batch_size=1000, delegate=report.delegate),
        data_.y_test)
    assert abs(litert_accuracy - keras_accuracy) <= 0.01
    assert ticket.summary["sparsity"] == pytest.approx(report.keras_sparsity, abs=1e-3)
    assert json.loads(json.dumps(report.to_dict()))["quantization"] == "float16"


@pytest.mark.parametrize("kwargs, argument", [
    (dict(level=7), "`level`"),
    (dict(level="1"), "`level`"),
    (dict(level=1, branch="reinit"), "`level`"),  # the run has no reinit branch
    (dict(level=1, branch="pruned"), "`branch`"),
    (dict(level=1, replicate=3), "`replicate`"),
    (dict(level=1, replicate=-1), "`replicate`"),
    (dict(level=1, run_dir="missing"), "`run_dir`"),
    (dict(level=1, run_dir=0, replicate=1), "`replicate`"),  # replicate_0 with replicate=1
])
def test_load_ticket_bad_arguments_name_the_argument(run_dir, kwargs, argument):
    kwargs = dict(kwargs)
    where = kwargs.pop("run_dir", None)
    replicate_dir = paths.RunDir(run_dir).replicate(0).path
    target = {None: run_dir, 0: replicate_dir}.get(where, os.path.join(run_dir, str(where)))
    before = listing(run_dir)
    with pytest.raises(ValueError, match=argument) as error:
        export.load_ticket(target, kwargs.pop("level"), **kwargs)
    message = str(error.value)
    assert "\n" not in message and f"--{argument.strip('`')}" not in message
    assert listing(run_dir) == before


def test_load_ticket_of_a_directory_that_is_no_run(tmp_path):
    with pytest.raises(ValueError, match="`run_dir`.*not a run directory"):
        export.load_ticket(tmp_path, 0)


# ---------------------------------------------------------------- the export command


def test_cli_exports_a_ticket_and_reports_accuracy(run_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-m", "tf_lottery.cli", "export", f"--run_dir={run_dir}", "--level=1",
         "--quantization=float16", "--latency_runs=3"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    branch = paths.RunDir(run_dir).replicate(0).branch(1, "lottery")
    result = json.loads(open(branch.export_report(branch.export("float16"))).read())
    assert os.path.getsize(branch.export("float16")) == result["file_bytes"]
    assert result["quantization"] == "float16" and result["pruned_zeros_preserved"]
    assert abs(result["litert_test_accuracy"] - result["keras_test_accuracy"]) <= 0.01
    assert result["ticket"]["sparsity"] == pytest.approx(result["keras_sparsity"], abs=1e-3)
    assert "test accuracy (500 examples): Keras" in done.stdout


@pytest.mark.parametrize("args, flag", [
    (["--level=7"], "--level"),
    (["--level=1", "--quantization=int4"], "--quantization"),
    (["--level=1", "--branch=reinit"], "--level"),  # the run has no reinit branch
    (["--level=1", "--replicate=3"], "--replicate"),
    (["--level=1", "--qat_steps=5"], "--qat_steps"),
    (["--level=1", "--latency_runs=0"], "--latency_runs"),
    (["--level=1", "stray"], "unexpected arguments"),
])
def test_cli_bad_flags_exit_2_with_one_line(run_dir, capsys, args, flag):
    replicate = paths.RunDir(run_dir).replicate(0)
    before = sorted(os.listdir(replicate.branch(1, "lottery").path))
    with pytest.raises(SystemExit) as exit_info:
        cli_export.run(["tf-lottery-export", f"--run_dir={run_dir}", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and flag in err, err
    assert "`" not in err  # every library argument was translated to its flag
    assert sorted(os.listdir(replicate.branch(1, "lottery").path)) == before


def test_cli_missing_run_dir_and_flags_stay_out_of_the_experiment(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_export.run(["tf-lottery-export", "--level=1"])
    assert exit_info.value.code == 2 and "--run_dir" in capsys.readouterr().err
    for name in ("run_dir", "level", "quantization", "qat_steps", "output_dir"):
        assert name not in experiment_flags.FLAGS
