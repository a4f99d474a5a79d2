"""prune: rates, scopes, criteria, ties, bounds and validation, checked by hand."""

import keras
import numpy as np
import pytest

import tf_lottery

pytestmark = pytest.mark.usefixtures("clean_keras")


def _wrapped(*layer_sizes, input_dim):
    """Sequential Dense stack ``fc1, fc2, ..., out`` wrapped with all-ones masks."""
    layers = [keras.Input((input_dim,))]
    names = [f"fc{i + 1}" for i in range(len(layer_sizes) - 1)] + ["out"]
    layers += [keras.layers.Dense(n, name=name) for n, name in zip(layer_sizes, names)]
    return tf_lottery.wrap(keras.Sequential(layers))


def _set_kernels(model, kernels):
    tf_lottery.set_prunable_weights(model, {f"{k}/kernel": np.asarray(v, "float32") for k, v in kernels.items()})


def _alive(masks):
    return {key.split("/")[0]: int(mask.sum()) for key, mask in masks.items()}


def _prune_rounds(model, rounds, **kwargs):
    for _ in range(rounds):
        new = tf_lottery.prune(model, **kwargs)
        old = tf_lottery.get_masks(model)
        for key in new:  # pruned weights stay pruned
            assert np.all(new[key] <= old[key]), key
        tf_lottery.set_masks(model, new)
    return tf_lottery.get_masks(model)


def test_layerwise_sparsity_follows_one_minus_one_minus_p_to_the_n():
    # fc1: 25x25 = 625 weights; 625 * 0.8**3 = 320 exactly (500, 400, 320 after each round).
    # out: 25x40 = 1000 weights at output_rate 0.1: 900, 810, 729 = 1000 * 0.9**3 exactly.
    model = _wrapped(25, 40, input_dim=25)
    masks = _prune_rounds(model, 3, rate=0.2, output_rate=0.1)
    assert _alive(masks) == {"fc1": 320, "out": 729}
    report = tf_lottery.sparsity_report(model)
    assert report.layers["fc1/kernel"].sparsity == pytest.approx(1 - 0.8**3, abs=1e-12)
    assert report.layers["out/kernel"].sparsity == pytest.approx(1 - 0.9**3, abs=1e-12)


def test_layerwise_rounding_stays_within_one_weight_per_round():
    # 7x7 = 49 weights: each round prunes round(0.2 * alive), so the count can drift from
    # 49 * 0.8**n by at most 0.5 per round: 49 -> 39 -> 31 -> 25 -> 20 -> 16.
    model = _wrapped(7, 3, input_dim=7)
    for n in range(1, 6):
        masks = _prune_rounds(model, 1, rate=0.2)
        alive = _alive(masks)
        assert abs(alive["fc1"] - 49 * 0.8**n) <= 0.5 * n
        assert abs(alive["out"] - 21 * 0.8**n) <= 0.5 * n
    assert _alive(masks) == {"fc1": 16, "out": 7}  # 21 -> 17 -> 14 -> 11 -> 9 -> 7


def test_output_rate_and_layer_rates():
    model = _wrapped(10, 10, 10, input_dim=10)  # fc1, fc2, out: 100 weights each
    masks = tf_lottery.prune(model, rate=0.2, output_rate=0.1)
    assert _alive(masks) == {"fc1": 80, "fc2": 80, "out": 90}
    masks = tf_lottery.prune(model, rate=0.2, layer_rates={"fc2": 0.5})
    assert _alive(masks) == {"fc1": 80, "fc2": 50, "out": 80}
    masks = tf_lottery.prune(model, rate=0.2, output_rate=0.1, layer_rates={"out/kernel": 0.0, "fc1": 0.3})
    assert _alive(masks) == {"fc1": 70, "fc2": 80, "out": 100}
    masks = tf_lottery.prune(model, rate=0.2, exclude=["fc1"])
    assert _alive(masks) == {"fc1": 100, "fc2": 80, "out": 80}
    # prune only proposes masks; the model is unchanged until set_masks.
    assert _alive(tf_lottery.get_masks(model)) == {"fc1": 100, "fc2": 100, "out": 100}


