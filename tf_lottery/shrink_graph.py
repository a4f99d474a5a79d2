"""The analysis behind ``tf_lottery.shrink``: which channels of a Keras graph can go.

Walks a stripped (plain) Functional or Sequential model once, in topological order,
and builds a ``Plan``: per tensor its *view* ``(channel group, repeat)`` (its last axis
is ``repeat`` copies of the group's channels, ``p * C + c``, so ``Flatten`` of an
``(H, W, C)`` tensor is ``(group, H * W)``), per group the channels removed (those
every weighted layer producing the group prunes, unless a layer this module does not
understand or a model output reads the group: ``ChannelsKeptWarning``), per tensor the
constant each channel computes when its kernel column is zero, and per ``same``-padded
convolution the *carrier* channel it folds removed constants into. See
``tf_lottery.shrink`` for why each step keeps the outputs exact.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import keras
import numpy as np

__all__ = ["ChannelsKeptWarning", "PRODUCERS", "Plan", "analyze", "layer_graph", "layer_kind",
           "output_layers", "padded", "to_float64", "zero_columns"]


class ChannelsKeptWarning(UserWarning):
    """Channels that the masks remove stay in the shrunk model (and why)."""


_L = keras.layers
# Layers that shrink by their output channels: class -> the config key of their width.
PRODUCERS = {_L.Dense: "units", _L.Conv1D: "filters", _L.Conv2D: "filters",
             _L.Conv3D: "filters"}
# Per-channel maps: a constant channel stays constant; weights (BN) indexed by channel.
_CHANNELWISE = (_L.BatchNormalization, _L.Activation, _L.ReLU, _L.LeakyReLU, _L.ELU)
# Identity at inference.
_IDENTITY = tuple(getattr(_L, n) for n in (
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization") if hasattr(_L, n))
# Spatial layers that keep the channel axis and keep a constant channel constant.
_SPATIAL = tuple(getattr(_L, f"{kind}{d}D") for kind in (
    "MaxPooling", "AveragePooling", "GlobalAveragePooling", "GlobalMaxPooling", "UpSampling",
    "Cropping") for d in (1, 2, 3) if hasattr(_L, f"{kind}{d}D"))
_MERGES = {_L.Add: np.add, _L.Subtract: np.subtract, _L.Maximum: np.maximum,
           _L.Minimum: np.minimum, _L.Multiply: np.multiply, _L.Average: None}
# Activations applied elementwise (a removed unit computes act(bias), a constant).
_ELEMENTWISE = {
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "sigmoid", "hard_sigmoid",
    "tanh", "softplus", "softsign", "swish", "silu", "hard_silu", "hard_swish", "mish",
    "exponential", "log_sigmoid", "celu"}


def _activation_name(activation) -> str | None:
    try:
        name = keras.activations.serialize(activation)
    except (ValueError, TypeError):
        return None
    return name if isinstance(name, str) else None


def layer_kind(layer, in_shapes) -> tuple[str, str | None]:
    """``(kind, why unknown)``: kind in producer, channelwise, spatial, identity, flatten,
    merge, unknown."""
    cls = type(layer)
    fmt = getattr(layer, "data_format", "channels_last")
    if cls in PRODUCERS:
        if cls is not _L.Dense and (fmt != "channels_last" or layer.groups != 1):
            return "unknown", f"{cls.__name__} with data_format={fmt!r}, groups={layer.groups}"
        if _activation_name(layer.activation) not in _ELEMENTWISE:
            return "unknown", f"its activation {_activation_name(layer.activation)!r} mixes units"
        return "producer", None
    if cls is _L.BatchNormalization:
        axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
        if axis not in (-1, len(in_shapes[0]) - 1):
            return "unknown", f"BatchNormalization over axis {layer.axis}"
        return "channelwise", None
    if cls is _L.Activation:
        name = _activation_name(layer.activation)
        if name not in _ELEMENTWISE:
            return "unknown", f"activation {name!r} is not elementwise"
        return "channelwise", None
    if cls in _CHANNELWISE:
        return "channelwise", None
    if cls in _IDENTITY:
        return "identity", None
    if cls in _SPATIAL or cls is _L.Flatten:
        if fmt != "channels_last":
            return "unknown", f"data_format={fmt!r}"
        return ("flatten" if cls is _L.Flatten else "spatial"), None
    if cls in _MERGES:
        if len({tuple(s) for s in in_shapes}) != 1:
            return "unknown", "its inputs broadcast"
        return "merge", None
    if isinstance(layer, keras.Model):
        return "unknown", "a nested model"
    return "unknown", "shrink does not know how it uses channels"


# ------------------------------------------------------------------------------ graph
def _flat(structure) -> list:
    return list(keras.tree.flatten(structure))


def layer_graph(plain):
    """Layers of ``plain`` in topological order with their input and output tensors."""
    inputs = {id(t) for t in plain.inputs}
    layers = [layer for layer in plain.layers if not isinstance(layer, _L.InputLayer)]
    produced = set(inputs)
    for layer in layers:
        produced.update(id(t) for t in _flat(layer.output))
    nodes = []
    for layer in layers:
        ins = _flat(layer.input)
        if any(id(t) not in produced for t in ins):
            config = plain.get_config() if not isinstance(plain, keras.Sequential) else {}
            shared = [c["name"] for c in config.get("layers", [])
                      if len(c.get("inbound_nodes", [])) > 1] or [layer.name]
            raise ValueError(
                f"`model` layers {shared} are called more than once (shared layers) or on "
                "tensors from outside the model; shrink rewires layers called once only. "
                "Use tf_lottery.strip(model) (shrink=False) for this model."
            )
        nodes.append((layer, ins, _flat(layer.output)))
    order, ready = [], set(inputs)
    pending = list(nodes)
    while pending:
        rest = [n for n in pending if not all(id(t) in ready for t in n[1])]
        for node in pending:
            if node not in rest:
                order.append(node)
                ready.update(id(t) for t in node[2])
        if len(rest) == len(pending):  # pragma: no cover - a Keras graph has no cycle
            raise ValueError(f"`model` {plain.name!r}: cannot order its layers.")
        pending = rest
    return order


class _Groups:
    """Union-find over channel groups; a root keeps the removable channels (the
    intersection over its producers) and what forces it to keep all channels."""

    def __init__(self):
        self.parent, self.size, self.zero, self.blockers, self.producers = [], [], [], [], []

    def new(self, size, zero=(), producer=None):
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.zero.append(set(zero))
        self.blockers.append([])
        self.producers.append([producer] if producer else [])
        return len(self.parent) - 1

    def find(self, g):
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.zero[a] &= self.zero[b]
            self.blockers[a] += self.blockers[b]
            self.producers[a] += self.producers[b]
        return a


@dataclasses.dataclass
class Plan:
    """What to remove: per tensor id its view ``(group, repeat)`` (the tensor's last axis
    is ``repeat`` copies of the group's channels, ``p * C + c``) and constant vector,
    per group root the removed channels, per convolution the carrier it folds into."""

    views: dict
    consts: dict
    groups: _Groups
    removed: dict
    carrier: dict
    consumers: dict
    outputs: set

    def indices(self, tensor, which):
        group, repeat = self.views[id(tensor)]
        root = self.groups.find(group)
        size = self.groups.size[root]
        removed = self.removed.get(root, set())
        chans = sorted(removed) if which == "removed" else [
            c for c in range(size) if c not in removed]
        chans = np.asarray(chans, np.int64)
        return (np.arange(repeat)[:, None] * size + chans[None, :]).ravel()


def zero_columns(layer, masks, name) -> set:
    mask = masks.get(f"{name}/kernel")
    array = mask if mask is not None else keras.ops.convert_to_numpy(layer.kernel)
    array = np.asarray(array).reshape(-1, array.shape[-1])
    return set(np.flatnonzero(np.all(array == 0, axis=0)).tolist())


def output_layers(order, plain):
    """The weighted layer behind each model output (through single-input layers)."""
    producer = {id(t): (layer, ins) for layer, ins, outs in order for t in outs}
    found = []
    for tensor in _flat(plain.outputs):
        while id(tensor) in producer:
            layer, ins = producer[id(tensor)]
            if type(layer) in PRODUCERS:
                found.append(layer)
                break
            if len(ins) != 1:
                break
            tensor = ins[0]
    return found


def analyze(order, plain, masks) -> Plan:
    groups = _Groups()
    views = {}
    for tensor in plain.inputs:
        views[id(tensor)] = (groups.new(int(tensor.shape[-1])), 1)
    consumers = {}  # id(tensor) -> [layer, ...]
    outputs_of = {id(layer) for layer in output_layers(order, plain)}
    for layer, ins, outs in order:
        for t in ins:
            consumers.setdefault(id(t), []).append(layer)
        kind, why = layer_kind(layer, [tuple(t.shape) for t in ins])
        if kind == "merge" and len({views[id(t)][1] for t in ins}) != 1:
            kind, why = "unknown", "its inputs are laid out differently"
        if kind == "producer":
            zero = set() if id(layer) in outputs_of else zero_columns(layer, masks, layer.name)
            views[id(outs[0])] = (groups.new(int(outs[0].shape[-1]), zero, layer.name), 1)
        elif kind in ("channelwise", "spatial", "identity"):
            views[id(outs[0])] = views[id(ins[0])]
        elif kind == "flatten":
            group, repeat = views[id(ins[0])]
            views[id(outs[0])] = (group, repeat * math.prod(ins[0].shape[1:-1]))
        elif kind == "merge":
            root = views[id(ins[0])][0]
            for t in ins[1:]:
                root = groups.union(root, views[id(t)][0])
            views[id(outs[0])] = (root, views[id(ins[0])][1])
        else:
            for t in ins:
                if id(t) in views:
                    groups.blockers[groups.find(views[id(t)][0])].append(
                        f"layer {layer.name!r} ({type(layer).__name__}: {why})")
            for t in outs:
                size = int(t.shape[-1]) if len(t.shape) else 1
                views[id(t)] = (groups.new(size), 1)
    for tensor in _flat(plain.outputs):
        groups.blockers[groups.find(views[id(tensor)][0])].append("the model output")
    removed = {}
    for g in range(len(groups.parent)):
        if groups.find(g) != g or not groups.zero[g]:
            continue
        if groups.blockers[g]:
            warnings.warn(ChannelsKeptWarning(
                f"tf_lottery.strip(shrink=True) keeps {len(groups.zero[g])} pruned channels "
                f"of {groups.producers[g]}: they reach {', '.join(groups.blockers[g])}, "
                "so they cannot be removed exactly. Their weights stay zero."), stacklevel=4)
            continue
        removed[g] = set(groups.zero[g])
    plan = Plan(views, {}, groups, removed, {}, consumers,
                 {id(t) for t in _flat(plain.outputs)})
    plan.consts = _constants(order, plain, views)
    _choose_carriers(order, plan)
    for g, chans in removed.items():  # a layer keeps at least one channel
        if len(chans) == groups.size[g]:
            chans.discard(min(chans))
    return plan


# -------------------------------------------------------------------------- constants
def to_float64(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def _batch_norm(layer, x):
    gamma = to_float64(layer.gamma) if layer.gamma is not None else 1.0
    beta = to_float64(layer.beta) if layer.beta is not None else 0.0
    mean, var = to_float64(layer.moving_mean), to_float64(layer.moving_variance)
    return gamma * (x - mean) / np.sqrt(var + layer.epsilon) + beta


def _constants(order, plain, views):
    """``{id(tensor): float64 vector}``: what each channel (last-axis position) of each
    tensor is when its producer's kernel column is zero (meaningful at removed ones)."""
    consts = {id(t): np.zeros(int(t.shape[-1])) for t in plain.inputs}
    for layer, ins, outs in order:
        kind, _ = layer_kind(layer, [tuple(t.shape) for t in ins])
        x = [consts.get(id(t)) for t in ins]
        if kind == "producer":
            bias = to_float64(layer.bias) if layer.use_bias else np.zeros(int(outs[0].shape[-1]))
            bias = keras.ops.convert_to_tensor(bias[None], "float32")
            out = to_float64(layer.activation(bias))[0]
        elif type(layer) is _L.BatchNormalization and x[0] is not None:
            out = _batch_norm(layer, x[0])
        elif kind == "channelwise" and x[0] is not None:
            out = to_float64(layer(keras.ops.convert_to_tensor(x[0][None], "float32")))[0]
        elif kind in ("spatial", "identity") and x[0] is not None:
            out = x[0]
        elif kind == "flatten" and x[0] is not None:
            out = np.tile(x[0], math.prod(ins[0].shape[1:-1]))
        elif kind == "merge" and all(v is not None for v in x) and len(
                {v.shape for v in x}) == 1:
            op = _MERGES[type(layer)]
            out = np.mean(x, axis=0) if op is None else x[0]
            for v in ([] if op is None else x[1:]):
                out = op(out, v)
        else:
            out = None
        for t in outs:
            consts[id(t)] = out if out is not None else np.zeros(
                int(t.shape[-1]) if len(t.shape) else 1)
    return consts


def padded(layer) -> bool:
    """A convolution whose windows reach past the input's border (zero padding)."""
    return (type(layer) is not _L.Dense and layer.padding != "valid"
            and any(k > 1 for k in layer.kernel_size))


def _choose_carriers(order, plan):
    """For each ``same``-padded convolution reading removed channels with a nonzero
    constant, keep one of them (the largest constant) to carry the others' share."""
    carriers = {}  # group root -> kept carrier channels
    for layer, ins, _ in order:
        if type(layer) not in PRODUCERS or not padded(layer) or id(ins[0]) not in plan.views:
            continue
        group, _ = plan.views[id(ins[0])]
        root = plan.groups.find(group)
        removed = plan.removed.get(root)
        if not removed:
            continue
        const = plan.consts[id(ins[0])]
        if not any(const[c] != 0 for c in removed) and not any(
                const[c] != 0 for c in carriers.get(root, ())):
            continue
        usable = [c for c in carriers.get(root, ()) if const[c] != 0]
        if usable:
            plan.carrier[id(layer)] = usable[0]
            continue
        channel = max(removed, key=lambda c: (abs(const[c]), -c))
        removed.discard(channel)
        carriers.setdefault(root, []).append(channel)
        plan.carrier[id(layer)] = channel
