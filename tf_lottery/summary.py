"""What a trained branch is remembered by: its ``summary.json`` and the chance baseline.

The early-stopping iteration is the evaluation of minimum validation loss (Frankle &
Carbin 2019, Sec. 2); a branch whose training loss became non-finite records where; a
final test accuracy no better than predicting the most frequent class is flagged.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["branch_summary", "chance_accuracy"]


def chance_accuracy(labels) -> tuple[float, float]:
    """``(chance, threshold)`` of a test split: ``chance`` is the accuracy of always
    predicting its most frequent class (a fraction), and an accuracy at or below
    ``threshold = chance + 2 * sqrt(chance * (1 - chance) / n)`` (two standard errors of
    such a guesser on ``n`` examples) is "at chance". ``(nan, -inf)`` for no labels."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    if labels.size == 0:
        return float("nan"), float("-inf")
    chance = float(np.bincount(labels).max() / labels.size)
    return chance, chance + 2.0 * math.sqrt(chance * (1.0 - chance) / labels.size)


def branch_summary(rows: list[dict], report, *, level: int, branch: str, start: int,
                   end: int, train_seconds: float, eval_seconds: float,
                   diverged: int | None = None, chance: tuple[float, float]) -> dict:
    """The ``summary.json`` dict of a branch.

    Args:
        rows: the evaluation rows (``training.METRIC_COLUMNS``), the first at ``start``;
            losses and accuracies are floats (NaN where a split is empty).
        report: the network's ``masking.SparsityReport``.
        level, branch: which branch (``level`` -1: a one-shot ticket or an analysis).
        start, end: the iterations trained, ``[start, end)``.
        train_seconds, eval_seconds: wall time spent training and evaluating.
        diverged: iterations done at the end of the compiled call (at most
            ``Runtime.steps_per_execution`` iterations) in which the training loss
            became non-finite, or None.
        chance: ``chance_accuracy`` of the test split.

    Returns:
        Sparsity (a fraction) per network and layer; early-stopping iteration (minimum
        finite validation loss after ``start``; None without validation) and the metrics
        there; the final metrics; ``diverged``/``diverged_iteration``;
        ``chance_accuracy`` and ``at_chance``; the times.
    """
    final = rows[-1]
    trained = [r for r in rows if r["iteration"] > start] or rows
    finite = [r for r in trained if math.isfinite(r["val_loss"])]  # none: no validation
    es = min(finite, key=lambda r: (r["val_loss"], r["iteration"])) if finite else None
    return {
        "level": level,
        "branch": branch,
        "sparsity": report.sparsity,
        "weights_remaining": 1 - report.sparsity,
        "weights": report.weights,
        "alive": report.alive,
        "layer_sparsity": {k: s.sparsity for k, s in report.layers.items()},
        "start_iteration": start,
        "end_iteration": end,
        "early_stop_iteration": None if es is None else es["iteration"],
        "early_stop_val_loss": None if es is None else es["val_loss"],
        "early_stop_val_accuracy": None if es is None else es["val_accuracy"],
        "early_stop_test_accuracy": None if es is None else es["test_accuracy"],
        "final_train_loss": final["train_loss"],
        "final_train_accuracy": final["train_accuracy"],
        "final_val_loss": final["val_loss"],
        "final_val_accuracy": final["val_accuracy"],
        "final_test_loss": final["test_loss"],
        "final_test_accuracy": final["test_accuracy"],
        "diverged": diverged is not None,
        "diverged_iteration": diverged,
        "chance_accuracy": chance[0],
        "at_chance": bool(final["test_accuracy"] <= chance[1]),
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
    }
