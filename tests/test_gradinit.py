"""Tests for tf_lottery.gradinit (GradInit, Zhu et al. 2021) on tiny models and data."""

import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_lottery as tfl
from tf_lottery import gradinit
from tf_lottery.hparams import GradInitHparams, ModelHparams

pytestmark = pytest.mark.usefixtures("clean_keras")
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def blobs(n=512, dim=16, classes=4, seed=0):
    """Gaussian blobs: learnable, but not in one step from any scale."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    x = centers[y] + 0.7 * rng.normal(size=(n, dim)).astype(np.float32)
    return x, y


def mlp(factor=1.0, seed=0, hidden=32, classes=4, dim=16, batch_norm=False):
    layers = [keras.Input((dim,)), keras.layers.Dense(hidden, activation="relu", name="fc1")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers += [keras.layers.Dense(hidden, activation="relu", name="fc2"),
               keras.layers.Dense(classes, name="output")]
    model = keras.Sequential(layers)
    rng = np.random.default_rng(seed)
    weights = [w * factor if w.ndim == 2 else w for w in model.get_weights()]
    for w in weights:
        if w.ndim == 2:
            w[...] = rng.normal(size=w.shape) * np.sqrt(2.0 / sum(w.shape)) * factor
    model.set_weights(weights)
    return model


def grad_norm(model, x, y, p=2):
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    if p == 2:
        return float(tf.sqrt(sum(tf.reduce_sum(g ** 2) for g in grads)))
    return float(sum(tf.reduce_sum(tf.abs(g)) for g in grads))


def first_epoch_loss(model, x, y, lr=0.1):
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=LOSS)
    history = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    return history.history["loss"][0]


def _softmax_ce(logits, labels):
    z = logits - logits.max(1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return -np.mean(np.log(prob[np.arange(len(labels)), labels])), prob


def _objective_by_hand(scales, w, b, batches, optimizer, eta, gamma, second_order=True,
                       at=None, normalize=False, over_eta=False):
    """Algorithm 1's objective for logits = x @ (a0 w) + a1 b, in float64 numpy.

    ``second_order=False`` freezes the inner gradient of the simulated step at the scales
    ``at`` (what a first-order implementation differentiates; the norm ``||g||`` still
    moves with the scales); ``normalize``: the SGD step is ``eta * g / ||g||``;
    ``over_eta``: the loss after the step is divided by ``eta`` (the authors' code)."""
    (x1, y1), (x2, y2) = [(x.astype(np.float64), y) for x, y in batches]

    def inner_grad(a):
        _, prob = _softmax_ce(x1 @ (a[0] * w) + a[1] * b, y1)
        err = prob.copy()
        err[np.arange(len(y1)), y1] -= 1
        err /= len(y1)
        return x1.T @ err, err.sum(0)

    def norm_of(g_w, g_b):
        if optimizer == "sgd":
            return np.sqrt((g_w ** 2).sum() + (g_b ** 2).sum())
        return np.abs(g_w).sum() + np.abs(g_b).sum()

    norm = norm_of(*inner_grad(scales))
    g_w, g_b = inner_grad(scales if second_order else at)
    if optimizer == "sgd":
        m_w, m_b = g_w, g_b
        if normalize:
            m_w, m_b = g_w / norm_of(g_w, g_b), g_b / norm_of(g_w, g_b)
    else:
        m_w, m_b = np.sign(g_w), np.sign(g_b)
    loss2, _ = _softmax_ce(x2 @ (scales[0] * w - eta * m_w) + scales[1] * b - eta * m_b, y2)
    return norm if norm > gamma else (loss2 / eta if over_eta else loss2)


@pytest.mark.parametrize("optimizer, eta", [("sgd", 0.5), ("adam", 0.05)])
@pytest.mark.parametrize("gamma", [1e-6, 100.0])
def test_scale_gradient_is_the_second_order_derivative_of_algorithm_1(optimizer, eta, gamma):
    # One Dense layer with a non-zero bias: the objective is written out by hand in
    # numpy, and its central finite differences must match GradInit's scale gradient.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype(np.float32)
    y = rng.integers(0, 3, 32).astype(np.int32)
    w = rng.normal(size=(5, 3)).astype(np.float32)
    b = (0.5 * rng.normal(size=3)).astype(np.float32)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="out")])
    model.set_weights([w, b])
    w, b = w.astype(np.float64), b.astype(np.float64)
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    step = gradinit._build_step(model, model.trainable_variables, LOSS, eta, gamma, optimizer)
    scales = np.array([0.8, 1.3])
    grad, objective, _, _, norm, constrained = step(
        tf.constant(scales, tf.float32), *batches[0], *batches[1])
    assert bool(constrained) == (gamma < 1)
    expected = _objective_by_hand(scales, w, b, batches, optimizer, eta, gamma)
    assert float(objective) == pytest.approx(expected, rel=1e-5)

    def finite_difference(**kwargs):
        h = 1e-5
        return np.array([
            (_objective_by_hand(scales + h * e, w, b, batches, optimizer, eta, gamma, **kwargs)
             - _objective_by_hand(scales - h * e, w, b, batches, optimizer, eta, gamma,
                                  **kwargs)) / (2 * h) for e in np.eye(2)])

    np.testing.assert_allclose(grad.numpy(), finite_difference(), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(model.get_weights()[0], w.astype(np.float32))  # unchanged
    if optimizer == "sgd" and gamma > 1:  # the term through g matters: first order is off
        first_order = finite_difference(second_order=False, at=scales)
        assert np.abs(first_order - grad.numpy()).max() > 0.01  # 50x the tolerance above


@pytest.mark.parametrize("optimizer, eta, normalize", [
    ("sgd", 0.5, False), ("sgd", 0.5, True), ("adam", 0.05, False)])
@pytest.mark.parametrize("gamma", [1e-6, 100.0])
def test_authors_variant_is_first_order_and_divides_by_eta(optimizer, eta, normalize, gamma):
    # The authors' code (zhuchen03/gradinit, gradinit_utils.py): the simulated step is
    # theta - eta * A[g].detach() and the objective is L(S~; ...) / eta; the gradient-norm
    # constraint is still differentiated through g. The same hand-written objective with
    # g frozen at the current scales: its finite differences are GradInit's gradient.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype(np.float32)
    y = rng.integers(0, 3, 32).astype(np.int32)
    w = rng.normal(size=(5, 3)).astype(np.float32)
    b = (0.5 * rng.normal(size=3)).astype(np.float32)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="out")])
    model.set_weights([w, b])
    w, b = w.astype(np.float64), b.astype(np.float64)
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    scales = np.array([0.8, 1.3])
    settings = dict(optimizer=optimizer, eta=eta, gamma=gamma)
    step = gradinit._build_step(model, model.trainable_variables, LOSS, variant="authors",
                                normalize_grad=normalize, **settings)
    grad, objective, _, loss2, _, constrained = step(
        tf.constant(scales, tf.float32), *batches[0], *batches[1])
    assert bool(constrained) == (gamma < 1)
    hand = dict(normalize=normalize, over_eta=True, **settings)
    expected = _objective_by_hand(scales, w, b, batches, **hand)
    assert float(objective) == pytest.approx(expected, rel=1e-5)
    if not constrained:
        assert float(objective) == pytest.approx(float(loss2) / eta, rel=1e-6)

    def finite_difference(**kwargs):
        h = 1e-5
        return np.array([
            (_objective_by_hand(scales + h * e, w, b, batches, **hand, **kwargs)
             - _objective_by_hand(scales - h * e, w, b, batches, **hand, **kwargs)) / (2 * h)
            for e in np.eye(2)])

    first_order = finite_difference(second_order=False, at=scales)
    np.testing.assert_allclose(grad.numpy(), first_order, rtol=1e-4, atol=1e-6)
    if optimizer == "sgd" and not constrained:  # differs from the second-order gradient
        assert np.abs(finite_difference() - first_order).max() > 0.01


