"""Adversarial robustness of trained tickets: accuracy under FGSM and PGD attacks.

An open question about lottery tickets is whether a sparse winning ticket is easier to
attack than the dense network it came from. ``run_adversarial`` evaluates the final
weights of each branch of a run (``BranchDir.final_weights``: the ticket of every level,
the dense network at level 0 and the ``reinit`` / ``random_prune`` controls) on test
examples perturbed by

* FGSM (Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples",
  ICLR 2015): ``x' = clip(x + eps * sign(grad_x L(x, y)))``, one step;
* PGD (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
  ICLR 2018), L-infinity: from ``x`` (or ``x`` plus uniform noise in the eps ball, the
  random start), ``steps`` steps ``x' <- P(x' + alpha * sign(grad_x' L(x', y)))`` with
  ``P`` the projection onto the eps ball around ``x`` intersected with the valid input
  range (both are boxes, so ``P`` is a clip to their intersection).

``L`` is the softmax cross-entropy of the logits. No training happens.

Units. ``eps`` is given in units of the [0, 1] pixel range, whatever the dataset's
preprocessing (``tf_lottery.data``): the model sees ``x = (p - mean) / std`` per channel
for pixels ``p`` in [0, 1] (CIFAR: the training split's channel statistics,
``Dataset.channel_mean`` / ``channel_std``; MNIST, Fashion-MNIST and ``synthetic`` are only
scaled, i.e. mean 0 and std 1). A pixel-space ball ``|p' - p| <= eps`` is therefore the
model-space box ``|x' - x| <= eps / std`` per channel, and the valid pixel range [0, 1]
is ``[(0 - mean) / std, (1 - mean) / std]`` (``InputSpace``). PGD's step size is given
relative to eps (``alpha = step_size * eps``, converted the same way).
"""

from __future__ import annotations

import dataclasses
import math
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_lottery import files, masking
from tf_lottery.analysis.run import EntryFile, check_int, open_run
from tf_lottery.hparams import BRANCHES, ArgumentError, derive_seed
from tf_lottery.training import Runtime

__all__ = [
    "ATTACKS",
    "InputSpace",
    "input_space",
    "attack_function",
    "fgsm",
    "pgd",
    "adversarial_accuracy",
    "run_adversarial",
]

#: The attacks of ``run_adversarial``; ``"none"`` is the clean accuracy (epsilon 0).
ATTACKS = ("none", "fgsm", "pgd")


@dataclasses.dataclass(frozen=True)
class InputSpace:
    """How pixels ``p`` in [0, 1] map to the model's inputs: ``x = (p - mean) / std``.

    Attributes:
        mean, std: float32 arrays of shape ``(C,)`` (channels last), broadcast over
            ``(N, H, W, C)`` inputs.
    """

    mean: np.ndarray
    std: np.ndarray

    def epsilon(self, eps: float) -> np.ndarray:
        """A pixel-space radius ``eps`` in model units: ``eps / std``, shape ``(C,)``."""
        return (np.float32(eps) / self.std).astype(np.float32)

    @property
    def low(self) -> np.ndarray:
        """The model input of pixel value 0, shape ``(C,)``."""
        return ((0.0 - self.mean) / self.std).astype(np.float32)

    @property
    def high(self) -> np.ndarray:
        """The model input of pixel value 1, shape ``(C,)``."""
        return ((1.0 - self.mean) / self.std).astype(np.float32)


def input_space(dataset) -> InputSpace:
    """The ``InputSpace`` of a ``tf_lottery.data.Dataset``: its ``channel_mean`` /
    ``channel_std`` (CIFAR), or mean 0 and std 1 (inputs only scaled to [0, 1])."""
    channels = dataset.input_shape[-1]
    if dataset.channel_std is None:
        return InputSpace(np.zeros(channels, np.float32), np.ones(channels, np.float32))
    return InputSpace(np.asarray(dataset.channel_mean, np.float32),
                      np.asarray(dataset.channel_std, np.float32))


