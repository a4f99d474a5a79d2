"""TFLite export: every quantization mode run in LiteRT's default Interpreter as a deployer
runs it, the sparse-or-dense encoding choice, shrunk tickets against their dense
network, reports, errors, and loading a trained ticket of a run directory."""

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
from tf_lottery.export import encoding, flatbuffer
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
KERNELS = ("conv/kernel", "fc1/kernel", "output/kernel")


def accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, -1) == labels))


def keras_logits(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def conv_dense_model():
    return keras.Sequential([
        keras.Input(DATA.input_shape),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(128, activation="relu", name="fc1"),
        keras.layers.Dense(DATA.num_classes, name="output"),
    ])


def train(model, epochs=3):
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(DATA.x_train, DATA.y_train, batch_size=32, epochs=epochs, verbose=0)


@pytest.fixture(scope="module")
def pruned():
    """A wrapped conv + dense net trained briefly on synthetic data, pruned to 90%
    (unstructured), trained again."""
    keras.utils.set_random_seed(0)
    masked = tfl.wrap(conv_dense_model())
    train(masked)
    tfl.set_masks(masked, tfl.prune(masked, rate=0.9))
    train(masked)
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


def run_like_a_deployer(path, x):
    """One example at a time through ``Interpreter(model_path=path)``: no delegate or
    resolver arguments, LiteRT's defaults."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    logits = []
    for example in x:
        interpreter.set_tensor(inp["index"], example[np.newaxis].astype(inp["dtype"]))
        interpreter.invoke()
        logits.append(np.array(interpreter.get_tensor(out["index"])[0], np.float32))
    return np.stack(logits)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs_in_the_default_interpreter_and_matches_keras(pruned, exports, mode):
    report = exports[mode]
    x, y = DATA.x_test[:300], DATA.y_test[:300]
    lite = run_like_a_deployer(report.path, x)
    expected = keras_logits(pruned, x)
    if mode == "float32":
        np.testing.assert_allclose(lite, expected, rtol=0, atol=1e-5)
    elif mode == "float16":
        np.testing.assert_allclose(lite, expected, rtol=0, atol=1e-2)
    else:
        assert accuracy(lite, y) >= accuracy(expected, y) - 0.01
    assert report.delegate == "xnnpack" and report.delegate_error is None
    assert report.encoding in encoding.ENCODINGS and report.encoding_reason
    assert f"encoding:    {report.encoding}: {report.encoding_reason}" in str(report)


@pytest.mark.parametrize("mode, tolerance", [("float32", 1e-5), ("float16", 1e-2)])
def test_float_exports_match_keras(pruned, exports, mode, tolerance):
    report = exports[mode]
    lite = export.predict(report.path, DATA.x_test)
    np.testing.assert_allclose(lite, keras_logits(pruned, DATA.x_test), rtol=0, atol=tolerance)
    assert report.max_abs_diff <= tolerance
    # The file really holds weights of that precision (float16 is not float32 renamed).
    assert {t.dtype for t in report.tensors} == {mode}
    if mode == "float16":
        assert report.file_bytes < exports["float32"].file_bytes


@pytest.mark.parametrize("mode", ["dynamic_int8", "int8"])
def test_int8_exports_lose_at_most_one_point(pruned, exports, mode):
    report = exports[mode]
    lite = export.predict(report.path, DATA.x_test)
    assert accuracy(lite, DATA.y_test) >= accuracy(keras_logits(pruned, DATA.x_test),
                                                   DATA.y_test) - 0.01
    assert {t.dtype for t in report.tensors if t.keras_weight == "fc1/kernel"} == {"int8"}


@pytest.mark.parametrize("mode", MODES)
def test_pruned_weights_are_still_zero_in_the_file(pruned, exports, mode):
    report = exports[mode]
    masks = tfl.get_masks(pruned)
    # TFLite layout: output channels first (Dense (out, in), Conv (out, kh, kw, in)).
    kernels = {key: np.moveaxis(keras.ops.convert_to_numpy(
        pruned.get_layer(key.split("/")[0]).kernel), -1, 0) for key in KERNELS}
    alive = {key: np.moveaxis(masks[key], -1, 0) for key in KERNELS}
    # Read the file independently of the report: stored values, or LiteRT's DENSIFY output.
    found = {}
    for tensor, value in export.weight_tensors(report.path):
        for key, kernel in kernels.items():
            if value is not None and value.shape == kernel.shape and np.all(
                    value[alive[key] == 0] == 0):
                found[key] = (tensor, value)
    assert set(found) == set(KERNELS)
    sparse = report.encoding == "sparse"
    for key, (tensor, value) in found.items():
        assert tensor.stored_sparse == sparse
        assert np.count_nonzero(value) == tensor.nonzero <= np.count_nonzero(alive[key])
        if mode == "float32":  # the surviving weights are stored exactly
            np.testing.assert_array_equal(value, kernels[key] * alive[key])
        elif mode == "float16":
            np.testing.assert_array_equal(value, (kernels[key] * alive[key]).astype(np.float16))
    assert report.sparse_tensors == report.densify_ops == (3 if sparse else 0)
    assert report.pruned_zeros_preserved
    assert {t.keras_weight for t in report.tensors} == set(KERNELS)


def test_float32_sparse_file_is_close_to_its_nonzeros_and_indices(pruned, exports):
    """File size <= 1.3 x (nonzero values as float32 + int32 CSR indices).

    Counted per kernel in TFLite layout (out, ...): 4 bytes per nonzero value, 4 bytes
    per nonzero's column index and 4 bytes per row pointer (out + 1). Biases, graph
    and metadata must fit in the remaining 30%. (With ai-edge-litert 2.3 XNNPACK runs
    sparse float32 files, and this one is smaller than the dense encoding.)
    """
    report = exports["float32"]
    assert report.encoding == "sparse"
    budget = 0
    for key, mask in tfl.get_masks(pruned).items():
        nonzero = int(np.count_nonzero(mask))
        budget += 4 * nonzero + 4 * nonzero + 4 * (mask.shape[-1] + 1)
    assert os.path.getsize(report.path) == report.file_bytes <= 1.3 * budget
    assert report.file_bytes < report.dense_file_bytes / 3


def test_a_dense_network_is_written_dense_whatever_the_gzip_sizes(tmp_path):
    """No kernel has 30% zeros: the sparse conversion stores nothing sparse and differs
    from the dense one only in metadata, so the report must not call it sparse."""
    keras.utils.set_random_seed(1)
    model = conv_dense_model()
    report = export.to_tflite(model, tmp_path / "dense.tflite", latency_runs=1,
                              sample_inputs=DATA.x_val[:8])
    assert report.encoding == "dense"
    assert "no weight tensor has enough zeros" in report.encoding_reason
    assert report.sparse_tensors == report.densify_ops == 0
    assert flatbuffer.sparse_tensor_count(report.path) == 0


def test_report_fields_serialize_and_print(exports):
    report = exports["int8"]
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["quantization"] == "int8" and len(as_dict["tensors"]) == len(report.tensors)
    assert 0.89 < as_dict["keras_sparsity"] < 0.91
    for field in ("file_bytes", "gzip_bytes", "dense_file_bytes", "dense_gzip_bytes",
                  "sparse_file_bytes", "sparse_gzip_bytes", "keras_params"):
        assert as_dict[field] > 0
    assert as_dict["encoding"] == report.encoding and as_dict["encoding_reason"]
    assert as_dict["baseline"] is None and as_dict["speedup"] is None
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
    (dict(shrink="yes"), "`shrink`"),
    (dict(baseline="not a model"), "`baseline`"),
    (dict(baseline="other shapes"), "`baseline` .* maps \\(4,\\) to \\(10,\\)"),
])
def test_bad_input_fails_before_any_work(pruned, tmp_path, kwargs, message):
    kwargs = dict(kwargs)
    model = kwargs.pop("model", pruned)
    path = tmp_path / kwargs.pop("path", "model.tflite")
    if kwargs.get("baseline") == "other shapes":
        kwargs["baseline"] = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10)])
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


class _DefaultDelegatesFail:
    """Stands in for ai_edge_litert's Interpreter: opened with LiteRT's defaults (no
    resolver argument, or AUTO), it fails on every model, or (``sparse_only``) on
    models with DENSIFY ops, like XNNPACK on sparse int8 ones."""

    def __init__(self, real, sparse_only=False):
        self.real, self.sparse_only = real, sparse_only

    def __call__(self, model_path=None, model_content=None, **kwargs):
        resolver = kwargs.get("experimental_op_resolver_type")
        if resolver is None or resolver.name == "AUTO":
            model = model_content if model_content is not None else model_path
            if not self.sparse_only or "DENSIFY" in flatbuffer.operator_names(model):
                raise RuntimeError("simulated delegate failure")
        return self.real(model_path=model_path, model_content=model_content, **kwargs)


def test_sparse_encoding_failing_the_default_delegates_is_written_dense(
        pruned, tmp_path, monkeypatch):
    from ai_edge_litert import interpreter as interpreter_lib

    monkeypatch.setattr(interpreter_lib, "Interpreter",
                        _DefaultDelegatesFail(interpreter_lib.Interpreter, sparse_only=True))
    report = export.to_tflite(pruned, tmp_path / "m.tflite", sample_inputs=DATA.x_val[:16],
                              latency_runs=1)
    assert report.encoding == "dense" and "simulated delegate failure" in report.encoding_reason
    assert "simulated delegate failure" in report.sparse_delegate_error
    assert report.densify_ops == report.sparse_tensors == 0
    assert report.file_bytes == report.dense_file_bytes > report.sparse_file_bytes
    monkeypatch.undo()
    lite = run_like_a_deployer(report.path, DATA.x_val[:16])
    np.testing.assert_allclose(lite, keras_logits(pruned, DATA.x_val[:16]), atol=1e-5, rtol=0)


def test_model_that_runs_nowhere_is_not_written(pruned, tmp_path, monkeypatch):
    from ai_edge_litert import interpreter as interpreter_lib

    monkeypatch.setattr(interpreter_lib, "Interpreter",
                        _DefaultDelegatesFail(interpreter_lib.Interpreter))
    with pytest.raises(RuntimeError, match="default delegates in either encoding"):
        export.to_tflite(pruned, tmp_path / "m.tflite", latency_runs=1)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mode", MODES)
def test_reported_encoding_is_what_litert_really_does(pruned, exports, mode):
    """Real files, no stand-ins: the sparse encoding is written exactly when it runs in the
    default Interpreter and is smaller gzipped; otherwise the reason says which failed.

    (With ai-edge-litert 2.3, XNNPACK runs the sparse float files and rejects the sparse
    int8 ones; the test holds whichever way a LiteRT release goes.)
    """
    from ai_edge_litert.interpreter import Interpreter

    report = exports[mode]
    sparse = export.convert(tfl.strip(pruned), quantization=mode,
                            representative_data=DATA.x_train[:200], sparse=True)
    try:
        interpreter = Interpreter(model_content=sparse)
        interpreter.allocate_tensors()
        interpreter.invoke()
        error = None
    except RuntimeError as err:
        error = str(err).strip().splitlines()[0]
    smaller = report.sparse_gzip_bytes < report.dense_gzip_bytes
    if error is None and smaller:
        assert report.encoding == "sparse" and report.gzip_bytes == report.sparse_gzip_bytes
    else:
        assert report.encoding == "dense" and report.gzip_bytes == report.dense_gzip_bytes
        if error is not None:
            assert error in report.encoding_reason and error in report.sparse_delegate_error
        else:
            assert "not smaller" in report.encoding_reason


# ----------------------------------------------------------------------- shrunk tickets
@pytest.fixture(scope="module")
def channel_pruned():
    """The conv + dense net with 12 of 16 filters and 96 of 128 fc1 units masked out
    (whole kernel columns), then trained again."""
    keras.utils.set_random_seed(1)
    masked = tfl.wrap(conv_dense_model())
    train(masked, epochs=2)
    masks = tfl.get_masks(masked)
    masks["conv/kernel"][..., 4:] = 0
    masks["fc1/kernel"][:, 32:] = 0
    tfl.set_masks(masked, masks)
    train(masked, epochs=2)
    return masked


def test_shrunk_export_is_small_dense_and_timed_against_the_dense_network(
        channel_pruned, tmp_path):
    report = export.to_tflite(channel_pruned, tmp_path / "shrunk.tflite", shrink=True,
                              sample_inputs=DATA.x_val[:32], latency_runs=5)
    assert report.shrunk and report.baseline == "the unshrunk network (every channel)"
    # conv: 3*3*1*4 + 4; fc1 reads 4*4*4: 64*32 + 32; output: 32*10 + 10
    assert report.keras_params == 40 + 2080 + 330
    # unshrunk: conv 3*3*16 + 16; fc1 4*4*16*128 + 128; output 128*10 + 10
    assert report.baseline_params == 160 + 32896 + 1290
    assert report.file_bytes < report.baseline_file_bytes / 5
    assert report.baseline_litert_latency_ms > 0
    assert report.speedup == report.baseline_litert_latency_ms / report.litert_latency_ms
    assert "vs baseline: LiteRT ms: this file" in str(report)
    x = DATA.x_test[:200]
    np.testing.assert_allclose(run_like_a_deployer(report.path, x),
                               keras_logits(channel_pruned, x), rtol=0, atol=1e-5)
    assert json.loads(json.dumps(report.to_dict()))["speedup"] == report.speedup


def test_explicit_baseline_is_exported_in_the_same_quantization(channel_pruned, pruned,
                                                                 tmp_path):
    report = export.to_tflite(channel_pruned, tmp_path / "shrunk.tflite", shrink=True,
                              quantization="int8", representative_data=DATA.x_train[:100],
                              baseline=pruned, latency_runs=3)
    assert report.baseline == f"baseline {pruned.name!r}"
    assert report.baseline_params == tfl.strip(pruned).count_params()
    # int8 weights: about one byte per parameter of the dense baseline.
    assert report.baseline_params < report.baseline_file_bytes < 2 * report.baseline_params
    x, y = DATA.x_test, DATA.y_test
    assert accuracy(run_like_a_deployer(report.path, x), y) >= accuracy(
        keras_logits(channel_pruned, x), y) - 0.01


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
        export.predict(path, data_.x_test, batch_size=1000),
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


def test_cli_shrink_writes_a_shrunk_file_timed_against_the_unshrunk_network(
        run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_export.run(["tf-lottery-export", f"--run_dir={run_dir}", "--level=1", "--shrink",
                        "--latency_runs=3", f"--output_dir={tmp_path}"])
    assert exit_info.value.code == 0
    result = json.loads(open(tmp_path / "export_float32_shrunk.json").read())
    assert result["shrunk"] and result["baseline"] == "the unshrunk network (every channel)"
    assert result["keras_params"] <= result["baseline_params"]
    assert result["delegate"] == "xnnpack" and result["encoding"] in encoding.ENCODINGS
    assert abs(result["litert_test_accuracy"] - result["keras_test_accuracy"]) <= 0.01
    assert "vs baseline: LiteRT ms" in capsys.readouterr().out


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
