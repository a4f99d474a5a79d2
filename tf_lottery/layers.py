"""Masked Keras layers: each one *is* the Keras layer it masks, plus a binary mask.

A masked layer keeps its dense, trainable weight (``kernel``, ``embeddings``, ...) and,
next to it, a non-trainable ``uint8`` variable of the same shape holding the mask
(``int32`` under multi-worker and TPU strategies, see ``tf_lottery.mask_dtype``)
(``kernel_mask``, ...; values 0 and 1). Inside the layer's ``call`` the weight reads as
``weight * cast(mask)`` in the compute dtype, so:

* the forward pass uses only the surviving weights;
* the gradient reaching a masked entry is exactly zero (``d(w*m)/dw = m``), so no
  optimizer state (momentum, Adam moments) can revive a pruned weight, and weight decay
  only ever shrinks the hidden dense value, never the effective weight;
* the mask costs one byte per weight: a quarter of a float32 mask's memory and of the
  memory traffic of the ``weight * mask`` pass, which for small, memory-bound networks
  (LeNet-300-100 at batch 60) is most of the masking overhead (``tools/bench_masking.py``);
* outside ``call`` the attribute is the plain Keras variable, so every Keras feature that
  reads or assigns it (saving, ``set_weights``, LoRA, ...) keeps working, and rewinding or
  analysis can still read the dense value under a mask.

Masks are ordinary layer variables: they are saved in ``.keras`` and ``.weights.h5``
files, and, because every class here is registered with
``keras.saving.register_keras_serializable(package="tf_lottery")``, a saved model loads
back with ``keras.saving.load_model(path)`` and no ``custom_objects`` once
``tf_lottery`` is imported. Biases and other 1-D weights are never masked.

Layers without a masked twin here (MultiHeadAttention, recurrent layers, Bidirectional,
custom layers, ...) are masked by ``tf_lottery.masked_wrapper.MaskedWrapper``, which
offers the same interface (``prunable_weights``, ``weight_masks``, ``dense_weight``,
``masked_base``); ``is_masked`` recognises both.

Mask semantics follow Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019:
the network computes ``f(x; m * theta)``.
"""

from __future__ import annotations

import inspect
import threading

import keras
from keras import ops

from tf_lottery.mask_dtype import mask_dtype
from tf_lottery.masked_wrapper import MaskedWrapper

__all__ = [
    "MaskedLayer",
    "MaskedDense",
    "MaskedEinsumDense",
    "MaskedConv1D",
    "MaskedConv2D",
    "MaskedConv3D",
    "MaskedConv1DTranspose",
    "MaskedConv2DTranspose",
    "MaskedDepthwiseConv2D",
    "MaskedSeparableConv2D",
    "MaskedEmbedding",
    "MaskedWrapper",
    "MASKED_LAYERS",
    "masked_class_for",
    "is_masked",
]

# Ids of the masked layers whose ``call`` is running in this thread. Thread-local
# because tf.distribute.MirroredStrategy runs one replica per thread.
_IN_CALL = threading.local()


def _calls_in_progress() -> set:
    ids = getattr(_IN_CALL, "ids", None)
    if ids is None:
        ids = _IN_CALL.ids = set()
    return ids