def test_authors_adam_keeps_a_first_moment_per_branch():
    # One objective step with scale gradient +1, then one constraint step with -0.5, at
    # lr 0.1. The authors' RescaleAdam: each branch's first moment is its own, so the
    # constraint step is -0.5 / sqrt(v_hat) * lr with v_hat = (0.999 * 0.001 * 1 + 0.001 *
    # 0.25) / (1 - 0.999^2) = 0.62481: -0.063255. One shared moment (Keras's Adam) would
    # still step up: m_hat = (0.9 * 0.1 - 0.05) / (1 - 0.81) = 0.2105 > 0.
    authors, shared = gradinit._AuthorsAdam(1, 0.1), gradinit._KerasAdam(1, 0.1)
    assert authors(np.array([1.0]), False)[0] == pytest.approx(0.1, rel=1e-6)
    assert shared(np.array([1.0], np.float32), False)[0] == pytest.approx(0.1, rel=1e-5)
    assert authors(np.array([-0.5]), True)[0] == pytest.approx(-0.063255, rel=1e-4)
    assert shared(np.array([-0.5], np.float32), True)[0] > 0


def test_first_and_second_order_learn_different_scales():
    x, y = blobs()
    results = {}
    for variant in ("second_order", "authors"):
        model = mlp(seed=2)
        results[variant] = gradinit.gradinit(model, (x, y), steps=20, eta=0.5, gamma=100.0,
                                             batch_size=32, variant=variant)
        assert results[variant].settings["variant"] == variant
    second, authors = (np.array(list(results[v].scales.values()))
                       for v in ("second_order", "authors"))
    assert not results["authors"].constrained.any()
    np.testing.assert_allclose(results["authors"].objective,
                               results["authors"].loss_after_step / 0.5, rtol=1e-6)
    assert np.abs(second - authors).max() > 1e-3