def attack_function(model: keras.Model, *, jit_compile: bool = True):
    """A compiled L-infinity attack on ``model`` (logits out), used for every batch.

    Returns ``attack(x, y, eps, alpha, low, high, noise, steps) -> (x_adv, correct)``:
    ``x`` float32 ``(B, H, W, C)`` model inputs, ``y`` int32 ``(B,)`` labels; ``eps``,
    ``alpha`` (step size), ``low``, ``high``: model units, float32 broadcastable to
    ``x`` (e.g. ``(C,)``); ``noise``: the random start in units of ``eps``, shaped like
    ``x`` (zeros for none); ``steps``: int32 scalar, 0 for the clean inputs. ``x_adv``
    starts at ``P(x + noise * eps)`` and takes ``steps`` steps
    ``P(x_adv + alpha * sign(grad))`` of the summed softmax cross-entropy, ``P`` the clip
    to ``[max(x - eps, low), min(x + eps, high)]``; ``correct`` (int32 scalar) counts
    the examples ``x_adv`` leaves correctly classified. FGSM is ``steps=1``,
    ``alpha=eps``, no noise. BatchNorm runs in inference mode.
    """

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def attack(x, y, eps, alpha, low, high, noise, steps):
        lo = tf.maximum(x - eps, low)
        hi = tf.minimum(x + eps, high)
        start = tf.minimum(tf.maximum(x + noise * eps, lo), hi)

        def step(i, adv):
            with tf.GradientTape() as tape:
                tape.watch(adv)
                logits = tf.cast(model(adv, training=False), tf.float32)
                loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=y, logits=logits))
            grad = tape.gradient(loss, adv)
            return i + 1, tf.minimum(tf.maximum(adv + alpha * tf.sign(grad), lo), hi)

        _, adv = tf.while_loop(lambda i, _: i < steps, step, (tf.constant(0), start))
        logits = model(adv, training=False)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return adv, tf.reduce_sum(tf.cast(tf.equal(predicted, y), tf.int32))

    return attack


def _check_epsilon(epsilon) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.floating)) or not (
            math.isfinite(epsilon) and 0 < epsilon <= 1):
        raise ArgumentError("epsilons", epsilon,
                            "`epsilons` must list numbers in (0, 1] (L-infinity radius in "
                            f"units of the [0, 1] pixel range), e.g. 0.01,0.03,0.1; received "
                            f"{epsilon!r}.")
    return float(epsilon)


def _check_step_size(step_size) -> float:
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float, np.floating)) \
            or not (math.isfinite(step_size) and step_size > 0):
        raise ArgumentError("pgd_step_size", step_size,
                            "`pgd_step_size` must be a number > 0 (PGD's step as a fraction "
                            f"of epsilon, e.g. 0.25); received {step_size!r}.")
    return float(step_size)


def _noise(shape, seed) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=shape).astype(np.float32)


