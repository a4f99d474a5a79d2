"""The dtype of mask variables, chosen for the ``tf.distribute`` strategy in scope.

Masks hold 0 and 1 only, so their dtype never changes a result: a masked layer computes
``weight * cast(mask, weight.dtype)``. On one machine (no strategy, ``OneDeviceStrategy``
or ``MirroredStrategy``) masks are ``uint8``, one byte per weight. Strategies that
create variables through collectives (``MultiWorkerMirroredStrategy`` broadcasts each
variable's initial value with ``CollectiveBcastSend``, which accepts bool, half, float,
double, int32 and int64 but not ``uint8``) and ``TPUStrategy`` get ``int32`` masks.

A model built under one strategy and loaded or rebuilt under another keeps working:
masks are assigned with a cast (``tf_lottery.set_masks``), saved files store values
only, and every reader converts masks to the weight's dtype.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["mask_dtype", "SINGLE_MACHINE_STRATEGIES"]

#: Strategy classes whose masks are ``uint8`` (their variables never pass a collective).
SINGLE_MACHINE_STRATEGIES = ("_DefaultDistributionStrategy", "OneDeviceStrategy",
                             "MirroredStrategy")


def mask_dtype() -> str:
    """``"uint8"`` under the strategies of ``SINGLE_MACHINE_STRATEGIES`` (the current one,
    ``tf.distribute.get_strategy()``), ``"int32"`` under any other (multi-worker, TPU,
    parameter server), whose collectives reject ``uint8`` variables."""
    name = type(tf.distribute.get_strategy()).__name__
    return "uint8" if name in SINGLE_MACHINE_STRATEGIES else "int32"