class MaskedLayer:
    """Mixin for masked layers; not used alone (see ``MaskedDense`` and friends).

    Class attribute ``prunable_weights`` names the weights this layer masks; for each
    name ``w`` the layer owns a non-trainable variable ``w_mask`` of ``w``'s shape, with
    values in ``{0, 1}`` and dtype ``uint8`` (``int32`` under multi-worker and TPU
    strategies: ``tf_lottery.mask_dtype``), created in ``build`` as all ones. Assigning
    a float 0/1 array to it (``layer.kernel_mask.assign(m)``) casts it.
    """

    prunable_weights: tuple[str, ...] = ("kernel",)

    def build(self, input_shape):
        super().build(input_shape)
        for name in self.prunable_weights:
            weight = getattr(self, name)
            setattr(
                self,
                f"{name}_mask",
                self.add_weight(
                    name=f"{name}_mask",
                    shape=tuple(weight.shape),
                    initializer="ones",
                    trainable=False,
                    dtype=mask_dtype(),
                ),
            )

    def call(self, inputs):
        return self._call_masked(inputs)

    def _call_masked(self, *args, **kwargs):
        in_call = _calls_in_progress()
        key = id(self)
        outer = key in in_call
        in_call.add(key)
        try:
            return super().call(*args, **kwargs)
        finally:
            if not outer:
                in_call.discard(key)

    def _masked_value(self, name, value):
        if id(self) not in _calls_in_progress():
            return value
        value = ops.convert_to_tensor(value)
        mask = ops.cast(getattr(self, f"{name}_mask"), value.dtype)
        return ops.multiply(value, mask)

    @property
    def weight_masks(self) -> dict:
        """``{weight name: mask variable}`` for this layer, e.g. ``{"kernel": ...}``."""
        return {name: getattr(self, f"{name}_mask") for name in self.prunable_weights}

    def dense_weight(self, name: str = "kernel"):
        """The trainable variable under the mask named ``name`` (never multiplied)."""
        return getattr(self, name)

    # Keras layers that override `save_own_variables` (Dense, Conv, Embedding,
    # EinsumDense) store a fixed list of variables; the masks are appended after them
    # under the next integer keys. Layers using the default store them already.
    def _masks_missing_from(self, store_keys_and_values) -> list:
        saved = {id(v) for v in store_keys_and_values.values()}
        return [m for m in self.weight_masks.values() if id(m) not in saved]

    def save_own_variables(self, store):
        if not self.built:
            return
        own = {}
        super().save_own_variables(own)
        for mask in self._masks_missing_from(own):
            own[str(len(own))] = mask
        for key, value in own.items():
            store[key] = value

    def load_own_variables(self, store):
        if not self.built:
            return super().load_own_variables(store)
        own = {}
        super().save_own_variables(own)
        missing = self._masks_missing_from(own)
        super().load_own_variables(store)
        for offset, mask in enumerate(missing):
            mask.assign(store[str(len(own) + offset)])


def _masked_property(base, name):
    inherited = inspect.getattr_static(base, name, None)
    if isinstance(inherited, property):

        def getter(self):
            return self._masked_value(name, inherited.fget(self))

        setter = inherited.fset
    else:
        backing = f"_tfl_{name}"

        def getter(self):
            try:
                value = self.__dict__[backing]
            except KeyError:
                raise AttributeError(name) from None
            return self._masked_value(name, value)

        def setter(self, value):
            setattr(self, backing, value)

    return property(getter, setter, doc=f"``{name}``, read as ``{name} * {name}_mask`` inside ``call``.")


def _finish_masked_class(cls):
    """Adds the masking properties and ``call`` with the base class's arguments; registers."""
    base = cls.__mro__[2]
    for name in cls.prunable_weights:
        setattr(cls, name, _masked_property(base, name))

    if "training" in inspect.signature(base.call).parameters:
        # Keras passes `training` only to a `call` that names it.
        def call(self, inputs, training=None):
            return self._call_masked(inputs, training=training)

        cls.call = call
    cls.masked_base = base
    return keras.saving.register_keras_serializable(package="tf_lottery")(cls)


def _doc(base_name: str, weights: str) -> str:
    return (
        f"``keras.layers.{base_name}`` with a binary mask on {weights}.\n\n"
        f"Takes exactly the arguments of ``keras.layers.{base_name}``; inputs, outputs,\n"
        "shapes and dtypes are the base layer's. After ``build`` the layer owns one\n"
        "non-trainable ``<weight>_mask`` variable (uint8, values 0/1) per\n"
        "masked weight, initially all ones; ``call`` computes with ``weight * mask``.\n"
        "Use ``tf_lottery.set_masks`` to change masks and ``tf_lottery.strip`` to fold\n"
        f"them into a plain ``keras.layers.{base_name}``."
    )