def adversarial_accuracy(model: keras.Model, x, y, space: InputSpace, *, attack: str,
                         epsilon: float = 0.0, steps: int = 10, step_size: float = 0.25,
                         random_start: bool = True, seed: int = 0, batch_size: int = 1000,
                         jit_compile: bool = True, function=None,
                         return_examples: bool = False):
    """Accuracy of ``model`` on ``(x, y)`` under an attack, in batches.

    Args:
        model: a Keras classifier returning logits ``(N, classes)``.
        x: float32 ``(N, H, W, C)`` model inputs (preprocessed, ``tf_lottery.data``);
            y: int ``(N,)`` labels.
        space: the ``InputSpace`` of the data (``input_space(dataset)``).
        attack: ``"none"`` (clean), ``"fgsm"`` or ``"pgd"``.
        epsilon: L-infinity radius in units of the [0, 1] pixel range (ignored for
            ``"none"``).
        steps, step_size, random_start: PGD's steps, step size relative to ``epsilon``
            (``alpha = step_size * epsilon``) and random start (uniform in the ball).
        seed: seed of the random start (numpy ``default_rng``), drawn for all ``N``
            examples at once, so results do not depend on ``batch_size``.
        function: an ``attack_function(model)`` to reuse (default: a new one).
        return_examples: also return the adversarial inputs.

    Returns:
        The fraction of the ``N`` examples classified correctly after the attack, in
        [0, 1]; with ``return_examples``, ``(accuracy, x_adv)``.

    Raises:
        ValueError: naming ``attack``, ``epsilons`` (``epsilon`` outside (0, 1]),
            ``pgd_steps``, ``pgd_step_size`` or ``examples`` (empty ``x``).
    """
    if attack not in ATTACKS:
        raise ArgumentError("attack", attack, f"`attack` must be one of {list(ATTACKS)}; "
                            f"received {attack!r}.")
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    if len(x) == 0 or len(x) != len(y):
        raise ArgumentError("examples", len(x), "`examples` must be at least 1 example with "
                            f"one label each; received {len(x)} inputs, {len(y)} labels.")
    if attack == "none":
        eps = alpha = np.zeros_like(space.std)
        n_steps, noise = 0, None
    else:
        eps = space.epsilon(_check_epsilon(epsilon))
        if attack == "fgsm":
            alpha, n_steps, noise = eps, 1, None
        else:
            n_steps = check_int("pgd_steps", steps, 1)
            alpha = (eps * np.float32(_check_step_size(step_size))).astype(np.float32)
            noise = _noise(x.shape, seed) if random_start else None
    function = function or attack_function(model, jit_compile=jit_compile)
    correct, out = 0, []
    zeros = np.zeros((min(batch_size, len(x)),) + x.shape[1:], np.float32)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        nb = zeros[:len(xb)] if noise is None else noise[start:start + len(xb)]
        adv, right = function(tf.constant(xb), tf.constant(yb), tf.constant(eps),
                              tf.constant(alpha), tf.constant(space.low),
                              tf.constant(space.high), tf.constant(nb),
                              tf.constant(n_steps, tf.int32))
        correct += int(right)
        if return_examples:
            out.append(adv.numpy())
    accuracy = correct / len(x)
    return (accuracy, np.concatenate(out)) if return_examples else accuracy


def fgsm(model: keras.Model, x, y, epsilon: float, space: InputSpace, *,
         jit_compile: bool = True) -> np.ndarray:
    """FGSM adversarial inputs (Goodfellow et al., ICLR 2015): ``x + eps * sign(grad_x
    L)`` clipped to the valid range, ``eps`` in pixel units converted by ``space``.
    ``x`` float32 ``(N, H, W, C)``, ``y`` int ``(N,)``; returns float32 like ``x``."""
    return adversarial_accuracy(model, x, y, space, attack="fgsm", epsilon=epsilon,
                                jit_compile=jit_compile, return_examples=True)[1]


def pgd(model: keras.Model, x, y, epsilon: float, space: InputSpace, *, steps: int = 10,
        step_size: float = 0.25, random_start: bool = True, seed: int = 0,
        jit_compile: bool = True) -> np.ndarray:
    """L-infinity PGD adversarial inputs (Madry et al., ICLR 2018), see
    ``adversarial_accuracy`` for the arguments; returns float32 like ``x``."""
    return adversarial_accuracy(model, x, y, space, attack="pgd", epsilon=epsilon,
                                steps=steps, step_size=step_size, random_start=random_start,
                                seed=seed, jit_compile=jit_compile, return_examples=True)[1]


# ---------------------------------------------------------------------- on a run


def _finished(ctx, level: int, branch: str) -> bool:
    return ctx.layout.branch(level, branch).is_finished()


