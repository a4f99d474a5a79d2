"""``MaskedWrapper``: a binary mask on the weights of any Keras layer, composites included.

``tf_lottery.layers`` has a masked twin for each simple layer (Dense, Conv, Embedding,
...). Every other layer with weight matrices (``MultiHeadAttention``, ``LSTM``/``GRU``/
``SimpleRNN``, ``Bidirectional``, ``TimeDistributed``, a custom layer holding sublayers
or its own 2-D variables) is masked by wrapping it: ``MaskedWrapper(layer)`` owns one
``uint8`` mask variable (see ``tf_lottery.mask_dtype``) per prunable weight of ``layer`` and runs ``layer`` inside a
``keras.StatelessScope`` in which each prunable variable reads as ``weight * mask``.
As with the masked twins, the network computes ``f(x; m * theta)`` (Frankle & Carbin,
"The Lottery Ticket Hypothesis", ICLR 2019), the gradient reaching a pruned entry is
exactly zero (``d(w*m)/dw = m``), and outside ``call`` every variable is the plain
Keras variable.

**Prunable weights** of a layer: its trainable variables (trainable when created, so a
frozen layer still has them) with two or more dimensions, except biases (a variable
named ``bias`` or ending in ``bias``: MultiHeadAttention's ``(heads, head_dim)`` biases
stay dense like every bias). A layer can choose instead: a class or instance attribute
``tf_lottery_prunable`` (a tuple of weight names as defined next; ``()`` for none)
names exactly the prunable weights of that layer and its sublayers; its other weights
are dense by design and never reported as unmasked.

**Weight names** (``prunable_weights``) are paths relative to the wrapped layer: a
variable the layer owns is named by its variable name (``"kernel"``); one owned by a
sublayer is prefixed by the sublayer names joined with ``/``: ``"query/kernel"`` for
MultiHeadAttention, ``"lstm_cell/recurrent_kernel"`` for LSTM,
``"forward_lstm/lstm_cell/kernel"`` for Bidirectional(LSTM), ``"dense/kernel"`` for
TimeDistributed(Dense); a layer's own weights come first, then its sublayers' in the
order Keras tracks them. Mask keys are ``"<qualified layer name>/<weight name>"``, e.g.
``"mha/query/kernel"``.

State the wrapped layer updates during ``call`` (dropout seed generators, BatchNorm
moving statistics, states of stateful RNNs) is written back after the call, so dropout
draws a new pattern at every step. Losses added in ``call`` (activity regularizers) are
kept.
"""

from __future__ import annotations

import keras
from keras import ops

from tf_lottery.mask_dtype import mask_dtype

__all__ = ["MaskedWrapper", "prunable_variables"]


def _is_bias(name: str) -> bool:
    return name.endswith("bias")


def _sublayers(layer) -> list:
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _own_trainable(layer) -> list:
    # Variables created trainable stay in this list when the layer is frozen.
    return list(getattr(layer, "_trainable_variables", []))


def _collect(layer, prefix: str, out: dict) -> None:
    declared = getattr(layer, "tf_lottery_prunable", None)
    if declared is not None:
        everything = _all_trainable(layer)
        for name in declared:
            if name not in everything:
                raise ValueError(
                    f"`tf_lottery_prunable` of layer {layer.name!r} names {name!r}, which is "
                    f"not one of its trainable weights: {sorted(everything)}."
                )
            _add(out, prefix + name, everything[name])
        return
    for variable in _own_trainable(layer):
        if len(variable.shape) >= 2 and not _is_bias(variable.name):
            _add(out, prefix + variable.name, variable)
    for sub in _sublayers(layer):
        _collect(sub, f"{prefix}{sub.name}/", out)


def _all_trainable(layer, prefix: str = "", out=None) -> dict:
    out = {} if out is None else out
    for variable in _own_trainable(layer):
        _add(out, prefix + variable.name, variable)
    for sub in _sublayers(layer):
        _all_trainable(sub, f"{prefix}{sub.name}/", out)
    return out


def _add(out: dict, path: str, variable) -> None:
    if any(v is variable for v in out.values()):
        return  # a sublayer shared inside the layer: its first path names it
    if path in out:
        raise ValueError(
            f"two different weights have the same path {path!r} (sublayers with the same "
            "name), so masks could not be told apart"
        )
    out[path] = variable


