"""The Erdős–Rényi-Kernel (ERK) budget: how many weights each layer keeps.

Evci et al., "Rigging the lottery: making all tickets winners", ICML 2020 (Sec. 3, and
``sparse_utils.get_sparsities`` of their code); Liu et al., "The unreasonable
effectiveness of random pruning", ICLR 2022, use it for random pruning at initialization.

Layer ``l`` with weight shape ``shape_l`` gets density ``eps * sum(shape_l) /
prod(shape_l)`` (a kernel ``(kh, kw, in, out)``: ``(kh + kw + in + out) / (kh * kw * in *
out)``; a Dense ``(in, out)``: ``(in + out) / (in * out)``), with ``eps`` chosen so the
layers together keep the budget. A layer whose density would exceed what it still has
alive (its current density; 1 for a dense layer, which is RigL's case) is capped there and
``eps`` is recomputed for the others, until no layer exceeds its cap; pruned weights thus
stay pruned.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["erk_densities", "erk_keep_counts"]


def erk_densities(
    shapes: Mapping[str, tuple], alive: Mapping[str, int], keep: int
) -> dict[str, float]:
    """Densities (kept / all weights of the layer) that keep ``keep`` weights in total.

    Args:
        shapes: ``{key: weight shape}``.
        alive: ``{key: surviving weights}``; a layer's density never exceeds
            ``alive / size``.
        keep: the number of weights all layers together keep.
    """
    sizes = {k: float(np.prod(s)) for k, s in shapes.items()}
    raw = {k: float(np.sum(s)) / sizes[k] for k, s in shapes.items()}
    current = {k: alive[k] / sizes[k] for k in shapes}
    capped: set[str] = set()
    eps = 0.0
    while len(capped) < len(shapes):
        free = [k for k in shapes if k not in capped]
        budget = keep - sum(alive[k] for k in capped)
        eps = budget / sum(raw[k] * sizes[k] for k in free)
        # Capping every layer over its cap at once is RigL's loop: eps only grows as
        # layers are capped, so a layer over its cap now stays over it.
        over = {k for k in free if eps * raw[k] > current[k]}
        if not over:
            break
        capped |= over
    return {k: current[k] if k in capped else eps * raw[k] for k in shapes}


def erk_keep_counts(
    shapes: Mapping[str, tuple], alive: Mapping[str, int], keep: int
) -> dict[str, int]:
    """Weights each layer keeps: ``round(density * size)`` (half up), at least 1 and at
    most its survivors. The total is ``keep`` up to rounding: within half a weight per
    layer, plus the layers lifted to 1."""
    densities = erk_densities(shapes, alive, keep)
    return {
        k: int(min(alive[k], max(1, np.floor(densities[k] * np.prod(s) + 0.5))))
        for k, s in shapes.items()
    }
