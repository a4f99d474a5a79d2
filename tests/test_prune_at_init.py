"""Pruning at initialization: SNIP, GraSP, SynFlow scores, the ERK budget, scored criteria."""

import keras
import numpy as np
import pytest

import tf_lottery
from tf_lottery import erk, pruning, saliency
from tf_lottery.hparams import PruningHparams

pytestmark = pytest.mark.usefixtures("clean_keras")


def _linear(*units, input_dim, bias=False):
    layers = [keras.Input((input_dim,))]
    names = [f"fc{i + 1}" for i in range(len(units))]
    layers += [keras.layers.Dense(n, use_bias=bias, name=name) for n, name in zip(units, names)]
    return tf_lottery.wrap(keras.Sequential(layers))


def _set(model, kernels):
    tf_lottery.set_prunable_weights(
        model, {f"{k}/kernel": np.asarray(v, "float32") for k, v in kernels.items()}
    )


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _snapshot(model):
    return [np.array(w) for w in model.get_weights()]


def _assert_unchanged(model, before):
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


W = np.array([[0.5, -1.0, 0.2], [-0.3, 0.8, 0.1], [1.2, -0.4, -0.7], [0.05, 0.6, -0.9]])


# ----------------------------------------------------------------------------- SNIP


def test_snip_equals_the_analytic_connection_sensitivity():
    # One linear layer, one example: dL/dW_ij = x_i * (softmax(xW)_j - onehot(y)_j).
    model = _linear(3, input_dim=4)
    _set(model, {"fc1": W})
    x = np.array([[1.0, -2.0, 0.5, 3.0]], "float32")
    y = np.array([2])
    scores = saliency.snip(model, x, y)
    grad = np.outer(x[0], _softmax(x[0] @ W) - np.eye(3)[2])
    np.testing.assert_allclose(scores["fc1/kernel"], np.abs(W * grad), rtol=1e-5, atol=1e-7)
    assert scores["fc1/kernel"].dtype == np.float64
    # A masked weight gets gradient 0, hence score 0.
    tf_lottery.set_masks(model, {"fc1/kernel": np.where(np.arange(12).reshape(4, 3) == 5, 0, 1)})
    assert saliency.snip(model, x, y)["fc1/kernel"][1, 2] == 0.0


# ----------------------------------------------------------------------------- GraSP


def _grasp_by_hand(w, x, y, temperature):
    """w * Hg for softmax cross-entropy of z_b = x_b W / T, mean over the batch.

    g = mean_b x_b^T (p_b - e_b) / T; the Hessian acts on a direction V as
    H V = mean_b x_b^T J_b (x_b V) / T^2 with J_b = diag(p_b) - p_b p_b^T.
    """
    p = _softmax(x @ w / temperature)
    g = np.mean([np.outer(xb, pb - np.eye(w.shape[1])[yb]) for xb, pb, yb in zip(x, p, y)], 0)
    g /= temperature
    hg = np.mean(
        [np.outer(xb, (np.diag(pb) - np.outer(pb, pb)) @ (xb @ g)) for xb, pb in zip(x, p)], 0
    ) / temperature**2
    return w * hg


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_equals_w_times_the_hessian_gradient_product(temperature):
    model = _linear(3, input_dim=4)
    _set(model, {"fc1": W})
    x = np.array([[1.0, -2.0, 0.5, 3.0], [0.3, 0.2, -1.0, 0.4]], "float32")
    y = np.array([2, 0])
    scores = saliency.grasp(model, x, y, temperature=temperature)
    expected = _grasp_by_hand(W, x.astype(np.float64), y, temperature)
    np.testing.assert_allclose(scores["fc1/kernel"], expected, rtol=2e-4, atol=1e-12 * np.abs(expected).max())


def test_grasp_prunes_the_highest_paper_scores():
    # Wang et al. remove the weights with the highest S(-w) = -w * Hg; prune ranks our
    # keep-high w * Hg, so it removes exactly those.
    model = _linear(3, input_dim=4)
    _set(model, {"fc1": W})
    x = np.array([[1.0, -2.0, 0.5, 3.0], [0.3, 0.2, -1.0, 0.4]], "float32")
    y = np.array([2, 0])
    paper = -_grasp_by_hand(W, x.astype(np.float64), y, 200.0)
    assert np.unique(paper).size == paper.size  # no ties
    masks = tf_lottery.prune(model, rate=0.5, criterion="grasp", data=(x, y))
    removed = np.argsort(paper.ravel())[-6:]
    np.testing.assert_array_equal(np.flatnonzero(masks["fc1/kernel"].ravel() == 0), np.sort(removed))


# ---------------------------------------------------------------------------- SynFlow

