"""Tickets without (much) training in the driver: pruning at initialization, early-bird
tickets and scores accumulated during training, on small, hand-checkable inputs."""

import dataclasses

import keras
import numpy as np
import pytest

import tf_lottery as tfl
from helpers import run_main
from tf_lottery import data, files, masking, models, paths, ticket, training
from tf_lottery.accumulated_scores import ScoreAccumulator
from tf_lottery.early_bird import EarlyBird, mask_distance
from tf_lottery.hparams import ArgumentError, PruningHparams, TrainingHparams, derive_seed

pytestmark = pytest.mark.usefixtures("clean_keras")

DATA = data.load("synthetic")
TRAINING = TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="300it",
                           eval_every="50it")
RUNTIME = training.Runtime(deterministic=True)


def model_fn(seed):
    return models.build_model("lenet_300_100", DATA.input_shape, DATA.num_classes, seed=seed)


def fit(run_dir, pruning_hparams, **kwargs):
    return ticket.fit(model_fn, DATA, training=TRAINING, pruning_hparams=pruning_hparams,
                      run_dir=run_dir, seed=3, runtime=RUNTIME, **kwargs)


# ------------------------------------------------------------------ early bird


def test_mask_distance_is_the_fraction_of_entries_that_differ():
    a = {"a/kernel": np.array([[1, 0], [1, 1]], np.float32), "b/kernel": np.ones(4, np.float32)}
    b = {"a/kernel": np.array([[1, 1], [0, 1]], np.float32), "b/kernel": np.ones(4, np.float32)}
    assert mask_distance(a, b) == pytest.approx(2 / 8)
    assert mask_distance(a, a) == 0.0
    with pytest.raises(ValueError, match="different keys"):
        mask_distance(a, {"a/kernel": a["a/kernel"]})


def test_early_bird_draws_once_five_distances_in_a_row_are_below_epsilon():
    # Masks of 10 entries; the distances between consecutive ones are 0.3, 0.05, 0.05,
    # 0.05, 0.2, then 0.0 x 5: the draw comes at the 11th observation, not before (the
    # 0.2 breaks the first run of small distances).
    flips = [3, 0.5, 0.5, 0.5, 2, 0, 0, 0, 0, 0]
    masks, current = [], np.ones(20, np.float32)
    masks.append(current.copy())
    position = 0
    for n in flips:
        current = current.copy()
        count = int(n * 2)  # 20 entries: a flip of 2n entries is a distance of n / 10
        current[position:position + count] = 1 - current[position:position + count]
        position += count
        masks.append(current)
    stream = iter([{"k": m} for m in masks])
    watch = EarlyBird(lambda: next(stream), epsilon=0.1)
    decisions = [watch.observe() for _ in masks]
    assert decisions == [False] * 10 + [True]
    assert watch.distances[:5] == pytest.approx([0.3, 0.05, 0.05, 0.05, 0.2])
    # The watch resumes from its state: same decision on the same next mask.
    state, arrays = watch.state()
    again = EarlyBird(lambda: {"k": masks[-1]}, epsilon=0.1)
    again.restore(state, arrays)
    assert again.observe() and again.distances[-1] == 0.0
    with pytest.raises(ValueError, match="epsilon"):
        EarlyBird(lambda: {}, epsilon=1.0)


def test_early_bird_stops_the_level_and_the_next_mask_is_drawn_there(tmp_path):
    # 600 iterations, evaluated every 50: five distances need six masks, so the earliest
    # draw is at the sixth evaluation (iteration 300); the synthetic task settles fast.
    longer = dataclasses.replace(TRAINING, training_steps="600it")
    result = ticket.fit(model_fn, DATA, training=longer, run_dir=tmp_path, seed=3,
                        runtime=RUNTIME, pruning_hparams=PruningHparams(
                            levels=1, rate=0.5, early_bird=True, early_bird_epsilon=0.05))
    dense = result.levels[0]["lottery"]
    stop = dense["early_bird_iteration"]
    assert stop is not None and stop % 50 == 0 and 300 <= stop < 600
    assert dense["early_bird_saved"] == pytest.approx((600 - stop) / 600)
    rows = files.read_csv(paths.ReplicateDir.at(str(tmp_path)).branch(0).metrics)
    assert int(float(rows[-1]["iteration"])) == stop
    # The last level trains its whole budget, with the mask pruned from the weights at
    # the draw.
    last = result.levels[1]["lottery"]
    assert "early_bird_iteration" not in last and last["end_iteration"] == 600
    assert int(float(files.read_csv(paths.ReplicateDir.at(str(tmp_path)).branch(1).metrics)
                     [-1]["iteration"])) == 600
    rep = paths.ReplicateDir.at(str(tmp_path))
    model = tfl.wrap(model_fn(0))
    model.load_weights(rep.branch(0).final_weights)
    expected = tfl.prune(model, rate=0.5, seed=derive_seed(3, "prune", 1))
    got = masking.load_masks(rep.branch(1).mask)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


