"""Structured pruning: channel and N:M masks, tied channels, controls, hparams and the CLI."""

import glob
import hashlib
import os
import warnings

import keras
import numpy as np
import pytest
from helpers import run_main

import tf_lottery as tfl
from tf_lottery import masking, models, pruning
from tf_lottery.hparams import (DatasetHparams, ExperimentHparams, ModelHparams,
                                PruningHparams, TrainingHparams)
from tf_lottery.structure import StructureWarning, parse_structure

pytestmark = pytest.mark.usefixtures("clean_keras")


def _dense(*sizes, input_dim):
    """Sequential Dense stack ``fc1, fc2, ..., out`` wrapped with all-ones masks."""
    names = [f"fc{i + 1}" for i in range(len(sizes) - 1)] + ["out"]
    return tfl.wrap(keras.Sequential([keras.Input((input_dim,))] + [
        keras.layers.Dense(n, name=name) for n, name in zip(sizes, names)]))


def _conv(filters=4, in_channels=4):
    """conv (3x3, ``in_channels`` -> ``filters``) -> flatten -> out Dense(3)."""
    return tfl.wrap(keras.Sequential([
        keras.Input((5, 5, in_channels)), keras.layers.Conv2D(filters, 3, name="conv"),
        keras.layers.Flatten(name="flat"), keras.layers.Dense(3, name="out")]))


def _set(model, **kernels):
    tfl.set_prunable_weights(model, {f"{k}/kernel": np.asarray(v, "float32")
                                     for k, v in kernels.items()})


def _columns(scales, rows):
    """A kernel ``(rows, len(scales))`` whose column ``j`` holds ``scales[j]`` everywhere
    (L1 norm ``rows * scales[j]``), with alternating signs."""
    signs = np.where(np.arange(rows) % 2, -1.0, 1.0)[:, None]
    return signs * np.asarray(scales, float)[None, :]


def _is_channel_mask(mask):
    flat = mask.reshape(-1, mask.shape[-1])
    return np.all(flat == flat[:1])


def _channels(mask):
    return mask.reshape(-1, mask.shape[-1])[0]


# ------------------------------------------------------------------------- channel


def test_layerwise_channel_pruning_removes_the_lowest_l1_columns():
    model = _dense(6, 4, input_dim=5)
    # fc1 L1 norms 5 * [3, 1, 4, 1.5, 9, 2]: rate 0.5 removes round(3) = 3 channels, the
    # lowest: 1, 3, 5. Signs do not matter (|w|).
    _set(model, fc1=_columns([3, 1, 4, 1.5, 9, 2], 5))
    masks = tfl.prune(model, rate=0.5, structure="channel")
    np.testing.assert_array_equal(_channels(masks["fc1/kernel"]), [1, 0, 1, 0, 1, 0])
    assert _is_channel_mask(masks["fc1/kernel"])
    np.testing.assert_array_equal(masks["out/kernel"], np.ones((6, 4)))  # output kept whole
    assert tfl.channel_masks(model, masks)["fc1/kernel"].tolist() == [1, 0, 1, 0, 1, 0]
    # The next round prunes rate 0.5 of the 3 survivors: round(1.5) = 2, leaving channel 4.
    tfl.set_masks(model, masks)
    again = tfl.prune(model, rate=0.5, structure="channel")
    np.testing.assert_array_equal(_channels(again["fc1/kernel"]), [0, 0, 0, 0, 1, 0])


def test_conv_channel_masks_are_whole_filters_scored_by_l1_norm():
    model = _conv(filters=4, in_channels=2)
    kernel = np.ones((3, 3, 2, 4))
    kernel[..., 0] *= 0.5   # L1 9
    kernel[..., 1] *= -2.0  # L1 36
    kernel[0, 0, 0, 2] = 30.0  # one large weight: L1 17 + 30 = 47
    kernel[..., 3] *= 0.1   # L1 1.8
    _set(model, conv=kernel)
    masks = tfl.prune(model, rate=0.5, structure="channel")
    mask = masks["conv/kernel"]
    assert mask.shape == (3, 3, 2, 4) and _is_channel_mask(mask)
    np.testing.assert_array_equal(_channels(mask), [0, 1, 1, 0])
    np.testing.assert_array_equal(masks["out/kernel"], np.ones((36, 3)))


