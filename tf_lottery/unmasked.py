"""Weights that stay dense: which weight matrices a model leaves unmasked, and the warning
that names them.

A *prunable* weight is one a masked layer would mask: the kernel(s) of a layer with a
masked twin (``tf_lottery.layers.MASKED_LAYERS``) or a prunable weight of any other layer
as ``tf_lottery.masked_wrapper`` defines it (trainable, two or more dimensions, not a
bias). ``tf_lottery.wrap`` masks all of them unless ``include``/``exclude`` leave some out
(the user's choice: never warned about) or a layer cannot be rebuilt from its config, in
which case it stays dense and ``UnmaskedWeightsWarning`` names every such weight, its
shape and its share of the model's weights. ``sparsity_report`` lists dense prunable
weights under ``unmasked`` and ``prune`` warns about them again.
"""

from __future__ import annotations

import math
import warnings
import weakref

import keras

from tf_lottery.layers import is_masked, masked_class_for
from tf_lottery.masked_wrapper import MaskedWrapper, prunable_variables

__all__ = ["UnmaskedWeightsWarning", "candidate_weights", "dense_weights", "prepare_wrapper",
           "warn_dense"]


class UnmaskedWeightsWarning(UserWarning):
    """Weight matrices of a model stay dense: they are not masked and never pruned."""


# Layers `wrap` could not mask, kept as they are (shared with the original model):
# layer -> reason. Layers of wrapped models that `include`/`exclude` left unmasked.
_UNMASKABLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LEFT_OUT: weakref.WeakSet = weakref.WeakSet()


def mark_unmaskable(layer, reason: str) -> None:
    _UNMASKABLE[layer] = reason


def mark_left_out(layer) -> None:
    _LEFT_OUT.add(layer)


def unmaskable_reason(layer) -> str | None:
    """Why ``wrap`` could not mask ``layer`` (``None`` if it never tried and failed)."""
    return _UNMASKABLE.get(layer)


def candidate_weights(layer) -> dict:
    """``{weight name: variable}`` of the prunable weights of an *unmasked* ``layer``.

    Empty for masked layers, models and layers without weight matrices. Names follow
    ``MaskedWrapper.prunable_weights``; when two weights would share a name, their
    absolute variable paths are used.
    """
    if is_masked(layer) or isinstance(layer, keras.Model) or not layer.built:
        return {}
    twin = masked_class_for(layer)
    if twin is not None:
        return {name: getattr(layer, name) for name in twin.prunable_weights}
    try:
        return prunable_variables(layer)
    except ValueError:
        return {v.path: v for v in layer.trainable_weights
                if len(v.shape) >= 2 and not v.name.endswith("bias")}


def _short(err: Exception) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    return text if len(text) <= 200 else text[:197] + "..."


def prepare_wrapper(layer) -> tuple[MaskedWrapper | None, str | None]:
    """A ``MaskedWrapper`` around a rebuilt copy of ``layer`` holding its weights, or
    ``(None, reason)`` when ``layer`` cannot be rebuilt from its config with the same
    weights (``cls.from_config(layer.get_config())``, then its build config)."""
    try:
        names = list(prunable_variables(layer))
    except ValueError as err:
        return None, str(err)
    try:
        new = type(layer).from_config(layer.get_config())
        build_config = layer.get_build_config()
        if not new.built and build_config:
            new.build_from_config(build_config)
    except Exception as err:  # noqa: BLE001 -- any failure means "cannot be rebuilt"
        return None, f"it cannot be rebuilt from its config ({_short(err)})"
    old_shapes = [tuple(v.shape) for v in layer.weights]
    new_shapes = [tuple(v.shape) for v in new.weights]
    try:
        new_names = list(prunable_variables(new))
    except ValueError as err:
        return None, str(err)
    if old_shapes != new_shapes or new_names != names:
        return None, (
            "rebuilt from its config it gets other weights (shapes "
            f"{new_shapes} instead of {old_shapes}); its get_config probably misses an "
            "argument, or it creates weights in call()"
        )
    for target, source in zip(new.weights, layer.weights, strict=True):
        target.assign(source)
    new.built = True
    return MaskedWrapper(new), None