W1 = np.array([[0.5, -1.0, 2.0], [-0.25, 0.75, -1.5]])  # 2 inputs -> 3
W2 = np.array([[1.0, -2.0], [0.5, 0.25], [-3.0, 1.5]])  # 3 -> 2


def test_synflow_scores_are_the_path_products():
    # R = sum_k sum_j sum_i |W1_ij| |W2_jk| on an all-ones input, so
    # dR/d|W1_ij| = sum_k |W2_jk| and dR/d|W2_jk| = sum_i |W1_ij|.
    model = _linear(3, 2, input_dim=2)
    _set(model, {"fc1": W1, "fc2": W2})
    before = _snapshot(model)
    scores = saliency.synflow(model)
    np.testing.assert_allclose(scores["fc1/kernel"], np.abs(W1) * np.abs(W2).sum(1), rtol=1e-6)
    np.testing.assert_allclose(scores["fc2/kernel"], np.abs(W2) * np.abs(W1).sum(0)[:, None], rtol=1e-6)
    # Masking W1[1, 2] removes its paths: W2's row 2 loses |W1[1, 2]| = 1.5 of its flow.
    mask = np.ones((2, 3), "float32")
    mask[1, 2] = 0
    masked = saliency.synflow(model, masks={"fc1/kernel": mask})
    expected_w2 = np.abs(W2) * (np.abs(W1) * mask).sum(0)[:, None]
    np.testing.assert_allclose(masked["fc2/kernel"], expected_w2, rtol=1e-6)
    assert masked["fc1/kernel"][1, 2] == 0.0
    # The masks went to the float64 copy only: the model is unchanged.
    _assert_unchanged(model, before)


def _paths(masks):
    """Number of input -> output paths through the product of binary masks."""
    flow = None
    for mask in masks.values():
        flow = mask.astype(np.float64).sum(0) if flow is None else flow @ mask
    return flow.sum()


def test_iterative_synflow_avoids_layer_collapse_where_magnitude_does_not():
    # Tanaka et al. 2020, Fig. 1: an 8-layer MLP, widths alternating 64/32 (glorot init,
    # so the small 64->10 output layer has the largest weights and global magnitude spends
    # the budget there). 99.9% of 13,952 weights leaves 14: global magnitude keeps 7 in
    # the output layer and only the one protected weight in each other layer, and those
    # do not line up (0 paths); 100 rounds of SynFlow keep connected paths. One round of
    # SynFlow is not enough either: the iteration is what conserves the flow.
    keras.utils.set_random_seed(0)
    widths = (64, 32, 64, 32, 64, 32, 64, 10)
    model = tf_lottery.wrap(keras.Sequential(
        [keras.Input((16,))] + [keras.layers.Dense(w, use_bias=False) for w in widths]
    ))
    synflow = tf_lottery.prune(model, rate=0.999, scope="global", criterion="synflow", rounds=100)
    magnitude = tf_lottery.prune(model, rate=0.999, scope="global")
    one_round = tf_lottery.prune(model, rate=0.999, scope="global", criterion="synflow", rounds=1)
    assert sum(int(m.sum()) for m in synflow.values()) == 14
    assert sum(int(m.sum()) for m in magnitude.values()) == 14
    assert _paths(synflow) > 0
    assert _paths(magnitude) == 0
    assert _paths(one_round) == 0


@pytest.mark.parametrize("scope", ["layerwise", "global", "erk"])
def test_iterative_synflow_reaches_the_one_round_counts_and_restores_nothing(scope):
    keras.utils.set_random_seed(1)
    model = _linear(12, 8, 4, input_dim=6, bias=True)
    before = _snapshot(model)
    masks_before = tf_lottery.get_masks(model)
    many = tf_lottery.prune(model, rate=0.8, scope=scope, criterion="synflow", rounds=7)
    once = tf_lottery.prune(model, rate=0.8, scope=scope, criterion="magnitude")
    # Layerwise and erk fix each layer's count, global only the total.
    count = (lambda masks: sum(int(m.sum()) for m in masks.values())) if scope == "global" else (
        lambda masks: {k: int(m.sum()) for k, m in masks.items()})
    assert count(many) == count(once)
    _assert_unchanged(model, before)
    for key, mask in tf_lottery.get_masks(model).items():
        np.testing.assert_array_equal(mask, masks_before[key])


# -------------------------------------------------------------------------------- ERK