def test_global_channel_pruning_counts_channels_over_all_layers():
    model = _dense(4, 4, 2, input_dim=2)  # fc1 (2, 4), fc2 (4, 4), out (4, 2)
    # Channel scores: fc1 2 * [1, 2, 3, 8] = [2, 4, 6, 16]; fc2 4 * [0.5, 5, 0.25, 6] =
    # [2, 20, 1, 24]. rate 0.5 of the 8 channels: the 4 lowest, 1 (fc2:2), 2 (ties: fc1:0
    # first, the earlier layer, then fc2:0) and 4 (fc1:1).
    _set(model, fc1=_columns([1, 2, 3, 8], 2), fc2=_columns([0.5, 5, 0.25, 6], 4))
    masks = tfl.prune(model, rate=0.5, scope="global", structure="channel")
    np.testing.assert_array_equal(_channels(masks["fc1/kernel"]), [0, 0, 1, 1])
    np.testing.assert_array_equal(_channels(masks["fc2/kernel"]), [0, 1, 0, 1])
    np.testing.assert_array_equal(masks["out/kernel"], np.ones((4, 2)))


def test_every_layer_keeps_at_least_one_channel():
    model = _dense(4, 3, 2, input_dim=3)
    _set(model, fc1=_columns([1, 2, 3, 4], 3), fc2=_columns([50, 60, 70], 4))
    masks = tfl.prune(model, rate=0.99, structure="channel")
    assert [int(_channels(masks[k]).sum()) for k in ("fc1/kernel", "fc2/kernel")] == [1, 1]
    np.testing.assert_array_equal(_channels(masks["fc1/kernel"]), [0, 0, 0, 1])
    # Globally, fc1's channels score far below fc2's, yet fc1 keeps its best one.
    masks = tfl.prune(model, rate=0.6, scope="global", structure="channel")
    np.testing.assert_array_equal(_channels(masks["fc1/kernel"]), [0, 0, 0, 1])
    # round(0.6 * 7) = 4 channels go: fc1's three weakest and fc2's weakest.
    np.testing.assert_array_equal(_channels(masks["fc2/kernel"]), [0, 1, 1])


def test_channel_structure_keeps_the_output_layer_and_refuses_its_rate():
    model = _dense(4, 3, input_dim=2)
    # Nothing else is prunable: fc1 is excluded and the output layer is never pruned.
    with pytest.raises(ValueError, match="applies to none of the included"):
        tfl.prune(model, rate=0.5, structure="channel", exclude=["fc1"])
    with pytest.raises(ValueError, match="`output_rate`.*never removed"):
        tfl.prune(model, rate=0.5, output_rate=0.1, structure="channel")
    with pytest.raises(ValueError, match="`output_rate`.*never removed"):
        tfl.prune(model, rate=0.5, layer_rates={"out": 0.1}, structure="channel")
    with pytest.raises(ValueError, match="`scope`='erk'"):
        tfl.prune(model, rate=0.5, scope="erk", structure="channel")


def test_channel_pruning_with_every_criterion_shape():
    model = _dense(6, 3, input_dim=4)
    reference = tfl.get_prunable_weights(model)
    for criterion in ("random", "movement", "synflow"):
        masks = tfl.prune(model, rate=0.5, criterion=criterion, structure="channel",
                          reference_weights=reference, seed=1, rounds=4)
        assert _is_channel_mask(masks["fc1/kernel"]), criterion
        assert int(_channels(masks["fc1/kernel"]).sum()) == 3, criterion


def test_layers_without_channels_are_left_as_they_are_with_a_warning():
    model = tfl.wrap(keras.Sequential([
        keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.DepthwiseConv2D(3, name="dw"), keras.layers.Flatten(),
        keras.layers.Dense(3, name="out")]))
    with pytest.warns(StructureWarning, match="'dw/kernel' .*depthwise"):
        masks = tfl.prune(model, rate=0.5, structure="channel")
    np.testing.assert_array_equal(masks["dw/kernel"], np.ones((3, 3, 4, 1)))
    assert int(_channels(masks["conv/kernel"]).sum()) == 2


