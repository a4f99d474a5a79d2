"""Early-bird tickets: draw the mask when it stops changing, not when training ends.

You et al., "Drawing Early-Bird Tickets: Towards More Efficient Training of Deep
Networks", ICLR 2020: while the network trains, the mask it would be pruned to at the
target sparsity is computed at every evaluation; the normalized Hamming distance between
consecutive masks (the fraction of mask entries that differ) falls early in training,
and once the last ``window`` distances all stay below ``epsilon`` the ticket is drawn
there and training stops (the paper: ``epsilon`` 0.1 over the last 5 distances).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["mask_distance", "EarlyBird"]


def mask_distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """Normalized Hamming distance of two masks: differing entries / all entries.

    Args:
        a, b: ``{mask key: 0/1 array}`` with the same keys and shapes.

    Returns:
        A float in ``[0, 1]`` (You et al. 2020, Sec. 3.2).

    Raises:
        ValueError: the keys or shapes differ, or the masks are empty.
    """
    if set(a) != set(b):
        raise ValueError(f"The masks have different keys: {sorted(a)} vs {sorted(b)}.")
    differ = total = 0
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        if x.shape != y.shape:
            raise ValueError(f"Mask {key!r} has shape {x.shape} in one mask and {y.shape} "
                             "in the other.")
        differ += int(np.count_nonzero((x != 0) != (y != 0)))
        total += x.size
    if total == 0:
        raise ValueError("The masks hold no entries.")
    return differ / total


class EarlyBird:
    """Watches the mask at the target sparsity during one network's training.

    Args:
        next_masks: ``next_masks() -> {mask key: 0/1 array}``: the mask the network's
            current weights would be pruned to (what the next level would draw).
        epsilon: the distance threshold, in ``(0, 1)``.
        window: how many consecutive distances must stay below ``epsilon`` (>= 1).

    ``observe()`` at every evaluation returns True once the ticket is drawn; ``state``
    and ``restore`` carry the watch across a checkpoint.
    """

    def __init__(self, next_masks: Callable[[], dict], epsilon: float = 0.1,
                 window: int = 5):
        if not 0.0 < epsilon < 1.0:
            raise ValueError(f"`epsilon` must be in (0, 1); received {epsilon!r}.")
        if int(window) != window or window < 1:
            raise ValueError(f"`window` must be an integer >= 1; received {window!r}.")
        self.next_masks = next_masks
        self.epsilon = float(epsilon)
        self.window = int(window)
        self.last_mask: dict | None = None
        self.distances: list[float] = []

    def observe(self) -> bool:
        """Computes the current mask, records its distance to the last one, and says
        whether the last ``window`` distances are all below ``epsilon``."""
        mask = self.next_masks()
        if self.last_mask is not None:
            self.distances.append(mask_distance(self.last_mask, mask))
        self.last_mask = mask
        recent = self.distances[-self.window:]
        return len(recent) == self.window and max(recent) < self.epsilon

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(json_state, arrays)`` to checkpoint: the distances and the last mask."""
        arrays = {} if self.last_mask is None else dict(self.last_mask)
        return {"distances": list(self.distances)}, arrays

    def restore(self, json_state: dict, arrays: Mapping[str, np.ndarray]) -> None:
        """Puts back what ``state`` returned."""
        self.distances = [float(d) for d in json_state["distances"]]
        self.last_mask = {k: np.asarray(v) for k, v in arrays.items()} or None
