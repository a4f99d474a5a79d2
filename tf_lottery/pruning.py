"""Pruning: score the surviving weights and choose new masks, per layer or globally.

Rates are fractions of the weights *still alive* (Frankle & Carbin, ICLR 2019, Sec. 2):
pruning a layer with ``n`` survivors at rate ``p`` removes ``round(p * n)`` of them, so
after ``k`` rounds a layer keeps ``(1 - p) ** k`` of its weights (up to rounding).

Scoring criteria (Zhou et al., "Deconstructing Lottery Tickets", NeurIPS 2019); a higher
score means "keep":

==================== ==========================================
``magnitude``        ``|w_final|`` (the lottery-ticket default)
``large_init``       ``|w_init|``
``magnitude_increase`` ``|w_final| - |w_init|``
``movement``         ``|w_final - w_init|``
``random``           uniform noise (a random-pruning control)
==================== ==========================================

Ties are broken deterministically: among equal scores the weight with the lower flat
index is pruned first. Every layer keeps at least one weight, and pruned weights stay
pruned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from tf_lottery import masking

__all__ = ["CRITERIA", "SCOPES", "prune", "output_mask_key", "random_masks_like", "layer_rates_for",
           "one_shot_masks"]

Score = Callable[[np.ndarray, "np.ndarray | None", np.random.Generator], np.ndarray]


def _magnitude(w, w_init, rng):
    return np.abs(w)


def _large_init(w, w_init, rng):
    return np.abs(w_init)


def _magnitude_increase(w, w_init, rng):
    return np.abs(w) - np.abs(w_init)


def _movement(w, w_init, rng):
    return np.abs(w - w_init)


def _random(w, w_init, rng):
    return rng.random(w.shape)


#: Criterion name -> ``score(w_final, w_init, rng) -> scores`` (same shape; keep high).
CRITERIA: dict[str, Score] = {
    "magnitude": _magnitude,
    "random": _random,
    "large_init": _large_init,
    "magnitude_increase": _magnitude_increase,
    "movement": _movement,
}
_NEEDS_REFERENCE = {"large_init", "magnitude_increase", "movement"}
SCOPES = ("layerwise", "global")


def _check_rate(arg: str, rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating, np.integer)):
        raise ValueError(
            f"`{arg}` must be a number in [0, 1), the fraction of surviving weights to "
            f"prune; received {rate!r}."
        )
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(
            f"`{arg}` must be in [0, 1), the fraction of surviving weights to prune "
            f"(0.2 prunes 20% per round); received {rate!r}. Rates are fractions, not "
            "percentages."
        )
    return float(rate)


def _count(rate: float, alive: int) -> int:
    """Weights to prune: ``round(rate * alive)`` (half up), leaving at least one."""
    return max(0, min(int(np.floor(rate * alive + 0.5)), alive - 1))


def output_mask_key(model) -> str:
    """The mask key of the output layer: the last masked weight in layer order.

    For the model zoo and for any Sequential or Functional model whose final prunable
    layer produces the logits this is the classifier's kernel.
    """
    keys = masking.mask_keys(model)
    if not keys:
        raise ValueError(
            f"`model` {model.name!r} has no masked layers. Call tf_lottery.wrap(model) first."
        )
    return keys[-1]


def _match(keys: list[str], names, arg: str) -> dict[str, str]:
    """Maps each mask key to the name in ``names`` that selects it (key or layer name)."""
    matched = {}
    for name in names:
        hits = [
            k for k in keys
            if name == k or name == k.rsplit("/", 1)[0] or name == k.rsplit("/", 2)[-2]
        ]
        if not hits:
            layers = sorted({k.rsplit("/", 1)[0] for k in keys})
            raise ValueError(
                f"`{arg}` names {name!r}, which is neither a masked layer nor a mask key "
                f"of this model. Masked layers: {layers}."
            )
        for k in hits:
            matched[k] = name
    return matched


def prune(
    model,
    *,
    rate: float,
    scope: str = "layerwise",
    criterion: str = "magnitude",
    layer_rates: Mapping[str, float] | None = None,
    output_rate: float | None = None,
    exclude=None,
    reference_weights: Mapping[str, np.ndarray] | None = None,
    seed: int | None = None,
) -> dict[str, np.ndarray]:
    """Computes the next masks of a masked model; apply them with ``set_masks``.

    Scores every surviving weight of every masked layer with ``criterion`` (using the
    model's current dense weights as ``w_final``) and prunes the lowest-scoring ones:

    * ``scope="layerwise"``: each layer loses ``rate`` of its survivors; the output layer
      (see ``output_mask_key``) loses ``output_rate`` instead when given (Frankle &
      Carbin prune it at half the rate), and ``layer_rates`` overrides both by layer
      name or mask key.
    * ``scope="global"``: one threshold over all included layers together; ``rate`` of
      all their survivors goes, so layers with small scores (for magnitude: large layers
      with small weights) lose more (Frankle et al. 2019, "Stabilizing the LTH").

    Args:
        model: a model returned by ``tf_lottery.wrap`` (or built from masked layers).
        rate: fraction in ``[0, 1)`` of the surviving weights to prune.
        scope: ``"layerwise"`` or ``"global"``.
        criterion: a key of ``CRITERIA``.
        layer_rates: ``{layer name or mask key: rate}`` overrides (layerwise only).
        output_rate: rate of the output layer (layerwise only); ``None`` uses ``rate``.
        exclude: layer names or mask keys left exactly as they are.
        reference_weights: ``{mask key: initial weights}`` (e.g. ``get_prunable_weights``
            of the model at initialization); needed by ``large_init``,
            ``magnitude_increase`` and ``movement``.
        seed: seed of the ``random`` criterion.

    Returns:
        ``{mask key: float32 0/1 array}`` for every masked weight; excluded ones are
        copies of their current masks. The model is not changed.

    Raises:
        ValueError: before any work, for a rate outside ``[0, 1)``, an unknown scope or
            criterion, unknown layer names, missing or misshapen reference weights,
            ``layer_rates``/``output_rate`` with global scope, or a model without masked
            layers.
    """
    rate = _check_rate("rate", rate)
    if scope not in SCOPES:
        raise ValueError(f"`scope` must be one of {list(SCOPES)}; received {scope!r}.")
    if criterion not in CRITERIA:
        raise ValueError(
            f"`criterion` must be one of {sorted(CRITERIA)}; received {criterion!r}. "
            "Add a new one to tf_lottery.pruning.CRITERIA."
        )
    masks = masking.get_masks(model)
    keys = list(masks)
    if scope == "global" and (layer_rates or output_rate is not None):
        raise ValueError(
            "`layer_rates` and `output_rate` apply to scope='layerwise' only; received "
            f"layer_rates={layer_rates!r}, output_rate={output_rate!r} with scope='global'. "
            "To keep a layer out of global pruning, pass exclude=[its name]."
        )
    rates = {key: rate for key in keys}
    if output_rate is not None:
        rates[output_mask_key(model)] = _check_rate("output_rate", output_rate)
    for key, name in _match(keys, layer_rates or {}, "layer_rates").items():
        rates[key] = _check_rate(f"layer_rates[{name!r}]", layer_rates[name])
    if isinstance(exclude, str):
        exclude = [exclude]
    excluded = set(_match(keys, exclude or [], "exclude"))
    if len(excluded) == len(keys):
        raise ValueError(f"`exclude` {exclude!r} excludes every masked layer; nothing to prune.")

    reference = None
    if criterion in _NEEDS_REFERENCE:
        if reference_weights is None:
            raise ValueError(
                f"criterion={criterion!r} compares with the initial weights: pass "
                "reference_weights=tf_lottery.get_prunable_weights(model) saved at "
                "initialization."
            )
        reference = masking._check_arrays(
            model, reference_weights, "reference_weights", "prune", binary=False
        )
        missing = [k for k in keys if k not in reference and k not in excluded]
        if missing:
            raise ValueError(f"`reference_weights` lacks the mask keys {missing}.")

    weights = masking.get_prunable_weights(model)
    rng = np.random.default_rng(seed)
    scores = {}
    for key in keys:
        if key in excluded:
            continue
        ref = reference[key] if reference is not None else None
        scores[key] = np.asarray(
            CRITERIA[criterion](weights[key], ref, rng), dtype=np.float64
        ).reshape(-1)

    new_masks = {key: masks[key].copy() for key in keys}
    if scope == "layerwise":
        for key, score in scores.items():
            flat = new_masks[key].reshape(-1)
            alive = np.flatnonzero(flat)
            order = alive[np.argsort(score[alive], kind="stable")]
            flat[order[: _count(rates[key], alive.size)]] = 0.0
    else:
        # Each layer's best survivor (the last one in its stable order) is protected so
        # that every layer keeps a weight; the rest compete under one threshold, and
        # exactly round(rate * survivors) of them go (capped by the protected ones).
        included = list(scores)
        candidates, owners = [], []
        for i, key in enumerate(included):
            alive = np.flatnonzero(new_masks[key].reshape(-1))
            ordered = alive[np.argsort(scores[key][alive], kind="stable")]
            candidates.append(ordered[:-1])
            owners.append(np.full(max(ordered.size - 1, 0), i))
        total = sum(np.count_nonzero(new_masks[key]) for key in included)
        count = min(_count(rate, total), sum(c.size for c in candidates))
        index = np.concatenate(candidates)
        owner = np.concatenate(owners)
        all_scores = np.concatenate(
            [scores[key][c] for key, c in zip(included, candidates)]
        )
        # Stable sort over candidates listed in layer order, each layer's in its own
        # stable order: ties go to the earlier layer, then to the lower flat index.
        order = np.argsort(all_scores, kind="stable")[:count]
        for i, key in enumerate(included):
            new_masks[key].reshape(-1)[index[order[owner[order] == i]]] = 0.0
    return new_masks


def random_masks_like(masks: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Random masks with the same number of ones per key as ``masks``.

    The random-pruning control of Frankle & Carbin (2019): same per-layer sparsity,
    uniformly random positions.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for key, mask in masks.items():
        flat = np.zeros(mask.size, np.float32)
        flat[rng.permutation(mask.size)[: int(np.count_nonzero(mask))]] = 1.0
        out[key] = flat.reshape(mask.shape)
    return out


# ----------------------------------------------------------- layer-rate policy


def layer_rates_for(model, pruning_hparams) -> tuple[dict, float | None]:
    """Per-layer rates of the paper's layerwise scheme: ``(layer_rates, output_rate)``.

    ``pruning_hparams`` is a ``tf_lottery.hparams.PruningHparams`` (``scope``, ``rate``,
    ``rate_conv``, ``rate_output``).

    Convolutions (any masked ``Conv*``, depthwise and separable ones included) use
    ``rate_conv``, the output layer ``rate_output``, everything else ``rate``. For
    global scope both are empty/``None``.
    """
    if pruning_hparams.scope == "global":
        return {}, None
    rates = {}
    if pruning_hparams.rate_conv is not None:
        for name, layer in masking.masked_layers(model):
            if "Conv" in type(layer).masked_base.__name__:
                rates[name] = pruning_hparams.rate_conv
    return rates, pruning_hparams.rate_output


def _level_rates(model, hp) -> dict[str, float]:
    """The rate applied to each mask key at each layerwise level."""
    layer_rates, output_rate = layer_rates_for(model, hp)
    rates = {}
    output = output_mask_key(model)
    for key in masking.mask_keys(model):
        layer = key.rsplit("/", 1)[0]
        rates[key] = layer_rates.get(layer, hp.rate)
        if key == output and output_rate is not None:
            rates[key] = output_rate
    return rates


def one_shot_masks(model, target: float, hp, *, reference_weights=None, seed=None):
    """Masks that prune the model's current weights to total sparsity ``target`` at once.

    Layerwise: every layer keeps ``(1 - p_l) ** n`` of its weights, with ``p_l`` its
    per-level rate and the real ``n`` solved (by bisection) so the total sparsity is
    ``target``, the sparsity ladder of iterative pruning compressed into one step
    (Frankle & Carbin 2019, Sec. 5 "one-shot"). Global: one threshold pruning ``target``.
    """
    exclude = list(hp.exclude)
    if hp.scope == "global":
        return prune(model, rate=target, scope="global", criterion=hp.criterion,
                             exclude=exclude, reference_weights=reference_weights, seed=seed)
    rates = _level_rates(model, hp)
    sizes = {k: v.size for k, v in masking.get_masks(model).items()}
    excluded = {k for k in sizes for e in exclude if e in (k, k.rsplit("/", 1)[0])}
    total = sum(sizes.values())

    def sparsity(n):
        kept = sum(
            sizes[k] * (1.0 if k in excluded else (1 - rates[k]) ** n) for k in sizes
        )
        return 1 - kept / total

    low, high = 0.0, 1.0
    while sparsity(high) < target and high < 1e4:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if sparsity(mid) < target else (low, mid)
    layer_rates = {
        k: min(1 - (1 - rates[k]) ** high, 0.999999) for k in sizes if k not in excluded
    }
    return prune(model, rate=0.0, layer_rates=layer_rates, criterion=hp.criterion,
                         exclude=exclude, reference_weights=reference_weights, seed=seed)