# ------------------------------------------------------------------ tied channels


def test_resnet20_prunes_channels_tied_by_add_together():
    model = tfl.wrap(models.build_model("resnet20", (8, 8, 3), 10, seed=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", StructureWarning)  # every conv is handled
        masks = tfl.prune(model, rate=0.5, structure="channel")
    kept = tfl.channel_masks(model, masks)
    assert all(_is_channel_mask(masks[k]) for k in kept)
    # The residual stream of each stage is one group: the stem (or the projection
    # shortcut) and every block's second conv share one channel mask.
    stages = {2: ["conv1"] + [f"conv2_block{b}_2" for b in (1, 2, 3)],
              3: ["conv3_block1_shortcut"] + [f"conv3_block{b}_2" for b in (1, 2, 3)],
              4: ["conv4_block1_shortcut"] + [f"conv4_block{b}_2" for b in (1, 2, 3)]}
    for stage, names in stages.items():
        first = kept[f"{names[0]}/kernel"]
        assert first.sum() == first.size // 2
        for name in names[1:]:
            np.testing.assert_array_equal(kept[f"{name}/kernel"], first, err_msg=name)
    # Each block's first conv is its own group: half of its filters go.
    for stage, filters in ((2, 16), (3, 32), (4, 64)):
        for block in (1, 2, 3):
            assert kept[f"conv{stage}_block{block}_1/kernel"].sum() == filters // 2
    np.testing.assert_array_equal(masks["output/kernel"], np.ones((64, 10)))
    # The random control keeps the ties and every group's count.
    shuffled = tfl.channel_masks(model, tfl.random_masks_like(
        masks, seed=3, structure="channel", model=model))
    for names in stages.values():
        for name in names[1:]:
            np.testing.assert_array_equal(shuffled[f"{name}/kernel"],
                                          shuffled[f"{names[0]}/kernel"])
    assert {k: v.sum() for k, v in shuffled.items()} == {k: v.sum() for k, v in kept.items()}
    assert any(not np.array_equal(shuffled[k], kept[k]) for k in kept)


def test_add_fed_by_the_model_input_pins_its_layers_with_a_warning():
    inputs = keras.Input((4, 4, 2))
    y = keras.layers.Conv2D(2, 1, name="conv_a")(inputs)
    x = keras.layers.Add(name="add")([y, inputs])
    x = keras.layers.Conv2D(3, 1, name="conv_b")(x)
    out = keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x))
    model = tfl.wrap(keras.Model(inputs, out))
    with pytest.warns(StructureWarning, match="'conv_a/kernel' \\(tied by add to the model input"):
        masks = tfl.prune(model, rate=0.5, structure="channel")
    np.testing.assert_array_equal(masks["conv_a/kernel"], np.ones((1, 1, 2, 2)))
    assert int(_channels(masks["conv_b/kernel"]).sum()) == 1  # round(1.5) = 2 of 3 go


def test_tied_layers_must_share_a_rate():
    inputs = keras.Input((3,))
    a = keras.layers.Dense(4, name="a")(inputs)
    b = keras.layers.Dense(4, name="b")(inputs)
    x = keras.layers.Add(name="add")([a, keras.layers.ReLU()(b)])
    model = tfl.wrap(keras.Model(inputs, keras.layers.Dense(2, name="out")(x)))
    _set(model, a=_columns([1, 2, 3, 4], 3), b=_columns([4, 3, 0.5, 0.1], 3))
    masks = tfl.prune(model, rate=0.5, structure="channel")
    # Group score (sum of L1 norms) 3 * [5, 5, 3.5, 4.1]: channels 2 and 3 go from both.
    for key in ("a/kernel", "b/kernel"):
        np.testing.assert_array_equal(_channels(masks[key]), [1, 1, 0, 0])
    with pytest.raises(ValueError, match="tied"):
        tfl.prune(model, rate=0.5, layer_rates={"a": 0.25}, structure="channel")


# ---------------------------------------------------------------------------- N:M