@pytest.mark.parametrize("optimizer, p", [("sgd", 2), ("adam", 1)])
def test_tiny_gamma_takes_the_constraint_branch_and_lowers_the_gradient_norm(optimizer, p):
    x, y = blobs()
    model = mlp(seed=1)
    before = grad_norm(model, x, y, p)
    result = gradinit.gradinit(model, (x, y), steps=25, gamma=1e-3, scale_lr=0.05,
                               optimizer=optimizer, batch_size=64, eta=0.1)
    assert result.constrained.all()
    np.testing.assert_allclose(result.objective, result.grad_norm)
    after = grad_norm(model, x, y, p)
    assert after < 0.7 * before
    assert result.grad_norm[-5:].mean() < result.grad_norm[:5].mean()
    assert set(result.scales) == {v.path for v in model.trainable_variables}


# Scales move additively (Adam steps of about scale_lr), so growing a 0.01x network by
# ~50x per layer needs a larger scale learning rate than shrinking a 10x one.
@pytest.mark.parametrize("factor, scale_lr", [(10.0, 0.1), (0.01, 0.3)])
def test_badly_scaled_init_is_moved_toward_a_trainable_range(factor, scale_lr):
    x, y = blobs()
    bad = mlp(factor, seed=2)
    original = [v.numpy().copy() for v in bad.trainable_variables]
    fixed = mlp(factor, seed=2)
    result = gradinit.gradinit(fixed, (x, y), steps=150, eta=0.1, gamma=1.0,
                               scale_lr=scale_lr, batch_size=64, seed=3)
    kernels = {k: s for k, s in result.scales.items() if k.endswith("kernel")}
    product = np.prod(list(kernels.values()))
    if factor > 1:
        assert product < 0.1 and max(kernels.values()) < 1  # shrunk
    else:
        assert product > 1000 and min(kernels.values()) > 1  # grown
    for variable, before, (path, scale) in zip(fixed.trainable_variables, original,
                                               result.scales.items()):
        assert variable.path == path
        np.testing.assert_allclose(variable.numpy(), before * scale, rtol=1e-6)
    assert first_epoch_loss(fixed, x, y) < first_epoch_loss(bad, x, y) - 0.1


def test_scales_never_fall_below_min_scale():
    x, y = blobs()
    model = mlp(seed=4)
    result = gradinit.gradinit(model, (x, y), steps=20, gamma=1e-9, scale_lr=0.5,
                               min_scale=0.2, batch_size=32)
    history = result.scale_history
    assert history.shape == (20, len(model.trainable_variables))
    np.testing.assert_array_equal(history[-1], list(result.scales.values()))
    assert history.min() >= np.float32(0.2)  # at every step, not only at the end
    kernels = [i for i, k in enumerate(result.scales) if k.endswith("kernel")]
    # Adam steps of about scale_lr = 0.5 from 1 would reach -0.5 by step 3: the floor holds.
    np.testing.assert_allclose(history[3:, kernels], 0.2, rtol=1e-6)
    assert (history[0, kernels] < 1).all()