@pytest.mark.parametrize("kwargs, argument", [
    (dict(early_bird=True, criterion="random"), "early_bird"),
    (dict(early_bird=True, prune_at="init"), "early_bird"),
    (dict(early_bird_epsilon=0.0), "early_bird_epsilon"),
    (dict(early_bird_epsilon=1.5), "early_bird_epsilon"),
    (dict(prune_at="init", retrain="finetune"), "retrain"),
    (dict(prune_at="init", criterion="movement_score"), "criterion"),
    (dict(prune_at="init", criterion="magnitude_increase"), "criterion"),
    (dict(prune_at="later"), "prune_at"),
])
def test_bad_settings_fail_before_any_work(kwargs, argument):
    with pytest.raises(ArgumentError) as err:
        PruningHparams(levels=1, **kwargs)
    assert err.value.argument == argument


# ------------------------------------------------------- accumulated scores


def _one_layer_model(optimizer):
    model = tfl.wrap(keras.Sequential([keras.Input((2,)), keras.layers.Dense(
        2, use_bias=False, name="fc")]))
    model.compile(optimizer=optimizer, loss=keras.losses.MeanSquaredError())
    model.optimizer.build(model.trainable_variables)
    tfl.set_prunable_weights(model, {"fc/kernel": np.array([[1.0, -2.0], [0.5, 3.0]],
                                                           np.float32)})
    return model


@pytest.mark.parametrize("kind", ["movement_score", "accumulated_change"])
def test_accumulated_scores_of_one_sgd_step_by_hand(kind):
    # y = x W with x = [1, 1], target 0: loss = mean(y**2) over 2 outputs, so
    # dL/dW[i, j] = x_i * y_j = y_j, with y = [1.5, 1.0]. SGD lr 0.1: dW = -0.1 * g.
    model = _one_layer_model(keras.optimizers.SGD(0.1))
    accumulator = ScoreAccumulator(model, kind)
    w = np.array([[1.0, -2.0], [0.5, 3.0]])
    g = np.array([[1.5, 1.0], [1.5, 1.0]])
    model.train_on_batch(np.ones((1, 2), np.float32), np.zeros((1, 2), np.float32))
    expected = -w * g if kind == "movement_score" else 0.1 * np.abs(g)
    np.testing.assert_allclose(accumulator.get()["fc/kernel"], expected, rtol=1e-6)
    accumulator.reset()
    assert not accumulator.get()["fc/kernel"].any()
    with pytest.raises(ValueError, match="kind"):
        ScoreAccumulator(model, "magnitude")


def test_movement_score_levels_prune_by_the_scores_the_level_collected(tmp_path):
    result = fit(tmp_path, PruningHparams(levels=1, rate=0.5, criterion="movement_score"))
    rep = paths.ReplicateDir.at(str(tmp_path))
    scores = files.read_arrays(rep.branch(0).scores)
    assert set(scores) == set(masking.load_masks(rep.branch(0).mask))
    assert all(np.abs(s).sum() > 0 for s in scores.values())
    # Level 1's mask keeps, in each layer, the half with the highest scores.
    mask = masking.load_masks(rep.branch(1).mask)
    for key, score in scores.items():
        kept = np.sort(score[mask[key] == 1])
        pruned = np.sort(score[mask[key] == 0])
        assert kept.size == pytest.approx(score.size / 2, abs=1)
        assert pruned[-1] <= kept[0], key
    assert result.levels[1]["lottery"]["sparsity"] == pytest.approx(0.5, abs=1e-3)


# ------------------------------------------------------ pruning at init


