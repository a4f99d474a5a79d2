"""Model surgery: wrap a Keras model in masked layers, read and write masks, strip them.

Masks are addressed by *mask keys* ``"<layer>/<weight>"``, e.g. ``"fc1/kernel"`` or,
for a layer inside a nested model, ``"encoder/fc1/kernel"``. A mask is a float32
``np.ndarray`` of the weight's shape holding only 0.0 (pruned) and 1.0 (alive); the
layers store it as a ``uint8`` variable (see ``tf_lottery.layers``).
"""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile
import zlib
from collections.abc import Iterator, Mapping

import keras
import numpy as np

from tf_lottery import unmasked
from tf_lottery.layers import MaskedLayer, is_masked, masked_class_for
from tf_lottery.files import atomic_write_bytes
from tf_lottery.masked_wrapper import MaskedWrapper

__all__ = [
    "wrap",
    "fold_masks",
    "masked_layers",
    "mask_keys",
    "get_masks",
    "set_masks",
    "get_prunable_weights",
    "set_prunable_weights",
    "save_masks",
    "load_masks",
    "sparsity_report",
    "LayerSparsity",
    "SparsityReport",
]


def _is_graph_model(model) -> bool:
    """Sequential, Functional, or a subclass of Functional that keeps Functional's
    ``call`` (keras-hub's backbones): a graph of layers that can be re-wired. The copy
    ``wrap``/``strip`` return is then a plain Functional model with the same graph."""
    if isinstance(model, keras.Sequential):
        return True
    # Keras's Functional class has no public name; find it in the model's classes.
    functional = next((cls for cls in type(model).__mro__ if cls.__name__ == "Functional"
                       and cls.__module__.startswith("keras.")), None)
    return functional is not None and type(model).call is functional.call


def _check_model(model, fn: str) -> None:
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a keras.Model; received {type(model).__name__}: {model!r}. "
            f"Pass a Sequential or Functional keras.Model to tf_lottery.{fn}."
        )
    if not _is_graph_model(model):
        raise ValueError(
            f"tf_lottery.{fn} cannot rewrite the subclassed model {type(model).__name__!r}: "
            "its call() is Python code that cannot be re-wired to new layers. Build the "
            "model from tf_lottery's masked layers directly (e.g. "
            "tf_lottery.layers.MaskedDense instead of keras.layers.Dense), or express "
            "it as a Functional or Sequential model."
        )
    if not model.built:
        raise ValueError(
            f"`model` {model.name!r} is not built, so its weights do not exist yet. "
            "Give the model an input shape (keras.Input) or call it on a batch first."
        )


def _walk(model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    seen = set()
    for layer in model.layers:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        name = prefix + layer.name
        if isinstance(layer, keras.Model):
            yield from _walk(layer, name + "/")
        else:
            yield name, layer


def masked_layers(model) -> list[tuple[str, MaskedLayer]]:
    """``[(qualified layer name, masked layer), ...]`` in the model's layer order.

    Nested models are searched; a layer shared by several call sites appears once.
    The qualified name joins nested model names with ``/``.
    """
    return [(name, layer) for name, layer in _walk(model) if is_masked(layer)]


def mask_keys(model) -> list[str]:
    """The mask keys ``"<layer>/<weight>"`` of ``model``, in layer order."""
    return [
        f"{name}/{weight}" for name, layer in masked_layers(model)
        for weight in layer.prunable_weights
    ]


def _mask_variables(model) -> dict:
    return {
        f"{name}/{weight}": (layer.dense_weight(weight), mask)
        for name, layer in masked_layers(model)
        for weight, mask in layer.weight_masks.items()
    }


def _require_masked(model, fn: str) -> dict:
    variables = _mask_variables(model)
    if not variables:
        raise ValueError(
            f"`model` {model.name!r} has no masked layers, so tf_lottery.{fn} has nothing "
            "to work on. Call tf_lottery.wrap(model) first and use the model it returns."
        )
    return variables


def _selector(model, include, exclude):
    candidates = [name for name, layer in _walk(model) if unmasked.candidate_weights(layer)]
    known = set(candidates)
    known.update(name.rsplit("/", 1)[-1] for name in candidates)

    def check(arg, names):
        if names is None:
            return None
        if isinstance(names, str):
            names = [names]
        names = list(names)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f"`{arg}` names layers that are not prunable layers of {model.name!r}: "
                f"{unknown}. Prunable layers: {candidates}."
            )
        return set(names)

    include = check("include", include)
    exclude = check("exclude", exclude) or set()

    def selected(qualified: str) -> bool:
        short = qualified.rsplit("/", 1)[-1]
        if include is not None and not ({qualified, short} & include):
            return False
        return not ({qualified, short} & exclude)

    return selected


