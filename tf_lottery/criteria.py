"""Pruning criteria: how a weight is scored before the lowest scores are pruned.

Scoring criteria; a higher score means "keep":

======================== ====================================================
``magnitude``            ``|w_final|`` (the lottery-ticket default)
``large_init``           ``|w_init|`` (Zhou et al., "Deconstructing Lottery
                         Tickets", NeurIPS 2019, as the next two)
``magnitude_increase``   ``|w_final| - |w_init|``
``movement``             ``|w_final - w_init|``
``random``               uniform noise (a random-pruning control)
``snip``                 ``|w * dL/dw|`` on a batch (Lee et al., ICLR 2019); data
``grasp``                ``w * Hg`` (Wang et al., ICLR 2020, who remove the highest
                         ``-w * Hg``); data
``synflow``              ``|w * dR/dw|`` of the all-ones flow through ``|weights|``
                         (Tanaka et al., NeurIPS 2020); no data; iterative
``movement_score``       ``-sum_t w_t * dL/dw_t``, accumulated during training
                         (Sanh et al., "Movement pruning", NeurIPS 2020)
``accumulated_change``   ``sum_t |w_t - w_{t-1}|``, accumulated during training
======================== ====================================================

The gradient criteria live in ``tf_lottery.saliency``; ``DATA_CRITERIA`` need
``data=(x, y)``, ``SCORED_CRITERIA`` the training engine's ``scores``, and
``AT_INIT_CRITERIA`` are the pruning-at-initialization methods.

Each criterion is a small function ``score(ScoreInputs) -> {mask key: scores}``; add a
new one to ``CRITERIA`` and ``tf_lottery.prune`` (and the CLI's ``--criterion``) accept
it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from tf_lottery import accumulated_scores, saliency

__all__ = ["AT_INIT_CRITERIA", "CRITERIA", "DATA_CRITERIA", "INIT_CRITERIA", "SCORED_CRITERIA",
           "ScoreInputs"]


@dataclasses.dataclass
class ScoreInputs:
    """What a criterion may use; it scores ``keys`` (the included mask keys, in order).

    ``masks`` are the masks of the current round (the model's, or those of the previous
    round of an iterative criterion); ``weights`` the dense weights (``w_final``);
    ``reference`` the ``reference_weights`` (``w_init``); ``cache`` holds state kept
    across the rounds of one ``prune`` call.
    """

    model: Any
    keys: list[str]
    masks: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    reference: dict[str, np.ndarray] | None
    rng: np.random.Generator
    data: tuple | None = None
    loss: Any = None
    scores: dict[str, np.ndarray] | None = None
    cache: dict = dataclasses.field(default_factory=dict)


Score = Callable[[ScoreInputs], dict[str, np.ndarray]]


def _per_weight(fn):
    """A criterion from ``fn(w_final, w_init, rng) -> scores``, applied key by key."""

    def score(inputs: ScoreInputs) -> dict[str, np.ndarray]:
        ref = inputs.reference or {}
        return {k: fn(inputs.weights[k], ref.get(k), inputs.rng) for k in inputs.keys}

    score.__doc__ = fn.__doc__
    return score


@_per_weight
def _magnitude(w, w_init, rng):
    """``|w_final|``: the lottery-ticket criterion (Frankle & Carbin, ICLR 2019)."""
    return np.abs(w)


@_per_weight
def _large_init(w, w_init, rng):
    """``|w_init|`` (Zhou et al., NeurIPS 2019)."""
    return np.abs(w_init)


@_per_weight
def _magnitude_increase(w, w_init, rng):
    """``|w_final| - |w_init|`` (Zhou et al., NeurIPS 2019)."""
    return np.abs(w) - np.abs(w_init)


@_per_weight
def _movement(w, w_init, rng):
    """``|w_final - w_init|`` (Zhou et al., NeurIPS 2019)."""
    return np.abs(w - w_init)


@_per_weight
def _random(w, w_init, rng):
    """Uniform noise: random pruning, the control of Frankle & Carbin (ICLR 2019)."""
    return rng.random(w.shape)


def _snip(inputs: ScoreInputs):
    """``|w * dL/dw|`` on ``data`` (Lee et al., ICLR 2019); see ``saliency.snip``."""
    return saliency.snip(inputs.model, *inputs.data, loss=inputs.loss)


def _grasp(inputs: ScoreInputs):
    """``w * Hg`` on ``data`` (Wang et al., ICLR 2020); see ``saliency.grasp``."""
    return saliency.grasp(inputs.model, *inputs.data, loss=inputs.loss)


def _synflow(inputs: ScoreInputs):
    """``|w * dR/dw|``, no data (Tanaka et al., NeurIPS 2020); see ``saliency.synflow``.

    The float64 copy of the model is made once per ``prune`` call and rescored with
    each round's masks."""
    if "synflow" not in inputs.cache:
        inputs.cache["synflow"] = saliency.SynFlowTwin(inputs.model)
    return inputs.cache["synflow"].scores(inputs.masks)


def _movement_score(inputs: ScoreInputs):
    """``-sum_t w_t * dL/dw_t`` collected by the training engine (Sanh et al., "Movement
    pruning", NeurIPS 2020): weights moving away from zero score high and are kept."""
    return {k: inputs.scores[k] for k in inputs.keys}


def _accumulated_change(inputs: ScoreInputs):
    """``sum_t |w_t - w_{t-1}|`` collected by the training engine: the weights that
    changed least, step by step, are pruned."""
    return {k: inputs.scores[k] for k in inputs.keys}


#: Criterion name -> ``score(ScoreInputs) -> {mask key: scores}`` (keep high).
CRITERIA: dict[str, Score] = {
    "magnitude": _magnitude,
    "random": _random,
    "large_init": _large_init,
    "magnitude_increase": _magnitude_increase,
    "movement": _movement,
    "snip": _snip,
    "grasp": _grasp,
    "synflow": _synflow,
    "movement_score": _movement_score,
    "accumulated_change": _accumulated_change,
}
_NEEDS_REFERENCE = {"large_init", "magnitude_increase", "movement"}
#: Criteria that score on a batch of training data: ``prune(..., data=(x, y))``.
DATA_CRITERIA = frozenset({"snip", "grasp"})
#: Criteria whose scores the training engine accumulates (``ScoreAccumulator``):
#: ``prune(..., scores=...)``.
SCORED_CRITERIA = frozenset(accumulated_scores.KINDS)
#: Pruning-at-initialization methods (SNIP, GraSP, SynFlow).
AT_INIT_CRITERIA = frozenset({"snip", "grasp", "synflow"})
#: Criteria that need nothing but the weights at one point (and data), so they can choose
#: masks at the rewind point (``PruningHparams.prune_at="init"``).
INIT_CRITERIA = AT_INIT_CRITERIA | {"magnitude", "random"}
#: Criteria applied over ``rounds`` rounds, rescoring after each.
_ITERATIVE = frozenset({"synflow"})