def plan_wrap(walked, selected) -> tuple[dict, set, dict, list]:
    """What ``wrap`` does with each layer of ``walked`` (``(qualified name, layer)``):
    ``(plan, left_out, unmaskable, masked)`` where ``plan`` maps ``id(layer)`` to its
    masked twin class or a ready ``MaskedWrapper``, ``left_out`` holds the ids of
    prunable layers ``selected(name)`` rejects, ``unmaskable`` maps ids to ``(name,
    layer, reason)`` (marked here) and ``masked`` names the layers already masked."""
    plan, left_out, unmaskable, masked = {}, set(), {}, []
    for name, layer in walked:
        if is_masked(layer):
            masked.append(name)
        elif not candidate_weights(layer):
            continue
        elif not selected(name):
            left_out.add(id(layer))
        elif masked_class_for(layer) is not None:
            plan[id(layer)] = masked_class_for(layer)
        else:
            wrapper, reason = prepare_wrapper(layer)
            if wrapper is None:
                unmaskable[id(layer)] = (name, layer, reason)
                mark_unmaskable(layer, reason)
            else:
                plan[id(layer)] = wrapper
    return plan, left_out, unmaskable, masked


def nothing_to_mask(model, unmaskable: list) -> str:
    """The message of ``wrap``'s error for a model without anything to mask;
    ``unmaskable`` lists ``(qualified name, layer, reason)``."""
    if not unmaskable:
        return (
            f"`model` {model.name!r} has nothing tf_lottery.wrap can mask: no weights with "
            "two or more dimensions (biases and normalization weights are never masked)."
        )
    found = "; ".join(
        f"layer {name!r} ({type(layer).__name__}) with weights "
        f"{ {k: tuple(v.shape) for k, v in candidate_weights(layer).items()} }: {reason}"
        for name, layer, reason in unmaskable
    )
    return (
        f"`model` {model.name!r} has nothing tf_lottery.wrap can mask: its only weights "
        f"with two or more dimensions are in layers that cannot be masked: {found}. Give "
        "such a layer a get_config() returning every __init__ argument."
    )


def dense_weights(named_layers, *, skip_left_out: bool) -> dict[str, tuple[tuple, str]]:
    """``{"<layer>/<weight>": (shape, reason)}`` of the prunable weights left unmasked.

    ``named_layers`` yields ``(qualified layer name, layer)``; with ``skip_left_out``
    layers that ``include``/``exclude`` left out of ``wrap`` are not listed.
    """
    out = {}
    for name, layer in named_layers:
        if skip_left_out and layer in _LEFT_OUT:
            continue
        weights = candidate_weights(layer)
        if not weights:
            continue
        reason = _UNMASKABLE.get(layer)
        if reason is None:
            reason = ("left out of tf_lottery.wrap by include/exclude" if layer in _LEFT_OUT
                      else "not masked: it was not wrapped by tf_lottery.wrap")
        for weight, variable in weights.items():
            out[f"{name}/{weight}"] = (tuple(variable.shape), f"layer {name!r}: {reason}")
    return out


def total_weights(model) -> int:
    """Number of floating-point weights of ``model`` (masks and seed states excluded)."""
    seen, total = set(), 0
    for variable in model.weights:
        if id(variable) in seen or "float" not in str(variable.dtype):
            continue
        seen.add(id(variable))
        total += math.prod(variable.shape)
    return total


def warn_dense(model, dense: dict, fn: str, advice: str) -> None:
    """One ``UnmaskedWeightsWarning`` naming every weight of ``dense`` (``dense_weights``)
    with its shape and share of ``model``'s weights; nothing when ``dense`` is empty."""
    if not dense:
        return
    total = max(total_weights(model), 1)
    size = sum(math.prod(shape) for shape, _ in dense.values())
    listing = "; ".join(
        f"{key} {shape}: {math.prod(shape):,} weights ({math.prod(shape) / total:.1%}), {reason}"
        for key, (shape, reason) in dense.items()
    )
    warnings.warn(
        f"tf_lottery.{fn}: {size / total:.1%} of the model's {total:,} weights stay dense "
        f"(not masked, never pruned): {listing}. {advice}",
        UnmaskedWeightsWarning,
        stacklevel=3,
    )