def _rebuild(model, make_layer):
    """clone_model with ``make_layer(old) -> new``; returns (new model, [(old, new)])."""
    pairs = []

    def clone(layer):
        new = make_layer(layer)
        pairs.append((layer, new))
        return new

    new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    return new_model, pairs


def wrap(model, *, include=None, exclude=None):
    """Returns a copy of ``model`` whose prunable layers are masked, with all-ones masks.

    The new model has the same architecture, layer names and weights, so its outputs
    equal the original's; ``model`` itself is never changed. Every layer whose class is
    in ``tf_lottery.layers.MASKED_LAYERS`` (Dense, EinsumDense, Conv1D/2D/3D,
    Conv1D/2DTranspose, DepthwiseConv2D, SeparableConv2D, Embedding) becomes its masked
    twin; every other layer with weight matrices (MultiHeadAttention, LSTM/GRU/SimpleRNN,
    Bidirectional, TimeDistributed, custom layers) is wrapped in a
    ``tf_lottery.masked_wrapper.MaskedWrapper`` (keys like ``"mha/query/kernel"``); the
    rest (BatchNormalization, pooling, ...) is copied. Multiple inputs, residual
    connections, shared layers (masked once, shared again), nested models and masked
    layers (they keep their masks) are supported.

    A layer that cannot be rebuilt from its config with the same weights stays dense,
    shared as the same object by ``model`` and the copy, and one
    ``tf_lottery.unmasked.UnmaskedWeightsWarning`` names its weights, their shapes and
    their share of the model's weights.

    Args:
        model: a built Sequential or Functional ``keras.Model``, or a subclass of
            Functional that keeps its ``call`` (keras-hub's backbones, e.g.
            ``keras_hub.models.BertBackbone``; the copy is then a plain Functional
            model with the same graph, inputs and outputs).
        include: optional layer names (plain or qualified, ``"block/conv1"``); only these
            are masked.
        exclude: optional layer names that stay unmasked (e.g. the input embedding).

    Returns:
        A new, uncompiled ``keras.Model``.

    Raises:
        ValueError: ``model`` is subclassed, not built, or not a keras.Model;
            ``include``/``exclude`` name a layer that is not prunable; or ``model`` has
            nothing to mask (no weight with two or more dimensions, or only in layers
            that cannot be rebuilt).
    """
    _check_model(model, "wrap")
    selected = _selector(model, include, exclude)
    plan, left_out, unmaskable, found = unmasked.plan_wrap(_walk(model), selected)
    if not (plan or found or left_out):
        raise ValueError(unmasked.nothing_to_mask(model, list(unmaskable.values())))

    def make(layer):
        target = plan.get(id(layer))
        if isinstance(target, MaskedWrapper):
            return target
        if target is not None:
            return target.from_config(layer.get_config())
        if id(layer) in unmaskable:
            return layer  # shared: it cannot be rebuilt
        if isinstance(layer, MaskedWrapper):
            return layer.copy()
        try:
            return type(layer).from_config(layer.get_config())
        except Exception as err:  # noqa: BLE001
            if id(layer) not in left_out:
                raise
            unmasked.mark_unmaskable(layer, f"it cannot be rebuilt from its config ({err})")
            return layer  # left out by the user and not rebuildable: shared

    new_model, pairs = _rebuild(model, make)
    for old, new in pairs:
        if id(old) in left_out:
            unmasked.mark_left_out(new)
        if new is old or isinstance(new, MaskedWrapper) or not isinstance(old, keras.Layer):
            continue  # shared; weights copied already; an op (Embedding(mask_zero)'s)
        masks = {id(m) for m in getattr(new, "weight_masks", {}).values()}
        if is_masked(old):
            masks = set()
        targets = [w for w in new.weights if id(w) not in masks]
        for target, source in zip(targets, old.weights, strict=True):
            target.assign(source)
    dense = unmasked.dense_weights([(n, l_) for n, l_, _ in unmaskable.values()],
                                   skip_left_out=False)
    unmasked.warn_dense(
        model, dense, "wrap",
        "Give such a layer a get_config() returning every __init__ argument, or "
        "exclude=[its name] to keep it dense on purpose.",
    )
    return new_model


