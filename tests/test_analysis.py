"""Analyses on a tiny synthetic run: instability, noise robustness, ticket transfer."""

import json
import os

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_lottery as tfl
from tf_lottery import analysis, data, experiment, masking, models
from tf_lottery import files as tfl_files
from tf_lottery.analysis import connectivity
from tf_lottery.analysis import run as run_lib
from tf_lottery.hparams import (DatasetHparams, ExperimentHparams, ModelHparams,
                                PruningHparams, TrainingHparams)
from tf_lottery.runtime import Runtime
from tf_lottery.trainer import Trainer

DATA = data.load("synthetic")
HP = ExperimentHparams(
    model=ModelHparams("lenet_300_100"),
    dataset=DatasetHparams("synthetic"),
    training=TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="200it",
                             eval_every="50it"),
    pruning=PruningHparams(levels=2, rate=0.5, rate_output=0.25, rewind="50it"),
)
RUNTIME = Runtime(jit_compile=False, deterministic=True)


def model_fn(seed):
    return experiment.build_model(HP.model, DATA.input_shape, DATA.num_classes, seed=seed)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run (replicate 0, rewind point 50it), as the command line runs it."""
    run_root = tmp_path_factory.mktemp("runs")
    experiment.run_experiment(HP, run_root, replicate=0, dataset=DATA, runtime=RUNTIME)
    return run_root / HP.run_name()


@pytest.fixture(scope="module")
def trainer():
    tf.config.experimental.enable_op_determinism()
    training = TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="100it",
                               eval_every="100it")
    return Trainer(model_fn, DATA, training, seed=4, runtime=RUNTIME)


# ------------------------------------------------------------------ pure functions


@pytest.mark.parametrize("errors, barrier", [
    ([0.1, 0.3, 0.2], 0.3 - 0.15),        # a bump between the ends
    ([0.2, 0.1, 0.2], 0.0),               # the path is better than its ends
    ([0.1, 0.2, 0.3], 0.3 - 0.2),         # monotone: the worse end exceeds the mean
    ([0.05, 0.05], 0.0),
    ((0.1, 0.9, 0.5, 0.1), 0.9 - 0.1),
])
def test_instability_is_the_barrier_over_the_mean_of_the_ends(errors, barrier):
    assert analysis.instability(errors) == pytest.approx(barrier)


@pytest.mark.parametrize("errors, message", [
    ([0.1], "at least 2"), ([], "at least 2"), ([[0.1, 0.2]], "1-D"),
    ([0.1, float("nan")], "finite"),
])
def test_instability_rejects_bad_errors(errors, message):
    with pytest.raises(ValueError, match=message):
        analysis.instability(errors)


def test_interpolate_is_exact_at_the_ends_and_keeps_equal_entries():
    w1 = [np.array([1.0, 2.0], np.float32), np.array([[0.0, 1.0]], np.float32)]
    w2 = [np.array([3.0, 2.0], np.float32), np.array([[0.0, 1.0]], np.float32)]
    mid = analysis.interpolate(w1, w2, 0.25)
    np.testing.assert_array_equal(mid[0], [2.5, 2.0])  # 0.25 * 1 + 0.75 * 3
    np.testing.assert_array_equal(mid[1], w1[1])        # equal masks stay exactly equal
    np.testing.assert_array_equal(analysis.interpolate(w1, w2, 1.0)[0], w1[0])
    np.testing.assert_array_equal(analysis.interpolate(w1, w2, 0.0)[0], w2[0])
    with pytest.raises(ValueError, match="alpha"):
        analysis.interpolate(w1, w2, 1.5)
    with pytest.raises(ValueError, match="shape"):
        analysis.interpolate(w1, [w2[0], np.zeros((2, 2))], 0.5)


def test_noise_hits_only_surviving_weights_with_the_init_std_unit():
    rng = np.random.default_rng(0)
    theta_0 = {"fc/kernel": rng.normal(0, 0.05, (200, 200)).astype(np.float32)}
    stds = analysis.init_stds(theta_0)
    assert stds["fc/kernel"] == pytest.approx(float(np.std(theta_0["fc/kernel"])))
    weights = {"fc/kernel": np.ones((200, 200), np.float32)}
    mask = (rng.uniform(size=(200, 200)) < 0.3).astype(np.float32)
    noisy = analysis.add_noise(weights, {"fc/kernel": mask}, stds, 2.0, seed=1)["fc/kernel"]
    delta = noisy - weights["fc/kernel"]
    assert np.all(delta[mask == 0] == 0)
    assert np.std(delta[mask == 1]) == pytest.approx(2.0 * stds["fc/kernel"], rel=0.03)
    same = analysis.add_noise(weights, {"fc/kernel": mask}, stds, 0.0, seed=1)
    np.testing.assert_array_equal(same["fc/kernel"], weights["fc/kernel"])
    with pytest.raises(ValueError, match="scale"):
        analysis.add_noise(weights, {"fc/kernel": mask}, stds, -1.0, seed=1)


def test_transfer_weights_keeps_the_target_output_when_classes_differ():
    source = tfl.wrap(models.build_model("lenet_300_100", (8, 8, 1), 10, seed=1))
    target = tfl.wrap(models.build_model("lenet_300_100", (8, 8, 1), 5, seed=2))
    fresh_output = target.get_layer("output").kernel.numpy()
    assert analysis.transfer_weights(source, target) == ["output"]
    np.testing.assert_array_equal(target.get_layer("fc1").kernel.numpy(),
                                  source.get_layer("fc1").kernel.numpy())
    np.testing.assert_array_equal(target.get_layer("output").kernel.numpy(), fresh_output)
    other = tfl.wrap(models.build_model("conv2", (8, 8, 1), 5, seed=2))
    with pytest.raises(ValueError, match="share no layer"):
        analysis.transfer_weights(source, other)


# ------------------------------------------------------------------ on a Trainer


def test_identical_copies_have_zero_instability_and_different_orders_differ(trainer):
    theta = trainer.fresh_weights(7)
    trainer.model.set_weights(theta)
    masks = {k: np.ones_like(v) for k, v in masking.get_masks(trainer.model).items()}
    same = analysis.linear_mode_connectivity(trainer, theta, masks, start=0,
                                             data_orders=(5, 5), points=4)
    assert same["alphas"] == [0.0, 1 / 3, 2 / 3, 1.0]
    assert same["instability"] == 0.0
    assert len(set(same["test_error"])) == 1  # every point is the same network
    timeless = [{k: v for k, v in c.items() if k != "train_seconds"} for c in same["copies"]]
    assert timeless[0] == timeless[1]
    # Different orders: the ends are the two copies, w1 (order 5) at a=1, w2 (order 6) at 0.
    other = analysis.linear_mode_connectivity(trainer, theta, masks, start=0,
                                              data_orders=(5, 6), points=4)
    trainer.set_data_order(5)
    trainer.train(weights=theta, masks=masks)
    w1 = trainer.model.get_weights()
    at_w1 = trainer.evaluate()
    trainer.set_data_order(6)
    trainer.train(weights=theta, masks=masks)
    w2 = trainer.model.get_weights()
    at_w2 = trainer.evaluate()
    assert not all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert other["test_loss"][-1] == at_w1["test_loss"]
    assert other["test_loss"][0] == at_w2["test_loss"]
    assert other["test_loss"][0] != other["test_loss"][-1]
    assert other["test_error"][-1] == pytest.approx(1 - at_w1["test_accuracy"])
    assert other["instability"] == analysis.instability(other["test_error"])


def test_two_independently_trained_networks_have_an_error_barrier(trainer):
    masks = {k: np.ones_like(v) for k, v in masking.get_masks(trainer.model).items()}
    finals = []
    for seed in (11, 12):  # different initializations: no shared starting point
        trainer.train(weights=trainer.fresh_weights(seed), masks=masks)
        finals.append(trainer.model.get_weights())
    curve = analysis.interpolation_errors(trainer, finals[0], finals[1], points=7)
    assert max(curve["test_error"][0], curve["test_error"][-1]) < 0.05  # both ends learned
    assert analysis.instability(curve["test_error"]) > 0.05  # a barrier between them
    assert curve["val_error"][3] is not None and len(curve["test_loss"]) == 7


# ------------------------------------------------------------------ on a run


def test_run_instability_writes_json_and_resumes(run, monkeypatch):
    result = analysis.run_instability(run, levels=[0, 2], rewind_points=["0it", "50it"],
                                      training_steps="100it", points=5, runtime=RUNTIME)
    path = run / "replicate_0" / "analysis" / "instability.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(result))
    entries = {(e["key"]["level"], e["key"]["rewind"]): e for e in result["entries"]}
    assert set(entries) == {(0, "0it"), (2, "0it"), (0, "50it"), (2, "50it")}
    level_2 = json.loads((run / "replicate_0" / "level_2" / "lottery" / "summary.json").read_text())
    for (level, _), entry in entries.items():
        assert len(entry["alphas"]) == len(entry["test_error"]) == 5
        assert entry["instability"] == analysis.instability(entry["test_error"])
        # Train error on the whole 800-example training split (less than 10,000).
        assert entry["train_error_examples"] == 800 and len(entry["train_error"]) == 5
        assert entry["instability_train"] == analysis.instability(entry["train_error"])
        assert "bn_reestimate" not in entry["key"]  # LeNet has no BatchNorm: keys unchanged
        assert entry["weights_remaining"] == pytest.approx(
            1.0 if level == 0 else level_2["weights_remaining"])
        assert entry["key"]["mask"] == ("dense" if level == 0 else "lottery")
        assert entry["copies"][0]["sparsity"] == pytest.approx(entry["sparsity"])
    # A rerun finds every entry done and trains nothing.
    monkeypatch.setattr(connectivity, "linear_mode_connectivity",
                        lambda *a, **k: pytest.fail("finished entries were recomputed"))
    again = analysis.run_instability(run, levels=[0, 2], rewind_points=["0it", "50it"],
                                     training_steps="100it", points=5, runtime=RUNTIME)
    assert again["entries"] == result["entries"]


def test_rewind_weights_are_the_runs_or_reached_by_the_runs_training(run):
    ctx = analysis.open_run(run)
    assert ctx.rewind_iteration == 50
    training = TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="200it",
                               eval_every="200it")
    trainer = run_lib.make_trainer(ctx, ctx.dataset, training, [("50it", 50)], RUNTIME)
    theta_0 = ctx.load("init").get_weights()
    ones = ctx.masks(0, ones_like=trainer.model)
    saved = ctx.load("rewind").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(
        run_lib.theta_k(ctx, trainer, 50, theta_0, ones, {}), saved))
    # Recomputing theta_50 from theta_0 (run's data order and schedule) reproduces the file.
    import dataclasses

    other = dataclasses.replace(ctx, rewind_iteration=-1)
    recomputed = run_lib.theta_k(other, trainer, 50, theta_0, ones, {})
    for a, b in zip(recomputed, saved):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(recomputed[0], theta_0[0])


def test_run_noise_writes_one_entry_per_scale(run, monkeypatch):
    starts = {}  # fc1's kernel at the start of each retraining, in training order
    original = Trainer.train

    def spy(self, **kwargs):
        self.model.set_weights(kwargs["weights"])
        starts[len(starts)] = masking.get_prunable_weights(self.model)["fc1/kernel"]
        return original(self, **kwargs)

    monkeypatch.setattr(Trainer, "train", spy)
    result = analysis.run_noise(run, levels=[2], scales=[1.0, 3.0], training_steps="100it",
                                eval_every="50it", runtime=RUNTIME)
    monkeypatch.undo()
    # Scale 0 starts from the run's theta_50; the others add noise to its survivors only.
    rewind = tfl.wrap(model_fn(0))
    rewind.load_weights(run / "replicate_0" / "rewind.weights.h5")
    theta_k = rewind.get_layer("fc1").kernel.numpy()
    mask = masking.load_masks(run / "replicate_0" / "level_2" / "lottery" / "mask.npz")[
        "fc1/kernel"]
    assert len(starts) == len(result["entries"]) == 3  # scale 0 is always added
    by_scale = {e["key"]["scale"]: starts[i] for i, e in enumerate(result["entries"])}
    np.testing.assert_array_equal(by_scale[0.0], theta_k)
    for scale in (1.0, 3.0):
        delta = by_scale[scale] - theta_k
        assert np.all(delta[mask == 0] == 0)
        assert np.std(delta[mask == 1]) == pytest.approx(
            next(e["noise_stds"]["fc1/kernel"] for e in result["entries"]
                 if e["key"]["scale"] == scale), rel=0.05)
    stored = json.loads((run / "replicate_0" / "analysis" / "noise.json").read_text())
    assert stored == json.loads(json.dumps(result))
    assert sorted(e["key"]["scale"] for e in result["entries"]) == [0.0, 1.0, 3.0]
    init = tfl.wrap(model_fn(0))
    init.load_weights(run / "replicate_0" / "init.weights.h5")
    fc1_std = float(np.std(init.get_layer("fc1").kernel.numpy()))
    for entry in result["entries"]:
        assert entry["noise_stds"]["fc1/kernel"] == pytest.approx(entry["key"]["scale"] * fc1_std)
        assert 0.0 <= entry["early_stop_test_accuracy"] <= 1.0
        assert entry["key"]["rewind"] == "50it"


def permuted_five_classes():
    """Another task with the synthetic input shape: permuted pixels, 5 classes."""
    perm = np.random.default_rng(1).permutation(64)

    def shuffle(x):
        return x.reshape(len(x), -1)[:, perm].reshape(x.shape)

    return data.Dataset(shuffle(DATA.x_train), DATA.y_train % 5, shuffle(DATA.x_val),
                        DATA.y_val % 5, shuffle(DATA.x_test), DATA.y_test % 5,
                        name="synthetic_5", num_classes=5, input_shape=DATA.input_shape,
                        source="synthetic")


def test_run_transfer_compares_four_methods(run):
    result = analysis.run_transfer(run, target_dataset=permuted_five_classes(), levels=[2],
                                   training_steps="100it", eval_every="50it", runtime=RUNTIME)
    entries = {e["key"]["method"]: e for e in result["entries"]}
    assert set(entries) == {"source_ticket", "random_ticket", "target_ticket", "target_dense"}
    assert entries["source_ticket"]["reinitialized_layers"] == ["output"]
    assert entries["target_dense"]["sparsity"] == 0.0
    level_2 = json.loads((run / "replicate_0" / "level_2" / "lottery" / "summary.json").read_text())
    for method in ("source_ticket", "random_ticket", "target_ticket"):
        # Same per-layer counts except the 5-class output layer (same fraction kept).
        assert entries[method]["sparsity"] == pytest.approx(level_2["sparsity"], abs=0.01)
    imp = run / "replicate_0" / "analysis" / "transfer_synthetic_5_imp" / "level_2" / "lottery"
    assert entries["target_ticket"]["early_stop_test_accuracy"] == json.loads(
        (imp / "summary.json").read_text())["early_stop_test_accuracy"]
    assert os.path.exists(run / "replicate_0" / "analysis" / "transfer.json")


def test_run_one_shot_matches_the_iterative_sparsities(run):
    result = analysis.run_one_shot(run, runtime=RUNTIME)
    assert json.loads((run / "replicate_0" / "analysis" / "one_shot.json").read_text()) == \
        json.loads(json.dumps(result))
    entries = {e["key"]["level"]: e for e in result["entries"]}
    assert set(entries) == {1, 2}  # every pruned level
    for level, entry in entries.items():
        ticket_summary = json.loads((run / "replicate_0" / f"level_{level}" / "lottery" /
                                     "summary.json").read_text())
        assert entry["key"]["target"] == pytest.approx(ticket_summary["sparsity"], abs=1e-6)
        assert entry["sparsity"] == pytest.approx(ticket_summary["sparsity"], abs=2e-3)
        # Layerwise one-shot keeps (1 - p_l)^n of every layer with one n: at the sparsity of
        # level L that is n = L, the ticket's per-layer sparsity (0.5 fc, 0.25 output).
        assert entry["layer_sparsity"]["fc1/kernel"] == pytest.approx(1 - 0.5 ** level, abs=2e-3)
        assert entry["layer_sparsity"]["output/kernel"] == pytest.approx(
            1 - 0.75 ** level, abs=0.03)
        assert entry["iterative"]["early_stop_test_accuracy"] == \
            ticket_summary["early_stop_test_accuracy"]
        assert entry["key"]["training_steps"] == "200it"  # the run's budget
    # Pruned at once from the trained dense network, level 2's one-shot mask keeps as many
    # weights per layer as the iterative ticket, but not the same ones.
    one_shot_mask = masking.load_masks(run / "replicate_0" / "analysis" /
                                       entries[2]["mask_file"])
    iterative_mask = masking.load_masks(run / "replicate_0" / "level_2" / "lottery" /
                                        "mask.npz")
    assert set(one_shot_mask) == set(iterative_mask)
    for key, mask in one_shot_mask.items():
        assert abs(int(mask.sum()) - int(iterative_mask[key].sum())) <= 2, key
    assert not np.array_equal(one_shot_mask["fc1/kernel"], iterative_mask["fc1/kernel"])


def test_report_shows_every_analysis(run, tmp_path):
    """The analyses above (rerun here: finished entries are only read) in report.md."""
    from tf_lottery import report

    instability = analysis.run_instability(run, levels=[0, 2], rewind_points=["0it", "50it"],
                                           training_steps="100it", points=5, runtime=RUNTIME)
    noise = analysis.run_noise(run, levels=[2], scales=[1.0, 3.0], training_steps="100it",
                               eval_every="50it", runtime=RUNTIME)
    one_shot = analysis.run_one_shot(run, runtime=RUNTIME)
    transfer = analysis.run_transfer(run, target_dataset=permuted_five_classes(), levels=[2],
                                     training_steps="100it", eval_every="50it", runtime=RUNTIME)
    written = report.make_report([run], tmp_path)
    for kind in ("instability", "noise", "one_shot", "transfer"):
        with open(written[kind], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", kind
    markdown = (tmp_path / "report.md").read_text()
    section = markdown.split("### Instability (linear mode connectivity)")[1].split("###")[0]
    rows = [line.strip("|").split("|") for line in section.splitlines()
            if line.startswith("| replicate_0")]
    assert len(rows) == len(instability["entries"]) == 4
    shown = {(int(r[1]), r[4].strip()): (float(r[10]), float(r[11]), r[13].strip())
             for r in rows}
    for entry in instability["entries"]:
        key = (entry["key"]["level"], entry["key"]["rewind"])
        assert shown[key] == (round(entry["instability"], 4),
                              round(entry["instability_train"], 4), "-")  # no BatchNorm
    section = markdown.split("### Noise robustness")[1].split("###")[0]
    rows = [line.strip("|").split("|") for line in section.splitlines()
            if line.startswith("| replicate_0")]
    assert {float(r[6]): r[9].strip() for r in rows} == {
        e["key"]["scale"]: f"{e['early_stop_test_accuracy']:.4f}" for e in noise["entries"]}
    section = markdown.split("### One-shot vs iterative")[1].split("###")[0]
    rows = [line.strip("|").split("|") for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| one-shot target")]
    assert len(rows) == len(one_shot["entries"])
    for row, entry in zip(rows, one_shot["entries"]):
        assert row[2].strip() == f"{entry['early_stop_test_accuracy']:.4f}"
        assert int(row[4]) == entry["key"]["level"]  # matched to its own level
        assert row[6].strip() == f"{entry['iterative']['early_stop_test_accuracy']:.4f}"
    section = markdown.split("### Ticket transfer")[1].split("###")[0]
    rows = {r[3].strip(): r for r in (line.strip("|").split("|") for line in section.splitlines()
                                      if line.startswith("| replicate_0"))}
    assert set(rows) == {"source_ticket", "random_ticket", "target_ticket", "target_dense"}
    for entry in transfer["entries"]:
        row = rows[entry["key"]["method"]]
        assert row[1].strip() == "synthetic → synthetic_5"
        assert row[7].strip() == f"{entry['early_stop_test_accuracy']:.4f}"
        assert row[9].strip() == (", ".join(entry["reinitialized_layers"]) or "-")


def test_bad_analysis_arguments_fail_before_training(run, tmp_path):
    cases = [  # (function, arguments, message, the argument the error names)
        (analysis.run_instability, dict(levels=[5]), "levels with a mask: [0, 1, 2]", "levels"),
        (analysis.run_instability, dict(rewind_points=["200it"]), "not before the end",
         "rewind_points"),
        (analysis.run_instability, dict(points=1), "`points` must be an integer >= 2",
         "points"),
        (analysis.run_instability, dict(mask="best"), "`mask` must be one of", "mask"),
        (analysis.run_instability, dict(reestimate_bn="yes"), "`reestimate_bn` must be True",
         "reestimate_bn"),
        (analysis.run_instability, dict(bn_batches=0), "`bn_batches` must be an integer >= 1",
         "bn_batches"),
        (analysis.run_instability, dict(train_error_examples=-1),
         "`train_error_examples` must be an integer >= 0", "train_error_examples"),
        (analysis.run_instability, dict(training_steps="100"), "`training_steps`",
         "training_steps"),
        (analysis.run_noise, dict(scales=[-1]), "`scales` must list numbers >= 0", "scales"),
        (analysis.run_noise, dict(repeats=0), "`repeats` must be an integer >= 1", "repeats"),
        (analysis.run_transfer, dict(target_dataset="mnist"), "input shape (28, 28, 1)",
         "target_dataset"),
        (analysis.run_transfer, dict(target_dataset="mnist", target_preprocess="crop"),
         "`target_preprocess` must be None or one of", "target_preprocess"),
        (analysis.run_transfer, dict(target_dataset="imagenet"), "`target_dataset`",
         "target_dataset"),
        (analysis.run_transfer, dict(target_dataset="synthetic"), "the run's own dataset",
         "target_dataset"),
        (analysis.run_transfer, dict(target_dataset=permuted_five_classes(), levels=[0]),
         "pruned levels", "levels"),
        (analysis.run_one_shot, dict(levels=[0]), "pruned levels (> 0) for one_shot", "levels"),
        (analysis.run_one_shot, dict(levels=[3]), "levels with a mask: [0, 1, 2]", "levels"),
    ]
    def written():
        directory = run / "replicate_0" / "analysis"
        return sorted(os.listdir(directory)) if directory.exists() else []

    before = written()
    for fn, kwargs, message, argument in cases:
        with pytest.raises(ValueError, match=re.escape(message)) as info:
            fn(run, **kwargs)
        assert "(--" not in str(info.value), info.value  # the library names no flag
        assert getattr(info.value, "argument", None) == argument, info.value
    assert written() == before
    with pytest.raises(ValueError, match="not a run directory"):
        analysis.open_run(tmp_path)


def test_command_line_analyze(run, capsys):
    from tf_lottery.cli import report as report_cli

    def analyze(*args):
        with pytest.raises(SystemExit) as exit_info:
            report_cli.run(["tf-lottery-report", "analyze", f"--run_dir={run}", *args])
        return exit_info.value.code

    assert analyze("--analysis=instability", "--levels=1", "--points=3",
                   "--training_steps=100it", "--nojit_compile") == 0
    out = capsys.readouterr().out
    assert "level=1, mask=lottery, rewind=50it, training_steps=100it, points=3: instability" in out
    assert analyze("--analysis=one_shot", "--levels=1", "--nojit_compile") == 0
    (line,) = [l for l in capsys.readouterr().out.splitlines() if l.startswith("  level=1")]
    ticket_1 = json.loads((run / "replicate_0" / "level_1" / "lottery" / "summary.json")
                          .read_text())
    assert line.startswith(f"  level=1, target={round(ticket_1['sparsity'], 6)}, "
                           "training_steps=200it: test accuracy at early stopping ")
    assert line.endswith(f"(iterative ticket {ticket_1['early_stop_test_accuracy']:.4f})")
    for args, message in [
        (("--analysis=nope",), "error: --analysis must list analyses among"),
        (("--analysis=transfer",), "error: --analysis=transfer needs --target_dataset"),
        (("--analysis=noise", "--noise_scales=a"), "error: --noise_scales must list numbers"),
        (("--analysis=instability,noise", "--levels=9"), "error: --levels 9 has no ticket"),
        (("--analysis=noise", "extra"), "error: unexpected arguments ['extra']"),
    ]:
        assert analyze(*args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(message), (args, err)


# ------------------------------------------- BatchNorm re-estimation and train error


def bn_model_fn(seed):
    """A tiny Functional network with one BatchNormalization layer (on fc1's output)."""
    inputs = keras.Input(DATA.input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(32, kernel_initializer=keras.initializers.GlorotNormal(seed),
                           name="fc1")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    outputs = keras.layers.Dense(DATA.num_classes, name="output",
                                 kernel_initializer=keras.initializers.GlorotNormal(seed + 1))(x)
    return keras.Model(inputs, outputs)


def test_reestimated_statistics_are_the_averages_over_the_batches_and_weights_stay():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3)(keras.layers.BatchNormalization(name="bn")(inputs))
    model = keras.Model(inputs, outputs)
    batches = [np.array([[0, 1, 2, 3], [2, 1, 0, 3], [4, 1, 4, 3]], np.float32),
               np.array([[1, 0, 0, 0], [1, 2, 0, 0], [1, 4, 6, 0]], np.float32)]
    before = [w.copy() for w in model.get_weights()]
    assert analysis.reestimate_batch_norm(model, batches) == 1
    bn = model.get_layer("bn")
    # Batch means (2, 1, 2, 3) and (1, 2, 2, 0): their average is the mean of all 6 rows.
    np.testing.assert_allclose(bn.moving_mean.numpy(), [1.5, 1.5, 2.0, 1.5], atol=1e-6)
    # Biased batch variances (8/3, 0, 8/3, 0) and (0, 8/3, 8, 0), averaged.
    np.testing.assert_allclose(bn.moving_variance.numpy(), [4 / 3, 4 / 3, 16 / 3, 0.0],
                               atol=1e-5)
    assert bn.momentum == 0.99  # restored
    names = [w.path for w in model.weights]
    for name, old, new in zip(names, before, model.get_weights()):
        if "moving" not in name:  # gamma, beta and the Dense weights are untouched
            np.testing.assert_array_equal(old, new)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    weights = plain.get_weights()
    assert analysis.reestimate_batch_norm(plain, batches) == 0
    assert all(np.array_equal(a, b) for a, b in zip(weights, plain.get_weights()))
    with pytest.raises(ValueError, match="at least one batch"):
        analysis.reestimate_batch_norm(model, [])


def test_bn_reestimation_changes_the_barrier_of_a_batch_norm_network():
    training = TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="60it",
                               eval_every="60it")
    bn_trainer = Trainer(bn_model_fn, DATA, training, seed=4, runtime=RUNTIME)
    theta = bn_trainer.fresh_weights(7)
    masks = {k: np.ones_like(v) for k, v in masking.get_masks(bn_trainer.model).items()}
    bn_data = [DATA.x_train[32 * i:32 * (i + 1)] for i in range(4)]
    plain = analysis.linear_mode_connectivity(bn_trainer, theta, masks, start=0,
                                              data_orders=(5, 6), points=5)
    fixed = analysis.linear_mode_connectivity(bn_trainer, theta, masks, start=0,
                                              data_orders=(5, 6), points=5, bn_data=bn_data)
    assert (plain["bn_reestimated"], fixed["bn_reestimated"]) == (0, 1)
    assert fixed["instability"] != plain["instability"]
    assert all(a != b for a, b in zip(fixed["test_loss"], plain["test_loss"]))
    # The last network evaluated (a = 1) holds the averages of its BN input over bn_data.
    model = bn_trainer.model
    fc1 = keras.Model(model.input, model.get_layer("fc1").output)
    inputs = [fc1(x, training=True).numpy() for x in bn_data]
    np.testing.assert_allclose(model.get_layer("bn").moving_mean.numpy(),
                               np.mean(np.concatenate(inputs), axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.get_layer("bn").moving_variance.numpy(),
                               np.mean([x.var(axis=0) for x in inputs], axis=0),
                               rtol=1e-4, atol=1e-6)


def test_without_batch_norm_the_barrier_is_exactly_the_plain_one(trainer):
    theta = trainer.fresh_weights(7)
    trainer.model.set_weights(theta)
    masks = {k: np.ones_like(v) for k, v in masking.get_masks(trainer.model).items()}
    bn_data = [DATA.x_train[32 * i:32 * (i + 1)] for i in range(4)]
    x, y = DATA.x_train[:100], DATA.y_train[:100]
    plain = analysis.linear_mode_connectivity(trainer, theta, masks, start=0,
                                              data_orders=(5, 6), points=4)
    same = analysis.linear_mode_connectivity(trainer, theta, masks, start=0,
                                             data_orders=(5, 6), points=4, bn_data=bn_data,
                                             train_data=(x, y))
    assert same["bn_reestimated"] == 0
    assert same["test_error"] == plain["test_error"] and same["test_loss"] == plain["test_loss"]
    assert same["instability"] == plain["instability"]
    # Train error: the last network evaluated is w1 (a = 1), measured on (x, y).
    assert plain["train_error"] == [None] * 4 and plain["instability_train"] is None
    logits = trainer.model.predict(x, verbose=0)
    assert same["train_error"][-1] == pytest.approx(np.mean(np.argmax(logits, 1) != y))
    assert same["instability_train"] == analysis.instability(same["train_error"])


BN_HP = ExperimentHparams(
    model=ModelHparams("resnet20"),
    dataset=DatasetHparams("synthetic"),
    training=TrainingHparams(optimizer="sgd", learning_rate=0.05, momentum=0.9,
                             batch_size=32, training_steps="40it", eval_every="20it"),
    pruning=PruningHparams(levels=0, rate=0.2, rewind="0it"),
)


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    """A tiny ResNet-20 (BatchNorm) run: the dense network, 40 iterations."""
    run_root = tmp_path_factory.mktemp("bn_runs")
    experiment.run_experiment(BN_HP, run_root, replicate=0, dataset=DATA, runtime=RUNTIME)
    return run_root / BN_HP.run_name()


def test_run_instability_of_a_batch_norm_run_records_the_reestimation(bn_run, monkeypatch):
    args = dict(levels=[0], rewind_points=["0it"], training_steps="40it", points=3,
                runtime=RUNTIME)
    on = analysis.run_instability(bn_run, bn_batches=4, train_error_examples=100, **args)
    (entry,) = on["entries"]
    ctx = analysis.open_run(bn_run)
    assert entry["key"]["bn_reestimate"] == 4
    assert entry["bn_reestimated"] == len(analysis.batch_norm_layers(ctx.build(0))) > 0
    assert entry["train_error_examples"] == 100 and len(entry["train_error"]) == 3
    assert entry["instability_train"] == analysis.instability(entry["train_error"])
    # An entry written before the option existed (no "bn_reestimate" in its key, no train
    # error) used the interpolated statistics: reestimate_bn=False finds it, unchanged.
    old = {k: v for k, v in entry.items() if not k.startswith(("train_", "instability_t",
                                                                   "bn_"))}
    old["key"] = {k: v for k, v in entry["key"].items() if k != "bn_reestimate"}
    old["instability"] = 0.5
    path = bn_run / "replicate_0" / "analysis" / "instability.json"
    tfl_files.atomic_write_json(path, {**on, "entries": [entry, old]})
    monkeypatch.setattr(connectivity, "linear_mode_connectivity",
                        lambda *a, **k: pytest.fail("finished entries were recomputed"))
    off = analysis.run_instability(bn_run, reestimate_bn=False, **args)
    assert off["entries"] == [entry, old]
    monkeypatch.undo()
    off = analysis.run_instability(bn_run, reestimate_bn=False, overwrite=True,
                                   train_error_examples=100, **args)
    recomputed = off["entries"][-1]
    assert recomputed["key"] == old["key"] and recomputed["bn_reestimated"] == 0
    assert recomputed["instability"] != entry["instability"]  # the re-estimation matters
    assert recomputed["train_error"] != entry["train_error"]


def test_report_shows_train_instability_and_bn_statistics(bn_run, tmp_path):
    from tf_lottery import report

    args = dict(levels=[0], rewind_points=["0it"], training_steps="40it", points=3,
                train_error_examples=100, runtime=RUNTIME)
    on = analysis.run_instability(bn_run, bn_batches=4, **args)["entries"]
    off = analysis.run_instability(bn_run, reestimate_bn=False, **args)["entries"]
    on = next(e for e in on if e["key"].get("bn_reestimate") == 4)
    off = next(e for e in off if "bn_reestimate" not in e["key"])
    report.make_report([bn_run], tmp_path)
    section = (tmp_path / "report.md").read_text().split(
        "### Instability (linear mode connectivity)")[1].split("###")[0]
    rows = {r[13].strip(): r for r in (line.strip("|").split("|")
                                       for line in section.splitlines()
                                       if line.startswith("| replicate_0"))}
    assert set(rows) >= {"4 batches", "interp."}
    for name, entry in (("4 batches", on), ("interp.", off)):
        assert float(rows[name][10]) == round(entry["instability"], 4)
        assert float(rows[name][11]) == round(entry["instability_train"], 4)


def test_command_line_instability_flags(bn_run, capsys):
    from tf_lottery.cli import analyze as analyze_cli

    def analyze(*args):
        with pytest.raises(SystemExit) as exit_info:
            analyze_cli.run(["tf-lottery-analyze", f"--run_dir={bn_run}", "--levels=0",
                             "--analysis=instability", "--rewind_points=0it", "--points=3",
                             "--training_steps=40it", "--nojit_compile", *args])
        return exit_info.value.code

    assert analyze("--bn_batches=2", "--train_error_examples=50") == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if "bn_reestimate=2" in l]
    assert len(lines) == 1 and "(train " in lines[0], lines
    assert analyze("--reestimate_bn=false", "--train_error_examples=0", "--overwrite") == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if "bn_reestimate" not in l
             and "level=0" in l]
    assert len(lines) == 1 and "(train " not in lines[0], lines
    assert analyze("--bn_batches=0") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --bn_batches must be an integer >= 1; received 0."]