def test_masked_model_scales_dense_kernels_and_keeps_masks():
    x, y = blobs()
    model = tfl.wrap(mlp(seed=5))
    rng = np.random.default_rng(0)
    masks = {k: (rng.random(v.shape) < 0.5).astype(np.float32)
             for k, v in tfl.get_masks(model).items()}
    tfl.set_masks(model, masks)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    result = gradinit.gradinit(model, (x, y), steps=10, batch_size=32)
    for key, mask in tfl.get_masks(model).items():
        np.testing.assert_array_equal(mask, masks[key])
    for v in model.trainable_variables:
        np.testing.assert_allclose(v.numpy(), before[v.path] * result.scales[v.path], rtol=1e-6)
    # Pruned entries play no part: changing them under the mask changes nothing learned.
    other = tfl.wrap(mlp(seed=5))
    tfl.set_masks(other, masks)
    for v in other.trainable_variables:
        key = v.path.split("/", 1)[1]
        value = before[model.trainable_variables[0].path.split("/")[0] + "/" + key]
        if key in masks:
            value = np.where(masks[key] > 0, value, 100.0 * value + 1.0)
        v.assign(value)
    again = gradinit.gradinit(other, (x, y), steps=10, batch_size=32)
    np.testing.assert_allclose(list(again.scales.values()), list(result.scales.values()),
                               rtol=1e-5)


def test_batch_norm_gammas_and_betas_get_scales_and_statistics_stay():
    x, y = blobs()
    model = mlp(seed=6, batch_norm=True)
    bn = model.get_layer("bn")
    moving = [bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()]
    result = gradinit.gradinit(model, (x, y), steps=15, batch_size=32, scale_lr=0.05)
    assert {"bn/gamma", "bn/beta"} <= {k.split("/", 1)[1] for k in result.scales}
    gamma_scale = [s for k, s in result.scales.items() if k.endswith("bn/gamma")][0]
    assert gamma_scale != 1.0  # gamma starts at 1, so its scale gets a gradient
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving[0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), moving[1])


@pytest.mark.parametrize("kwargs, word", [
    (dict(eta=0.0), "eta"), (dict(gamma=-1.0), "gamma"), (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"), (dict(optimizer="rmsprop"), "optimizer"),
    (dict(min_scale=0), "min_scale"), (dict(batch_size=400), "batch_size"),
    (dict(variant="third_order"), "variant"), (dict(normalize_grad=1), "normalize_grad"),
    (dict(normalize_grad=True, optimizer="adam"), "normalize_grad"),
])
def test_bad_arguments_fail_before_any_work(kwargs, word):
    x, y = blobs()
    model = mlp(seed=7)
    before = model.get_weights()
    with pytest.raises(ValueError, match=word):
        gradinit.gradinit(model, (x, y), **kwargs)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_model_without_trainable_weights_and_bad_data_are_rejected():
    x, y = blobs()
    frozen = mlp(seed=8)
    frozen.trainable = False
    with pytest.raises(ValueError, match="no trainable weights"):
        gradinit.gradinit(frozen, (x, y))
    with pytest.raises(ValueError, match="labels"):
        gradinit.gradinit(mlp(seed=8), (x, y.astype(np.float32)), batch_size=32)
    with pytest.raises(ValueError, match="classes"):
        gradinit.gradinit(mlp(seed=8, classes=2), (x, y), batch_size=32)


def test_tf_data_dataset_of_the_same_batches_gives_the_same_result_as_arrays():
    # The arrays are cut into pairs of minibatches along default_rng(seed).permutation(N);
    # a tf.data.Dataset of the arrays in that order, batched alike, yields the same
    # batches in the same order, so GradInit learns the same scales (by construction).
    x, y = blobs()
    steps, batch = 6, 32  # 6 pairs of 32 from one permutation of 512 examples
    from_arrays = mlp(seed=9)
    expected = gradinit.gradinit(from_arrays, (x, y), steps=steps, batch_size=batch, seed=5,
                                 scale_lr=0.05)
    order = np.random.default_rng(5).permutation(len(y))
    dataset = tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(batch)
    from_dataset = mlp(seed=9)
    result = gradinit.gradinit(from_dataset, dataset, steps=steps, scale_lr=0.05)
    np.testing.assert_allclose(list(result.scales.values()), list(expected.scales.values()),
                               rtol=1e-6)
    np.testing.assert_allclose(result.objective, expected.objective, rtol=1e-5)
    assert list(result.scales.values()) != [1.0] * len(result.scales)  # the scales moved
    for a, b in zip(from_dataset.get_weights(), from_arrays.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert result.settings["batch_size"] is None  # the dataset's batches were used
    # Passes repeat (4 pairs per pass of 8 batches here; an odd last batch is dropped),
    # labels may be int64 and inputs are cast to float.
    repeated = gradinit.gradinit(
        mlp(seed=9), tf.data.Dataset.from_tensor_slices(
            (x[:250].astype(np.float64), y[:250].astype(np.int64))).batch(32), steps=10)
    assert repeated.objective.shape == (10,)


def test_tf_data_datasets_that_cannot_feed_gradinit_are_rejected():
    x, y = blobs()
    model = mlp(seed=10)
    before = model.get_weights()
    cases = [
        (tf.data.Dataset.from_tensor_slices(x).batch(32), "yield \\(x, y\\) batches"),
        (tf.data.Dataset.from_tensor_slices((x, y)), "batch it"),  # not batched
        (tf.data.Dataset.from_tensor_slices((x[:0], y[:0])).batch(32), "yields no batch"),
        (tf.data.Dataset.from_tensor_slices((x, y)).batch(len(y)), "1 batch per pass"),
        (tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32))).batch(32), "labels"),
    ]
    for dataset, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            gradinit.gradinit(model, dataset, steps=2)
        assert "`dataset`" in str(err.value)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="`dataset` must be"):
        gradinit.gradinit(model, x, steps=2)


