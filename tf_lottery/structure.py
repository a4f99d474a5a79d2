"""Structured sparsity: which weights a mask removes together (``prune(structure=...)``).

``structure`` is one of:

* ``"unstructured"`` (the default): any weight may go on its own (Frankle & Carbin, ICLR
  2019).
* ``"channel"``: whole output channels go: a Dense layer's output units (kernel columns,
  kernel ``(in, out)``) and a convolution's filters (kernel ``(..., in, out)``: every
  weight of the filter), scored by the criterion's per-weight scores summed over every
  axis but the output one: for ``magnitude`` the L1 norm of the filter (Li et al., "Pruning
  Filters for Efficient ConvNets", ICLR 2017). Masks keep the kernel's shape and are
  constant along every axis but the last (output) one.
* ``"N:M"`` with integers ``0 < N < M`` (e.g. ``"2:4"``, NVIDIA Ampere's sparse tensor
  cores): in every group of ``M`` consecutive weights along the *input* dimension (Dense
  kernel axis 0, convolution kernel axis -2, the input channels), the ``N`` best-scoring
  weights are kept (tfmot's ``sparsity_m_by_n`` pattern). The sparsity is ``1 - N/M``.

Which layers take part:

=============================== ==================== ===================
masked weight                   ``channel`` (output) ``N:M`` (input)
=============================== ==================== ===================
Dense ``kernel``                axis -1              axis 0
Conv1D/2D/3D ``kernel``         axis -1              axis -2
SeparableConv2D ``pointwise``   axis -1              axis -2
DepthwiseConv2D, separable      left as they are     left as they are
``depthwise_kernel``, transposed
convolutions, Embedding,
EinsumDense, ``MaskedWrapper``
weights (attention, recurrent)
=============================== ==================== ===================

Masks left as they are (not pruned at all by that call) are named in a
``StructureWarning``; a depthwise convolution after a pruned convolution just receives a
constant channel. ``channel`` never removes the output layer's units (the classes): the
output layer is left exactly as it is, without a warning.

Channels tied by an elementwise merge (``Add``, ``Subtract``, ``Multiply``, ``Average``,
``Maximum``, ``Minimum``; the residual additions of ResNet-20) are pruned together as one
group: the layers whose outputs reach the merge through channel-wise layers
(BatchNormalization, activations, dropout, pooling, padding) share one channel mask, scored
by the sum of their channel scores, so a channel goes from every input of the merge or from
none. A merge that also receives a tensor without a channel mask (the model's input, a
reshape, a nested model) pins its group: those layers are left as they are, with a
``StructureWarning``.

The bias of a removed channel: biases are never masked, so a removed Dense unit or filter
computes exactly its bias before the activation, and ``act(bias)`` after it (through a
BatchNormalization, BN of zero): a per-channel *constant*, the same for every input, not
zero. ``strip(model, shrink=True)`` must therefore remove the channel and fold that
constant into the next layer's bias (``next_bias += const * next_kernel[channel]``) to keep
the outputs exact; ``channel_masks`` says which channels are kept. For the same reason the
next layer's weights that read a removed channel stay unmasked, so ``sparsity_report``
counts only the removed filters' own weights: the shrunk network has fewer parameters than
the reported sparsity says.

Global channel pruning ranks raw channel scores across layers: L1 norms grow with a layer's
fan-in, and a tied group's score is the sum over its members, so wide-input layers and
residual streams lose fewer channels than under layerwise pruning.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping

import keras
import numpy as np

from tf_lottery import masking
from tf_lottery.arguments import _fail
from tf_lottery.layers import MaskedLayer

__all__ = ["STRUCTURES", "Structure", "StructureWarning", "parse_structure",
           "channel_masks", "Plan", "plan_for", "check_arguments"]

#: The forms ``structure`` accepts.
STRUCTURES = ("unstructured", "channel", "N:M")

_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


class StructureWarning(UserWarning):
    """Masks a structured ``prune`` leaves as they are, or groups that do not fit ``N:M``."""


@dataclasses.dataclass(frozen=True)
class Structure:
    """A parsed ``structure``: ``kind`` is ``"unstructured"``, ``"channel"`` or ``"n:m"``
    (then ``n`` and ``m`` are set); ``str()`` gives the canonical string."""

    kind: str
    n: int = 0
    m: int = 0

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.kind == "n:m" else self.kind


def parse_structure(structure, field: str = "structure") -> Structure:
    """Parses ``"unstructured"``, ``"channel"`` or ``"N:M"`` (``0 < N < M``, e.g. ``"2:4"``).

    Raises:
        tf_lottery.arguments.ArgumentError: (a ``ValueError``) naming ``field``, the value
            received and the valid forms.
    """
    if isinstance(structure, Structure):
        return structure
    if isinstance(structure, str):
        text = structure.strip().lower()
        if text in ("unstructured", "channel"):
            return Structure(text)
        match = _NM.match(text)
        if match and 0 < int(match.group(1)) < int(match.group(2)):
            return Structure("n:m", int(match.group(1)), int(match.group(2)))
    _fail(field, structure, "must be 'unstructured', 'channel' or 'N:M' with integers "
          "0 < N < M (e.g. '2:4': keep 2 of every 4 consecutive input weights)")


def check_arguments(spec: Structure, *, scope: str, output_rate, rated_keys,
                    output_key: str) -> None:
    """Refuses arguments of ``prune`` that mean nothing with ``spec`` (``ValueError``)."""
    if spec.kind == "channel" and scope == "erk":
        raise ValueError(
            "`scope`='erk' shares out weights by the Erdős–Rényi-Kernel budget, which has no "
            "channel form; use scope='layerwise' or 'global' with structure='channel'.")
    if spec.kind == "channel" and (output_rate is not None or output_key in rated_keys):
        raise ValueError(
            "`output_rate` (or a `layer_rates` entry for the output layer "
            f"{output_key!r}) does not apply with structure='channel': the output layer's "
            "units are never removed. Leave it unset.")
    if spec.kind == "n:m":
        if scope != "layerwise":
            raise ValueError(
                f"`scope` must be 'layerwise' with structure={str(spec)!r}: N:M keeps "
                f"{spec.n} of every {spec.m} weights in each layer, so it has no global "
                f"or erk form; received scope={scope!r}.")
        if output_rate is not None or rated_keys:
            raise ValueError(
                f"`layer_rates` and `output_rate` do not apply with structure={str(spec)!r}: "
                f"every layer reaches sparsity 1 - {spec.n}/{spec.m}. Leave them unset.")


# ------------------------------------------------------------------ which axes


_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_MERGES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
           keras.layers.Average, keras.layers.Maximum, keras.layers.Minimum)
_CHANNELWISE = tuple(getattr(keras.layers, name) for name in (
    "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Identity",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D",
    "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D",
    "UpSampling2D", "UpSampling3D") if hasattr(keras.layers, name))


def _axis(layer, weight: str, kind: str) -> tuple[int | None, str]:
    """``(axis, "")`` of the structure's axis in ``layer``'s ``weight``, or ``(None,
    reason)`` when that weight has none tf_lottery knows."""
    if not isinstance(layer, MaskedLayer):
        return None, (f"{layer.masked_base.__name__} weight {weight!r} inside a "
                      "MaskedWrapper: its output/input axes are not known")
    base = layer.masked_base
    output, inputs = -1, (0 if base is keras.layers.Dense else -2)
    if (base is keras.layers.Dense or base in _CONVS) and weight == "kernel":
        return (output if kind == "channel" else inputs), ""
    if base is keras.layers.SeparableConv2D and weight == "pointwise_kernel":
        return (output if kind == "channel" else inputs), ""
    if weight == "depthwise_kernel" or base is keras.layers.DepthwiseConv2D:
        return None, ("a depthwise kernel: each output channel follows one input channel, "
                      "with no filter or input dimension of its own")
    return None, f"{base.__name__}: no {'output channel' if kind == 'channel' else 'input'} " \
                 "axis tf_lottery knows"


def _key_layers(model) -> dict[str, tuple[str, object, str]]:
    """``{mask key: (qualified layer name, layer, weight name)}`` in layer order."""
    return {f"{name}/{weight}": (name, layer, weight)
            for name, layer in masking.masked_layers(model)
            for weight in layer.prunable_weights}


# ------------------------------------------------------------- tied channels


def _graph_models(model, prefix: str = ""):
    """``(prefix, model)`` of ``model`` and every nested model holding a merge layer."""
    if not isinstance(model, keras.Sequential) and any(
            isinstance(layer, _MERGES) for layer in model.layers):
        yield prefix, model
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _graph_models(layer, prefix + layer.name + "/")


def _histories(obj):
    """The ``keras_history`` ``(layer name, node index)`` of every tensor in a node config."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            name, node, _ = obj["config"]["keras_history"]
            yield name, node
            return
        for value in obj.values():
            yield from _histories(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _histories(value)


def _tied(model, channel_keys: Mapping[str, str]):
    """Groups of channel keys tied by merges: ``(groups, pinned)``, ``groups`` a list of
    key lists (layer order, two keys or more), ``pinned`` ``{key: reason}`` for the keys
    of groups a merge also ties to a tensor without a channel mask.

    ``channel_keys`` maps qualified layer names to their channel key."""
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    pins: dict = {}
    for prefix, sub in _graph_models(model):
        try:
            entries = {e["name"]: e for e in sub.get_config()["layers"]}
        except Exception as err:  # noqa: BLE001  (any failure: report, never hide)
            warnings.warn(
                f"structure='channel' could not read the graph of model {sub.name!r} "
                f"({type(err).__name__}: {err}), so channels tied by its merge layers are "
                "not detected; they are pruned layer by layer.", StructureWarning,
                stacklevel=4)
            continue

        def source(name, node):
            while True:
                layer, qualified = sub.get_layer(name), prefix + name
                if qualified in channel_keys:
                    return ("key", channel_keys[qualified]), None
                if isinstance(layer, _MERGES):
                    return ("merge", qualified), None
                nodes = entries[name].get("inbound_nodes") or []
                inputs = list(_histories(nodes[node])) if node < len(nodes) else []
                if isinstance(layer, keras.layers.InputLayer):
                    return None, f"the model input {qualified!r}"
                if not isinstance(layer, _CHANNELWISE) or len(inputs) != 1:
                    return None, f"{qualified!r} ({type(layer).__name__})"
                name, node = inputs[0]

        for name, entry in entries.items():
            if not isinstance(sub.get_layer(name), _MERGES):
                continue
            merge = ("merge", prefix + name)
            for node in entry["inbound_nodes"]:
                for history in _histories(node):
                    found, pin = source(*history)
                    if found is None:
                        pins.setdefault(merge, []).append((prefix + name, pin))
                    else:
                        parent[find(found)] = find(merge)
    pinned_roots: dict = {}
    for merge, why in pins.items():
        pinned_roots.setdefault(find(merge), []).extend(why)
    groups: dict = {}
    for key in channel_keys.values():
        groups.setdefault(find(("key", key)), []).append(key)
    pinned = {}
    for root, keys in groups.items():
        if root in pinned_roots:
            merges = sorted({m for m, _ in pinned_roots[root]})
            what = ", ".join(sorted({p for _, p in pinned_roots[root]}))
            for key in keys:
                pinned[key] = (f"tied by {', '.join(merges)} to {what}, which has no "
                               "channel mask")
    return [keys for root, keys in groups.items() if len(keys) > 1 and root not in
            pinned_roots], pinned


# ----------------------------------------------------------------------- plan


@dataclasses.dataclass
class Plan:
    """How one structured ``prune`` call treats each mask key.

    Attributes:
        spec: the ``Structure``.
        axes: ``{key: axis}`` of the keys it prunes: the output axis for ``channel``, the
            input axis for ``N:M``.
        groups: ``channel``: ``{leader key: [member keys]}`` pruned as one (a single key
            is its own group); the leader is the first member in layer order.
        left: ``{key: reason}`` of the included keys it leaves as they are.
        alive0: ``channel``: surviving channels of each group before pruning.
    """

    spec: Structure
    axes: dict[str, int]
    groups: dict[str, list[str]]
    left: dict[str, str]
    alive0: dict[str, int] = dataclasses.field(default_factory=dict)

    def start(self, masks: Mapping[str, np.ndarray]) -> None:
        """Records each channel group's surviving channels in ``alive0``."""
        if self.spec.kind == "channel":
            ch_masks, _ = self.channel_view(
                masks, {k: np.zeros(np.shape(masks[k])) for k in self.axes})
            self.alive0 = {k: int(v.sum()) for k, v in ch_masks.items()}

    # ----------------------------------------------------------- channel
    def channel_view(self, masks: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray]):
        """``(channel masks, channel scores)`` keyed by group leader: a channel survives
        if any of its weights does in any member; its score is the sum over the group's
        members of the member's surviving weights' scores (float64)."""
        ch_masks, ch_scores = {}, {}
        for leader, members in self.groups.items():
            alive = total = 0
            for key in members:
                mask = np.asarray(masks[key])
                out = mask.shape[-1]
                alive = alive | mask.reshape(-1, out).any(axis=0)
                score = np.asarray(scores[key], np.float64).reshape(-1, out)
                total = total + np.where(mask.reshape(-1, out) != 0, score, 0.0).sum(axis=0)
            ch_masks[leader] = np.asarray(alive, np.float32)
            ch_scores[leader] = np.asarray(total, np.float64)
        return ch_masks, ch_scores

    def group_rates(self, rates: Mapping[str, float]) -> dict[str, float]:
        """The layerwise rate of each group: its members' common rate.

        Raises:
            ValueError: tied members have different rates."""
        out = {}
        for leader, members in self.groups.items():
            found = {rates[key] for key in members}
            if len(found) > 1:
                raise ValueError(
                    f"`layer_rates` gives different rates {sorted(found)} to the layers "
                    f"{members}, whose channels are tied (they feed the same Add): give "
                    "them one rate.")
            out[leader] = found.pop()
        return out

    def expand(self, masks: dict, ch_masks: Mapping[str, np.ndarray]) -> None:
        """Multiplies every member's mask by its group's channel mask, in place."""
        for leader, members in self.groups.items():
            for key in members:
                masks[key] *= ch_masks[leader].astype(masks[key].dtype)

    # --------------------------------------------------------------- N:M
    def apply_nm(self, masks: dict, scores: Mapping[str, np.ndarray]) -> None:
        """Keeps, in place, the ``N`` best-scoring surviving weights of every group of
        ``M`` along each key's input axis (ties: the higher index is kept); a last group
        shorter than ``M`` keeps at most ``min(N, its size)``."""
        n, m = self.spec.n, self.spec.m
        for key, axis in self.axes.items():
            mask = masks[key]
            score = np.where(mask != 0, np.asarray(scores[key], np.float64).reshape(mask.shape),
                             -np.inf)
            grouped, unpad = _groups(score, axis, m, -np.inf)
            order = np.argsort(grouped, axis=1, kind="stable")
            keep = np.zeros(grouped.shape, bool)
            np.put_along_axis(keep, order[:, m - n:], True, axis=1)
            keep &= np.isfinite(grouped)
            masks[key] = mask * unpad(keep).astype(mask.dtype)

    # ------------------------------------------------------------ random
    def random(self, masks: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict:
        """Random masks with this structure and the same counts as ``masks`` for the
        keys it structures: ``channel``: the same number of surviving channels per group,
        at random; ``N:M``: the same number of survivors in every group of ``M``, at
        random places in the group. Keys whose mask does not have the structure are
        missing from the result (the caller shuffles them unstructured), with a
        ``StructureWarning``."""
        out, broken = {}, []
        if self.spec.kind == "channel":
            ch_masks, _ = self.channel_view(masks, {k: np.zeros(masks[k].shape) for k in masks})
            for leader, members in self.groups.items():
                if not all(_is_channel_mask(masks[k]) for k in members):
                    broken += members
                    continue
                ch = np.zeros(ch_masks[leader].shape, np.float32)
                ch[rng.permutation(ch.size)[: int(ch_masks[leader].sum())]] = 1.0
                for key in members:
                    out[key] = np.broadcast_to(ch, masks[key].shape).astype(np.float32)
        else:
            for key, axis in self.axes.items():
                mask = np.asarray(masks[key], np.float32)
                grouped, unpad = _groups(mask, axis, self.spec.m, -1.0)
                counts = (grouped > 0).sum(axis=1, keepdims=True)
                noise = np.where(grouped < 0, -1.0, rng.random(grouped.shape))
                ranks = np.argsort(np.argsort(noise, axis=1, kind="stable"), axis=1)
                out[key] = unpad(ranks >= self.spec.m - counts).astype(np.float32)
        if broken:
            warnings.warn(
                f"random masks for {broken}: their masks are not channel masks (constant "
                "along every axis but the last), so they are shuffled weight by weight.",
                StructureWarning, stacklevel=3)
        return out


def _is_channel_mask(mask) -> bool:
    flat = np.asarray(mask).reshape(-1, np.shape(mask)[-1])
    return bool(np.all(flat == flat[:1]))


def _groups(array: np.ndarray, axis: int, m: int, fill: float):
    """``array`` as ``(groups, m, rest)`` along ``axis``, padded with ``fill`` to a
    multiple of ``m``, and the function mapping such an array back to ``array``'s shape."""
    moved = np.moveaxis(array, axis, 0)
    size, rest = moved.shape[0], moved.shape[1:]
    flat = moved.reshape(size, -1)
    pad = -size % m
    flat = np.concatenate([flat, np.full((pad, flat.shape[1]), fill, flat.dtype)])
    grouped = flat.reshape(-1, m, flat.shape[1])

    def unpad(values):
        back = values.reshape(-1, flat.shape[1])[:size].reshape((size, *rest))
        return np.moveaxis(back, 0, axis)

    return grouped, unpad


def plan_for(model, spec: Structure, included, *, output_key: str, excluded=(),
             warn: bool = True) -> Plan:
    """The ``Plan`` of a structured prune of ``model`` over the mask keys ``included``.

    ``excluded`` are keys the caller keeps as they are (a channel group containing one is
    kept whole). With ``warn``, a ``StructureWarning`` names the keys left as they are
    (except the output layer under ``channel``) and, for ``N:M``, the keys whose input
    dimension is not a multiple of ``M``.
    """
    layers = _key_layers(model)
    axes, left = {}, {}
    for key in included:
        axis, reason = _axis(layers[key][1], layers[key][2], spec.kind)
        if axis is None:
            left[key] = reason
        else:
            axes[key] = axis
    groups = {key: [key] for key in axes}
    quiet = set()
    if spec.kind == "channel":
        channel_keys = {}
        for key, (name, layer, weight) in layers.items():
            if _axis(layer, weight, "channel")[0] is not None:
                channel_keys[name] = key
        tied, pinned = _tied(model, channel_keys)
        for members in tied:
            fixed = [k for k in members if k not in axes or k == output_key
                     or k in excluded]
            for key in members:
                groups.pop(key, None)
            if fixed:
                for key in members:
                    if key in axes:
                        left[key] = f"tied by a merge layer to {fixed}, which are not pruned"
                        del axes[key]
            else:
                groups[members[0]] = members
        for key, reason in pinned.items():
            if key in axes:
                left[key] = reason
                del axes[key]
                groups.pop(key, None)
        if output_key in axes:
            left[output_key] = "the output layer: its units are never removed"
            del axes[output_key]
            groups.pop(output_key, None)
            quiet.add(output_key)
    else:
        groups = {}
    noisy = {k: v for k, v in left.items() if k not in quiet}
    if warn and noisy:
        warnings.warn(
            f"structure={str(spec)!r} leaves these masks as they are: "
            + "; ".join(f"{k!r} ({v})" for k, v in noisy.items()) + ".",
            StructureWarning, stacklevel=3)
    if warn and spec.kind == "n:m":
        short = {k: layers[k][1].dense_weight(layers[k][2]).shape[a] for k, a in axes.items()}
        short = {k: d for k, d in short.items() if d % spec.m}
        if short:
            warnings.warn(
                f"structure={str(spec)!r}: these input dimensions are not a multiple of "
                f"{spec.m}: " + ", ".join(f"{k!r} ({d})" for k, d in short.items())
                + f"; the last group of each column keeps at most min({spec.n}, its size) "
                f"weights, as if the input were zero-padded to a multiple of {spec.m}.",
                StructureWarning, stacklevel=3)
    return Plan(spec, axes, groups, left)


def channel_masks(model, masks: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Which output channels each channel-structurable mask keeps.

    Args:
        model: a masked model (``tf_lottery.wrap``).
        masks: ``{mask key: mask}``; default: the model's current masks.

    Returns:
        ``{mask key: bool array (out,)}`` for the masks whose last axis is the layer's
        output channel (Dense and Conv1D/2D/3D ``kernel``, SeparableConv2D
        ``pointwise_kernel``): ``True`` where any weight of that unit or filter survives.
        A ``False`` channel computes ``act(bias)`` (a constant) in the masked model; see
        the module docstring for what shrinking must do with it.
    """
    masks = masking.get_masks(model) if masks is None else masks
    out = {}
    for key, (_, layer, weight) in _key_layers(model).items():
        if key in masks and _axis(layer, weight, "channel")[0] is not None:
            mask = np.asarray(masks[key])
            out[key] = mask.reshape(-1, mask.shape[-1]).any(axis=0)
    return out
