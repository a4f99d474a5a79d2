"""The resume state of a branch in training: weights, metric rows, and the loop's state.

Written every ``Runtime.checkpoint_every`` iterations, every ``checkpoint_minutes`` and on
``SIGTERM``; read when the same branch trains again, so a killed run resumes exactly where
it stopped. The weights are Keras's own ``.weights.h5`` (masks included); the rest is
strict JSON (``checkpoint.json``) and, for the training hooks' arrays (accumulated scores,
the early-bird's last mask), an ``.npz``. Files are named by ``paths.BranchDir``; each is
written atomically and the checkpoint's JSON last, so a torn checkpoint is never read as
a whole one.
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from tf_lottery import files, paths

__all__ = ["save", "load", "remove"]


def save(out_dir, *, model, other_variables, schedule, step: int, rows: list,
         train_seconds: float, eval_seconds: float, partial: bool = False,
         hooks: dict | None = None, arrays: dict | None = None) -> None:
    """Writes the resume state at ``step``; ``partial``: between two evaluations, so the
    period's running training metrics (``model.metrics_variables``) are kept too.

    ``hooks`` is a JSON-ready dict and ``arrays`` a ``{name: np.ndarray}`` dict of the
    training hooks' state, given back by ``load``. Older checkpoint files of the branch
    are removed once the new one is complete.
    """
    branch_dir = paths.BranchDir(out_dir)
    weights = branch_dir.checkpoint_weights(step)
    keep = {branch_dir.checkpoint, weights}
    with files.atomic_path(weights) as tmp:
        model.save_weights(tmp)
    arrays_name = None
    if arrays:
        arrays_path = branch_dir.checkpoint_arrays(step)
        files.atomic_write_arrays(arrays_path, arrays)
        arrays_name = os.path.basename(arrays_path)
        keep.add(arrays_path)
    files.atomic_write_json(branch_dir.checkpoint, {
        "step": step,
        "weights": os.path.basename(weights),  # relative to the branch directory
        "arrays": arrays_name,
        "rows": rows,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "other_variables": [v.numpy().tolist() for v in other_variables],
        "schedule": [int(schedule.offset.numpy()), int(schedule.frozen.numpy())],
        "metric_variables": [v.numpy().tolist() for v in model.metrics_variables]
        if partial else None,
        "hooks": hooks or {},
    })
    for old in branch_dir.checkpoint_files():
        if old not in keep:
            os.remove(old)


def load(out_dir, *, model, other_variables) -> dict | None:
    """Loads the checkpoint of ``out_dir`` into ``model``; returns its state (with
    ``"arrays"`` the saved arrays, ``{}`` if none) or ``None`` when there is none.

    A torn or corrupt checkpoint is logged as a warning and removed, and ``None``
    returned: the branch retrains from its start; finished levels are not affected.
    """
    path = paths.BranchDir(out_dir).checkpoint
    if not os.path.exists(path):
        return None
    try:
        state = files.read_json(path)
        model.load_weights(os.path.join(out_dir, state["weights"]))
        for variable, value in zip(other_variables, state["other_variables"]):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        arrays = {}
        if state.get("arrays"):
            arrays = files.read_arrays(os.path.join(out_dir, state["arrays"]))
        state["arrays"] = arrays
        state.setdefault("hooks", {})
        return state
    except Exception as err:  # a torn or corrupt checkpoint: retrain this branch
        logging.warning(
            "Checkpoint in %s is unreadable (%s: %s); retraining this branch from its "
            "start. Finished levels are not affected.", out_dir, type(err).__name__, err,
        )
        remove(out_dir)
        return None


def remove(out_dir) -> None:
    """Deletes every checkpoint file of the branch in ``out_dir``."""
    for path in paths.BranchDir(out_dir).checkpoint_files():
        os.remove(path)