def prunable_variables(layer) -> dict:
    """``{weight name: variable}`` of the prunable weights of a built ``layer``.

    See the module docstring for which weights are prunable and how they are named.
    Empty for a layer without weight matrices (BatchNormalization, pooling, ...).

    Raises:
        ValueError: two different variables would get the same name (sublayers with
            equal names), or ``tf_lottery_prunable`` names an unknown weight.
    """
    out = {}
    _collect(layer, "", out)
    return out


class _RecordingScope(keras.StatelessScope):
    """A StatelessScope that remembers which variables were assigned inside it (seed
    states, moving statistics, RNN states: tracked by the layer or not)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.updated = {}

    def add_update(self, update):
        super().add_update(update)
        self.updated[id(update[0])] = update[0]


class _Refs:
    """Holds variables without Keras tracking them as the wrapper's own."""

    __slots__ = ("items",)

    def __init__(self, items):
        self.items = tuple(items)


@keras.saving.register_keras_serializable(package="tf_lottery")
class MaskedWrapper(keras.layers.Wrapper):
    """Any Keras layer with a binary mask on each of its prunable weights.

    ``MaskedWrapper(layer)`` computes what ``layer`` computes, with every prunable
    weight ``w`` (see the module docstring) read as ``w * mask`` inside ``call``. It
    takes the inner layer's name and dtype policy, and its ``call`` takes exactly the
    inner layer's arguments (``training`` and Keras masks are passed on as Keras passes
    them to the inner layer); inputs, outputs, shapes and dtypes are the inner layer's.

    ``tf_lottery.wrap`` uses it for every layer without a masked twin in
    ``tf_lottery.layers.MASKED_LAYERS``; ``tf_lottery.strip`` replaces it with a plain
    copy of the inner layer holding ``w * mask``.

    Args:
        layer: the ``keras.layers.Layer`` to mask; built (e.g. called once), or with a
            ``build(input_shape)`` taking a single shape.
        masked_weights: optional weight names to mask (default: all prunable weights);
            saved in the config so that a loaded layer masks the same weights.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Attributes:
        prunable_weights: tuple of weight names, set once built.
        weight_masks: ``{weight name: uint8 mask variable}``, all ones when built.
        masked_base: the inner layer's class.

    Raises:
        ValueError: ``layer`` is a ``keras.Model`` (its layers are masked one by one),
            ``masked_weights`` names a weight the layer does not have, or the layer
            has no prunable weights.
    """

    def __init__(self, layer, masked_weights=None, **kwargs):
        if isinstance(layer, keras.Model):
            raise ValueError(
                f"`layer` must not be a keras.Model; received the model {layer.name!r}. "
                "tf_lottery.wrap masks the layers of nested models one by one."
            )
        kwargs.setdefault("name", getattr(layer, "name", None))
        if isinstance(layer, keras.layers.Layer):
            kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self._requested = None if masked_weights is None else tuple(masked_weights)
        self.prunable_weights = ()
        self._dense = _Refs(())
        # The wrapper's `call` takes what the inner layer's takes: let Keras resolve
        # `training` and Keras masks for it exactly as for the inner layer.
        for attr in ("_call_signature", "call_signature_parameters",
                     "_call_has_training_arg", "_call_has_mask_arg", "_call_context_args",
                     "_call_has_context_arg", "_convert_input_args",
                     "_allow_non_tensor_positional_args"):
            if hasattr(layer, attr):
                object.__setattr__(self, attr, getattr(layer, attr))
        self.supports_masking = layer.supports_masking
        if layer.built:
            self._create_masks()
            self.built = True

    @property
    def masked_base(self):
        """The inner layer's class, e.g. ``keras.layers.MultiHeadAttention``."""
        return type(self.layer)

    def _create_masks(self) -> None:
        found = prunable_variables(self.layer)
        names = tuple(found) if self._requested is None else self._requested
        unknown = [n for n in names if n not in found]
        if unknown:
            raise ValueError(
                f"`masked_weights` names {unknown}, which are not prunable weights of "
                f"layer {self.layer.name!r}; its prunable weights are {list(found)}."
            )
        if not names:
            raise ValueError(
                f"Layer {self.layer.name!r} ({type(self.layer).__name__}) has no prunable "
                "weights (trainable weights with two or more dimensions that are not "
                "biases), so there is nothing to mask. Use it unwrapped."
            )
        self.prunable_weights = names
        self._dense = _Refs(found[n] for n in names)
        for i, (name, variable) in enumerate(zip(names, self._dense.items)):
            setattr(self, f"mask_{i}", self.add_weight(
                name=name.replace("/", ".") + "_mask",
                shape=tuple(variable.shape),
                initializer="ones",
                trainable=False,
                dtype=mask_dtype(),
            ))

    def build(self, input_shape=None):
        if not self.layer.built:
            try:
                self.layer.build(input_shape)
            except TypeError as err:
                raise ValueError(
                    f"MaskedWrapper cannot build layer {self.layer.name!r} from one input "
                    f"shape ({err}). Build (or call) the layer before wrapping it."
                ) from err
        self._create_masks()

    def get_build_config(self):
        return {"layer": self.layer.get_build_config()}

    def build_from_config(self, config):
        inner = (config or {}).get("layer")
        if not self.layer.built and inner:
            self.layer.build_from_config(inner)
        if not self.layer.built and not self.layer.weights:
            raise ValueError(
                f"Cannot rebuild the layer {self.layer.name!r} wrapped by MaskedWrapper: "
                f"its build config {inner!r} does not create its weights."
            )
        self._create_masks()
        self.built = True

    def get_config(self):
        config = super().get_config()
        config["masked_weights"] = list(self.prunable_weights) or (
            None if self._requested is None else list(self._requested))
        return config

    @property
    def weight_masks(self) -> dict:
        """``{weight name: mask variable}`` (uint8, the weight's shape, values 0/1)."""
        return {name: getattr(self, f"mask_{i}") for i, name in enumerate(self.prunable_weights)}

    def dense_weight(self, name: str):
        """The inner layer's trainable variable named ``name`` (never multiplied).

        Raises:
            KeyError: ``name`` is not in ``prunable_weights``.
        """
        try:
            return self._dense.items[self.prunable_weights.index(name)]
        except ValueError:
            raise KeyError(
                f"{name!r} is not a masked weight of {self.name!r}; masked weights: "
                f"{list(self.prunable_weights)}."
            ) from None

    def copy(self) -> "MaskedWrapper":
        """A new, built ``MaskedWrapper`` (same config) holding this one's weights and
        masks."""
        new = type(self).from_config(self.get_config())
        new.build_from_config(self.get_build_config())
        pairs = list(zip(new.layer.weights, self.layer.weights, strict=True))
        pairs += [(new.weight_masks[k], m) for k, m in self.weight_masks.items()]
        for target, source in pairs:
            target.assign(source)
        return new

    def stripped(self):
        """A plain, built copy of the inner layer, named like this wrapper, whose masked
        weights hold ``weight * mask`` (pruned entries exactly 0.0)."""
        inner = self.layer
        new = type(inner).from_config({**inner.get_config(), "name": self.name})
        new.build_from_config(inner.get_build_config())
        folded = {id(self.dense_weight(n)): m for n, m in self.weight_masks.items()}
        for target, source in zip(new.weights, inner.weights, strict=True):
            value = ops.convert_to_numpy(source)
            if id(source) in folded:
                value = value * ops.convert_to_numpy(folded[id(source)])
            target.assign(value)
        return new

    def call(self, *args, **kwargs):
        masked = self._dense.items
        masked_ids = {id(v) for v in masked}
        mapping = []
        for variable, mask in zip(masked, self.weight_masks.values()):
            value = variable.value  # reads through an enclosing StatelessScope
            mapping.append(
                (variable, ops.cast(ops.multiply(value, ops.cast(mask, value.dtype)),
                                    variable.dtype))
            )
        others = [v for v in self.layer.variables if id(v) not in masked_ids]
        # Unmasked variables are mapped to their own values so that they, too, read
        # through an enclosing scope (e.g. Keras's symbolic build) and updates are seen.
        mapping.extend((v, v) for v in others)
        with _RecordingScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = self.layer(*args, **kwargs)
        for variable in scope.updated.values():
            if id(variable) not in masked_ids:
                variable.assign(scope.get_current_value(variable))
        if scope.losses:
            self.add_loss(scope.losses)
        return outputs

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def compute_output_shape(self, *args, **kwargs):
        return self.layer.compute_output_shape(*args, **kwargs)

    def compute_mask(self, *args, **kwargs):
        return self.layer.compute_mask(*args, **kwargs)