def test_experiment_model_fn_caches_scales_per_seed(tmp_path):
    from tf_lottery import data, experiment, paths

    ds = data.load("synthetic", validation_size=100)
    hp = ModelHparams("lenet_300_100", "gradinit",
                      gradinit=GradInitHparams(steps=5, batch_size=32))
    model_fn = experiment.model_fn(hp, ds, cache_dir=str(tmp_path))
    first = model_fn(11).get_weights()
    saved = json.load(open(paths.ReplicateDir(str(tmp_path)).gradinit_scales(11)))
    assert len(saved["objective"]) == 5
    base = experiment.build_model(hp, ds.input_shape, ds.num_classes, seed=11)
    gradinit.apply_scales(base, saved["scales"])
    for a, b in zip(base.get_weights(), first):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    replay = model_fn(11).get_weights()  # from the cache: identical
    for a, b in zip(replay, first):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(model_fn(12).get_weights()[0], first[0])
    with pytest.raises(ValueError, match="scales"):
        gradinit.apply_scales(base, {"nope/kernel": 1.0})


def _cli():
    """The experiment command's modules (tf_lottery.cli)."""
    from tf_lottery.cli import errors
    from tf_lottery.cli import experiment as command
    from tf_lottery.cli import experiment_flags

    return experiment_flags, command, errors


