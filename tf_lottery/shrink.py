"""Physically smaller tickets: remove the pruned channels of a Keras model.

``shrink_model(model)`` (what ``tf_lottery.strip(model, shrink=True)`` calls) returns a
plain Keras model in which every output unit of a ``Dense`` layer and every filter of a
``Conv1D``/``Conv2D``/``Conv3D`` whose kernel column is entirely pruned (a *channel
mask*, as channel pruning by filter L1 norm gives, Li et al., ICLR 2017) is gone: the
layer's output width shrinks, so do the next layer's input width and the parameters of
``BatchNormalization`` layers in between. Its outputs equal the masked model's (to
float32 round-off).

How it stays exact. A removed channel is not zero in the masked model: biases are never
masked, so it computes ``act(bias)`` (through BatchNormalization, activations, pooling:
a constant per channel). That constant is folded into the next weighted layer: into its
bias (``bias += sum over removed positions of const * kernel rows``; for a convolution
the kernel rows are summed over its window) where every window lies inside the input
(``Dense``, ``valid`` padding, 1x1 kernels). A ``same``-padded convolution sees the
constant only on the window's part inside the image, which no bias can express; there
one removed channel with a nonzero constant stays as a *carrier* and the next kernel's
slice for it absorbs the others (``K[r] += sum_c const_c / const_r * K[c]``, exact by
linearity). A layer without a bias that needs one gets the fold into the moving mean of
the ``BatchNormalization`` right after it, or a bias.

Channel groups. Tensors that must share their channel indices form one group: a layer's
output and what per-channel layers (BatchNormalization, activations, dropout, pooling)
make of it, and every input of an ``Add`` (``Subtract``, ``Average``, ``Maximum``,
``Minimum``, ``Multiply``) with its output, as in residual blocks. A group's channel is
removed only when every weighted layer producing the group prunes it. ``Flatten`` maps
channel ``c`` of an ``(H, W, C)`` tensor to positions ``p * C + c``.

What stays: the units of the layers whose outputs are the model's outputs (a channel
mask there is an error); channels read by a layer this module does not understand
(``Concatenate``, ``Reshape``, attention, recurrent, depthwise and transposed
convolutions, custom layers...), which is kept as it is, with a ``ChannelsKeptWarning``
naming it; and one channel of a group that would lose all of them.

``tf_lottery.shrink_graph`` holds the analysis (layer kinds, channel groups, constants,
carriers); this module computes the new weights and builds the model.
"""

from __future__ import annotations

import keras
import numpy as np

from tf_lottery import masking
from tf_lottery.layers import is_masked
from tf_lottery.shrink_graph import (
    PRODUCERS,
    ChannelsKeptWarning,
    analyze,
    layer_graph,
    layer_kind,
    output_layers,
    padded,
    to_float64,
    zero_columns,
)

__all__ = ["ChannelsKeptWarning", "shrink_model"]

_L = keras.layers


# ---------------------------------------------------------------------- new weights
def _new_weights(order, plan):
    """``{id(layer): dict}`` of new kernels and biases of the producers, the BN mean
    shifts and config changes."""
    out = {}
    bn_shift = {}
    for layer, ins, outs in order:
        if type(layer) not in PRODUCERS or id(outs[0]) not in plan.views:
            continue
        kernel = to_float64(layer.kernel)
        bias = to_float64(layer.bias) if layer.use_bias else np.zeros(kernel.shape[-1])
        kept_in = plan.indices(ins[0], "kept")
        removed_in = plan.indices(ins[0], "removed")
        const = plan.consts[id(ins[0])]
        fold = np.zeros(kernel.shape[-1])
        if len(removed_in):
            if type(layer) is _L.Dense or not padded(layer):
                rows = kernel.reshape(-1, *kernel.shape[-2:]).sum(axis=0)
                fold = const[removed_in] @ rows[removed_in]
            elif id(layer) in plan.carrier:
                r = plan.carrier[id(layer)]
                scale = const[removed_in] / const[r]
                kernel = kernel.copy()
                kernel[..., r, :] += np.tensordot(kernel[..., removed_in, :], scale,
                                                  axes=([kernel.ndim - 2], [0]))
        kept_out = plan.indices(outs[0], "kept")
        kernel = kernel[..., kept_in, :][..., kept_out]
        bias = (bias + fold)[kept_out]
        config = {}
        if not layer.use_bias and np.any(fold[kept_out] != 0):
            readers = plan.consumers.get(id(outs[0]), [])
            if (len(readers) == 1 and type(readers[0]) is _L.BatchNormalization
                    and layer_kind(readers[0], [tuple(outs[0].shape)])[0] == "channelwise"
                    and id(outs[0]) not in plan.outputs):
                bn_shift[id(readers[0])] = fold
            else:
                config["use_bias"] = True
        config[PRODUCERS[type(layer)]] = len(kept_out)
        out[id(layer)] = {"kernel": kernel, "bias": bias, "config": config}
    return out, bn_shift


