"""The IMP driver on synthetic data: levels, rewinding, controls, one-shot, resume."""

import json
import os

import keras
import numpy as np
import pytest

import tf_lottery as tfl
from tf_lottery import data, files, models, pruning, ticket, training
from tf_lottery.hparams import PruningHparams, TrainingHparams
from tf_lottery.trainer import Trainer

DATA = data.load("synthetic")
TRAINING = TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="300it",
                           eval_every="100it")
RUNTIME = training.Runtime(deterministic=True)


def model_fn(seed):
    return models.build_model("lenet_300_100", DATA.input_shape, DATA.num_classes, seed=seed)


def fit(run_dir, pruning, training=TRAINING, **kwargs):
    kwargs.setdefault("runtime", RUNTIME)
    return ticket.fit(model_fn, DATA, training=training, pruning_hparams=pruning,
                      run_dir=run_dir, seed=3, **kwargs)


def strip_times(obj):
    """results.json without wall-clock fields, for exact comparisons."""
    if isinstance(obj, dict):
        return {k: strip_times(v) for k, v in obj.items()
                if not k.endswith("_seconds") and k != "run_dir"}
    if isinstance(obj, list):
        return [strip_times(v) for v in obj]
    return obj


def load_model_weights(path):
    model = tfl.wrap(model_fn(0))
    model.load_weights(path)
    return model


@pytest.fixture(scope="module")
def imp_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("imp")
    pruning = PruningHparams(levels=2, rate=0.5, rate_output=0.25, rewind="100it",
                             controls=("reinit", "random_prune"), one_shot=(0.6,))
    return run_dir, fit(run_dir, pruning)


def test_levels_follow_the_sparsity_ladder(imp_run):
    run_dir, result = imp_run
    assert [sorted(level) for level in result.levels] == [
        ["lottery"], ["lottery", "random_prune", "reinit"], ["lottery", "random_prune", "reinit"]]
    for level in (1, 2):
        for branch, summary in result.levels[level].items():
            for key, sparsity in summary["layer_sparsity"].items():
                rate = 0.25 if key == "output/kernel" else 0.5
                # 1 - (1 - p)^n, up to rounding one weight per layer and level
                size = np.prod(load_model_weights(
                    os.path.join(run_dir, "init.weights.h5")).get_layer(
                        key.split("/")[0]).kernel.shape)
                assert abs(sparsity - (1 - (1 - rate) ** level)) <= level / size + 1e-9, (branch, key)


def test_level_mask_is_magnitude_pruned_from_previous_level(imp_run):
    run_dir, _ = imp_run
    previous = load_model_weights(os.path.join(run_dir, "level_0", "lottery", "final.weights.h5"))
    mask = tfl.load_masks(os.path.join(run_dir, "level_1", "lottery", "mask.npz"))
    for key, kept in mask.items():
        weights = np.abs(previous.get_layer(key.split("/")[0]).kernel.numpy())
        # every kept weight is at least as large as every pruned one
        assert weights[kept == 1].min() >= weights[kept == 0].max(), key
    deeper = tfl.load_masks(os.path.join(run_dir, "level_2", "lottery", "mask.npz"))
    for key in mask:  # pruned weights stay pruned
        assert np.all(deeper[key] <= mask[key])


def test_controls_keep_counts_but_not_positions_or_init(imp_run):
    run_dir, _ = imp_run
    lottery = tfl.load_masks(os.path.join(run_dir, "level_2", "lottery", "mask.npz"))
    random_prune = tfl.load_masks(os.path.join(run_dir, "level_2", "random_prune", "mask.npz"))
    reinit = tfl.load_masks(os.path.join(run_dir, "level_2", "reinit", "mask.npz"))
    for key in lottery:
        assert random_prune[key].sum() == lottery[key].sum()
        np.testing.assert_array_equal(reinit[key], lottery[key])
    assert any(not np.array_equal(random_prune[k], lottery[k]) for k in lottery)
    rows = {b: files.read_csv(os.path.join(run_dir, "level_1", b, "metrics.csv"))
            for b in ("lottery", "reinit")}
    # Both start at the rewind iteration; the reinit network starts from other weights.
    assert rows["lottery"][0]["iteration"] == rows["reinit"][0]["iteration"] == 100
    assert rows["lottery"][0]["val_loss"] != rows["reinit"][0]["val_loss"]


def test_trained_ticket_has_exact_zeros_and_strip_matches(imp_run):
    run_dir, _ = imp_run
    model = load_model_weights(os.path.join(run_dir, "level_2", "lottery", "final.weights.h5"))
    stripped = tfl.strip(model)
    report = tfl.sparsity_report(stripped)
    assert report.sparsity == pytest.approx(
        json.load(open(os.path.join(run_dir, "level_2", "lottery", "summary.json")))["sparsity"])
    x = DATA.x_test[:16]
    np.testing.assert_allclose(stripped(x), model(x), atol=1e-6)