def _erk_model():
    """fc1 10->20 (200 weights), fc2 20->5 (100), conv 2x2x2->5 (40), summed outputs."""
    a, b = keras.Input((10,)), keras.Input((2, 2, 2))
    dense = keras.layers.Dense(5, name="fc2")(keras.layers.Dense(20, name="fc1")(a))
    conv = keras.layers.Flatten()(keras.layers.Conv2D(5, 2, name="conv")(b))
    return tf_lottery.wrap(keras.Model([a, b], keras.layers.Add()([dense, conv])))


def test_erk_densities_by_hand():
    # sum(shape)/prod(shape): fc1 (10+20)/200 = 0.15, fc2 (20+5)/100 = 0.25,
    # conv (2+2+2+5)/40 = 0.275; times sizes: 30 + 25 + 11 = 66. Pruning 274 of 340
    # keeps 66, so eps = 1 and the layers keep exactly 30, 25 and 11.
    model = _erk_model()
    masks = tf_lottery.prune(model, rate=274 / 340, scope="erk")
    assert {k: int(m.sum()) for k, m in masks.items()} == {
        "fc1/kernel": 30, "fc2/kernel": 25, "conv/kernel": 11
    }
    # Inside each layer the criterion ranks (magnitude here).
    weights = tf_lottery.get_prunable_weights(model)
    for key, mask in masks.items():
        kept = np.abs(weights[key])[mask == 1]
        assert kept.min() >= np.abs(weights[key])[mask == 0].max()
    # random + erk: the same counts, random positions.
    masks = tf_lottery.prune(model, rate=274 / 340, scope="erk", criterion="random", seed=3)
    assert {k: int(m.sum()) for k, m in masks.items()} == {
        "fc1/kernel": 30, "fc2/kernel": 25, "conv/kernel": 11
    }


def test_erk_caps_layers_at_their_current_density():
    # small 2->2 (4 weights, raw 1.0), mid 2->100 (200, raw 0.51), big 100->100
    # (10,000, raw 0.02); sum raw * size = 4 + 102 + 200 = 306.
    model = _linear(2, 100, 100, input_dim=2)
    shapes = {"fc1/kernel": (2, 2), "fc2/kernel": (2, 100), "fc3/kernel": (100, 100)}
    # Keep 400: eps = 400/306 > 1 would give "small" density 1.31 > 1, so it stays full
    # and the others share 396: eps = 396/302, mid keeps round(102 * eps) = round(133.75),
    # big round(200 * eps) = round(262.25).
    masks = tf_lottery.prune(model, rate=9804 / 10204, scope="erk")
    counts = {k: int(m.sum()) for k, m in masks.items()}
    assert counts == {"fc1/kernel": 4, "fc2/kernel": 134, "fc3/kernel": 262}
    # Rounding: each layer's count is within half a weight of density * size, so the
    # total is within len(layers) / 2 of the budget (here it is exact).
    assert sum(counts.values()) == 400
    # Keep half (5102): eps = 5102/306 caps small and mid (density 8.5 > 1), big keeps
    # the remaining 4898.
    masks = tf_lottery.prune(model, rate=0.5, scope="erk")
    assert {k: int(m.sum()) for k, m in masks.items()} == {
        "fc1/kernel": 4, "fc2/kernel": 200, "fc3/kernel": 4898
    }
    # Pruned weights stay pruned: with mid already at half (100 of 200), its cap is its
    # current density 0.5; keeping 1000 of 10,104 caps small and mid, big keeps 896.
    mid = np.zeros((2, 100), "float32")
    mid[0] = 1
    tf_lottery.set_masks(model, {"fc2/kernel": mid})
    masks = tf_lottery.prune(model, rate=9104 / 10104, scope="erk")
    assert {k: int(m.sum()) for k, m in masks.items()} == {
        "fc1/kernel": 4, "fc2/kernel": 100, "fc3/kernel": 896
    }
    np.testing.assert_array_equal(masks["fc2/kernel"], mid)
    assert erk.erk_keep_counts(shapes, {k: int(np.prod(s)) for k, s in shapes.items()}, 5102) == {
        "fc1/kernel": 4, "fc2/kernel": 200, "fc3/kernel": 4898
    }


def test_erk_rejects_layer_rates_and_one_shot_erk_reaches_the_target():
    model = _erk_model()
    with pytest.raises(ValueError, match="scope='layerwise' only"):
        tf_lottery.prune(model, rate=0.5, scope="erk", output_rate=0.1)
    hp = PruningHparams(scope="erk", criterion="magnitude")
    assert pruning.layer_rates_for(model, hp) == ({}, None)
    masks = pruning.one_shot_masks(model, 274 / 340, hp)
    assert sum(int(m.sum()) for m in masks.values()) == 66
    # From masks that are already sparse, target is still the total sparsity.
    tf_lottery.set_masks(model, pruning.one_shot_masks(model, 0.5, PruningHparams(scope="global")))
    masks = pruning.one_shot_masks(model, 0.8, PruningHparams(scope="global"))
    assert sum(int(m.sum()) for m in masks.values()) == 68