def test_cli_initializer_gradinit_sets_theta_0_and_reinit(tmp_path, capsys):
    from tf_lottery import experiment, paths

    ef, command, errors = _cli()
    argv = ["tf_lottery.main", "--dataset=synthetic", "--batch_size=32",
            "--training_steps=50it", "--eval_every=50it", "--levels=1", "--prune_rate=0.5",
            "--controls=reinit", "--initializer=gradinit", "--base_initializer=he_normal",
            "--gradinit_steps=5", "--gradinit_batch_size=32", "--gradinit_variant=authors",
            "--gradinit_normalize_grad=true", "--optimizer=sgd", "--learning_rate=0.05",
            "--momentum=0.9", "--weight_decay=1e-4", "--weight_decay_mode=coupled",
            "--clip_grad_norm=1", f"--run_root={tmp_path}"]
    try:
        ef.FLAGS(argv)
        assert command.main([]) == 0
        ef.FLAGS.unparse_flags()
        ef.FLAGS(argv[:-1] + ["--gradinit_eta=0", f"--run_root={tmp_path / 'bad'}"])
        with pytest.raises(errors.UsageError, match="gradinit_eta"):
            command.main([])
    finally:
        ef.FLAGS.unparse_flags()
    assert not os.path.exists(tmp_path / "bad")
    (run,) = [paths.RunDir(p) for p in glob.glob(str(tmp_path / "*"))]
    replicate = run.replicate(0).path
    caches = sorted(glob.glob(os.path.join(replicate, "gradinit_*.json")))
    assert len(caches) == 2  # theta_0 and the level-1 reinit network
    hparams = json.load(open(run.hparams))
    assert hparams["model"]["initializer"] == "gradinit"
    assert hparams["model"]["base_initializer"] == "he_normal"
    assert hparams["model"]["gradinit_steps"] == 5
    assert hparams["model"]["gradinit_variant"] == "authors"
    assert hparams["model"]["gradinit_normalize_grad"] is True
    assert hparams["training"]["weight_decay_mode"] == "coupled"
    assert hparams["training"]["clip_grad_norm"] == 1.0
    flags_txt = open(run.flags).read()
    assert "--initializer=gradinit" in flags_txt and "--gradinit_steps=5" in flags_txt
    assert "--gradinit_variant=authors" in flags_txt
    assert "--gradinit_normalize_grad=true" in flags_txt.lower()
    # theta_0 is the he_normal network rescaled by the scales GradInit learned for it.
    plain = ModelHparams("lenet_300_100", "he_normal")
    init = tfl.wrap(experiment.build_model(plain, (8, 8, 1), 10))
    init.load_weights(run.replicate(0).init_weights)
    theta_0 = {v.path.split("/", 1)[1]: v.numpy() for v in init.trainable_variables}
    matches = 0
    for path in caches:
        assert json.load(open(path))["settings"]["variant"] == "authors"
        seed = int(os.path.basename(path)[len("gradinit_"):-len(".json")])
        assert paths.ReplicateDir(replicate).gradinit_scales(seed) == path
        base = experiment.build_model(plain, (8, 8, 1), 10, seed=seed)
        gradinit.apply_scales(base, json.load(open(path))["scales"])
        rescaled = {v.path.split("/", 1)[1]: v.numpy() for v in base.trainable_variables}
        matches += all(np.allclose(rescaled[k], theta_0[k]) for k in theta_0)
    assert matches == 1


def _cli_hparams(*args):
    ef, _, _ = _cli()
    try:
        ef.FLAGS(["tf_lottery.main", "--dataset=synthetic", *args])
        return ef.hparams()
    finally:
        ef.FLAGS.unparse_flags()


def test_cli_initializer_takes_any_keras_initializer_name():
    from tf_lottery import experiment

    def fc1(hp):
        model = experiment.build_model(hp.model, (8, 8, 1), 10, seed=0)
        return model.get_layer("fc1").kernel.numpy()  # (64, 300)

    fan_in, fan_out = 64, 300
    checks = {  # what each initializer draws for fc1's (64, 300) kernel
        "he_normal": lambda w: abs(w.std() - np.sqrt(2 / fan_in)) < 0.01,
        "lecun_normal": lambda w: abs(w.std() - np.sqrt(1 / fan_in)) < 0.01,
        "glorot_uniform": lambda w: np.abs(w).max() <= np.sqrt(6 / (fan_in + fan_out))
        and np.abs(w).max() > 0.9 * np.sqrt(6 / (fan_in + fan_out)),
        "random_uniform": lambda w: np.abs(w).max() <= 0.05 and np.abs(w).max() > 0.045,
        "orthogonal": lambda w: np.allclose(w @ w.T, np.eye(fan_in), atol=1e-4),
    }
    for name, check in checks.items():
        hp = _cli_hparams(f"--initializer={name}")
        assert hp.model.initializer == name and hp.model.gradinit is None
        assert hp.model.kernel_initializer == name
        assert check(fc1(hp)), name
    hp = _cli_hparams("--initializer=gradinit", "--base_initializer=orthogonal")
    assert hp.model.gradinit.base_initializer == "orthogonal"
    assert hp.model.gradinit.steps == 390
    assert check(fc1(hp))  # GradInit starts from the orthogonal draw