def test_summaries_equal_metrics_and_early_stopping(imp_run):
    run_dir, result = imp_run
    for level, branches in enumerate(result.levels):
        for branch, summary in branches.items():
            rows = files.read_csv(os.path.join(run_dir, f"level_{level}", branch, "metrics.csv"))
            trained = rows[1:]
            best = min(trained, key=lambda r: (r["val_loss"], r["iteration"]))
            assert summary["early_stop_iteration"] == best["iteration"]
            assert summary["early_stop_test_accuracy"] == pytest.approx(best["test_accuracy"])
            assert summary["final_test_accuracy"] == pytest.approx(rows[-1]["test_accuracy"])
            assert [r["iteration"] for r in rows] == (
                [0, 100, 200, 300] if level == 0 else [100, 200, 300])
    saved = json.load(open(os.path.join(run_dir, "results.json")))
    assert strip_times(saved) == strip_times(json.loads(json.dumps(result.to_dict())))
    # Trained on learnable data, the dense network beats chance by far.
    assert result.levels[0]["lottery"]["final_test_accuracy"] > 0.5


def test_one_shot_reaches_target_sparsity(imp_run):
    _, result = imp_run
    assert result.one_shot[0.6]["sparsity"] == pytest.approx(0.6, abs=2e-3)
    layers = result.one_shot[0.6]["layer_sparsity"]
    assert layers["output/kernel"] < layers["fc1/kernel"]  # output pruned at a lower rate


def test_rewinding_with_nothing_pruned_reproduces_the_dense_run(tmp_path):
    # With rate 0 and an optimizer without state (plain SGD; rewinding resets optimizer
    # state), a rewound level trains the same network from theta_k over the same batches
    # from iteration k, so it must end exactly where level 0 ended: this checks
    # rewinding, the schedule offset (a drop at 200) and the data order together.
    training = TrainingHparams(optimizer="sgd", learning_rate=0.1, batch_size=32,
                               training_steps="300it", eval_every="100it", lr_drops=("200it",))
    result = fit(tmp_path, PruningHparams(levels=1, rate=0.0, rate_output=0.0, rewind="100it"),
                 training=training)
    dense, rewound = result.levels[0]["lottery"], result.levels[1]["lottery"]
    assert rewound["final_test_loss"] == dense["final_test_loss"]
    assert rewound["final_val_loss"] == dense["final_val_loss"]
    rows0 = files.read_csv(tmp_path / "level_0" / "lottery" / "metrics.csv")
    rows1 = files.read_csv(tmp_path / "level_1" / "lottery" / "metrics.csv")
    assert rows1[0]["val_loss"] == rows0[1]["val_loss"]  # theta_k is the iteration-100 net


def test_rerun_skips_finished_work_and_corrupt_checkpoint_retrains(tmp_path):
    pruning = PruningHparams(levels=1, rate=0.5, controls=("reinit",))
    first = fit(tmp_path, pruning)
    branch = tmp_path / "level_1" / "reinit"
    os.remove(branch / "summary.json")  # as if interrupted before the end
    (branch / "checkpoint.json").write_text("{not json")  # and its checkpoint torn
    before = os.path.getmtime(tmp_path / "level_1" / "lottery" / "summary.json")
    second = fit(tmp_path, pruning)
    assert os.path.getmtime(tmp_path / "level_1" / "lottery" / "summary.json") == before
    assert strip_times(second.to_dict()) == strip_times(first.to_dict())
    assert not any(name.startswith("checkpoint") for name in os.listdir(branch))


def test_seed_fixes_masks_and_metrics(tmp_path):
    pruning = PruningHparams(levels=1, rate=0.5, controls=("random_prune",))
    a = fit(tmp_path / "a", pruning)
    b = fit(tmp_path / "b", pruning)
    assert strip_times(a.to_dict()) == strip_times(b.to_dict())
    for branch in ("lottery", "random_prune"):
        ma = tfl.load_masks(tmp_path / "a" / "level_1" / branch / "mask.npz")
        mb = tfl.load_masks(tmp_path / "b" / "level_1" / branch / "mask.npz")
        assert all(np.array_equal(ma[k], mb[k]) for k in ma)
    c = ticket.fit(model_fn, DATA, training=TRAINING, pruning_hparams=pruning,
                   run_dir=tmp_path / "c", seed=4, runtime=RUNTIME)
    assert c.levels[1]["lottery"]["final_val_loss"] != a.levels[1]["lottery"]["final_val_loss"]