def _check_targets(ctx, levels, branches) -> list[tuple[int, list[str]]]:
    """``[(level, [branch, ...])]`` of the finished networks to evaluate."""
    explicit = branches is not None
    if branches is None:
        branches = list(BRANCHES)
    if isinstance(branches, str):
        branches = [branches]
    bad = [b for b in branches if b not in BRANCHES]
    if bad or not branches:
        raise ArgumentError("branches", branches, f"`branches` must list branches among "
                            f"{list(BRANCHES)}; received {list(branches)!r}.")
    found = {level: [b for b in BRANCHES if b in branches and _finished(ctx, level, b)]
             for level in ctx.layout.levels()}
    available = [level for level, names in found.items() if names]
    if explicit and not available:
        raise ArgumentError("branches", branches,
                            f"`branches` {list(branches)} finished at no level of "
                            f"{ctx.replicate_dir} (level 0 has only the dense network, branch "
                            "lottery).")
    if levels is None:
        levels = available
    if isinstance(levels, int):
        levels = [levels]
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
            raise ArgumentError("levels", levels, "`levels` must list levels (integers >= 0, "
                                f"0 = dense); received {levels!r}.")
        if level not in available:
            raise ArgumentError("levels", levels,
                                f"`levels` {level} has no finished branch among "
                                f"{list(branches)} in {ctx.replicate_dir}; levels with one: "
                                f"{available}.")
    if not levels:
        raise ArgumentError("levels", levels, f"`levels`: no finished branch among "
                            f"{list(branches)} in {ctx.replicate_dir} yet.")
    targets = [(int(level), found[level]) for level in levels]
    if explicit:
        missing = [b for b in branches if not any(b in names for _, names in targets)]
        if missing:
            raise ArgumentError("branches", branches,
                                f"`branches` {missing} finished at none of the levels "
                                f"{[lv for lv, _ in targets]} (level 0 has only the dense "
                                "network, branch lottery).")
    return targets


def _keys(level, branch, epsilons, examples, steps, step_size, random_start):
    yield {"level": level, "branch": branch, "attack": "none", "epsilon": 0.0,
           "examples": examples}
    for eps in epsilons:
        yield {"level": level, "branch": branch, "attack": "fgsm", "epsilon": eps,
               "examples": examples}
    for eps in epsilons:
        yield {"level": level, "branch": branch, "attack": "pgd", "epsilon": eps,
               "examples": examples, "pgd_steps": steps, "pgd_step_size": step_size,
               "random_start": random_start}