@pytest.mark.parametrize("structure, n", [("2:4", 2), ("1:4", 1)])
def test_n_m_keeps_exactly_n_of_every_m_input_weights(structure, n):
    model = tfl.wrap(keras.Sequential([
        keras.Input((4, 4, 8)), keras.layers.Conv2D(3, 3, name="conv"),
        keras.layers.Flatten(), keras.layers.Dense(8, name="fc"),
        keras.layers.Dense(4, name="out")]))
    masks = tfl.prune(model, rate=0.2, structure=structure)  # rate is ignored
    conv = masks["conv/kernel"].reshape(3, 3, 2, 4, 3)  # groups along in-channels (axis 2)
    assert np.all(conv.sum(axis=3) == n)
    for key, rows in (("fc/kernel", 12), ("out/kernel", 8)):  # groups along axis 0
        groups = masks[key].reshape(rows // 4, 4, -1)
        assert np.all(groups.sum(axis=1) == n), key
    # Pruning an N:M mask again with N:M leaves it as it is.
    tfl.set_masks(model, masks)
    again = tfl.prune(model, rate=0.2, structure=structure)
    for key in masks:
        np.testing.assert_array_equal(again[key], masks[key])


def test_n_m_keeps_the_largest_and_ties_keep_the_higher_index():
    model = _dense(2, 2, input_dim=8)
    fc1 = np.array([[0.1, 1], [-5, 1], [0.3, 1], [2, 1], [1, 0], [1, 0], [-1, 0], [1, 0]])
    _set(model, fc1=fc1, out=np.ones((2, 2)))
    with pytest.warns(StructureWarning, match=r"'out/kernel' \(2\)"):
        masks = tfl.prune(model, rate=0.0, structure="2:4")
    np.testing.assert_array_equal(masks["fc1/kernel"].T, [[0, 1, 0, 1, 0, 0, 1, 1],
                                                          [0, 0, 1, 1, 0, 0, 1, 1]])


def test_n_m_pads_an_input_dimension_that_is_not_a_multiple_of_m():
    model = _dense(2, 2, input_dim=6)  # groups of fc1: rows 0-3 and the short group 4-5
    _set(model, fc1=[[1, 1], [2, 2], [3, 3], [4, 4], [5, 1], [6, 2]])
    with pytest.warns(StructureWarning, match=r"not a multiple of 4: 'fc1/kernel' \(6\)"):
        masks = tfl.prune(model, rate=0.0, structure="1:4")
    # The short group keeps min(1, 2) = 1 weight, as if padded with two zero rows.
    np.testing.assert_array_equal(masks["fc1/kernel"].T, [[0, 0, 0, 1, 0, 1],
                                                          [0, 0, 0, 1, 0, 1]])
    with pytest.warns(StructureWarning):
        masks = tfl.prune(model, rate=0.0, structure="2:4")
    np.testing.assert_array_equal(masks["fc1/kernel"][4:], np.ones((2, 2)))  # min(2, 2)


def test_n_m_refuses_rates_and_other_scopes():
    model = _dense(4, 2, input_dim=4)
    with pytest.raises(ValueError, match="`scope` must be 'layerwise'"):
        tfl.prune(model, rate=0.2, scope="global", structure="2:4")
    with pytest.raises(ValueError, match="`layer_rates` and `output_rate`"):
        tfl.prune(model, rate=0.2, output_rate=0.1, structure="2:4")


def test_random_n_m_masks_keep_every_group_count():
    model = _dense(4, 2, input_dim=8)
    masks = tfl.prune(model, rate=0.0, structure="1:4")
    shuffled = tfl.random_masks_like(masks, seed=0, structure="1:4", model=model)
    for key in masks:
        np.testing.assert_array_equal(shuffled[key].reshape(-1, 4, masks[key].shape[1]).sum(1),
                                      masks[key].reshape(-1, 4, masks[key].shape[1]).sum(1))
    assert any(not np.array_equal(shuffled[k], masks[k]) for k in masks)


# ---------------------------------------------------------------- bad input, default


@pytest.mark.parametrize("structure", ["2:2", "0:4", "4:2", "-1:4", "2:4:8", "block",
                                       "", "N:M", 24, None])
def test_bad_structures_are_refused_naming_the_forms(structure):
    model = _dense(4, 2, input_dim=4)
    with pytest.raises(ValueError, match="`structure` must be 'unstructured', 'channel' or "
                                         "'N:M' with integers 0 < N < M") as err:
        tfl.prune(model, rate=0.2, structure=structure)
    assert repr(structure) in str(err.value)
    with pytest.raises(ValueError, match="`structure` must be"):
        PruningHparams(structure=structure)


def test_structure_strings_are_normalized():
    assert str(parse_structure(" 2 : 4 ")) == "2:4" and parse_structure("Channel").kind == "channel"
    assert PruningHparams(structure=" 1:8").structure == "1:8"


def _hash(masks):
    digest = hashlib.sha256()
    for key in sorted(masks):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(masks[key], np.float32).tobytes())
    return digest.hexdigest()[:16]