@pytest.mark.parametrize("retrain", ["finetune", "lr_rewind"])
def test_finetune_and_lr_rewind_start_from_trained_weights(tmp_path, retrain):
    result = fit(tmp_path, PruningHparams(levels=1, rate=0.2, rewind="100it", retrain=retrain))
    rows0 = files.read_csv(tmp_path / "level_0" / "lottery" / "metrics.csv")
    rows1 = files.read_csv(tmp_path / "level_1" / "lottery" / "metrics.csv")
    # Starting from the trained weights (lightly pruned), the first evaluation is far
    # better than that of the iteration-100 network.
    assert rows1[0]["val_loss"] < rows0[1]["val_loss"]
    assert result.levels[1]["lottery"]["sparsity"] > 0.15


def test_step_schedule_warmup_drops_offset_and_freeze():
    schedule = training.StepSchedule(1.0, warmup=10, drops=(20, 30), drop_factor=0.5)
    values = [float(schedule(s)) for s in (0, 5, 10, 25, 35)]
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0, 0.5, 0.25])
    schedule.offset.assign(25)
    assert float(schedule(5)) == pytest.approx(0.25)  # t = 30
    schedule.frozen.assign(1)
    assert float(schedule(1000)) == pytest.approx(0.5)  # t stays 25


def test_layer_rates_follow_layer_types():
    model = tfl.wrap(models.build_model("conv2", (8, 8, 1), 10, seed=0))
    rates, output = pruning.layer_rates_for(
        model, PruningHparams(rate=0.2, rate_conv=0.1, rate_output=0.05))
    assert rates == {"conv1": 0.1, "conv2": 0.1} and output == 0.05


def test_bad_input_fails_before_writing(tmp_path):
    with pytest.raises(ValueError, match="rewind"):
        fit(tmp_path / "x", PruningHparams(rewind="300it"))
    with pytest.raises(ValueError, match="dataset"):
        ticket.fit(model_fn, object(), training=TRAINING, pruning_hparams=PruningHparams(),
                   run_dir=tmp_path / "y")
    with pytest.raises(ValueError, match="keras.Model"):
        ticket.fit(lambda seed: "not a model", DATA, training=TRAINING,
                   pruning_hparams=PruningHparams(), run_dir=tmp_path / "z")
    assert not any(os.path.exists(tmp_path / d) for d in ("x", "y", "z"))


def test_user_model_and_adam_weight_decay_sgd(tmp_path):
    # A Keras user's own Functional model (not from the zoo), SGD with Nesterov
    # momentum, weight decay, warmup and a learning-rate drop.
    def own_model(seed):
        inputs = keras.Input(DATA.input_shape)
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Dense(32, activation="relu", name="hidden",
                               kernel_initializer=keras.initializers.GlorotNormal(seed))(x)
        return keras.Model(inputs, keras.layers.Dense(DATA.num_classes, name="output")(x))

    training = TrainingHparams(optimizer="sgd", learning_rate=0.1, momentum=0.9, nesterov=True,
                               weight_decay=1e-4, batch_size=32, training_steps="300it",
                               eval_every="100it", warmup="50it", lr_drops=("200it",))
    result = ticket.fit(own_model, DATA, training=training,
                        pruning_hparams=PruningHparams(levels=1, rate=0.5), run_dir=tmp_path)
    assert result.levels[1]["lottery"]["layer_sparsity"] == {
        "hidden/kernel": 0.5, "output/kernel": 0.5}
    assert result.levels[1]["lottery"]["final_test_accuracy"] > 0.5


def test_trainer_trains_any_interval_and_data_order():
    trainer = Trainer(model_fn, DATA, TRAINING, seed=1, runtime=RUNTIME)
    weights = trainer.model.get_weights()
    masks = {k: np.ones_like(v) for k, v in tfl.get_masks(trainer.model).items()}
    a = trainer.train(weights=weights, masks=masks, start=7, end=230)
    assert [r["iteration"] for r in a["metrics"]] == [7, 107, 207, 230]
    assert int(trainer.model.optimizer.iterations) == 223  # exactly the interval's steps
    trainer.set_data_order(99)
    b = trainer.train(weights=weights, masks=masks, start=7, end=230)
    assert b["final_val_loss"] != a["final_val_loss"]  # other batches, other network
    trainer.set_data_order(ticket.derive_seed(1, "data"))
    c = trainer.train(weights=weights, masks=masks, start=7, end=230)
    assert c["final_val_loss"] == a["final_val_loss"]
    with pytest.raises(ValueError, match="start"):
        trainer.train(weights=weights, masks=masks, start=300)
