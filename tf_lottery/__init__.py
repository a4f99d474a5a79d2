"""tf_lottery: lottery tickets (Frankle & Carbin, ICLR 2019) for Keras 3 on TensorFlow."""

import os

_backend = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise ImportError(
        "tf_lottery needs the TensorFlow backend of Keras 3, but KERAS_BACKEND="
        f"{_backend!r}. Set KERAS_BACKEND=tensorflow (or unset it) before importing "
        "keras or tf_lottery."
    )

from tf_lottery.tf_startup import import_quietly  # noqa: E402

import_quietly()  # TensorFlow's C++ start-up lines are off (TF_CPP_MIN_LOG_LEVEL=0: on)
from tf_lottery import layers  # noqa: E402  (registers the masked layers with Keras)
from tf_lottery.layers import MaskedLayer, MaskedWrapper, is_masked  # noqa: E402
from tf_lottery.masking import (  # noqa: E402
    LayerSparsity,
    SparsityReport,
    get_masks,
    get_prunable_weights,
    load_masks,
    mask_keys,
    masked_layers,
    save_masks,
    set_masks,
    set_prunable_weights,
    sparsity_report,
    wrap,
)
from tf_lottery import callbacks, saliency  # noqa: E402
from tf_lottery.pruning import (  # noqa: E402
    AT_INIT_CRITERIA,
    CRITERIA,
    DATA_CRITERIA,
    SCOPES,
    SCORED_CRITERIA,
    prune,
    random_masks_like,
)
from tf_lottery.structure import StructureWarning, channel_masks  # noqa: E402
from tf_lottery.shrink import ChannelsKeptWarning  # noqa: E402
from tf_lottery.stripping import strip  # noqa: E402
from tf_lottery.unmasked import UnmaskedWeightsWarning  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AT_INIT_CRITERIA",
    "CRITERIA",
    "DATA_CRITERIA",
    "SCOPES",
    "SCORED_CRITERIA",
    "ChannelsKeptWarning",
    "LayerSparsity",
    "MaskedLayer",
    "MaskedWrapper",
    "SparsityReport",
    "StructureWarning",
    "UnmaskedWeightsWarning",
    "callbacks",
    "channel_masks",
    "get_masks",
    "get_prunable_weights",
    "is_masked",
    "layers",
    "load_masks",
    "mask_keys",
    "masked_layers",
    "prune",
    "random_masks_like",
    "saliency",
    "save_masks",
    "set_masks",
    "set_prunable_weights",
    "sparsity_report",
    "strip",
    "wrap",
]