@_finish_masked_class
class MaskedDense(MaskedLayer, keras.layers.Dense):
    __doc__ = _doc("Dense", "``kernel`` (shape ``(input_dim, units)``)")


@_finish_masked_class
class MaskedEinsumDense(MaskedLayer, keras.layers.EinsumDense):
    __doc__ = _doc("EinsumDense", "``kernel``")


@_finish_masked_class
class MaskedConv1D(MaskedLayer, keras.layers.Conv1D):
    __doc__ = _doc("Conv1D", "``kernel`` (shape ``(k, in, filters)``)")


@_finish_masked_class
class MaskedConv2D(MaskedLayer, keras.layers.Conv2D):
    __doc__ = _doc("Conv2D", "``kernel`` (shape ``(kh, kw, in, filters)``)")


@_finish_masked_class
class MaskedConv3D(MaskedLayer, keras.layers.Conv3D):
    __doc__ = _doc("Conv3D", "``kernel`` (shape ``(kd, kh, kw, in, filters)``)")


@_finish_masked_class
class MaskedConv1DTranspose(MaskedLayer, keras.layers.Conv1DTranspose):
    __doc__ = _doc("Conv1DTranspose", "``kernel`` (shape ``(k, filters, in)``)")


@_finish_masked_class
class MaskedConv2DTranspose(MaskedLayer, keras.layers.Conv2DTranspose):
    __doc__ = _doc("Conv2DTranspose", "``kernel`` (shape ``(kh, kw, filters, in)``)")


@_finish_masked_class
class MaskedDepthwiseConv2D(MaskedLayer, keras.layers.DepthwiseConv2D):
    __doc__ = _doc("DepthwiseConv2D", "``kernel`` (shape ``(kh, kw, in, multiplier)``)")


@_finish_masked_class
class MaskedSeparableConv2D(MaskedLayer, keras.layers.SeparableConv2D):
    __doc__ = _doc(
        "SeparableConv2D", "both ``depthwise_kernel`` and ``pointwise_kernel``"
    )
    prunable_weights = ("depthwise_kernel", "pointwise_kernel")


@_finish_masked_class
class MaskedEmbedding(MaskedLayer, keras.layers.Embedding):
    __doc__ = _doc("Embedding", "``embeddings`` (shape ``(input_dim, output_dim)``)")
    prunable_weights = ("embeddings",)


#: Plain Keras layer class -> its masked twin. Order matters: subclasses first.
MASKED_LAYERS: dict[type, type] = {
    keras.layers.SeparableConv2D: MaskedSeparableConv2D,
    keras.layers.DepthwiseConv2D: MaskedDepthwiseConv2D,
    keras.layers.Conv1DTranspose: MaskedConv1DTranspose,
    keras.layers.Conv2DTranspose: MaskedConv2DTranspose,
    keras.layers.Conv1D: MaskedConv1D,
    keras.layers.Conv2D: MaskedConv2D,
    keras.layers.Conv3D: MaskedConv3D,
    keras.layers.EinsumDense: MaskedEinsumDense,
    keras.layers.Dense: MaskedDense,
    keras.layers.Embedding: MaskedEmbedding,
}


def is_masked(layer) -> bool:
    """True if ``layer`` is one of tf_lottery's masked layers (a masked twin of a Keras
    layer, or a ``MaskedWrapper`` around any layer)."""
    return isinstance(layer, (MaskedLayer, MaskedWrapper))


def masked_class_for(layer):
    """The masked twin class for a plain Keras ``layer``, or ``None`` if it has none.

    Only exact classes are matched: a user subclass of ``keras.layers.Dense`` may change
    ``call`` in ways a masked twin cannot know about, so it is left unmasked.
    """
    if is_masked(layer):
        return None
    return MASKED_LAYERS.get(type(layer))