# ------------------------------------------------------ transfer across input shapes


def test_to_input_shape_by_hand_on_2x2_images():
    gray = np.array([[1, 2], [3, 4]], np.float32).reshape(1, 2, 2, 1)
    padded = analysis.to_input_shape(gray, (4, 4, 3), "pad")
    assert padded.shape == (1, 4, 4, 3) and padded.dtype == np.float32
    for c in range(3):  # the gray channel repeated, zero border of one pixel
        np.testing.assert_array_equal(padded[0, :, :, c], [[0, 0, 0, 0], [0, 1, 2, 0],
                                                           [0, 3, 4, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(analysis.to_input_shape(padded, (2, 2, 3), "pad"),
                                  np.repeat(gray, 3, axis=-1))  # centre crop
    rgb = np.array([[[1, 0, 0], [0, 1, 0]], [[0, 0, 1], [1, 1, 1]]], np.float32)[None]
    np.testing.assert_allclose(analysis.to_input_shape(rgb, (2, 2, 1), "pad")[0, :, :, 0],
                               [[0.299, 0.587], [0.114, 1.0]], atol=1e-6)  # luminance
    # Bilinear, half-pixel centres: output pixel i samples input position (i + 0.5) / 2 - 0.5
    # = -0.25, 0.25, 0.75, 1.25, clamped at the edges: [a, (3a + b) / 4, (a + 3b) / 4, b].
    resized = analysis.to_input_shape(gray, (4, 4, 1), "resize")[0, :, :, 0]
    np.testing.assert_allclose(resized[0], [1, 1.25, 1.75, 2], atol=1e-6)
    np.testing.assert_allclose(resized[:, 0], [1, 1.5, 2.5, 3], atol=1e-6)
    with pytest.raises(ValueError, match="`target_preprocess` must be one of") as info:
        analysis.to_input_shape(gray, (4, 4, 1), "crop")
    assert info.value.argument == "target_preprocess"
    with pytest.raises(ValueError, match="1 .gray. or 3 .RGB. channels"):
        analysis.to_input_shape(gray, (2, 2, 2), "pad")


def place(x, size, channels=1, weights=(1.0,)):
    """Synthetic 8x8 images in the middle of ``size`` x ``size``, ``channels`` channels
    (each scaled by ``weights``)."""
    off = (size - 8) // 2
    out = np.zeros((len(x), size, size, channels), np.float32)
    out[:, off:off + 8, off:off + 8, :] = x * np.asarray(weights, np.float32)
    return out


def shaped(name, size, channels, weights=(1.0,)):
    return data.Dataset(*(a for split in ("train", "val", "test") for a in (
        place(getattr(DATA, f"x_{split}"), size, channels, weights),
        getattr(DATA, f"y_{split}"))), name=name, num_classes=10,
        input_shape=(size, size, channels), source="synthetic")


HP_28 = ExperimentHparams(
    model=ModelHparams("lenet_300_100"),
    dataset=DatasetHparams("fashion_mnist"),  # the shape; the arrays are synthetic
    training=TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="40it",
                             eval_every="20it"),
    pruning=PruningHparams(levels=1, rate=0.5, rate_output=0.25, rewind="0it"),
)


@pytest.fixture(scope="module")
def run_28(tmp_path_factory):
    """A tiny LeNet run on 28x28x1 (Fashion-MNIST-shaped synthetic) data, one level."""
    run_root = tmp_path_factory.mktemp("runs_28")
    experiment.run_experiment(HP_28, run_root, replicate=0, dataset=shaped("fashion_mnist", 28, 1),
                              runtime=RUNTIME)
    return run_root / HP_28.run_name()


def test_transfer_from_28x28x1_to_a_32x32x3_target(run_28):
    target = shaped("synthetic_rgb", 32, 3, (1.0, 0.5, 0.25))
    with pytest.raises(ValueError, match="or pass `target_preprocess`") as info:
        analysis.run_transfer(run_28, target_dataset=target, levels=[1])
    assert info.value.argument == "target_dataset"
    with pytest.raises(ValueError, match="cannot be used with `target_preprocess`"):
        analysis.run_transfer(run_28, target_dataset=target, levels=[1],
                              target_run_dir=run_28, target_preprocess="pad")
    result = analysis.run_transfer(run_28, target_dataset=target, levels=[1],
                                   training_steps="40it", eval_every="20it",
                                   target_preprocess="pad", runtime=RUNTIME)
    entries = {e["key"]["method"]: e for e in result["entries"]}
    assert set(entries) == {"source_ticket", "random_ticket", "target_ticket", "target_dense"}
    for entry in entries.values():
        assert entry["key"]["target_preprocess"] == "pad"
        assert entry["target_input_shape"] == [32, 32, 3]
        assert entry["reinitialized_layers"] == []  # 10 classes: every layer carried over
    # Padded 8x8 -> 32x32 then cropped to 28x28: the source's layout, learnable.
    assert entries["target_dense"]["final_test_accuracy"] > 0.3
    imp = run_28 / "replicate_0" / "analysis" / "transfer_synthetic_rgb_pad_imp"
    assert (imp / "level_1" / "lottery" / "summary.json").exists()


def test_command_line_transfer_to_another_shape(run_28, capsys):
    from tf_lottery.cli import analyze as analyze_cli

    def analyze(*args):
        with pytest.raises(SystemExit) as exit_info:
            analyze_cli.run(["tf-lottery-analyze", f"--run_dir={run_28}", "--levels=1",
                             "--analysis=transfer", "--target_dataset=synthetic",
                             "--training_steps=40it", "--eval_every=20it", "--nojit_compile",
                             *args])
        return exit_info.value.code

    assert analyze() == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("error: --target_dataset 'synthetic' has input shape (8, 8, 1)")
    assert "or pass --target_preprocess ('pad' or 'resize')" in err
    assert analyze("--target_preprocess=resize") == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if "target_preprocess=resize" in l]
    assert len(lines) == 4 and all("target=synthetic" in l for l in lines), lines
