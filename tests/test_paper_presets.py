"""The paper presets do what their headers say: Frankle & Carbin's (ICLR 2019) dropout runs
of Conv-2/4/6, and ResNet-20's global pruning that leaves the 1x1 shortcut convolutions and
the output layer unpruned."""

import dataclasses
import os

import keras
import numpy as np
import pytest

from tf_lottery import experiment, masking, pruning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures("clean_keras")


def preset(name):
    from tf_lottery.cli import experiment_flags as ef

    try:
        ef.FLAGS.unparse_flags()
        ef.FLAGS(["tf-lottery", f"--flagfile={os.path.join(ROOT, 'configs', name)}"])
        return ef.hparams()
    finally:
        ef.FLAGS.unparse_flags()


@pytest.mark.parametrize("n, learning_rate", [(2, 3e-4), (4, 2e-4), (6, 2e-4)])
def test_dropout_presets_are_the_plain_ones_with_the_papers_dropout_settings(n, learning_rate):
    plain, dropout = preset(f"conv{n}.flags"), preset(f"conv{n}_dropout.flags")
    # Section 3 "Dropout" / Figure 6: rate 0.5, learning rates 0.0003 (Conv-2) and 0.0002
    # (Conv-4/6), three times the iterations; pruning as without dropout.
    assert (plain.model.dropout, dropout.model.dropout) == (0.0, 0.5)
    assert dropout.training.learning_rate == learning_rate
    assert dropout.training.training_steps.amount == 3 * plain.training.training_steps.amount
    assert dataclasses.replace(dropout.training, learning_rate=plain.training.learning_rate,
                               training_steps=plain.training.training_steps) == plain.training
    assert dropout.pruning == plain.pruning and dropout.dataset == plain.dataset
    header = open(os.path.join(ROOT, "configs", f"conv{n}_dropout.flags")).read()
    assert f"{dropout.training.training_steps.amount} iterations" in header
    assert "after each hidden fully-connected layer (fc1 and fc2" in header
    # ... which is where the model puts it: after fc1 and fc2 only, at rate 0.5.
    model = experiment.build_model(dropout.model, (32, 32, 3), 10)
    names = [layer.name for layer in model.layers]
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [d.name for d in drops] == ["fc1_dropout", "fc2_dropout"]
    assert all(d.rate == 0.5 for d in drops)
    assert names[-5:] == ["fc1", "fc1_dropout", "fc2", "fc2_dropout", "output"]


def test_resnet20_preset_never_prunes_the_shortcuts_or_the_output_layer():
    hp = preset("resnet20.flags")
    model = masking.wrap(experiment.build_model(hp.model, (32, 32, 3), 10))
    shortcuts = [layer.name for layer in model.layers
                 if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1)]
    assert shortcuts == ["conv3_block1_shortcut", "conv4_block1_shortcut"]
    assert sorted(hp.pruning.exclude) == sorted(["output"] + shortcuts)
    sizes = {k: v.size for k, v in masking.get_masks(model).items()}
    # The paper's counts: 2,560 shortcut weights (16x32 + 32x64) and 640 output weights.
    assert sum(sizes[f"{s}/kernel"] for s in shortcuts) == 2560
    assert sizes["output/kernel"] == 640
    for _ in range(3):  # three levels of the preset's global pruning, as the driver does
        masking.set_masks(model, pruning.prune(
            model, rate=hp.pruning.rate, scope=hp.pruning.scope, criterion=hp.pruning.criterion,
            exclude=list(hp.pruning.exclude)))
    kept = {k: int(m.sum()) for k, m in masking.get_masks(model).items()}
    excluded = {f"{s}/kernel" for s in shortcuts} | {"output/kernel"}
    assert all(kept[k] == sizes[k] for k in excluded)
    pruned_layers = [k for k in sizes if k not in excluded]
    total = sum(sizes[k] for k in pruned_layers)
    assert sum(kept[k] for k in pruned_layers) == pytest.approx(0.8 ** 3 * total, abs=3)
    assert np.all([kept[k] < sizes[k] for k in pruned_layers])