def fold_masks(model):
    """Returns a plain Keras copy of ``model`` with each mask folded into its weight
    (what ``tf_lottery.strip`` does without ``shrink``).

    Every masked layer becomes its Keras base class (``MaskedDense`` -> ``Dense``; a
    ``MaskedWrapper`` -> a copy of the layer it wraps) whose masked weights hold
    ``weight * mask``, so pruned entries are exactly 0.0 and the outputs equal the
    masked model's. ``model`` is not changed (layers that ``wrap`` could not rebuild are
    shared, as in the masked model).

    Raises:
        ValueError: ``model`` is subclassed, not built, or not a keras.Model.
    """
    _check_model(model, "strip")

    def make(layer):
        if isinstance(layer, MaskedWrapper):
            return layer.stripped()
        if unmasked.unmaskable_reason(layer) is not None:
            return layer
        cls = layer.masked_base if is_masked(layer) else type(layer)
        return cls.from_config(layer.get_config())

    new_model, pairs = _rebuild(model, make)
    for old, new in pairs:
        if new is old or isinstance(old, MaskedWrapper) or not isinstance(old, keras.Layer):
            continue  # shared; folded by MaskedWrapper.stripped; an op
        folded = {}
        if is_masked(old):
            folded = {
                id(old.dense_weight(name)): mask for name, mask in old.weight_masks.items()
            }
        masks = {id(m) for m in folded.values()}
        sources = [w for w in old.weights if id(w) not in masks]
        for target, source in zip(new.weights, sources, strict=True):
            value = keras.ops.convert_to_numpy(source)
            if id(source) in folded:
                value = value * keras.ops.convert_to_numpy(folded[id(source)])
            target.assign(value)
    return new_model


def get_masks(model) -> dict[str, np.ndarray]:
    """``{mask key: mask}`` of every masked weight; float32 arrays of 0.0 and 1.0.

    Raises:
        ValueError: the model has no masked layers (wrap it first).
    """
    variables = _require_masked(model, "get_masks")
    return {
        key: keras.ops.convert_to_numpy(mask).astype(np.float32)
        for key, (_, mask) in variables.items()
    }


def get_prunable_weights(model) -> dict[str, np.ndarray]:
    """``{mask key: dense weight}``: the values under the masks, float32, not multiplied.

    Use it to keep initial or rewind weights for the ``reference_weights`` of
    ``tf_lottery.prune`` or for analysis.

    Raises:
        ValueError: the model has no masked layers (wrap it first).
    """
    variables = _require_masked(model, "get_prunable_weights")
    return {
        key: keras.ops.convert_to_numpy(weight).astype(np.float32)
        for key, (weight, _) in variables.items()
    }


