"""experiment.py: hparams become a model, data and a run the one way every caller uses."""

import os

import numpy as np
import pytest

import tf_lottery as tfl
from tf_lottery import data, experiment, files, models, paths
from tf_lottery.hparams import (
    DatasetHparams,
    ExperimentHparams,
    GradInitHparams,
    ModelHparams,
    PruningHparams,
    TrainingHparams,
)
from tf_lottery.training import Runtime

DATA = data.load("synthetic")
HP = ExperimentHparams(
    model=ModelHparams("lenet_300_100"), dataset=DatasetHparams("synthetic"),
    training=TrainingHparams(batch_size=100, training_steps="2ep", eval_every="1ep"),
    pruning=PruningHparams(levels=1, rate=0.5),
)


def test_build_model_uses_the_kernel_initializer_of_the_hparams():
    plain = experiment.build_model(ModelHparams("lenet_300_100", "he_normal"),
                                   DATA.input_shape, DATA.num_classes, seed=3)
    same = models.build_model("lenet_300_100", DATA.input_shape, DATA.num_classes,
                              initializer="he_normal", seed=3)
    for a, b in zip(plain.get_weights(), same.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # A GradInit model is drawn from its base initializer (GradInit rescales it later).
    grad = experiment.build_model(
        ModelHparams("lenet_300_100", "gradinit",
                     gradinit=GradInitHparams(base_initializer="he_normal")),
        DATA.input_shape, DATA.num_classes, seed=3)
    for a, b in zip(grad.get_weights(), same.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_steps_per_epoch_is_computed_from_the_training_split():
    n = data.train_examples("synthetic")
    assert n == len(DATA.y_train) == 800  # 1,000 synthetic examples, a fifth held out
    assert data.train_examples("fashion_mnist") == 55_000
    assert data.train_examples("mnist", validation_size=0) == 60_000
    assert HP.training.steps_per_epoch(n) == 8
    assert TrainingHparams(batch_size=60).steps_per_epoch(55_000) == 917  # the last is short


def test_run_experiment_writes_the_run_layout_and_resumes(tmp_path):
    result = experiment.run_experiment(HP, tmp_path, replicate=1, dataset=DATA,
                                       runtime=Runtime(jit_compile=False),
                                       flags_text="--model=lenet_300_100\n")
    run = paths.RunDir.of(tmp_path, HP.run_name())
    assert files.read_json(run.hparams) == HP.to_dict()
    assert open(run.flags).read() == "--model=lenet_300_100\n"
    rep = run.replicate(1)
    assert result.run_dir == rep.path and rep.finished_levels() == [0, 1]
    assert result.levels[1]["lottery"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    # Another replicate draws another initialization.
    experiment.run_experiment(HP, tmp_path, replicate=0, dataset=DATA,
                              runtime=Runtime(jit_compile=False))
    masks = [tfl.load_masks(run.replicate(r).branch(1, "lottery").mask) for r in (0, 1)]
    assert any(not np.array_equal(masks[0][k], masks[1][k]) for k in masks[0])
    stamp = os.path.getmtime(rep.branch(1, "lottery").summary)
    again = experiment.run_experiment(HP, tmp_path, replicate=1, dataset=DATA,
                                      runtime=Runtime(jit_compile=False))
    assert os.path.getmtime(rep.branch(1, "lottery").summary) == stamp  # nothing retrained
    assert again.levels == result.levels


@pytest.mark.parametrize("hp, replicate, argument", [
    (HP, -1, "`replicate`"),
    (HP.__class__(HP.model, HP.dataset, HP.training,
                  PruningHparams(levels=1, rewind="2ep")), 0, "`rewind`"),
    (HP.__class__(ModelHparams("resnet20", dropout=0.5), HP.dataset, HP.training,
                  HP.pruning), 0, "`dropout`"),
])
def test_bad_experiments_fail_before_any_directory(tmp_path, hp, replicate, argument):
    with pytest.raises(ValueError, match=argument):
        experiment.run_experiment(hp, tmp_path / "runs", replicate=replicate, dataset=DATA)
    assert not os.path.exists(tmp_path / "runs")