def test_pruning_at_init_prunes_theta_0_straight_to_each_level(tmp_path):
    hp = PruningHparams(levels=2, rate=0.5, scope="global", criterion="synflow",
                        prune_at="init", controls=("random_prune",), one_shot=(0.9,))
    result = fit(tmp_path, hp)
    rep = paths.ReplicateDir.at(str(tmp_path))
    model = tfl.wrap(model_fn(0))
    model.load_weights(rep.init_weights)
    for level, sparsity in ((1, 0.5), (2, 0.75)):
        masks = masking.load_masks(rep.branch(level).mask)
        expected = tfl.prune(model, rate=sparsity, scope="global", criterion="synflow",
                             seed=derive_seed(3, "prune", level))
        for key in masks:
            np.testing.assert_array_equal(masks[key], expected[key])
        lottery = result.levels[level]["lottery"]
        assert lottery["sparsity"] == pytest.approx(sparsity, abs=1e-3)
        assert lottery["start_iteration"] == 0 and lottery["end_iteration"] == 300
        # The sanity check: the same per-layer counts, positions shuffled in each layer.
        shuffled = masking.load_masks(rep.branch(level, "random_prune").mask)
        for key in masks:
            assert shuffled[key].sum() == masks[key].sum()
            assert not np.array_equal(shuffled[key], masks[key])
    assert result.one_shot[0.9]["sparsity"] == pytest.approx(0.9, abs=1e-3)


def test_snip_at_init_scores_a_class_balanced_batch(tmp_path):
    x, y = ticket.score_batch(DATA, seed=1)
    counts = np.bincount(y)
    assert set(counts) == {ticket.SCORE_EXAMPLES_PER_CLASS}
    assert x.shape == (len(y),) + DATA.input_shape and x.dtype == np.float32
    result = fit(tmp_path, PruningHparams(levels=1, rate=0.8, scope="global",
                                          criterion="snip", prune_at="init"))
    assert result.levels[1]["lottery"]["sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_cli_prune_at_init_runs_and_reports(tmp_path):
    proc = run_main(
        "--dataset=synthetic", "--model=lenet_300_100", "--training_steps=200it",
        "--eval_every=100it", "--batch_size=32", "--levels=1", "--pruning=erk",
        "--prune_rate=0.8", "--criterion=grasp", "--prune_at=init",
        "--controls=random_prune,reinit", f"--run_root={tmp_path}", "--jit_compile=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| 1 | random_prune | 20.0 |" in proc.stdout
    bad = run_main("--dataset=synthetic", "--prune_at=init", "--retrain=finetune",
                   "--levels=1", f"--run_root={tmp_path}")
    assert bad.returncode == 2 and "--retrain" in bad.stderr and "--prune_at" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_one_shot_analysis_refuses_a_run_pruned_at_initialization(tmp_path):
    from tf_lottery.analysis.one_shot import run_one_shot
    from tf_lottery.experiment import run_experiment
    from tf_lottery.hparams import DatasetHparams, ExperimentHparams, ModelHparams

    hp = ExperimentHparams(
        model=ModelHparams(model="lenet_300_100"), dataset=DatasetHparams(dataset="synthetic"),
        training=TrainingHparams(batch_size=32, training_steps="100it", eval_every="50it"),
        pruning=PruningHparams(levels=1, rate=0.5, scope="global", criterion="synflow",
                               prune_at="init"))
    result = run_experiment(hp, tmp_path, runtime=training.Runtime(jit_compile=False))
    with pytest.raises(ArgumentError, match="prunes at initialization") as err:
        run_one_shot(result.run_dir)
    assert err.value.argument == "run_dir"


def test_cli_early_bird_and_accumulated_scores_run_as_a_user_would(tmp_path):
    common = ("--dataset=synthetic", "--model=lenet_300_100", "--training_steps=400it",
              "--eval_every=50it", "--batch_size=32", "--levels=1", "--prune_rate=0.5",
              f"--run_root={tmp_path}", "--jit_compile=false")
    early = run_main(*common, "--early_bird", "--early_bird_epsilon=0.05")
    assert early.returncode == 0, early.stderr[-3000:]
    assert "early-bird ticket drawn at iteration" in early.stderr
    scored = run_main(*common, "--criterion=accumulated_change")
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "| 1 | lottery | 50.0 |" in scored.stdout
    bad = run_main(*common, "--early_bird", "--criterion=random")
    assert bad.returncode == 2 and "--early_bird" in bad.stderr and "--criterion" in bad.stderr