def test_magnitude_prunes_smallest_and_ties_go_to_lowest_flat_index():
    model = _wrapped(2, 2, input_dim=2)
    _set_kernels(model, {"fc1": [[0.5, -3.0], [0.1, -0.2]], "out": [[1.0, 1.0], [1.0, 1.0]]})
    masks = tf_lottery.prune(model, rate=0.5)
    np.testing.assert_array_equal(masks["fc1/kernel"], [[1, 1], [0, 0]])  # |0.1|, |-0.2|
    np.testing.assert_array_equal(masks["out/kernel"], [[0, 0], [1, 1]])  # tie: indices 0, 1
    masks = tf_lottery.prune(model, rate=0.75)
    np.testing.assert_array_equal(masks["out/kernel"], [[0, 0], [0, 1]])
    # Deterministic: the same call gives the same masks.
    again = tf_lottery.prune(model, rate=0.75)
    for key in masks:
        np.testing.assert_array_equal(again[key], masks[key])


def test_global_prunes_layers_with_smaller_weights_more():
    model = _wrapped(2, 2, input_dim=2)
    _set_kernels(model, {"fc1": [[0.5, 2.0], [3.0, 4.0]], "out": [[0.1, 0.2], [0.3, 0.6]]})
    # 8 weights, rate 0.5 -> the 4 smallest overall: 0.1, 0.2, 0.3 (out) and 0.5 (fc1).
    masks = tf_lottery.prune(model, rate=0.5, scope="global")
    np.testing.assert_array_equal(masks["fc1/kernel"], [[0, 1], [1, 1]])
    np.testing.assert_array_equal(masks["out/kernel"], [[0, 0], [0, 1]])
    # Layerwise would take 2 from each instead.
    masks = tf_lottery.prune(model, rate=0.5)
    assert _alive(masks) == {"fc1": 2, "out": 2}


def test_global_pruning_with_glorot_init_spares_layers_with_few_inputs():
    # Glorot-uniform limits sqrt(6 / (fan_in + fan_out)): "narrow" 4->16 has 0.55, "wide"
    # 256->16 has 0.15. One global threshold (about the median |w| of "wide", ~0.074)
    # therefore takes about half of "wide" but only ~13% of "narrow".
    keras.utils.set_random_seed(0)
    a, b = keras.Input((4,)), keras.Input((256,))
    narrow = keras.layers.Dense(16, name="narrow")(a)
    wide = keras.layers.Dense(16, name="wide")(b)
    model = tf_lottery.wrap(keras.Model([a, b], keras.layers.Add()([narrow, wide])))
    masks = tf_lottery.prune(model, rate=0.5, scope="global")
    weights = tf_lottery.get_prunable_weights(model)

    # By hand: prune the 2080 smallest |w| of the 64 + 4096 = 4160 weights.
    scores = np.concatenate([np.abs(weights[k]).ravel() for k in ("narrow/kernel", "wide/kernel")])
    threshold = np.sort(scores)[2079]
    for key in ("narrow/kernel", "wide/kernel"):
        np.testing.assert_array_equal(masks[key], (np.abs(weights[key]) > threshold).astype("float32"))
    assert int(sum(m.size - m.sum() for m in masks.values())) == 2080
    sparsity = {k: 1 - masks[k].mean() for k in masks}
    assert sparsity["narrow/kernel"] < 0.3 and sparsity["wide/kernel"] > 0.5