def test_unstructured_default_is_unchanged():
    model = tfl.wrap(keras.Sequential([
        keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.Flatten(), keras.layers.Dense(8, name="fc"),
        keras.layers.Dense(3, name="out")]))
    rng = np.random.default_rng(0)
    tfl.set_prunable_weights(model, {k: rng.normal(size=v.shape).astype("float32")
                                     for k, v in tfl.get_prunable_weights(model).items()})
    got = []
    for kwargs in (dict(rate=0.3), dict(rate=0.5, scope="global"), dict(rate=0.4, scope="erk"),
                   dict(rate=0.2, output_rate=0.1, criterion="random", seed=4)):
        masks = tfl.prune(model, **kwargs)
        np.testing.assert_array_equal(
            _hash(tfl.prune(model, structure="unstructured", **kwargs)), _hash(masks))
        got.append(_hash(masks))
    got.append(_hash(tfl.random_masks_like(masks, 5)))
    # Pinned from the code before structures existed.
    assert got == ["9a61af1b9dd42a54", "b7512516ff71b963", "048746458e1f0def",
                   "172cb90f1b7aaa6b", "386c5610f4c2b394"]


# ----------------------------------------------------------------------- hparams


def _experiment(**pruning_changes):
    return ExperimentHparams(
        model=ModelHparams("lenet_300_100"), dataset=DatasetHparams("fashion_mnist"),
        training=TrainingHparams(learning_rate=1.2e-3, training_steps="500it"),
        pruning=PruningHparams(levels=3, rate=0.2, rewind="0it", **pruning_changes))


def test_pruning_hparams_structure_round_trips_and_old_hashes_stay():
    default = _experiment()
    assert "structure" not in default.to_dict()["pruning"]
    assert default.digest() == "c0df029509"  # pinned before the field existed
    assert _experiment(structure="unstructured").digest() == "c0df029509"
    for structure in ("channel", "2:4"):
        hp = _experiment(structure=structure)
        assert hp.to_dict()["pruning"]["structure"] == structure
        assert ExperimentHparams.from_dict(hp.to_dict()) == hp
        assert hp.digest() != default.digest()
    assert _experiment(structure="channel").digest() != _experiment(structure="2:4").digest()


@pytest.mark.parametrize("changes, field", [
    (dict(structure="channel", scope="erk"), "`scope`"),
    (dict(structure="channel", rate_output=0.1), "`rate_output`"),
    (dict(structure="channel", scope="global", one_shot=(0.5,)), "`one_shot`"),
    (dict(structure="2:4", scope="global"), "`scope`"),
    (dict(structure="2:4", rate_conv=0.1), "`rate_conv`"),
    (dict(structure="2:4", one_shot=(0.5,)), "`one_shot`"),
    (dict(structure="2:4", early_bird=True), "`early_bird`"),
])
def test_pruning_hparams_refuse_structures_that_make_no_sense(changes, field):
    with pytest.raises(ValueError, match=field):
        PruningHparams(**changes)


