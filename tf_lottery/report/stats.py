"""Statistics over replicates: the numbers behind every plot and table of a report.

Each function reads ``tf_lottery.report.collect.Run`` objects only (no files, except the
``metrics.csv`` of a branch through ``Replicate.metrics``).
"""

from __future__ import annotations

import math

import numpy as np

from tf_lottery.report.collect import Run, branch_key

__all__ = [
    "adversarial_rows",
    "aggregate",
    "curve",
    "default_levels",
    "describe",
    "isnan",
    "layer_table",
    ]


def isnan(value) -> bool:
    """``value`` is a float NaN (``False`` for ``None`` and ints)."""
    return isinstance(value, float) and math.isnan(value)


def describe(values) -> dict:
    """``{"mean", "min", "max", "n"}`` of the values that are not ``None`` or NaN
    (``None`` entries and ``n == 0`` when there are none)."""
    values = [float(v) for v in values if v is not None and not isnan(v)]
    if not values:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": float(np.mean(values)), "min": min(values), "max": max(values),
            "n": len(values)}


def aggregate(run: Run) -> list[dict]:
    """The rows behind ``accuracy.png`` and ``early_stop.png`` for one run.

    One row per branch and level (and per one-shot target, branch ``"one_shot"``, and
    per tfmot baseline point, branch ``"tfmot_gmp"``), with statistics over the
    replicates that finished it: ``{"branch", "level", "n", "replicates", "sparsity",
    "weights_remaining", "early_stop_iteration", "early_stop_test_accuracy",
    "final_test_accuracy"}``, each metric a ``{"mean", "min", "max", "n"}`` dict
    (``None`` entries when a metric is missing, e.g. without a validation split).
    ``weights_remaining`` and ``sparsity`` are fractions (means). The reinit control's
    draws (``reinit_draws``) count as networks of their own: ``n`` is the number of
    networks averaged (replicates x finished draws), ``replicates`` the number of
    replicates they come from (``n == replicates`` for every other branch).
    """
    groups: dict[tuple, list[dict]] = {}
    levels = {}
    sources: dict[tuple, set] = {}
    for index, replicate in enumerate(run.replicates):
        for level in sorted(set(replicate.levels) | set(replicate.draws)):
            for branch in replicate.branch_names(level):
                for _, summary in replicate.summaries(level, branch):
                    groups.setdefault((branch, level), []).append(summary)
                    sources.setdefault((branch, level), set()).add(index)
                levels[(branch, level)] = level
        for target, summary in replicate.one_shot.items():
            groups.setdefault(("one_shot", target), []).append(summary)
            levels[("one_shot", target)] = target
        for point in replicate.tfmot:
            # Grouped by sparsity (the ticket level may be unknown).
            key = ("tfmot_gmp", round(point["sparsity"], 4))
            groups.setdefault(key, []).append(
                {"sparsity": point["sparsity"], "final_test_accuracy": point["test_accuracy"]})
            levels[key] = point["level"]
    rows = []
    for key, summaries in sorted(groups.items(),
                                 key=lambda item: (branch_key(item[0][0]), item[0][1])):
        sparsity = float(np.mean([s["sparsity"] for s in summaries]))
        rows.append({
            "branch": key[0],
            "level": levels[key],
            "n": len(summaries),
            "replicates": len(sources.get(key, ())) or len(summaries),
            "sparsity": sparsity,
            "weights_remaining": 1.0 - sparsity,
            "early_stop_iteration": describe(s.get("early_stop_iteration") for s in summaries),
            "early_stop_test_accuracy": describe(
                s.get("early_stop_test_accuracy") for s in summaries),
            "final_test_accuracy": describe(s.get("final_test_accuracy") for s in summaries),
        })
    return rows


def default_levels(available, count: int = 4) -> list[int]:
    """A spread of ``count`` levels from ``available`` (ints): the first, the last and
    evenly spaced ones between (``[0, 3, 7, 10]`` for levels 0-10)."""
    available = sorted(set(available))
    if len(available) <= count:
        return available
    picks = np.linspace(0, len(available) - 1, count).round().astype(int)
    return sorted({available[i] for i in picks})