def test_global_ties_and_exact_count():
    model = _wrapped(2, 2, input_dim=2)
    _set_kernels(model, {"fc1": np.ones((2, 2)), "out": np.ones((2, 2))})
    # All 8 scores tie: the lowest flat indices in layer order go first, but fc1 keeps one
    # weight, so the 4th pruned weight comes from "out".
    masks = tf_lottery.prune(model, rate=0.5, scope="global")
    np.testing.assert_array_equal(masks["fc1/kernel"], [[0, 0], [0, 1]])
    np.testing.assert_array_equal(masks["out/kernel"], [[0, 1], [1, 1]])


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_every_layer_keeps_at_least_one_weight(scope):
    model = _wrapped(3, 2, input_dim=4)
    _set_kernels(model, {"fc1": np.full((4, 3), 5.0), "out": np.full((3, 2), 0.01)})
    masks = _prune_rounds(model, 12, rate=0.99, scope=scope)
    assert _alive(masks) == {"fc1": 1, "out": 1}


def test_pruned_weights_stay_pruned_even_if_they_grow():
    model = _wrapped(3, 2, input_dim=3)
    _set_kernels(model, {"fc1": np.arange(1, 10).reshape(3, 3) / 10, "out": np.ones((3, 2))})
    masks = _prune_rounds(model, 1, rate=1 / 3)
    np.testing.assert_array_equal(masks["fc1/kernel"], [[0, 0, 0], [1, 1, 1], [1, 1, 1]])
    # The hidden dense values under the mask become the largest; they are not revived.
    _set_kernels(model, {"fc1": [[100, 100, 100], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]})
    for scope in ("layerwise", "global"):
        masks = tf_lottery.prune(model, rate=0.5, scope=scope)
        np.testing.assert_array_equal(masks["fc1/kernel"][0], 0)
    masks = tf_lottery.prune(model, rate=0.5)
    np.testing.assert_array_equal(masks["fc1/kernel"], [[0, 0, 0], [0, 0, 0], [1, 1, 1]])


# Hand example for the criteria (flat index 0..3 of a 2x2 kernel, rate 0.5 prunes two):
W_INIT = [[0.1, -1.0], [0.55, 0.0]]
W_FINAL = [[0.9, -0.2], [0.6, -0.3]]
EXPECTED = {
    "magnitude": [[1, 0], [1, 0]],  # |w|:            0.9, 0.2, 0.6, 0.3
    "large_init": [[0, 1], [1, 0]],  # |w_init|:       0.1, 1.0, 0.55, 0.0
    "magnitude_increase": [[1, 0], [0, 1]],  # |w|-|w_i|:  0.8, -0.8, 0.05, 0.3
    "movement": [[1, 1], [0, 0]],  # |w - w_init|:   0.8, 0.8, 0.05, 0.3
}


@pytest.mark.parametrize("criterion", sorted(EXPECTED))
def test_criteria_on_a_hand_example(criterion):
    model = _wrapped(2, 2, input_dim=2)
    _set_kernels(model, {"fc1": W_INIT, "out": np.ones((2, 2))})
    reference = tf_lottery.get_prunable_weights(model)
    _set_kernels(model, {"fc1": W_FINAL})
    masks = tf_lottery.prune(
        model, rate=0.5, criterion=criterion, reference_weights=reference, exclude="out"
    )
    np.testing.assert_array_equal(masks["fc1/kernel"], EXPECTED[criterion])
    np.testing.assert_array_equal(masks["out/kernel"], 1.0)


def test_random_criterion_is_seeded_and_keeps_counts():
    model = _wrapped(10, 10, input_dim=10)
    _set_kernels(model, {"fc1": np.arange(100).reshape(10, 10), "out": np.ones((10, 10))})
    a = tf_lottery.prune(model, rate=0.3, criterion="random", seed=1)
    b = tf_lottery.prune(model, rate=0.3, criterion="random", seed=1)
    c = tf_lottery.prune(model, rate=0.3, criterion="random", seed=2)
    assert _alive(a) == {"fc1": 70, "out": 70}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["fc1/kernel"], c["fc1/kernel"])
    # Not magnitude in disguise: the 30 smallest weights are not exactly the ones pruned.
    assert a["fc1/kernel"].ravel()[:30].sum() > 0
    # reference_weights are accepted and ignored.
    d = tf_lottery.prune(
        model, rate=0.3, criterion="random", seed=1,
        reference_weights=tf_lottery.get_prunable_weights(model),
    )
    np.testing.assert_array_equal(d["fc1/kernel"], a["fc1/kernel"])