def run_adversarial(run_dir, *, levels=None, branches=None, epsilons=(0.01, 0.03, 0.1),
                    pgd_steps: int = 10, pgd_step_size: float = 0.25,
                    random_start: bool = True, examples: int = 2000,
                    replicate: int | None = None, data_dir=None,
                    runtime: Runtime | None = None, overwrite: bool = False,
                    check_only: bool = False) -> dict | None:
    """Accuracy of a run's trained networks under FGSM and PGD at several epsilons.

    For every level ``L`` and branch ``b`` (``lottery``: the ticket, at level 0 the
    dense network; ``reinit``, ``random_prune``: the controls where the run has them),
    the branch's final weights are evaluated on the first ``examples`` test examples:
    clean, under FGSM (Goodfellow et al., ICLR 2015) and under L-infinity PGD (Madry et
    al., ICLR 2018) at each epsilon (units and projection: the module docstring).

    Args:
        run_dir, replicate, data_dir: the run (see ``open_run``).
        levels: levels (ints >= 0); default: every level with a finished branch.
        branches: branches among ``lottery``, ``reinit``, ``random_prune``; default:
            every one the run has finished at each level.
        epsilons: L-infinity radii, numbers in (0, 1], in units of the [0, 1] pixel
            range (converted to the model's standardized inputs per channel).
        pgd_steps: PGD iterations, >= 1 (Madry et al. use 7-100).
        pgd_step_size: PGD step as a fraction of epsilon, > 0 (default 0.25 = 2.5 /
            10 steps, so 10 steps can cross the ball).
        random_start: start PGD at a uniform point of the ball (Madry et al.); the noise
            is seeded by the replicate's seed, level, branch and epsilon.
        examples: test examples attacked (>= 1): the first ``examples`` of the test
            split, all of it when it is smaller (the entries record the number used).
        runtime: ``Runtime``: ``jit_compile`` (XLA) and ``eval_batch_size`` (batch of
            the attacks; results do not depend on it).
        overwrite: recompute entries found in ``analysis/adversarial.json``.
        check_only: check the arguments and return ``None``.

    Returns:
        The content of ``<replicate>/analysis/adversarial.json``; each entry has
        ``"key"`` (level, branch, attack: ``none``/``fgsm``/``pgd``, epsilon in pixel
        units (0 for ``none``), examples, and for PGD pgd_steps, pgd_step_size,
        random_start), ``"accuracy"`` (fraction in [0, 1]), ``"clean_accuracy"``,
        ``"epsilon_input"`` and ``"step_size_input"`` (per channel, model units),
        ``"valid_range_input"`` (``[low, high]`` per channel), ``"sparsity"``,
        ``"weights_remaining"``, ``"final_test_accuracy"`` (the branch's summary, all
        test examples) and ``"seconds"``.

    Raises:
        ValueError: before any evaluation, naming ``run_dir``, ``replicate``,
            ``levels`` (not integers >= 0, or without a finished branch), ``branches``
            (unknown, or finished at none of the levels), ``epsilons``, ``pgd_steps``,
            ``pgd_step_size``, ``random_start`` or ``examples``.
    """
    ctx = open_run(run_dir, replicate=replicate, data_dir=data_dir)
    targets = _check_targets(ctx, levels, branches)
    if isinstance(epsilons, (int, float)):
        epsilons = [epsilons]
    if not list(epsilons):
        raise ArgumentError("epsilons", epsilons, "`epsilons` must list at least one radius, "
                            "e.g. 0.01,0.03,0.1.")
    epsilons = sorted({_check_epsilon(e) for e in epsilons})
    pgd_steps = check_int("pgd_steps", pgd_steps, 1)
    pgd_step_size = _check_step_size(pgd_step_size)
    if not isinstance(random_start, bool):
        raise ArgumentError("random_start", random_start,
                            f"`random_start` must be True or False; received {random_start!r}.")
    examples = min(check_int("examples", examples, 1), len(ctx.dataset.y_test))
    if check_only:
        return None
    runtime = runtime or Runtime()
    store = EntryFile(ctx.analysis_path("adversarial"), "adversarial", ctx, overwrite)
    space = input_space(ctx.dataset)
    x, y = ctx.dataset.x_test[:examples], ctx.dataset.y_test[:examples]
    model = function = None
    for level, names in targets:
        for branch in names:
            keys = [k for k in _keys(level, branch, epsilons, examples, pgd_steps,
                                     pgd_step_size, random_start) if not store.done(k)]
            if not keys:
                continue
            if model is None:
                policy = keras.config.dtype_policy()
                keras.config.set_dtype_policy("float32")  # mixed-precision runs: float32
                try:
                    model = masking.wrap(ctx.build(0))
                finally:
                    keras.config.set_dtype_policy(policy)
                function = attack_function(model, jit_compile=runtime.jit_compile)
            where = ctx.layout.branch(level, branch)
            model.load_weights(where.final_weights)
            summary = files.read_json(where.summary)
            sparsity = float(summary["sparsity"])
            common = {"sparsity": sparsity,
                      "weights_remaining": summary.get("weights_remaining", 1.0 - sparsity),
                      "final_test_accuracy": summary.get("final_test_accuracy"),
                      "valid_range_input": [space.low.tolist(), space.high.tolist()]}
            clean = None
            clean_key = next(_keys(level, branch, [], examples, 0, 0.0, False))
            for key in keys:  # the clean evaluation first, unless it is stored
                t0 = time.perf_counter()
                eps = key["epsilon"]
                seed = derive_seed(ctx.seed, "adversarial", level, branch, eps)
                accuracy = adversarial_accuracy(
                    model, x, y, space, attack=key["attack"], epsilon=eps, steps=pgd_steps,
                    step_size=pgd_step_size, random_start=random_start, seed=seed,
                    batch_size=runtime.eval_batch_size, function=function)
                if key["attack"] == "none":
                    clean = accuracy
                elif clean is None:
                    clean = store.find(clean_key)["accuracy"]
                entry = {"key": key, "accuracy": accuracy, "clean_accuracy": clean,
                         "epsilon_input": space.epsilon(eps).tolist(), **common,
                         "seconds": time.perf_counter() - t0}
                if key["attack"] == "pgd":
                    entry["step_size_input"] = (space.epsilon(eps)
                                                * np.float32(pgd_step_size)).tolist()
                store.put(entry)
                logging.info("adversarial level %d %s %s eps %g: accuracy %.4f (clean %.4f)",
                             level, branch, key["attack"], eps, accuracy, clean)
    return store.data