@pytest.mark.parametrize("args, message", [
    (["--initializer=glorious"], "--initializer='glorious' is not a Keras initializer"),
    (["--initializer=gradinit", "--base_initializer=glorious"],
     "--base_initializer='glorious' is not a Keras initializer"),
    (["--initializer=gradinit", "--base_initializer=gradinit"], "base_initializer"),
    (["--initializer=gradinit", "--gradinit_optimizer=rmsprop"], "gradinit_optimizer"),
    (["--initializer=gradinit", "--gradinit_gamma=0"], "gradinit_gamma"),
    (["--initializer=gradinit", "--gradinit_steps=-3"], "gradinit_steps"),
    (["--initializer=gradinit", "--gradinit_min_scale=0"], "gradinit_min_scale"),
    (["--initializer=gradinit", "--gradinit_variant=third"], "--gradinit_variant"),
    (["--initializer=gradinit", "--gradinit_optimizer=adam", "--gradinit_normalize_grad=true"],
     "--gradinit_normalize_grad"),
])
def test_cli_rejects_bad_initializers_and_gradinit_settings(args, message):
    _, _, errors = _cli()
    with pytest.raises(errors.UsageError, match=message):
        _cli_hparams(*args)


def test_model_hparams_gradinit_fields():
    import dataclasses

    from tf_lottery.hparams import (
        GRADINIT_FIELDS,
        ArgumentError,
        DatasetHparams,
        ExperimentHparams,
        PruningHparams,
        TrainingHparams,
    )

    defaults = GradInitHparams()
    hp = ModelHparams("lenet_300_100", "gradinit", gradinit=GradInitHparams(eta=0.01))
    assert hp.gradinit.eta == 0.01 and hp.gradinit.steps == defaults.steps
    assert hp.gradinit.base_initializer == "glorot_normal" and hp.gradinit.optimizer == "sgd"
    assert hp.kernel_initializer == "glorot_normal"
    assert ModelHparams("lenet_300_100", "gradinit").gradinit == defaults
    with pytest.raises(ValueError, match="gradinit.*applies only with initializer='gradinit'"):
        ModelHparams("lenet_300_100", "he_normal", gradinit=GradInitHparams(steps=5))
    with pytest.raises(ArgumentError, match="batch_size") as err:
        GradInitHparams(batch_size=0)
    assert err.value.argument == "batch_size"
    # hparams.json keeps GradInit's fields flat (the CLI's flag names).
    with pytest.raises(ValueError, match="batch_size"):
        ModelHparams.from_dict({"model": "lenet_300_100", "initializer": "gradinit",
                                "gradinit_batch_size": 0})
    flat = hp.to_dict()
    later = {"gradinit_variant", "gradinit_normalize_grad"}  # in hparams.json when set
    assert set(GRADINIT_FIELDS) - later <= set(flat) and flat["gradinit_eta"] == 0.01
    assert not later & set(flat)
    assert ModelHparams.from_dict(flat) == hp
    authors = ModelHparams("lenet_300_100", "gradinit", gradinit=GradInitHparams(
        variant="authors", normalize_grad=True))
    assert {"gradinit_variant": "authors", "gradinit_normalize_grad": True}.items() \
        <= authors.to_dict().items()
    assert ModelHparams.from_dict(authors.to_dict()) == authors
    with pytest.raises(ArgumentError, match="`variant` must be one of") as err:
        GradInitHparams(variant="first")
    assert err.value.argument == "variant"
    with pytest.raises(ArgumentError, match="`normalize_grad` applies to optimizer='sgd'"):
        GradInitHparams(optimizer="adam", normalize_grad=True)

    def experiment(model):
        return ExperimentHparams(model=model, dataset=DatasetHparams("synthetic"),
                                 training=TrainingHparams(), pruning=PruningHparams())

    gi = experiment(hp)
    assert ExperimentHparams.from_dict(gi.to_dict()) == gi
    other = dataclasses.replace(hp, gradinit=dataclasses.replace(hp.gradinit, eta=0.02))
    assert experiment(other).run_name() != gi.run_name()
    assert experiment(authors).run_name() != experiment(
        ModelHparams("lenet_300_100", "gradinit")).run_name()
    # Without GradInit the fields do not enter the hash: an hparams.json written before
    # the fields existed, or with them unset (None), names the same run.
    plain = experiment(ModelHparams("lenet_300_100", "he_normal"))
    old = plain.to_dict()
    assert not set(GRADINIT_FIELDS) & set(old["model"])
    assert ExperimentHparams.from_dict(old).run_name() == plain.run_name()
    old["model"].update({name: None for name in GRADINIT_FIELDS})
    assert ExperimentHparams.from_dict(old).run_name() == plain.run_name()