def test_random_masks_like_keeps_counts_per_key():
    masks = {"fc1/kernel": np.eye(6, dtype="float32"), "out/kernel": np.ones((6, 2), "float32")}
    masks["out/kernel"][0, 0] = 0
    r1 = tf_lottery.random_masks_like(masks, seed=0)
    r2 = tf_lottery.random_masks_like(masks, seed=0)
    r3 = tf_lottery.random_masks_like(masks, seed=1)
    assert {k: int(v.sum()) for k, v in r1.items()} == {"fc1/kernel": 6, "out/kernel": 11}
    for key in masks:
        assert r1[key].shape == masks[key].shape
        assert set(np.unique(r1[key])) <= {0.0, 1.0}
        np.testing.assert_array_equal(r1[key], r2[key])
    assert not np.array_equal(r1["fc1/kernel"], r3["fc1/kernel"])


@pytest.mark.parametrize("rate", [1.0, -0.1, 20, True, 1, "0.2", None, float("nan")])
def test_bad_rates_raise(rate):
    model = _wrapped(2, 2, input_dim=2)
    with pytest.raises(ValueError, match="`rate`"):
        tf_lottery.prune(model, rate=rate)
    if rate is not None:  # output_rate=None means "same as rate"
        with pytest.raises(ValueError, match="`output_rate`"):
            tf_lottery.prune(model, rate=0.2, output_rate=rate)
    with pytest.raises(ValueError, match=r"`layer_rates\['fc1'\]`"):
        tf_lottery.prune(model, rate=0.2, layer_rates={"fc1": rate})


def test_bad_arguments_raise_value_error():
    model = _wrapped(2, 2, input_dim=2)
    with pytest.raises(ValueError, match="`criterion`.*large_init.*magnitude.*magnitude_increase.*movement.*random"):
        tf_lottery.prune(model, rate=0.2, criterion="snap")
    with pytest.raises(ValueError, match="`scope`.*layerwise.*global"):
        tf_lottery.prune(model, rate=0.2, scope="everywhere")
    with pytest.raises(ValueError, match="`layer_rates`.*fc9"):
        tf_lottery.prune(model, rate=0.2, layer_rates={"fc9": 0.1})
    with pytest.raises(ValueError, match="`exclude`.*fc9"):
        tf_lottery.prune(model, rate=0.2, exclude=["fc9"])
    with pytest.raises(ValueError, match="`exclude`"):
        tf_lottery.prune(model, rate=0.2, exclude=["fc1", "out"])
    with pytest.raises(ValueError, match="scope='layerwise' only"):
        tf_lottery.prune(model, rate=0.2, scope="global", output_rate=0.1)
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no masked layers"):
        tf_lottery.prune(plain, rate=0.2)
    for criterion in ("large_init", "magnitude_increase", "movement"):
        with pytest.raises(ValueError, match="reference_weights"):
            tf_lottery.prune(model, rate=0.2, criterion=criterion)
    with pytest.raises(ValueError, match=r"`reference_weights\['fc1/kernel'\]`.*shape"):
        tf_lottery.prune(
            model, rate=0.2, criterion="movement",
            reference_weights={"fc1/kernel": np.ones((3, 3)), "out/kernel": np.ones((2, 2))},
        )
    with pytest.raises(ValueError, match="`reference_weights` lacks.*out/kernel"):
        tf_lottery.prune(
            model, rate=0.2, criterion="movement", reference_weights={"fc1/kernel": np.ones((2, 2))}
        )
    # Nothing was changed by any of the failed calls.
    np.testing.assert_array_equal(tf_lottery.get_masks(model)["fc1/kernel"], 1.0)