def _assign(old, new, plan, weights, bn_shift, ins):
    if id(old) in weights:
        w = weights[id(old)]
        new.kernel.assign(w["kernel"].astype(np.float32))
        if new.use_bias:
            new.bias.assign(w["bias"].astype(np.float32))
    elif type(old) is _L.BatchNormalization and old.weights:
        kept = plan.indices(ins[0], "kept")
        shift = bn_shift.get(id(old), 0.0)
        for name in ("gamma", "beta", "moving_mean", "moving_variance"):
            source, target = getattr(old, name), getattr(new, name)
            if source is None:
                continue
            value = to_float64(source)
            if name == "moving_mean":
                value = value - shift
            target.assign(value[kept].astype(np.float32))
    elif new is not old and old.weights:
        new.set_weights(old.get_weights())


def shrink_model(model) -> keras.Model:
    """A plain Keras copy of ``model`` with its pruned channels physically removed.

    Masks are folded into the weights (``tf_lottery.strip``); then every output unit of
    a ``Dense`` and every filter of a ``Conv1D``/``Conv2D``/``Conv3D`` (channels last,
    ``groups=1``, elementwise activation) whose kernel mask column is all zero (for
    unmasked layers: whose kernel column is all zero) is removed together with the
    matching input rows of the layers that read it and the matching entries of
    ``BatchNormalization`` layers between them. The constant a removed channel still
    computes in the masked model (``act(bias)``, through BatchNormalization) is folded
    into the next layer (see the module docstring), so outputs equal the masked model's
    up to float32 round-off (about 1e-6 relative). Channels tied by an ``Add`` (residual
    blocks) go only where every input of the ``Add`` drops them.

    Args:
        model: a built Sequential or Functional ``keras.Model``, masked
            (``tf_lottery.wrap``) or plain, whose layers are each called once.

    Returns:
        A new, uncompiled ``keras.Model`` (Sequential for a Sequential ``model``) with
        the same layer names, inputs and outputs. ``model`` is not changed.

    Raises:
        ValueError: ``model`` is not a built Sequential/Functional model; a layer is
            shared (called more than once); or a layer that produces a model output has
            a channel mask (an all-zero kernel column): the model's outputs are never
            removed, so keep that layer out of channel pruning or strip without
            ``shrink``.

    Warns:
        ChannelsKeptWarning: pruned channels stay because they feed a layer this module
            does not understand (named in the message) or reach a model output through
            a merge.
    """
    plain = masking.fold_masks(model)
    masks = masking.get_masks(model) if any(
        is_masked(layer) for _, layer in masking.masked_layers(model)) else {}
    order = layer_graph(plain)
    for layer in output_layers(order, plain):
        zero = zero_columns(layer, masks, layer.name)
        if zero:
            raise ValueError(
                f"`model` layer {layer.name!r} produces a model output and {len(zero)} of "
                f"its {layer.kernel.shape[-1]} units have an all-zero kernel mask column "
                f"(units {sorted(zero)[:8]}{'...' if len(zero) > 8 else ''}). Output units "
                "are never removed: keep the output layer out of channel pruning (give "
                "it an unstructured mask or none), or use tf_lottery.strip(model) "
                "without shrink=True."
            )
    plan = analyze(order, plain, masks)
    weights, bn_shift = _new_weights(order, plan)
    inputs_of = {id(layer): ins for layer, ins, _ in order}

    def make(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer)
        config = layer.get_config()
        config.update(weights.get(id(layer), {}).get("config", {}))
        try:
            return type(layer).from_config(config)
        except Exception:  # noqa: BLE001 - a layer we do not change: share it
            if id(layer) in weights:
                raise
            return layer

    pairs = []

    def clone(layer):
        new = make(layer)
        pairs.append((layer, new))
        return new

    new_model = keras.models.clone_model(plain, clone_function=clone)
    for old, new in pairs:
        if isinstance(old, _L.InputLayer):
            continue
        _assign(old, new, plan, weights, bn_shift, inputs_of.get(id(old), []))
    return new_model