def curve(run: Run, level, branch: str) -> dict | None:
    """Test accuracy of one branch over training, over replicates (and the reinit
    control's draws) at shared iterations: ``{"iteration": [int], "mean", "min",
    "max": [float], "n": networks}``, or ``None`` when no network has its
    ``metrics.csv``."""
    per_replicate = []
    for replicate in run.replicates:
        for draw, _ in replicate.summaries(level, branch):
            rows = replicate.metrics(level, branch, draw)
            if rows:
                per_replicate.append({r["iteration"]: r["test_accuracy"] for r in rows})
    if not per_replicate:
        return None
    iterations = sorted(set.intersection(*(set(c) for c in per_replicate)))
    values = np.array([[c[i] for i in iterations] for c in per_replicate], dtype=float)
    return {
        "iteration": iterations,
        "mean": values.mean(axis=0).tolist(),
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
        "n": len(per_replicate),
    }


def layer_table(run: Run) -> tuple[list[str], list[tuple[int, dict]]]:
    """``(layer keys, [(level, {key: mean sparsity})])`` of the lottery branch, levels
    ascending, sparsities fractions pruned averaged over replicates."""
    by_level: dict[int, list[dict]] = {}
    for replicate in run.replicates:
        for level, branches in replicate.levels.items():
            if "lottery" in branches:
                by_level.setdefault(level, []).append(branches["lottery"].get("layer_sparsity", {}))
    keys: list[str] = []
    for layers in (d for ds in by_level.values() for d in ds):
        keys += [k for k in layers if k not in keys]
    rows = []
    for level in sorted(by_level):
        rows.append((level, {k: float(np.mean([d[k] for d in by_level[level] if k in d]))
                             for k in keys if any(k in d for d in by_level[level])}))
    return keys, rows


def adversarial_rows(run: Run) -> list[dict]:
    """The numbers behind ``adversarial.png`` and the report's adversarial table, from
    every replicate's ``analysis/adversarial.json`` (``tf_lottery.analysis.run_adversarial``).

    One row per examples, PGD setting, level, branch, attack and epsilon, with
    statistics over replicates: ``{"examples", "pgd": (steps, step_size, random_start)
    or None (clean, FGSM), "level", "branch", "attack": "none"/"fgsm"/"pgd",
    "epsilon": pixel units (0 for "none"), "weights_remaining": fraction (mean),
    "accuracy": {"mean", "min", "max", "n"}}``, sorted by those fields (branches in
    ``branch_key`` order). Entries without the expected fields are skipped.
    """
    groups: dict[tuple, list[dict]] = {}
    for replicate in run.replicates:
        for entry in replicate.analyses.get("adversarial", {}).get("entries", []):
            key = entry.get("key", {})
            try:
                pgd = ((int(key["pgd_steps"]), float(key["pgd_step_size"]),
                        bool(key["random_start"])) if key["attack"] == "pgd" else None)
                group = (int(key["examples"]), pgd, int(key["level"]), key["branch"],
                         key["attack"], float(key["epsilon"]))
                float(entry["accuracy"]), float(entry["weights_remaining"])
            except (KeyError, TypeError, ValueError):
                continue
            groups.setdefault(group, []).append(entry)
    attacks = {"none": 0, "fgsm": 1, "pgd": 2}
    rows = []
    for group, entries in sorted(groups.items(), key=lambda item: (
            item[0][0], item[0][1] or (), item[0][2], branch_key(item[0][3]),
            attacks.get(item[0][4], 3), item[0][5])):
        examples, pgd, level, branch, attack, epsilon = group
        rows.append({"examples": examples, "pgd": pgd, "level": level, "branch": branch,
                     "attack": attack, "epsilon": epsilon,
                     "weights_remaining": float(np.mean([e["weights_remaining"]
                                                         for e in entries])),
                     "accuracy": describe(e["accuracy"] for e in entries)})
    return rows