def test_level_and_one_shot_masks_follow_the_channel_ladder():
    model = _dense(8, 8, 2, input_dim=4)
    hp = PruningHparams(rate=0.5, structure="channel")
    masks = pruning.level_masks(model, 2, hp)  # 8 * 0.5 ** 2 = 2 channels per layer
    assert [int(_channels(masks[k]).sum()) for k in ("fc1/kernel", "fc2/kernel")] == [2, 2]
    np.testing.assert_array_equal(masks["out/kernel"], np.ones((8, 2)))
    # One shot to 50% of all 112 weights: out's 16 are kept, so fc1 (32) and fc2 (64)
    # lose 56 of their 96: a rate of 7/12 of the 8 channels, round(4.67) = 5, keeps 3.
    masks = pruning.one_shot_masks(model, 0.5, hp)
    assert [int(_channels(masks[k]).sum()) for k in ("fc1/kernel", "fc2/kernel")] == [3, 3]
    with pytest.raises(ValueError, match="N:M masks have sparsity"):
        pruning.one_shot_masks(model, 0.6, PruningHparams(structure="2:4"))


# --------------------------------------------------------------------------- CLI


def test_cli_channel_run_with_random_prune_keeps_channel_counts(tmp_path):
    run = run_main("--dataset=synthetic", "--model=lenet_300_100", "--batch_size=32",
                   "--training_steps=60it", "--eval_every=30it", "--levels=1",
                   "--prune_rate=0.5", "--structure=channel", "--controls=random_prune",
                   "--early_bird",  # level 0 watches the channel mask it would prune to
                   "--jit_compile=false", f"--run_root={tmp_path}")
    assert run.returncode == 0, run.stdout + run.stderr
    (level,) = glob.glob(str(tmp_path / "*" / "replicate_0" / "level_1"))
    lottery = masking.load_masks(os.path.join(level, "lottery", "mask.npz"))
    control = masking.load_masks(os.path.join(level, "random_prune", "mask.npz"))
    for key, units in (("fc1/kernel", 300), ("fc2/kernel", 100)):
        for masks in (lottery, control):
            assert _is_channel_mask(masks[key]) and _channels(masks[key]).sum() == units // 2
        assert not np.array_equal(lottery[key], control[key])
    for masks in (lottery, control):
        np.testing.assert_array_equal(masks["output/kernel"], np.ones((100, 10)))
    assert "--structure=channel" in open(glob.glob(str(tmp_path / "*" / "flags.txt"))[0]).read()

    # An analysis of the run draws its random masks with the run's structure too (here
    # without the run's own random_prune mask, as for a run without the control).
    from tf_lottery import analysis

    os.remove(os.path.join(level, "random_prune", "mask.npz"))
    drawn = analysis.open_run(os.path.dirname(os.path.dirname(level)),
                              load_data=False).masks(1, "random_prune")
    for key, units in (("fc1/kernel", 300), ("fc2/kernel", 100)):
        assert _is_channel_mask(drawn[key]) and _channels(drawn[key]).sum() == units // 2
        assert not np.array_equal(drawn[key], lottery[key])


def test_cli_n_m_run_keeps_the_pattern_at_every_level(tmp_path):
    run = run_main("--dataset=synthetic", "--model=lenet_300_100", "--batch_size=32",
                   "--training_steps=40it", "--eval_every=20it", "--levels=2",
                   "--structure=2:4", "--controls=random_prune", "--jit_compile=false",
                   f"--run_root={tmp_path}")
    assert run.returncode == 0, run.stdout + run.stderr
    (replicate,) = glob.glob(str(tmp_path / "*" / "replicate_0"))
    masks = {(level, branch): masking.load_masks(os.path.join(
        replicate, f"level_{level}", branch, "mask.npz"))
        for level in (1, 2) for branch in ("lottery", "random_prune")}
    for (level, branch), mask in masks.items():
        for key, rows in (("fc1/kernel", 64), ("fc2/kernel", 300), ("output/kernel", 100)):
            groups = mask[key].reshape(rows // 4, 4, -1).sum(axis=1)
            assert np.all(groups == 2), (level, branch, key)
    for key in masks[1, "lottery"]:
        np.testing.assert_array_equal(masks[2, "lottery"][key], masks[1, "lottery"][key])
        assert not np.array_equal(masks[1, "random_prune"][key], masks[1, "lottery"][key])


def test_cli_bad_structure_exits_2_naming_the_flag(tmp_path):
    run = run_main("--dataset=synthetic", "--structure=3:2", f"--run_root={tmp_path / 'r'}")
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--structure must be" in errors[0], run.stderr
    assert not os.path.exists(tmp_path / "r")