# ------------------------------------------------------------------ scored criteria


def test_scored_criteria_rank_the_given_scores():
    model = _linear(2, input_dim=2)
    scores = {"fc1/kernel": np.array([[3.0, -1.0], [0.5, 2.0]])}
    for criterion in ("movement_score", "accumulated_change"):
        masks = tf_lottery.prune(model, rate=0.5, criterion=criterion, scores=scores)
        np.testing.assert_array_equal(masks["fc1/kernel"], [[1, 0], [0, 1]])


# ---------------------------------------------------------------------- validation


def test_bad_arguments_raise_value_error():
    model = _linear(3, input_dim=4)
    x, y = np.ones((2, 4), "float32"), np.array([0, 1])
    for criterion in ("snip", "grasp"):
        with pytest.raises(ValueError, match=f"criterion='{criterion}' scores weights on training data: pass data"):
            tf_lottery.prune(model, rate=0.5, criterion=criterion)
        with pytest.raises(ValueError, match="`data`"):
            tf_lottery.prune(model, rate=0.5, criterion=criterion, data=x)
        with pytest.raises(ValueError, match="`data`"):
            tf_lottery.prune(model, rate=0.5, criterion=criterion, data=(x, y[:1]))
    with pytest.raises(ValueError, match="`criterion`.*accumulated_change.*grasp.*snip.*synflow"):
        tf_lottery.prune(model, rate=0.5, criterion="snap")
    for criterion in ("movement_score", "accumulated_change"):
        with pytest.raises(ValueError, match="`scores`.*training engine collects"):
            tf_lottery.prune(model, rate=0.5, criterion=criterion)
        with pytest.raises(ValueError, match=r"`scores\['fc1/kernel'\]`.*shape"):
            tf_lottery.prune(model, rate=0.5, criterion=criterion, scores={"fc1/kernel": np.ones(3)})
    for rounds in (0, -1, 1.5, True, "100"):
        with pytest.raises(ValueError, match="`rounds`"):
            tf_lottery.prune(model, rate=0.5, criterion="synflow", rounds=rounds)
    with pytest.raises(ValueError, match="`scope`.*erk"):
        tf_lottery.prune(model, rate=0.5, scope="somewhere")
    np.testing.assert_array_equal(tf_lottery.get_masks(model)["fc1/kernel"], 1.0)
    assert {"snip", "grasp", "synflow"} == pruning.AT_INIT_CRITERIA
    assert pruning.DATA_CRITERIA | pruning.SCORED_CRITERIA | pruning.AT_INIT_CRITERIA <= set(pruning.CRITERIA)
    assert all(fn.__doc__ for fn in pruning.CRITERIA.values())


def _conv_bn(functional):
    layers = [
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(3, name="out"),
    ]
    if not functional:
        return tf_lottery.wrap(keras.Sequential([keras.Input((6, 6, 2))] + layers))
    inputs = h = keras.Input((6, 6, 2))
    for layer in layers:
        h = layer(h)
    return tf_lottery.wrap(keras.Model(inputs, h))


@pytest.mark.parametrize("functional", [True, False])
def test_batchnorm_conv_models_get_finite_scores_and_are_not_changed(functional):
    keras.utils.set_random_seed(2)
    model = _conv_bn(functional)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(4, -0.5, "float32"))  # |.| enters SynFlow's copy only
    before = _snapshot(model)
    x = np.random.default_rng(0).normal(size=(5, 6, 6, 2)).astype("float32")
    y = np.array([0, 1, 2, 0, 1])
    for scores in (saliency.snip(model, x, y), saliency.grasp(model, x, y), saliency.synflow(model)):
        assert set(scores) == {"conv/kernel", "out/kernel"}
        assert scores["conv/kernel"].shape == (3, 3, 2, 4) and scores["out/kernel"].shape == (64, 3)
        for value in scores.values():
            assert value.dtype == np.float64 and np.isfinite(value).all() and np.any(value != 0)
    for criterion in ("snip", "grasp", "synflow"):
        masks = tf_lottery.prune(model, rate=0.5, criterion=criterion, data=(x, y), rounds=3)
        assert {k: int(m.sum()) for k, m in masks.items()} == {"conv/kernel": 36, "out/kernel": 96}
    _assert_unchanged(model, before)
    # training=False: SNIP is deterministic although the model has dropout.
    a, b = saliency.snip(model, x, y), saliency.snip(model, x, y)
    np.testing.assert_array_equal(a["out/kernel"], b["out/kernel"])
