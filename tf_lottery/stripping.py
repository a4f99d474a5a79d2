"""From a masked model to a plain Keras model to deploy: ``tf_lottery.strip``.

``strip(model)`` folds every mask into its weight (``masking.fold_masks``);
``strip(model, shrink=True)`` also removes the pruned channels (``shrink.shrink_model``),
so a channel-pruned ticket becomes a smaller dense network.
"""

from __future__ import annotations

import numpy as np

from tf_lottery import masking
from tf_lottery.shrink import shrink_model

__all__ = ["strip"]


def strip(model, *, shrink: bool = False):
    """Returns a plain Keras copy of ``model`` with each mask folded into its weight.

    Every masked layer becomes its Keras base class (``MaskedDense`` -> ``Dense``; a
    ``MaskedWrapper`` -> a copy of the layer it wraps) whose masked weights hold
    ``weight * mask``, so pruned entries are exactly 0.0 and the outputs equal the
    masked model's. Use it before exporting or sharing a ticket. ``model`` is not
    changed (layers that ``wrap`` could not rebuild are shared, as in the masked model).

    With ``shrink=True``, removed channels are physically gone as well: Dense units and
    convolution filters whose kernel mask column is all zero are removed, with the
    next layer's inputs and the BatchNormalization entries between them
    (``tf_lottery.shrink.shrink_model``: same outputs, fewer parameters).

    Args:
        model: a built Sequential or Functional Keras model, masked or not.
        shrink: also remove pruned channels.

    Returns:
        A new ``keras.Model`` of plain Keras layers.

    Raises:
        ValueError: ``model`` is subclassed, not built, or not a keras.Model; ``shrink``
            is not a bool; with ``shrink``, a channel mask on an output layer or a
            shared layer.

    Warns:
        tf_lottery.shrink.ChannelsKeptWarning: with ``shrink``, pruned channels that must
            stay (they feed a layer the shrinker does not understand; named).
    """
    if not isinstance(shrink, (bool, np.bool_)):
        raise ValueError(f"`shrink` must be True or False; received {shrink!r}.")
    if shrink:
        return shrink_model(model)
    return masking.fold_masks(model)

