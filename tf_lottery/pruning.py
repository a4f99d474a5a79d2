"""Pruning: score the surviving weights and choose new masks, per layer or globally.

Rates are fractions of the weights *still alive* (Frankle & Carbin, ICLR 2019, Sec. 2):
pruning a layer with ``n`` survivors at rate ``p`` removes ``round(p * n)`` of them, so
after ``k`` rounds a layer keeps ``(1 - p) ** k`` of its weights (up to rounding).

Scoring criteria (``CRITERIA``, a higher score means "keep") are listed in
``tf_lottery.criteria``.

Scopes: ``layerwise`` (each layer loses its rate), ``global`` (one threshold) and ``erk``
(the Erdős–Rényi-Kernel budget of ``tf_lottery.erk``, ranked inside each layer).

Ties are broken deterministically: among equal scores the weight with the lower flat
index is pruned first. Every layer keeps at least one weight, and pruned weights stay
pruned.

Structures (``structure=``: whole channels, or N of every M input weights) are described
in ``tf_lottery.structure``; their selection runs here, on channel scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from tf_lottery import erk, masking, unmasked
from tf_lottery import structure as structure_lib
from tf_lottery.criteria import (
    _ITERATIVE,
    _NEEDS_REFERENCE,
    AT_INIT_CRITERIA,
    CRITERIA,
    DATA_CRITERIA,
    SCORED_CRITERIA,
    ScoreInputs,
)

__all__ = ["AT_INIT_CRITERIA", "CRITERIA", "DATA_CRITERIA", "SCOPES", "SCORED_CRITERIA",
           "ScoreInputs", "layer_rates_for", "level_masks", "one_shot_masks", "output_mask_key", "prune",
           "random_masks_like"]


SCOPES = ("layerwise", "global", "erk")


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
    """Maps each mask key to the name in ``names`` that selects it: the key itself, or a
    layer name, plain or qualified, which selects every key below it (``"mha"`` and
    ``"mha/query"`` select ``"mha/query/kernel"``; ``"fc1"`` selects
    ``"encoder/fc1/kernel"``)."""
    matched = {}
    for name in names:
        hits = [k for k in keys if name == k or f"/{name}/" in f"/{k}"]
        if not hits:
            layers = sorted({k.rsplit("/", 1)[0] for k in keys})
            raise ValueError(
                f"`{arg}` names {name!r}, which is neither a masked layer nor a mask key "
                f"of this model. Masked layers: {layers}."
            )
        for k in hits:
            matched[k] = name
    return matched


def _check_data(criterion: str, data):
    if data is None:
        raise ValueError(
            f"criterion={criterion!r} scores weights on training data: pass data=(x, y) "
            "with x a batch of inputs (batch, *input_shape) and y its integer labels "
            "(batch,)."
        )
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            f"`data` must be a pair (x, y) of inputs and integer labels for "
            f"criterion={criterion!r}; received {type(data).__name__}."
        )
    x, y = data
    x_shapes = [tuple(np.shape(leaf)) for leaf in keras.tree.flatten(x)]
    sizes = {shape[:1] for shape in x_shapes} | {tuple(np.shape(y))[:1]}
    if len(sizes) != 1 or sizes in ({()}, {(0,)}):
        raise ValueError(
            f"`data` = (x, y) must hold the same positive number of examples in x and y; "
            f"received x of shape(s) {x_shapes} and y of shape {np.shape(y)}."
        )
    return tuple(data)


def _check_scores(model, criterion: str, scores, keys) -> dict:
    if scores is None:
        raise ValueError(
            f"criterion={criterion!r} ranks weights by scores accumulated during training: "
            "pass `scores`={mask key: array}. The training engine collects them (e.g. "
            f"`--criterion={criterion}` runs collect them during each level)."
        )
    checked = masking._check_arrays(model, scores, "scores", "prune", binary=False)
    missing = [k for k in keys if k not in checked]
    if missing:
        raise ValueError(f"`scores` lacks the mask keys {missing}.")
    return checked


def _check_rounds(rounds) -> int:
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(
            f"`rounds` must be an integer >= 1 (SynFlow prunes over 100 rounds); received "
            f"{rounds!r}."
        )
    return int(rounds)


def _prune_lowest(mask: np.ndarray, score: np.ndarray, count: int) -> None:
    """Zeroes ``count`` surviving entries of ``mask`` with the lowest ``score`` in place
    (ties: lower flat index first)."""
    flat = mask.reshape(-1)
    alive = np.flatnonzero(flat)
    flat[alive[np.argsort(score[alive], kind="stable")][: max(count, 0)]] = 0.0


def _prune_global(masks: dict, scores: dict, count: int) -> None:
    """Zeroes the ``count`` lowest-scoring survivors over all keys of ``scores`` in place.

    Each layer's best survivor (the last one in its stable order) is protected so that
    every layer keeps a weight; the rest compete under one threshold (so at most all of
    them go).
    """
    included = list(scores)
    candidates, owners = [], []
    for i, key in enumerate(included):
        alive = np.flatnonzero(masks[key].reshape(-1))
        ordered = alive[np.argsort(scores[key][alive], kind="stable")]
        candidates.append(ordered[:-1])
        owners.append(np.full(max(ordered.size - 1, 0), i))
    count = max(min(count, sum(c.size for c in candidates)), 0)
    index = np.concatenate(candidates)
    owner = np.concatenate(owners)
    all_scores = np.concatenate([scores[key][c] for key, c in zip(included, candidates)])
    # Stable sort over candidates listed in layer order, each layer's in its own stable
    # order: ties go to the earlier layer, then to the lower flat index.
    order = np.argsort(all_scores, kind="stable")[:count]
    for i, key in enumerate(included):
        masks[key].reshape(-1)[index[order[owner[order] == i]]] = 0.0


def _schedule(alive0: int, final: int, rate: float, j: int, n: int) -> int:
    """Survivors after round ``j`` of ``n``: ``alive0 * (1 - rate) ** (j / n)``, rounded,
    never below the final count, which the last round reaches exactly."""
    if j == n:
        return final
    return max(final, int(np.floor(alive0 * (1.0 - rate) ** (j / n) + 0.5)))


def _select(masks: dict, scores: dict, scope: str, rates: dict, rate: float,
            alive0: dict, j: int, n: int) -> None:
    """Round ``j`` of ``n`` of the selection, in place on ``masks`` (the included keys are
    those of ``scores``); ``alive0`` counts the survivors before round 1."""
    alive = {k: int(np.count_nonzero(masks[k])) for k in scores}
    if scope == "layerwise":
        for key, score in scores.items():
            final = alive0[key] - _count(rates[key], alive0[key])
            keep = _schedule(alive0[key], final, rates[key], j, n)
            _prune_lowest(masks[key], score, alive[key] - keep)
        return
    total0 = sum(alive0.values())
    keep = _schedule(total0, total0 - _count(rate, total0), rate, j, n)
    if scope == "global":
        _prune_global(masks, scores, sum(alive.values()) - keep)
        return
    counts = erk.erk_keep_counts({k: masks[k].shape for k in scores}, alive, keep)
    for key, score in scores.items():
        _prune_lowest(masks[key], score, alive[key] - counts[key])


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
    data=None,
    loss=None,
    rounds: int = 100,
    scores: Mapping[str, np.ndarray] | None = None,
    structure: str = "unstructured",
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
    * ``scope="erk"``: the included layers together keep ``1 - rate`` of their
      survivors, shared out by the Erdős–Rényi-Kernel budget (``tf_lottery.erk``; Evci
      et al., ICML 2020), and each layer keeps its share of best-scoring weights.

    ``synflow`` prunes iteratively (Tanaka et al. 2020): over ``rounds`` rounds, after
    round ``j`` a layer (layerwise) or the included layers together (global, erk) keep
    ``(1 - rate) ** (j / rounds)`` of their survivors, rescored each round with the
    previous round's masks; the last round reaches exactly the one-round counts.

    ``structure`` (see ``tf_lottery.structure``):

    * ``"unstructured"`` (default): weights one by one, as above.
    * ``"channel"``: whole Dense units and convolution filters, ranked by the sum of
      their weights' scores (the filter's L1 norm for ``magnitude``, Li et al., ICLR
      2017); ``rate`` is a fraction of the surviving *channels* (of each layer, or of all
      included layers for ``global``; ``erk`` is refused) and every layer keeps at least
      one channel. The output layer is left exactly as it is (its units are the classes);
      channels tied by an ``Add`` are pruned together; layers without output channels
      (depthwise, embeddings, ``MaskedWrapper`` weights) are left as they are with a
      ``StructureWarning``. A removed channel still outputs ``act(bias)``.
    * ``"N:M"`` (e.g. ``"2:4"``): every layer keeps the ``N`` best-scoring survivors of
      every ``M`` consecutive weights along its input dimension; ``rate`` is ignored (the
      sparsity is ``1 - N/M``), ``scope`` must be ``"layerwise"``, the criterion scores
      once (``rounds`` is ignored) and the output layer is included. Pruning an ``N:M``
      mask again with ``N:M`` returns it unchanged. An input dimension that is not a
      multiple of ``M`` is zero-padded: the last group keeps ``min(N, its size)``, with a
      ``StructureWarning``.

    Args:
        model: a model returned by ``tf_lottery.wrap`` (or built from masked layers).
        rate: fraction in ``[0, 1)`` of the surviving weights to prune.
        scope: one of ``SCOPES``: ``"layerwise"``, ``"global"`` or ``"erk"``.
        criterion: a key of ``CRITERIA``.
        layer_rates: ``{layer name or mask key: rate}`` overrides (layerwise only).
        output_rate: rate of the output layer (layerwise only); ``None`` uses ``rate``.
        exclude: layer names or mask keys left exactly as they are.
        reference_weights: ``{mask key: initial weights}`` (e.g. ``get_prunable_weights``
            of the model at initialization); needed by ``large_init``,
            ``magnitude_increase`` and ``movement``.
        seed: seed of the ``random`` criterion.
        data: ``(x, y)``, a batch of inputs and integer labels, for ``DATA_CRITERIA``
            (``snip``, ``grasp``); ignored by the others.
        loss: ``loss(y, logits)`` of the data criteria; default sparse categorical
            cross-entropy on logits.
        rounds: rounds of the iterative criteria (``synflow``), an integer >= 1;
            ignored by the others.
        scores: ``{mask key: array}`` accumulated during training, for
            ``SCORED_CRITERIA`` (``movement_score``, ``accumulated_change``).
        structure: ``"unstructured"``, ``"channel"`` or ``"N:M"`` with ``0 < N < M``.

    Returns:
        ``{mask key: float32 0/1 array}`` for every masked weight; excluded ones are
        copies of their current masks. The model is not changed.

    Raises:
        ValueError: before any work, for a rate outside ``[0, 1)``, an unknown scope or
            criterion, unknown layer names, missing or misshapen reference weights,
            ``layer_rates``/``output_rate`` with global or erk scope, a model without
            masked layers, ``rounds`` not an integer >= 1, a data criterion without (or
            with malformed) ``data``, or a scored criterion without ``scores`` or with
            misshapen ones; a bad ``structure`` string, ``channel`` with ``erk`` scope
            or with a rate for the output layer, ``N:M`` with ``layer_rates``,
            ``output_rate`` or a scope other than layerwise, tied channels given
            different rates, or a structure that applies to none of the included layers.

    Warns:
        tf_lottery.unmasked.UnmaskedWeightsWarning: the model has weight matrices
            outside masks (not left out of ``wrap`` on purpose); they are named, and
            neither ranked nor counted.
        tf_lottery.structure.StructureWarning: a structure leaves masks as they are
            (named), or an ``N:M`` input dimension is not a multiple of ``M``.
    """
    rate = _check_rate("rate", rate)
    spec = structure_lib.parse_structure(structure)
    if scope not in SCOPES:
        raise ValueError(f"`scope` must be one of {list(SCOPES)}; received {scope!r}.")
    if criterion not in CRITERIA:
        raise ValueError(
            f"`criterion` must be one of {sorted(CRITERIA)}; received {criterion!r}. "
            "Add a new one to tf_lottery.pruning.CRITERIA."
        )
    rounds = _check_rounds(rounds)
    masks = masking.get_masks(model)
    unmasked.warn_dense(
        model, unmasked.dense_weights(masking._walk(model), skip_left_out=True), "prune",
        "prune ranks and counts only the masked weights. Mask these layers with "
        "tf_lottery.wrap, or pass exclude=[their names] to wrap to keep them dense on "
        "purpose.")
    keys = list(masks)
    if scope != "layerwise" and (layer_rates or output_rate is not None):
        raise ValueError(
            "`layer_rates` and `output_rate` apply to scope='layerwise' only; received "
            f"layer_rates={layer_rates!r}, output_rate={output_rate!r} with scope={scope!r}. "
            f"To keep a layer out of {scope} pruning, pass exclude=[its name]."
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
    included = [key for key in keys if key not in excluded]
    plan = None
    if spec.kind != "unstructured":
        output = output_mask_key(model)
        structure_lib.check_arguments(
            spec, scope=scope, output_rate=output_rate, output_key=output,
            rated_keys=set(_match(keys, layer_rates or {}, "layer_rates")))
        plan = structure_lib.plan_for(model, spec, included, output_key=output,
                                      excluded=excluded)
        if not plan.axes:
            raise ValueError(
                f"`structure`={str(spec)!r} applies to none of the included masked "
                f"layers: {plan.left}. Prune them with structure='unstructured'.")
        included = list(plan.axes)
        group_rates = plan.group_rates(rates) if spec.kind == "channel" else None

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
        missing = [k for k in included if k not in reference]
        if missing:
            raise ValueError(f"`reference_weights` lacks the mask keys {missing}.")
    if criterion in DATA_CRITERIA:
        data = _check_data(criterion, data)
    if criterion in SCORED_CRITERIA:
        scores = _check_scores(model, criterion, scores, included)

    new_masks = {key: masks[key].copy() for key in keys}
    inputs = ScoreInputs(
        model=model, keys=included, masks=new_masks, weights=masking.get_prunable_weights(model),
        reference=reference, rng=np.random.default_rng(seed), data=data, loss=loss,
        scores=scores,
    )
    alive0 = {key: int(np.count_nonzero(masks[key])) for key in included}
    n = rounds if criterion in _ITERATIVE and (plan is None or plan.spec.kind != "n:m") else 1
    if plan is not None:
        plan.start(masks)
    try:
        for j in range(1, n + 1):
            raw = CRITERIA[criterion](inputs)
            round_scores = {
                key: np.asarray(raw[key], dtype=np.float64).reshape(-1) for key in included
            }
            if plan is None:
                _select(new_masks, round_scores, scope, rates, rate, alive0, j, n)
            elif plan.spec.kind == "n:m":
                plan.apply_nm(new_masks, round_scores)
            else:  # channel: the same selection, over each group's channel scores
                channels, channel_scores = plan.channel_view(new_masks, round_scores)
                _select(channels, channel_scores, scope, group_rates, rate, plan.alive0, j, n)
                plan.expand(new_masks, channels)
    finally:
        for state in inputs.cache.values():
            state.close()
        inputs.cache.clear()
    return new_masks


def random_masks_like(masks: Mapping[str, np.ndarray], seed: int, *,
                      structure: str = "unstructured", model=None) -> dict[str, np.ndarray]:
    """Random masks with the same number of ones per key as ``masks``.

    The random-pruning control of Frankle & Carbin (2019): same per-layer sparsity,
    uniformly random positions. With ``structure="channel"`` the masks that ``prune``
    channel-prunes keep the same number of channels per layer (per tied group), chosen
    at random; with ``"N:M"`` every group of ``M`` input weights keeps as many as in
    ``masks``, at random places. Other keys are shuffled weight by weight.

    Args:
        masks: ``{mask key: 0/1 array}``.
        seed: the random seed.
        structure: as in ``prune``.
        model: the masked model the masks belong to; needed unless ``structure`` is
            ``"unstructured"`` (its layers say which axis is a channel or an input).

    Raises:
        ValueError: a bad ``structure``, or a structured one without ``model``.
    """
    spec = structure_lib.parse_structure(structure)
    rng = np.random.default_rng(seed)
    out = {}
    if spec.kind != "unstructured":
        if model is None:
            raise ValueError(f"`model` is needed for structure={str(spec)!r}: pass the masked "
                             "model the masks belong to.")
        plan = structure_lib.plan_for(model, spec, list(masks), output_key=output_mask_key(model),
                                      warn=False)
        out = plan.random(masks, rng)
    for key, mask in masks.items():
        if key in out:
            continue
        flat = np.zeros(mask.size, np.float32)
        flat[rng.permutation(mask.size)[: int(np.count_nonzero(mask))]] = 1.0
        out[key] = flat.reshape(mask.shape)
    return {key: out[key] for key in masks}


# ----------------------------------------------------------- layer-rate policy


def layer_rates_for(model, pruning_hparams) -> tuple[dict, float | None]:
    """Per-layer rates of the paper's layerwise scheme: ``(layer_rates, output_rate)``.

    ``pruning_hparams`` is a ``tf_lottery.hparams.PruningHparams`` (``scope``, ``rate``,
    ``rate_conv``, ``rate_output``).

    Convolutions (any masked ``Conv*``, depthwise and separable ones included) use
    ``rate_conv``, the output layer ``rate_output``, everything else ``rate``. For
    global and erk scope both are empty/``None``.
    """
    if pruning_hparams.scope != "layerwise":
        return {}, None
    rates = {}
    if pruning_hparams.rate_conv is not None:
        for name, layer in masking.masked_layers(model):
            if "Conv" in layer.masked_base.__name__:
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


def one_shot_masks(model, target: float, hp, *, reference_weights=None, seed=None,
                   data=None, scores=None, loss=None):
    """Masks that prune the model's current weights to total sparsity ``target`` at once.

    Layerwise: every layer keeps ``(1 - p_l) ** n`` of its weights, with ``p_l`` its
    per-level rate and the real ``n`` solved (by bisection) so the total sparsity is
    ``target``, the sparsity ladder of iterative pruning compressed into one step
    (Frankle & Carbin 2019, Sec. 5 "one-shot"). Global and erk: one prune whose rate,
    relative to the current survivors of the included layers, leaves them at sparsity
    ``target`` (``target`` itself from all-ones masks). ``data``, ``scores`` and
    ``loss`` go to ``prune`` for the criteria that need them.

    ``hp.structure="channel"`` (layerwise only) prunes channels along the same ladder,
    counting the layers it leaves as they are (the output layer, ...) as kept.

    Raises:
        ValueError: ``hp.structure`` is ``N:M`` (its sparsity is fixed at ``1 - N/M``)
            or ``channel`` with global scope (a channel rate cannot aim at a weight
            sparsity), or ``prune`` refuses the arguments.
    """
    extra = dict(exclude=list(hp.exclude), criterion=hp.criterion, seed=seed, data=data,
                 scores=scores, loss=loss, reference_weights=reference_weights,
                 structure=hp.structure)
    masks = masking.get_masks(model)
    excluded = set(_match(list(masks), list(hp.exclude), "exclude"))
    spec = structure_lib.parse_structure(hp.structure)
    if spec.kind == "n:m" or (spec.kind == "channel" and hp.scope != "layerwise"):
        raise ValueError(
            f"one-shot pruning to a target sparsity does not apply with `structure`="
            f"{str(spec)!r} and `scope`={hp.scope!r}: "
            + ("N:M masks have sparsity 1 - N/M." if spec.kind == "n:m" else
               "a global channel rate cannot aim at a weight sparsity; use scope='layerwise'."))
    if spec.kind == "channel":
        excluded |= set(structure_lib.plan_for(
            model, spec, [k for k in masks if k not in excluded],
            output_key=output_mask_key(model), excluded=excluded, warn=False).left)
    if hp.scope != "layerwise":
        size = sum(m.size for k, m in masks.items() if k not in excluded)
        alive = sum(int(np.count_nonzero(m)) for k, m in masks.items() if k not in excluded)
        rate = target if alive == size else min(max(1 - (1 - target) * size / alive, 0.0),
                                                 np.nextafter(1.0, 0.0))
        return prune(model, rate=rate, scope=hp.scope, **extra)
    rates = _level_rates(model, hp)
    sizes = {k: v.size for k, v in masks.items()}
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
    return prune(model, rate=0.0, layer_rates=_ladder_rates(model, hp, high), **extra)


def _ladder_rates(model, hp, n: float) -> dict[str, float]:
    """Layerwise rates that take every included mask key from all ones to where ``n``
    levels of its per-level rate ``p`` leave it: ``1 - (1 - p) ** n`` (below 1)."""
    rates = _level_rates(model, hp)
    excluded = set(_match(list(rates), list(hp.exclude), "exclude"))
    if structure_lib.parse_structure(hp.structure).kind == "channel":
        excluded.add(output_mask_key(model))  # the output layer's units are never removed
    return {k: min(1 - (1 - p) ** n, 0.999999) for k, p in rates.items() if k not in excluded}


def level_masks(model, level: int, hp, *, seed=None, data=None, scores=None, loss=None):
    """Masks that prune the model's current (all-ones) masks straight to ``level`` of the
    sparsity ladder: with layerwise scope each mask key at ``1 - (1 - p_key) ** level``
    (``p_key`` its per-level rate: ``rate``, ``rate_conv``, ``rate_output``), with
    global or erk scope the included layers together at ``1 - (1 - rate) ** level``.

    Pruning at initialization (``prune_at="init"``) uses it to match, in one step, the
    sparsity that ``level`` rounds of iterative pruning reach (up to rounding).
    ``hp`` is a ``PruningHparams``; ``seed``, ``data``, ``scores`` and ``loss`` go to
    ``prune``. With ``hp.structure="channel"`` the ladder counts channels (the output
    layer left as it is); with ``N:M`` every level is the ``N:M`` mask.

    Raises:
        ValueError: ``level`` is not an integer >= 1, or ``prune`` refuses the arguments.
    """
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 1:
        raise ValueError(f"`level` must be an integer >= 1; received {level!r}.")
    extra = dict(exclude=list(hp.exclude), criterion=hp.criterion, seed=seed, data=data,
                 scores=scores, loss=loss, structure=hp.structure)
    if structure_lib.parse_structure(hp.structure).kind == "n:m":
        return prune(model, rate=0.0, **extra)
    if hp.scope != "layerwise":
        return prune(model, rate=1 - (1 - hp.rate) ** level, scope=hp.scope, **extra)
    return prune(model, rate=0.0, layer_rates=_ladder_rates(model, hp, level), **extra)