def _check_arrays(model, arrays: Mapping, arg: str, fn: str, binary: bool) -> dict:
    variables = _require_masked(model, fn)
    if not isinstance(arrays, Mapping):
        raise ValueError(
            f"`{arg}` must be a dict of mask key -> array; received "
            f"{type(arrays).__name__}. Get one with tf_lottery.get_masks(model)."
        )
    unknown = sorted(set(arrays) - set(variables))
    if unknown:
        raise ValueError(
            f"`{arg}` has keys that are not masked weights of {model.name!r}: {unknown}. "
            f"Known keys: {list(variables)}."
        )
    checked = {}
    for key, value in arrays.items():
        value = np.asarray(value)
        shape = tuple(variables[key][1].shape)
        if value.shape != shape:
            raise ValueError(
                f"`{arg}[{key!r}]` has shape {value.shape}, but the weight it masks has "
                f"shape {shape}. Pass an array of shape {shape}."
            )
        if binary:
            bad = ~np.isin(value, (0, 1))
            if bad.any():
                raise ValueError(
                    f"`{arg}[{key!r}]` must hold only 0 and 1; found "
                    f"{np.unique(value[bad])[:5].tolist()}. Binarize it, e.g. "
                    "(scores > threshold).astype('float32')."
                )
        elif not np.isfinite(value).all():
            raise ValueError(f"`{arg}[{key!r}]` holds NaN or infinite values.")
        checked[key] = value.astype(np.float32)
    return checked


def set_masks(model, masks: Mapping[str, np.ndarray]) -> None:
    """Assigns ``masks`` (``{mask key: 0/1 array}``, any subset of the keys) in place.

    Only the masks change; the dense weights under them are untouched, so setting an
    all-ones mask back revives the hidden values. All masks are validated before any is
    assigned.

    Raises:
        ValueError: unknown keys, wrong shapes, values other than 0 and 1, or a model
            without masked layers.
    """
    checked = _check_arrays(model, masks, "masks", "set_masks", binary=True)
    variables = _mask_variables(model)
    for key, value in checked.items():
        variables[key][1].assign(value.astype(variables[key][1].dtype))


def set_prunable_weights(model, weights: Mapping[str, np.ndarray]) -> None:
    """Assigns dense weights under the masks, ``{mask key: array}`` (any subset).

    Raises:
        ValueError: unknown keys, wrong shapes or non-finite values.
    """
    checked = _check_arrays(model, weights, "weights", "set_prunable_weights", binary=False)
    variables = _mask_variables(model)
    for key, value in checked.items():
        variables[key][0].assign(value)


def save_masks(path: str | os.PathLike, masks: Mapping[str, np.ndarray]) -> None:
    """Writes masks to a compressed ``.npz`` file (as uint8), atomically.

    Keys may contain ``/``. The file is written to a temporary name and renamed, so a
    crash never leaves a half-written mask file.

    Raises:
        ValueError: a mask holds values other than 0 and 1, or ``path`` does not end in
            ``.npz``.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"`path` must end in '.npz'; received {path!r}.")
    arrays = {}
    for key, value in masks.items():
        value = np.asarray(value)
        if not np.isin(value, (0, 1)).all():
            raise ValueError(f"`masks[{key!r}]` must hold only 0 and 1.")
        arrays[key] = value.astype(np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_masks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads masks written by ``save_masks``: ``{mask key: float32 0/1 array}``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable ``.npz`` (e.g. truncated or corrupt), or
            holds values other than 0 and 1.
    """
    path = os.fspath(path)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive (a single .npy array?)")
        with data:
            masks = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError) as err:
        # zlib.error: a corrupt compressed member; KeyError: a damaged zip directory.
        raise ValueError(f"Cannot read masks from {path!r}: {err}") from err
    for key, value in masks.items():
        if not np.isin(value, (0, 1)).all():
            raise ValueError(
                f"Cannot read masks from {path!r}: array {key!r} holds values other than "
                "0 and 1, so it is not a mask."
            )
    return {key: value.astype(np.float32) for key, value in masks.items()}


@dataclasses.dataclass(frozen=True)
class LayerSparsity:
    """Counts for one prunable weight: ``weights`` total, ``alive`` (nonzero mask)."""

    weights: int
    alive: int

    @property
    def sparsity(self) -> float:
        """Fraction of weights pruned, in [0, 1]."""
        return 1.0 - self.alive / self.weights if self.weights else 0.0


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Per-weight and total sparsity of a model (sparsity is a fraction, not percent).

    ``layers`` holds the masked weights (and, in a plain model, the weights tf_lottery
    could mask); ``weights``, ``alive`` and ``sparsity`` count those only.
    ``unmasked`` maps each prunable weight that stays dense (``"<layer>/<weight>"``) to
    its number of entries; it is not part of the sparsity.
    """

    layers: dict[str, LayerSparsity]
    unmasked: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers.values())

    @property
    def alive(self) -> int:
        return sum(layer.alive for layer in self.layers.values())

    @property
    def sparsity(self) -> float:
        """Fraction of all prunable weights pruned, in [0, 1]."""
        return 1.0 - self.alive / self.weights if self.weights else 0.0

    def to_dict(self) -> dict:
        """JSON-ready: ``{"weights", "alive", "sparsity", "layers": {key: {...}},
        "unmasked": {key: size}}``."""
        return {
            "weights": self.weights,
            "alive": self.alive,
            "sparsity": self.sparsity,
            "layers": {
                key: {"weights": s.weights, "alive": s.alive, "sparsity": s.sparsity}
                for key, s in self.layers.items()
            },
            "unmasked": dict(self.unmasked),
        }

    def __str__(self) -> str:
        width = max([len(k) for k in [*self.layers, *self.unmasked]] + [5])
        rows = [f"{'layer':<{width}}  {'weights':>10}  {'alive':>10}  sparsity"]
        for key, s in list(self.layers.items()) + [("total", self)]:
            rows.append(f"{key:<{width}}  {s.weights:>10,}  {s.alive:>10,}  {s.sparsity:8.4f}")
        if self.unmasked:
            rows.append(f"unmasked (dense, not in the total above): "
                        f"{sum(self.unmasked.values()):,} weights")
            rows.extend(f"{key:<{width}}  {size:>10,}  {'dense':>10}"
                        for key, size in self.unmasked.items())
        return "\n".join(rows)


def sparsity_report(model) -> SparsityReport:
    """Counts the pruned weights of ``model``.

    For masked layers the mask decides what is alive. Unmasked layers with a masked
    twin (e.g. a Dense left out by ``exclude``) count their nonzero entries, as do, in
    a plain model (e.g. a stripped one, no masks at all), the prunable weights of every
    layer tf_lottery can mask. The report's sparsity is over these weights only; the
    prunable weights that stay dense in a masked model (layers left out of ``wrap`` or
    that it cannot rebuild) are listed in ``unmasked`` instead. Keys are mask keys
    (``"fc1/kernel"``, ``"mha/query/kernel"``).

    Raises:
        ValueError: the model has neither masked nor prunable layers.
    """
    layers, dense = {}, {}
    walked = list(_walk(model))
    has_masks = any(is_masked(layer) for _, layer in walked)
    for name, layer in walked:
        if is_masked(layer):
            for weight, mask in layer.weight_masks.items():
                value = keras.ops.convert_to_numpy(mask)
                layers[f"{name}/{weight}"] = LayerSparsity(value.size, int(np.count_nonzero(value)))
            continue
        weights = unmasked.candidate_weights(layer)
        if masked_class_for(layer) is None and (
                has_masks or unmasked.unmaskable_reason(layer) is not None):
            dense.update({f"{name}/{w}": int(np.prod(v.shape)) for w, v in weights.items()})
            continue
        for weight, variable in weights.items():
            value = keras.ops.convert_to_numpy(variable)
            layers[f"{name}/{weight}"] = LayerSparsity(value.size, int(np.count_nonzero(value)))
    if not layers:
        raise ValueError(
            f"`model` {getattr(model, 'name', model)!r} has no prunable layers (Dense, "
            "Conv, Embedding, ...), so there is no sparsity to report."
            + (f" Weights that stay dense: {dense}." if dense else "")
        )
    return SparsityReport(layers, dense)
