"""Plots and tables from run directories, in the style of Frankle & Carbin's figures.

    python -m tf_lottery.report runs/<name>_<hash> [more run dirs ...] --out=report/
    python -m tf_lottery.report analyze --run_dir=runs/<name>_<hash> --analysis=instability

(``tf-lottery-report`` is the same command; ``analyze`` runs ``tf_lottery.analysis``.)

``make_report`` reads one or more runs and writes to ``out_dir``:

* ``accuracy.png``: test accuracy at the early-stopping iteration vs the fraction of
  weights remaining (log axis, reversed so that sparsity grows rightwards, percent
  labels), one line per branch (``lottery``, ``reinit``, ``random_prune``, one-shot
  tickets, and a tfmot gradual-magnitude-pruning baseline, at its final accuracy, when
  the replicate directory holds ``tfmot_baseline.json`` or ``tfmot_baseline_<any>.json``
  files written by ``tools/compare_tfmot.py --output``), the mean over replicates with a
  min-max band (Frankle & Carbin, ICLR 2019, Figs. 3-5).
* ``early_stop.png``: the early-stopping iteration (iteration of minimum validation
  loss) vs weights remaining, same lines.
* ``learning_curves.png``: test accuracy over training iterations of chosen levels
  (lottery solid, controls dashed/dotted), the mean over replicates.
* ``layer_sparsity.png``: sparsity of each layer of the lottery ticket by level.
* ``one_shot.png`` (runs with one-shot tickets, from ``--one_shot`` or the ``one_shot``
  analysis): one-shot vs iterative pruning at matched sparsities (Frankle & Carbin
  2019, Sec. 5 / Appendix).
* ``instability.png``, ``noise.png``, ``transfer.png``: analyses found in
  ``<replicate>/analysis/<name>.json`` (see ``tf_lottery.analysis``).
* ``report.md``: the tables behind every plot (numbers are the runs' ``summary.json``
  values, rounded for display) and the hyperparameters; ``report.json``: the same
  numbers at full precision.

An unfinished run is reported as far as it got: every finished branch
(``level_<k>/<branch>/summary.json``) is read directly, so ``results.json`` is not
needed, and branches still training are listed with the iteration of their last
checkpoint.

Run layout (``tf_lottery.ticket``): ``<run_root>/<model>_<dataset>_<hash>/hparams.json``
and ``replicate_<r>/{results.json, level_<k>/<branch>/{summary.json, metrics.csv},
one_shot/sparsity_<s>/lottery/...}``. A replicate directory written by
``tf_lottery.ticket.fit`` without ``hparams.json`` above it is reported too (without the
hyperparameter table).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import numpy as np

from tf_lottery import files

__all__ = [
    "Replicate",
    "Run",
    "read_replicate",
    "load_runs",
    "aggregate",
    "make_report",
    "plot_accuracy",
    "plot_early_stop",
    "plot_learning_curves",
    "plot_layer_sparsity",
    "plot_one_shot",
    "plot_instability",
    "plot_noise",
    "plot_transfer",
    "default_levels",
]

#: Branch order in plots and tables; other names follow alphabetically.
BRANCH_ORDER = ("lottery", "reinit", "random_prune", "one_shot", "tfmot_gmp")
_BRANCH_STYLE = {
    "lottery": dict(color="C0", marker="o"),
    "reinit": dict(color="C1", marker="s"),
    "random_prune": dict(color="C2", marker="^"),
    "one_shot": dict(color="C3", marker="D"),
    "tfmot_gmp": dict(color="C4", marker="x"),
}
_BRANCH_LABEL = {
    "lottery": "lottery ticket (IMP)",
    "reinit": "random reinit",
    "random_prune": "random pruning",
    "one_shot": "one-shot pruning",
    "tfmot_gmp": "tfmot GMP (final acc.)",
}
_RUN_LINESTYLES = ("-", "--", ":", "-.")
_RUN_MARKERS = ("o", "s", "^", "D", "v", "P")
_LEVEL_DIR = re.compile(r"^level_(\d+)$")
_ONE_SHOT_DIR = re.compile(r"^sparsity_([0-9.]+)$")
_REPLICATE_DIR = re.compile(r"^replicate_(\d+)$")
ANALYSES = ("instability", "noise", "transfer", "one_shot")


# ------------------------------------------------------------------- reading runs


def _branch_key(branch: str):
    return (BRANCH_ORDER.index(branch) if branch in BRANCH_ORDER else len(BRANCH_ORDER), branch)


@dataclasses.dataclass
class Replicate:
    """What one replicate directory holds, finished or not.

    Attributes:
        path: the replicate directory (absolute).
        index: ``r`` of ``replicate_<r>``, or ``None`` for a directory of another name.
        levels: ``levels[k][branch]`` is the ``summary.json`` dict of a finished branch
            (sparsity a fraction, iterations ints, accuracies in [0, 1]).
        one_shot: ``{target sparsity: summary}`` of finished one-shot tickets: the run's
            own (``one_shot/sparsity_<s>/lottery``) and those of the ``one_shot``
            analysis (``analysis/one_shot.json`` entries; the run's win on equal targets).
        in_progress: ``[{"level", "branch", "iteration", "path"}]`` of branches with a
            mask or checkpoint but no summary yet (``iteration``: last checkpoint, or
            ``None``).
        tfmot: tfmot baseline points ``[{"level", "sparsity", "test_accuracy"}]`` read
            from ``tfmot_baseline.json`` and ``tfmot_baseline_<any>.json`` (empty if
            absent).
        analyses: ``{name: JSON}`` of ``analysis/<name>.json`` files.
        warnings: problems met while reading (unreadable files), for the report.
    """

    path: str
    index: int | None
    levels: dict[int, dict[str, dict]]
    one_shot: dict[float, dict]
    in_progress: list[dict]
    tfmot: list[dict]
    analyses: dict[str, dict]
    warnings: list[str]

    def metrics(self, level: int, branch: str) -> list[dict]:
        """The evaluation rows (``metrics.csv``) of a finished branch; ``[]`` if absent."""
        path = os.path.join(self.path, f"level_{level}", branch, "metrics.csv")
        if not os.path.exists(path):
            return []
        return files.read_csv(path)


@dataclasses.dataclass
class Run:
    """One experiment: replicates sharing hyperparameters.

    Attributes:
        path: the ``<name>_<hash>`` directory (or the replicate directory itself when
            it has no ``hparams.json`` above it).
        name: directory base name.
        hparams: the ``hparams.json`` dict, or ``None``.
        replicates: the replicates read, in index order.
        label: the name used in legends (set by ``load_runs``: the hyperparameters that
            differ between the runs reported together, else ``name``).
    """

    path: str
    name: str
    hparams: dict | None
    replicates: list[Replicate]
    label: str = ""


def _read_summary(path: str, warnings: list) -> dict | None:
    if not os.path.exists(path):
        return None
    try:
        return files.read_json(path)
    except (ValueError, OSError) as err:
        warnings.append(f"skipped unreadable {path}: {err}")
        return None


def _pending(path: str, level, branch: str) -> dict:
    checkpoint = os.path.join(path, "checkpoint.json")
    iteration = None
    if os.path.exists(checkpoint):
        try:
            iteration = files.read_json(checkpoint).get("step")
        except (ValueError, OSError):
            iteration = None
    return {"level": level, "branch": branch, "iteration": iteration, "path": path}


def _tfmot_points(path: str, warnings: list) -> list[dict]:
    """Normalizes ``tfmot_baseline.json``: a ``tools/compare_tfmot.py`` output
    (``{"level", "gmp": {"sparsity", "test_accuracy"}}``), a list of those, or
    ``{"entries": [...]}``; plain ``{"sparsity", "test_accuracy"}`` dicts work too."""
    try:
        data = files.read_json(path)
    except (ValueError, OSError) as err:
        warnings.append(f"skipped unreadable {path}: {err}")
        return []
    items = data.get("entries", [data]) if isinstance(data, dict) else data
    points = []
    for item in items if isinstance(items, list) else []:
        source = item.get("gmp", item) if isinstance(item, dict) else None
        try:
            points.append({
                "level": item.get("level"),
                "sparsity": float(source["sparsity"]),
                "test_accuracy": float(source["test_accuracy"]),
            })
        except (KeyError, TypeError, ValueError):
            warnings.append(f"{path}: an entry without gmp sparsity/test_accuracy was skipped")
    return points


def read_replicate(path: str) -> Replicate:
    """Reads every finished branch, pending branch, baseline and analysis of one
    replicate directory (see ``Replicate``). Never raises for missing pieces."""
    path = os.path.abspath(path)
    match = _REPLICATE_DIR.match(os.path.basename(path))
    warnings: list[str] = []
    levels: dict[int, dict[str, dict]] = {}
    in_progress = []
    for name in os.listdir(path):
        level_match = _LEVEL_DIR.match(name)
        if not level_match or not os.path.isdir(os.path.join(path, name)):
            continue
        level = int(level_match.group(1))
        for branch in sorted(os.listdir(os.path.join(path, name)), key=_branch_key):
            branch_dir = os.path.join(path, name, branch)
            if not os.path.isdir(branch_dir):
                continue
            summary_path = os.path.join(branch_dir, "summary.json")
            summary = _read_summary(summary_path, warnings)
            if summary is not None:
                levels.setdefault(level, {})[branch] = summary
            else:
                in_progress.append(_pending(branch_dir, level, branch))
    one_shot = {}
    one_shot_root = os.path.join(path, "one_shot")
    if os.path.isdir(one_shot_root):
        for name in os.listdir(one_shot_root):
            shot = _ONE_SHOT_DIR.match(name)
            if not shot:
                continue
            branch_dir = os.path.join(one_shot_root, name, "lottery")
            summary_path = os.path.join(branch_dir, "summary.json")
            summary = _read_summary(summary_path, warnings)
            if summary is not None:
                one_shot[float(shot.group(1))] = summary
            elif os.path.isdir(branch_dir):
                target = float(shot.group(1))
                in_progress.append(_pending(branch_dir, f"one-shot {target:.4f}", "lottery"))
    tfmot = []
    for name in sorted(os.listdir(path)):  # tfmot_baseline.json, tfmot_baseline_<any>.json
        if re.fullmatch(r"tfmot_baseline(_.*)?\.json", name):
            tfmot += _tfmot_points(os.path.join(path, name), warnings)
    analyses = {}
    for name in ANALYSES:
        analysis_path = os.path.join(path, "analysis", f"{name}.json")
        if os.path.exists(analysis_path):
            data = _read_summary(analysis_path, warnings)
            if data is not None:
                analyses[name] = data
    # One-shot tickets trained by `tf_lottery.analysis.run_one_shot` (matched to the
    # iterative levels) join those of the run's own `one_shot/` directory.
    for entry in analyses.get("one_shot", {}).get("entries", []):
        try:
            one_shot.setdefault(float(entry["key"]["target"]), entry)
        except (KeyError, TypeError, ValueError):
            warnings.append(f"{path}/analysis/one_shot.json: an entry without key.target "
                            "was skipped")
    in_progress.sort(key=lambda p: (isinstance(p["level"], str), p["level"]
                                    if isinstance(p["level"], int) else 0, str(p["level"]),
                                    _branch_key(p["branch"])))
    return Replicate(
        path=path, index=int(match.group(1)) if match else None,
        levels=dict(sorted(levels.items())), one_shot=dict(sorted(one_shot.items())),
        in_progress=in_progress, tfmot=tfmot, analyses=analyses, warnings=warnings,
    )


def _is_replicate_dir(path: str) -> bool:
    if not os.path.isdir(path):
        return False
    names = os.listdir(path)
    return any(_LEVEL_DIR.match(n) for n in names) or "results.json" in names or (
        "init.weights.h5" in names)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _label_runs(run_list: list[Run]) -> None:
    if len(run_list) == 1:
        run_list[0].label = run_list[0].name
        return
    flat = [_flatten(r.hparams) if r.hparams else {} for r in run_list]
    keys = sorted({k for f in flat for k in f})
    differing = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    for run, values in zip(run_list, flat):
        parts = [f"{k.rsplit('.', 1)[-1]}={_format_value(values.get(k))}"
                 for k in differing if k in values]
        run.label = ", ".join(parts[:3]) if parts and run.hparams else run.name
    labels = [r.label for r in run_list]
    if len(set(labels)) < len(labels):  # still ambiguous: fall back to directory names
        for run in run_list:
            run.label = run.name


def _format_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)


def load_runs(paths) -> list[Run]:
    """Reads run directories for a report.

    Args:
        paths: a path or a list of paths, each a ``<name>_<hash>`` directory (all its
            ``replicate_<r>`` subdirectories are read) or a replicate directory
            (replicates of the same run given separately are reported together).

    Returns:
        The runs, in the order first named, each with its replicates in index order and
        a legend ``label``.

    Raises:
        ValueError: before reading anything, naming ``run_dirs`` (RUN_DIR on the command
            line), if a path is not a run or replicate directory, or if no finished
            branch exists in any of them (nothing to report yet).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.path.abspath(os.fspath(p)) for p in paths]
    if not paths:
        raise ValueError("`run_dirs` (RUN_DIR) is empty; name at least one run directory.")
    groups: dict[str, list[str]] = {}
    for path in paths:
        if not os.path.isdir(path):
            raise ValueError(f"`run_dirs` (RUN_DIR) {path!r} does not exist or is not a "
                             "directory. Pass <run_root>/<name>_<hash> or a replicate_<r> "
                             "directory in it.")
        children = sorted(
            (int(m.group(1)), os.path.join(path, n)) for n in os.listdir(path)
            if (m := _REPLICATE_DIR.match(n)) and os.path.isdir(os.path.join(path, n))
        )
        if children:
            group = groups.setdefault(path, [])
            group.extend(p for _, p in children if p not in group)
        elif _is_replicate_dir(path):
            parent = os.path.dirname(path)
            root = parent if os.path.exists(os.path.join(parent, "hparams.json")) else path
            group = groups.setdefault(root, [])
            if path not in group:
                group.append(path)
        else:
            raise ValueError(
                f"`run_dirs` (RUN_DIR) {path!r} is not a run directory: it holds neither "
                "replicate_<r> directories nor level_<k> directories. Pass "
                "<run_root>/<name>_<hash> or one of its replicate_<r> directories."
            )
    run_list = []
    for root, replicate_paths in groups.items():
        hparams_path = os.path.join(root, "hparams.json")
        hparams = files.read_json(hparams_path) if os.path.exists(hparams_path) else None
        replicates = [read_replicate(p) for p in replicate_paths]
        replicates.sort(key=lambda r: (r.index is None, r.index or 0, r.path))
        run_list.append(Run(root, os.path.basename(root), hparams, replicates))
    if not any(r.levels or r.one_shot for run in run_list for r in run.replicates):
        raise ValueError(
            f"`run_dirs` (RUN_DIR) {paths} hold no finished branch yet (no "
            "level_<k>/<branch>/summary.json); wait until level 0 has finished."
        )
    _label_runs(run_list)
    return run_list


# ------------------------------------------------------------------- aggregation


def _stats(values) -> dict:
    values = [float(v) for v in values if v is not None and not _isnan(v)]
    if not values:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": float(np.mean(values)), "min": min(values), "max": max(values),
            "n": len(values)}


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def aggregate(run: Run) -> list[dict]:
    """The rows behind ``accuracy.png`` and ``early_stop.png`` for one run.

    One row per branch and level (and per one-shot target, branch ``"one_shot"``, and
    per tfmot baseline point, branch ``"tfmot_gmp"``), with statistics over the
    replicates that finished it: ``{"branch", "level", "n", "sparsity",
    "weights_remaining", "early_stop_iteration", "early_stop_test_accuracy",
    "final_test_accuracy"}``, each metric a ``{"mean", "min", "max", "n"}`` dict
    (``None`` entries when a metric is missing, e.g. without a validation split).
    ``weights_remaining`` and ``sparsity`` are fractions (means over replicates).
    """
    groups: dict[tuple, list[dict]] = {}
    levels = {}
    for replicate in run.replicates:
        for level, branches in replicate.levels.items():
            for branch, summary in branches.items():
                groups.setdefault((branch, level), []).append(summary)
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
                                 key=lambda item: (_branch_key(item[0][0]), item[0][1])):
        sparsity = float(np.mean([s["sparsity"] for s in summaries]))
        rows.append({
            "branch": key[0],
            "level": levels[key],
            "n": len(summaries),
            "sparsity": sparsity,
            "weights_remaining": 1.0 - sparsity,
            "early_stop_iteration": _stats(s.get("early_stop_iteration") for s in summaries),
            "early_stop_test_accuracy": _stats(
                s.get("early_stop_test_accuracy") for s in summaries),
            "final_test_accuracy": _stats(s.get("final_test_accuracy") for s in summaries),
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


def _curve(run: Run, level, branch: str) -> dict | None:
    """Mean / min / max test accuracy over replicates at shared iterations."""
    per_replicate = []
    for replicate in run.replicates:
        if branch not in replicate.levels.get(level, {}):
            continue
        rows = replicate.metrics(level, branch)
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


# ----------------------------------------------------------------------- plotting


def _figure(ncols: int = 1, nrows: int = 1, width: float = 7.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False)
    return figure, axes


def _save(figure, path: str) -> str:
    with files.atomic_path(path, ".png") as tmp:
        figure.savefig(tmp, format="png", dpi=130)
    return path


def _remaining_axis(ax, remaining_percents) -> None:
    """Log x axis of weights remaining (%), reversed, ticks at the runs' levels."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    ticks = []
    for p in sorted({round(p, 1) for p in remaining_percents if p > 0}, reverse=True):
        if not ticks or ticks[-1] / p > 1.12:  # labels closer than this would overlap
            ticks.append(p)
    while len(ticks) > 11:  # keep labels readable: every other level, keeping both ends
        ticks = ticks[::2] if ticks[::2][-1] == ticks[-1] else ticks[::2] + [ticks[-1]]
    ax.set_xscale("log")
    if ticks:
        ax.set_xlim(max(ticks) * 1.15, min(ticks) / 1.15)  # reversed: sparser to the right
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{t:g}" for t in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("weights remaining (%)")
    ax.grid(True, alpha=0.3)


def _line_style(run_index: int, n_runs: int, branch: str) -> dict:
    style = dict(_BRANCH_STYLE.get(branch, dict(color=f"C{5 + run_index % 5}", marker="o")))
    if n_runs > 1:
        style["linestyle"] = _RUN_LINESTYLES[run_index % len(_RUN_LINESTYLES)]
        style["marker"] = _RUN_MARKERS[run_index % len(_RUN_MARKERS)]
    return style


def _branch_series(run_list: list[Run], metric: str, branches=None) -> list[dict]:
    """The lines of ``accuracy.png`` / ``early_stop.png``: one per run and branch.

    Each ``{"run", "branch", "label", "x", "mean", "min", "max", "n"}``: ``x`` the
    weights remaining in percent (decreasing), ``mean``/``min``/``max`` the ``metric``
    over replicates, ``n`` the most replicates behind a point. The ``reinit`` and
    ``random_prune`` lines start at the dense network (level 0 of ``lottery``), as in
    the paper's figures. The tfmot baseline has no early-stopping point (tfmot trains
    without a validation split): it shows its final test accuracy for
    ``early_stop_test_accuracy`` and is absent for ``early_stop_iteration``.
    """
    series = []
    for run in run_list:
        rows = aggregate(run)
        for branch in sorted({r["branch"] for r in rows}, key=_branch_key):
            if branches is not None and branch not in branches:
                continue
            key = metric
            if branch == "tfmot_gmp" and metric == "early_stop_test_accuracy":
                key = "final_test_accuracy"
            points = [r for r in rows if r["branch"] == branch and r[key]["mean"] is not None]
            if not points:
                continue
            dense = [r for r in rows if r["branch"] == "lottery" and r["level"] == 0
                     and r[metric]["mean"] is not None]
            if branch in ("reinit", "random_prune") and dense:
                points = dense + points  # every branch's level 0 is the dense network
            values = [r[key] for r in points]  # key == metric whenever dense is added
            order = sorted(range(len(points)), key=lambda i: -points[i]["weights_remaining"])
            label = _BRANCH_LABEL.get(branch, branch)
            if len(run_list) > 1:
                label = f"{run.label}: {label}"
            series.append({
                "run": run, "branch": branch, "label": label,
                "x": [100 * points[i]["weights_remaining"] for i in order],
                "mean": [values[i]["mean"] for i in order],
                "min": [values[i]["min"] for i in order],
                "max": [values[i]["max"] for i in order],
                "n": max(v["n"] for v in values),
            })
    return series


def _branch_plot(run_list: list[Run], path: str, metric: str, ylabel: str, title: str,
                 branches=None) -> str | None:
    series = _branch_series(run_list, metric, branches)
    if not series:
        return None
    figure, axes = _figure()
    ax = axes[0, 0]
    run_index = {id(run): i for i, run in enumerate(run_list)}
    for line in series:
        style = _line_style(run_index[id(line["run"])], len(run_list), line["branch"])
        if line["branch"] == "tfmot_gmp":
            ax.scatter(line["x"], line["mean"], label=line["label"], color=style["color"],
                       marker="x", s=60, zorder=3)
            if line["n"] > 1:
                ax.vlines(line["x"], line["min"], line["max"], color=style["color"])
        else:
            ax.plot(line["x"], line["mean"], label=line["label"], markersize=4, **style)
            if line["n"] > 1:
                ax.fill_between(line["x"], line["min"], line["max"], color=style["color"],
                                alpha=0.2, linewidth=0)
    _remaining_axis(ax, [x for line in series for x in line["x"]])
    if metric == "early_stop_iteration":
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    n = max(len(r.replicates) for r in run_list)
    ax.set_title(title + (f" (mean, min-max band over {n} replicates)" if n > 1 else ""))
    ax.legend(fontsize=8)
    return _save(figure, path)


def plot_accuracy(run_list: list[Run], path: str) -> str | None:
    """Test accuracy at the early-stopping iteration vs weights remaining (Frankle &
    Carbin 2019, Fig. 3-5 right); the control lines start at the dense network (level
    0) as in the paper, tfmot baselines show their final accuracy. Returns ``path``, or
    ``None`` if there is nothing to plot."""
    return _branch_plot(run_list, path, "early_stop_test_accuracy",
                        "test accuracy at early stopping", "Accuracy at early stopping")


def plot_early_stop(run_list: list[Run], path: str) -> str | None:
    """Early-stopping iteration (minimum validation loss) vs weights remaining (Frankle
    & Carbin 2019, Fig. 3-5 left). Returns ``path`` or ``None`` (no validation split)."""
    return _branch_plot(run_list, path, "early_stop_iteration", "early-stopping iteration",
                        "Early-stopping iteration")


def _zoom_floor(curves) -> tuple[float, float] | None:
    """``(bottom, top)`` of a y axis that skips the first evaluations (near chance)."""
    late = []
    for curve in curves:
        its = curve["iteration"]
        if not its:
            continue
        cut = its[0] + 0.05 * (its[-1] - its[0])
        late += [v for i, v in zip(its, curve["min"]) if i >= cut]
    if not late:
        return None
    low = min(late)
    high = max(v for curve in curves for v in curve["max"])
    return max(0.0, low - 0.02), min(1.0, high + 0.01)


def _smooth(values, window: int) -> list[float]:
    """Centered moving average over ``window`` points (shrinking at the ends)."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) < 3:
        return values.tolist()
    half = window // 2
    sums = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(len(values))
    low = np.maximum(idx - half, 0)
    high = np.minimum(idx + half + 1, len(values))
    return ((sums[high] - sums[low]) / (high - low)).tolist()


def _window(length: int, smooth: int) -> int:
    """The moving-average window for a curve of ``length`` evaluations: ``smooth``, or
    for short curves (< ``10 * smooth``) the odd number nearest a tenth of the length."""
    if length >= 10 * smooth:
        return smooth
    return max(1, (length // 10) | 1)


def plot_learning_curves(run_list: list[Run], path: str, levels=None, *,
                         smooth: int = 9) -> str | None:
    """Test accuracy over training iterations for ``levels`` (default
    ``default_levels``), one panel per run: the lottery ticket solid, controls dashed
    (reinit) and dotted (random pruning), one color per level, labelled with the weights
    remaining, the early-stopping iteration marked (Frankle & Carbin 2019, Fig. 3
    middle). Raw evaluations are drawn faintly, with a centered moving average over
    ``smooth`` evaluations on top (``smooth=1``: raw only; curves shorter than
    ``10 * smooth`` evaluations are averaged over a tenth of their length, or drawn raw,
    so that short runs are not flattened). The y axis starts just below
    the lowest accuracy after the first 5% of training."""
    from matplotlib import colormaps

    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
        raise ValueError(f"`smooth` must be an integer >= 1 (evaluations averaged); "
                         f"received {smooth!r}.")
    figure, axes = _figure(ncols=len(run_list))
    dashes = {"lottery": "-", "reinit": "--", "random_prune": ":"}
    drawn = False
    for i, run in enumerate(run_list):
        ax = axes[0, i]
        available = sorted({k for r in run.replicates for k in r.levels})
        chosen = [k for k in (levels if levels is not None else default_levels(available))
                  if k in available]
        cmap = colormaps["viridis"]
        curves, windows = [], []
        for j, level in enumerate(chosen):
            color = cmap(j / max(1, len(chosen) - 1) * 0.9)
            branches = sorted({b for r in run.replicates for b in r.levels.get(level, {})},
                              key=_branch_key)
            for branch in branches:
                curve = _curve(run, level, branch)
                if curve is None:
                    continue
                summaries = [r.levels[level][branch] for r in run.replicates
                             if branch in r.levels.get(level, {})]
                label = f"{100 * summaries[0]['weights_remaining']:.1f}%"
                if level == 0:
                    label += " (dense)"
                elif branch != "lottery":
                    label += f" {_BRANCH_LABEL.get(branch, branch)}"
                style = dict(color=color, linestyle=dashes.get(branch, "-."))
                x = curve["iteration"]
                window = _window(len(x), smooth)
                windows.append(window)
                if window > 1:
                    ax.plot(x, curve["mean"], linewidth=0.5, alpha=0.25, **style)
                ax.plot(x, _smooth(curve["mean"], window), linewidth=1.4, label=label, **style)
                if curve["n"] > 1:
                    ax.fill_between(x, _smooth(curve["min"], window), _smooth(curve["max"], window),
                                    color=color, alpha=0.15, linewidth=0)
                stops = [(s["early_stop_iteration"], s["early_stop_test_accuracy"])
                         for s in summaries if s.get("early_stop_iteration") is not None]
                if stops:
                    ax.plot([p[0] for p in stops], [p[1] for p in stops], linestyle="none",
                            marker="o" if branch == "lottery" else "s", markersize=6,
                            markerfacecolor=color, markeredgecolor="black")
                curves.append(curve)
                drawn = True
        limits = _zoom_floor(curves)
        if limits is not None:
            ax.set_ylim(*limits)
        ax.set_xlabel("training iteration")
        ax.set_ylabel("test accuracy")
        window = max(windows, default=1)
        note = f" ({window}-evaluation moving average; markers: early stopping)" if window > 1 \
            else " (markers: early stopping)"
        ax.set_title(f"Learning curves{': ' + run.label if len(run_list) > 1 else ''}{note}",
                     fontsize=10)
        ax.grid(True, alpha=0.3)
        if curves:
            ax.legend(fontsize=7, ncol=2, loc="lower right")
    if not drawn:
        return None
    return _save(figure, path)


def _layer_table(run: Run) -> tuple[list[str], list[tuple[int, dict]]]:
    """``(layer keys, [(level, {key: mean sparsity})])`` of the lottery branch."""
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


def plot_layer_sparsity(run_list: list[Run], path: str) -> str | None:
    """Sparsity (fraction pruned) of every prunable layer of the lottery ticket by
    level, total dashed, one panel per run."""
    figure, axes = _figure(ncols=len(run_list))
    drawn = False
    for i, run in enumerate(run_list):
        ax = axes[0, i]
        keys, rows = _layer_table(run)
        if not rows:
            continue
        levels = [level for level, _ in rows]
        for j, key in enumerate(keys):
            ys = [(level, layers[key]) for level, layers in rows if key in layers]
            ax.plot([lv for lv, _ in ys], [sp for _, sp in ys], marker=_RUN_MARKERS[j % 6],
                    markersize=5, linewidth=2.5 - 1.5 * j / max(1, len(keys) - 1),
                    color=f"C{j % 10}", label=key)
        totals = []
        for level in levels:
            values = [r.levels[level]["lottery"]["sparsity"] for r in run.replicates
                      if "lottery" in r.levels.get(level, {})]
            totals.append(float(np.mean(values)))
        ax.plot(levels, totals, color="black", linestyle=":", linewidth=1, label="total")
        ax.set_xlabel("pruning level")
        ax.set_ylabel("sparsity (fraction pruned)")
        ax.set_ylim(0, 1)
        ax.set_xticks(levels)
        ax.set_title(f"Per-layer sparsity of the lottery ticket"
                     f"{': ' + run.label if len(run_list) > 1 else ''}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        drawn = True
    return _save(figure, path) if drawn else None


def plot_one_shot(run_list: list[Run], path: str) -> str | None:
    """One-shot vs iterative pruning at matched sparsities: test accuracy at early
    stopping (left) and early-stopping iteration (right) vs weights remaining. ``None``
    when no run has one-shot tickets."""
    if not any(r.one_shot for run in run_list for r in run.replicates):
        return None
    figure, axes = _figure(ncols=2, width=6.0)
    remaining = []
    for ax, metric, ylabel in (
            (axes[0, 0], "early_stop_test_accuracy", "test accuracy at early stopping"),
            (axes[0, 1], "early_stop_iteration", "early-stopping iteration")):
        for i, run in enumerate(run_list):
            rows = [r for r in aggregate(run) if r["branch"] in ("lottery", "one_shot")
                    and r[metric]["mean"] is not None]
            for branch, name in (("lottery", "iterative (IMP)"), ("one_shot", "one-shot")):
                points = sorted((r for r in rows if r["branch"] == branch),
                                key=lambda r: -r["weights_remaining"])
                if not points:
                    continue
                x = [100 * r["weights_remaining"] for r in points]
                remaining += x
                style = _line_style(i, len(run_list), branch)
                label = f"{run.label}: {name}" if len(run_list) > 1 else name
                ax.plot(x, [r[metric]["mean"] for r in points], label=label, markersize=4,
                        **style)
                if any(r[metric]["n"] > 1 for r in points):
                    ax.fill_between(x, [r[metric]["min"] for r in points],
                                    [r[metric]["max"] for r in points],
                                    color=style["color"], alpha=0.2, linewidth=0)
        _remaining_axis(ax, remaining)
        if metric == "early_stop_iteration":
            from matplotlib.ticker import MaxNLocator

            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    figure.suptitle("One-shot vs iterative pruning")
    return _save(figure, path)


def _analysis_entries(run_list: list[Run], name: str) -> list[tuple[Run, Replicate, dict]]:
    return [(run, rep, entry) for run in run_list for rep in run.replicates
            for entry in rep.analyses.get(name, {}).get("entries", [])]


def _entry_label(run_list, run, replicate, entry, extra: str = "") -> str:
    key = entry["key"]
    if key.get("level", 0) == 0:
        what = "dense"
    else:
        kind = {"lottery": "ticket", "random_prune": "random mask"}.get(key.get("mask"),
                                                                       key.get("mask"))
        what = f"{kind} {100 * entry['weights_remaining']:.1f}% (level {key['level']})"
    label = f"{what}, rewind {key.get('rewind')}{extra}"
    if len(run.replicates) > 1 and replicate.index is not None:
        label += f", rep {replicate.index}"
    if len(run_list) > 1:
        label = f"{run.label}: {label}"
    return label


def plot_instability(run_list: list[Run], path: str) -> str | None:
    """Test error along the linear path ``a*w1 + (1-a)*w2`` between two copies trained
    from the same weights with different data orders, one line per analysed network
    and rewind point, instability in the legend (Frankle et al., "Linear Mode
    Connectivity and the Lottery Ticket Hypothesis", ICML 2020, Fig. 1-2)."""
    entries = _analysis_entries(run_list, "instability")
    if not entries:
        return None
    entries.sort(key=lambda t: (t[0].path, t[1].path, t[2].get("rewind_iteration", 0),
                                t[2]["key"]["level"], t[2]["key"]["mask"]))
    figure, axes = _figure(height=4.5 + 0.22 * len(entries))
    ax = axes[0, 0]
    for i, (run, replicate, entry) in enumerate(entries):
        label = _entry_label(run_list, run, replicate, entry,
                             f", {entry['key']['training_steps']}: instability "
                             f"{entry['instability']:.4f}")
        ax.plot(entry["alphas"], [100 * e for e in entry["test_error"]], marker="o",
                markersize=3, color=f"C{i % 10}", label=label)
    ax.set_xlabel("interpolation a (network a*w1 + (1-a)*w2)")
    ax.set_ylabel("test error (%)")
    ax.set_title("Error along the line between two copies trained with different data "
                 "orders\n(instability = max error - mean of the end errors; stable < 0.02)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    figure.legend(loc="outside lower center", fontsize=8, ncol=1)
    return _save(figure, path)


def _noise_groups(run_list):
    groups: dict[tuple, list[dict]] = {}
    labels = {}
    for run, replicate, entry in _analysis_entries(run_list, "noise"):
        key = entry["key"]
        group = (run.path, replicate.path, key["level"], key["mask"], key["rewind"],
                 key["training_steps"])
        groups.setdefault(group, []).append(entry)
        labels[group] = _entry_label(run_list, run, replicate, entry)
    return groups, labels


def plot_noise(run_list: list[Run], path: str) -> str | None:
    """Test accuracy at early stopping vs the scale of Gaussian noise added to the
    surviving weights at the rewind point (in units of each layer's initialization
    std; Frankle, Schwab & Morcos, "The Early Phase of Neural Network Training", ICLR
    2020, Sec. 5), mean and min-max over repeats."""
    groups, labels = _noise_groups(run_list)
    if not groups:
        return None
    figure, axes = _figure()
    ax = axes[0, 0]
    for i, (group, entries) in enumerate(groups.items()):
        scales = sorted({e["key"]["scale"] for e in entries})
        stats = [_stats(e["early_stop_test_accuracy"] if e.get("early_stop_test_accuracy")
                        is not None else e["final_test_accuracy"]
                        for e in entries if e["key"]["scale"] == s) for s in scales]
        ax.plot(scales, [s["mean"] for s in stats], marker="o", color=f"C{i % 10}",
                label=labels[group])
        if any(s["n"] > 1 for s in stats):
            ax.fill_between(scales, [s["min"] for s in stats], [s["max"] for s in stats],
                            color=f"C{i % 10}", alpha=0.2, linewidth=0)
    ax.set_xlabel("noise std / layer's initialization std")
    ax.set_ylabel("test accuracy at early stopping")
    ax.set_title("Robustness of the rewind weights to Gaussian noise")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(figure, path)


TRANSFER_METHODS = ("source_ticket", "random_ticket", "target_ticket", "target_dense")


def plot_transfer(run_list: list[Run], path: str) -> str | None:
    """Grouped bars: test accuracy at early stopping on the target dataset of the
    transferred ticket, a random ticket with the same per-layer counts, the ticket found
    on the target and the dense network (Morcos et al., "One ticket to win them all",
    NeurIPS 2019)."""
    entries = _analysis_entries(run_list, "transfer")
    if not entries:
        return None
    groups: dict[str, dict] = {}
    for run, replicate, entry in entries:
        key = entry["key"]
        group = f"{key['source']} → {key['target']}\nlevel {key['level']}"
        if len(run.replicates) > 1:
            group = f"{os.path.basename(replicate.path)}\n{group}"
        if len(run_list) > 1:
            group = f"{run.label}\n{group}"
        groups.setdefault(group, {})[key["method"]] = entry
    for group, methods in list(groups.items()):
        ticket = methods.get("source_ticket") or methods.get("target_ticket")
        if ticket is not None:
            groups[f"{group} ({100 * ticket['weights_remaining']:.1f}% remaining)"] = \
                groups.pop(group)
    figure, axes = _figure(width=max(6.0, 2.8 * len(groups)))
    ax = axes[0, 0]
    width = 0.8 / len(TRANSFER_METHODS)
    for m, method in enumerate(TRANSFER_METHODS):
        xs, ys = [], []
        for g, group in enumerate(groups.values()):
            if method in group:
                e = group[method]
                acc = e.get("early_stop_test_accuracy")
                xs.append(g + (m - (len(TRANSFER_METHODS) - 1) / 2) * width)
                ys.append(acc if acc is not None else e["final_test_accuracy"])
        if xs:
            bars = ax.bar(xs, ys, width=width, label=method.replace("_", " "), color=f"C{m}")
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(range(len(groups)), list(groups))
    values = [e["early_stop_test_accuracy"] if e.get("early_stop_test_accuracy") is not None
              else e["final_test_accuracy"] for _, _, e in entries]
    ax.set_ylim(max(0.0, min(values) - 0.1), min(1.0, max(values) + 0.05))
    ax.set_ylabel("test accuracy at early stopping (target)")
    ax.set_title("Ticket transfer")
    ax.legend(fontsize=8)
    return _save(figure, path)


# ----------------------------------------------------------------------- markdown


def _fmt(value, digits: int = 4) -> str:
    if value is None or _isnan(value):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _fmt_stats(stats: dict, digits: int = 4, integer: bool = False) -> str:
    if stats["mean"] is None:
        return "-"
    mean = f"{stats['mean']:.0f}" if integer else _fmt(stats["mean"], digits)
    if stats["n"] <= 1:
        return mean
    low = f"{stats['min']:.0f}" if integer else _fmt(stats["min"], digits)
    high = f"{stats['max']:.0f}" if integer else _fmt(stats["max"], digits)
    return f"{mean} [{low}, {high}]"


def _table(header: list[str], rows: list[list], align=None) -> list[str]:
    align = align or ["---:"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _level_name(level, branch: str) -> str:
    if branch == "one_shot":
        return f"one-shot {level:.4f}"
    return "-" if level is None else str(level)


def _run_markdown(run: Run, curve_levels) -> list[str]:
    md = [f"## {run.label}", "", f"Run directory: `{run.path}`; replicates: "
          + ", ".join(f"`{os.path.basename(r.path)}`" for r in run.replicates), ""]
    if run.hparams:
        md += ["### Hyperparameters", ""]
        flat = _flatten(run.hparams)
        md += _table(["setting", "value"], [[k, f"`{_format_value(v)}`"] for k, v in flat.items()],
                     ["---", "---"])
        md.append("")
    else:
        md += ["No `hparams.json` next to the replicates (a run written by "
               "`tf_lottery.ticket.fit` directly): hyperparameters unknown.", ""]
    warnings = [w for r in run.replicates for w in r.warnings]
    if warnings:
        md += ["Problems while reading:", ""] + [f"- {w}" for w in warnings] + [""]

    md += ["### Levels and branches", "",
           "Per replicate, from each branch's `summary.json`. Sparsity is the fraction of "
           "prunable weights pruned; the early-stopping iteration is the iteration of "
           "minimum validation loss, and *test acc @ES* the test accuracy there.", ""]
    rows = []
    for replicate in run.replicates:
        name = os.path.basename(replicate.path)
        entries = [(level, branch, s) for level, branches in replicate.levels.items()
                   for branch, s in branches.items()]
        entries += [(target, "one_shot", s) for target, s in replicate.one_shot.items()]
        for level, branch, s in entries:
            rows.append([name, _level_name(level, branch), branch,
                         _fmt(100 * s["weights_remaining"], 2) if "weights_remaining" in s
                         else _fmt(100 * (1 - s["sparsity"]), 2),
                         _fmt(s["sparsity"]), _fmt(s.get("early_stop_iteration")),
                         _fmt(s.get("early_stop_test_accuracy")),
                         _fmt(s.get("final_test_accuracy")),
                         _fmt(s.get("train_seconds"), 0)])
    md += _table(["replicate", "level", "branch", "remaining %", "sparsity", "early-stop it",
                  "test acc @ES", "final test acc", "train s"], rows,
                 ["---", "---:", "---", "---:", "---:", "---:", "---:", "---:", "---:"])
    md.append("")
    pending = [(os.path.basename(r.path), p) for r in run.replicates for p in r.in_progress]
    if pending:
        md += ["Not finished yet (no `summary.json`):", ""]
        md += [f"- `{name}` level {p['level']} {p['branch']}: "
               + (f"checkpoint at iteration {p['iteration']}" if p["iteration"] is not None
                  else "started, no checkpoint yet") for name, p in pending]
        md.append("")

    aggregated = aggregate(run)
    if len(run.replicates) > 1:
        md += ["### Over replicates (plotted)", "", "mean [min, max] over the replicates "
               "that finished each branch.", ""]
        md += _table(
            ["level", "branch", "n", "remaining %", "early-stop it", "test acc @ES",
             "final test acc"],
            [[_level_name(r["level"], r["branch"]), r["branch"], r["n"],
              _fmt(100 * r["weights_remaining"], 2),
              _fmt_stats(r["early_stop_iteration"], integer=True),
              _fmt_stats(r["early_stop_test_accuracy"]), _fmt_stats(r["final_test_accuracy"])]
             for r in aggregated],
            ["---:", "---", "---:", "---:", "---:", "---:", "---:"])
        md.append("")
    tfmot = [(os.path.basename(r.path), p) for r in run.replicates for p in r.tfmot]
    if tfmot:
        md += ["### tfmot baseline (`tfmot_baseline*.json`)", "",
               "Gradual magnitude pruning (tfmot, Zhu & Gupta 2017) to the ticket's per-layer "
               "sparsity with one level's budget; final test accuracy (no early stopping).", ""]
        md += _table(["replicate", "ticket level", "remaining %", "sparsity", "final test acc"],
                     [[n, _fmt(p["level"]), _fmt(100 * (1 - p["sparsity"]), 2),
                       _fmt(p["sparsity"]), _fmt(p["test_accuracy"])] for n, p in tfmot],
                     ["---", "---:", "---:", "---:", "---:"])
        md.append("")

    keys, layer_rows = _layer_table(run)
    if layer_rows:
        md += ["### Per-layer sparsity of the lottery ticket", ""]
        md += _table(["level"] + [f"`{k}`" for k in keys] + ["total"],
                     [[level] + [_fmt(layers.get(k)) for k in keys]
                      + [_fmt(float(np.mean([r.levels[level]["lottery"]["sparsity"]
                                             for r in run.replicates
                                             if "lottery" in r.levels.get(level, {})])))]
                      for level, layers in layer_rows])
        md.append("")

    shots = [r for r in aggregated if r["branch"] == "one_shot"]
    if shots:
        md += ["### One-shot vs iterative at matched sparsity", "",
               "Each one-shot ticket (pruned at once from the trained dense network; the run's "
               "`one_shot/` directory and `analysis/one_shot.json`) next to the iterative "
               "ticket (lottery branch) with the closest sparsity (Frankle & Carbin 2019, "
               "Sec. 5).", ""]
        iterative = [r for r in aggregated if r["branch"] == "lottery"]
        rows = []
        for shot in shots:
            near = min(iterative, key=lambda r: abs(r["sparsity"] - shot["sparsity"]),
                       default=None)
            rows.append([_fmt(shot["level"]), _fmt(shot["sparsity"]),
                         _fmt_stats(shot["early_stop_test_accuracy"]),
                         _fmt_stats(shot["early_stop_iteration"], integer=True),
                         "-" if near is None else near["level"],
                         "-" if near is None else _fmt(near["sparsity"]),
                         "-" if near is None else _fmt_stats(near["early_stop_test_accuracy"]),
                         "-" if near is None else _fmt_stats(near["early_stop_iteration"],
                                                             integer=True)])
        md += _table(["one-shot target", "sparsity", "test acc @ES", "early-stop it",
                      "IMP level", "IMP sparsity", "IMP test acc @ES", "IMP early-stop it"],
                     rows)
        md.append("")

    md += _curve_markdown(run, curve_levels)
    md += _analysis_markdown(run)
    return md


def _curve_markdown(run: Run, curve_levels) -> list[str]:
    available = sorted({k for r in run.replicates for k in r.levels})
    chosen = [k for k in (curve_levels if curve_levels is not None
                          else default_levels(available)) if k in available]
    if not chosen:
        return []
    curves = []
    for level in chosen:
        for branch in sorted({b for r in run.replicates for b in r.levels.get(level, {})},
                             key=_branch_key):
            curve = _curve(run, level, branch)
            if curve is not None:
                curves.append((level, branch, curve))
    if not curves:
        return []
    longest = max(curves, key=lambda c: len(c[2]["iteration"]))[2]["iteration"]
    picks = sorted({longest[int(i)] for i in np.linspace(0, len(longest) - 1, 8).round()})
    md = ["### Learning curves (test accuracy)", "",
          f"Levels {', '.join(map(str, chosen))}; test accuracy (mean over replicates) at "
          "eight of the evaluated iterations; the full curves are each branch's "
          "`metrics.csv`.", ""]
    rows = []
    for level, branch, curve in curves:
        lookup = dict(zip(curve["iteration"], curve["mean"]))
        remaining = next(r.levels[level][branch]["weights_remaining"] for r in run.replicates
                         if branch in r.levels.get(level, {}))
        rows.append([level, branch, _fmt(100 * remaining, 1)]
                    + [_fmt(lookup.get(i)) for i in picks])
    md += _table(["level", "branch", "remaining %"] + [f"it {i}" for i in picks], rows,
                 ["---:", "---"] + ["---:"] * (len(picks) + 1))
    md.append("")
    return md


def _analysis_markdown(run: Run) -> list[str]:
    md = []
    single = [run]
    instability = _analysis_entries(single, "instability")
    if instability:
        md += ["### Instability (linear mode connectivity)", "",
               "Two copies of the network at the rewind point trained with different data "
               "orders; test error of `a*w1 + (1-a)*w2` at evenly spaced `a`. Instability = "
               "max error minus the mean of the two end errors (Frankle et al., ICML 2020); "
               "stable means below 0.02.", ""]
        rows = []
        for _, replicate, e in instability:
            key = e["key"]
            rows.append([os.path.basename(replicate.path), key["level"], key["mask"],
                         _fmt(100 * e["weights_remaining"], 2), key["rewind"],
                         key["training_steps"], len(e["alphas"]),
                         _fmt(e["test_error"][0]), _fmt(e["test_error"][-1]),
                         _fmt(max(e["test_error"])), _fmt(e["instability"]),
                         _fmt(e.get("val_instability")),
                         "yes" if e["instability"] < 0.02 else "no"])
        md += _table(["replicate", "level", "mask", "remaining %", "rewind", "budget", "points",
                      "error a=0", "error a=1", "max error", "instability (test)",
                      "instability (val)", "stable"], rows,
                     ["---", "---:", "---", "---:", "---", "---", "---:", "---:", "---:",
                      "---:", "---:", "---:", "---"])
        md.append("")
    noise = _analysis_entries(single, "noise")
    if noise:
        md += ["### Noise robustness of the rewind weights", "",
               "Gaussian noise with std `scale` x (std of the layer's initial kernel) added "
               "to the surviving weights at the rewind point, then retrained (Frankle, "
               "Schwab & Morcos, ICLR 2020).", ""]
        rows = [[os.path.basename(rep.path), e["key"]["level"], e["key"]["mask"],
                 _fmt(100 * e["weights_remaining"], 2), e["key"]["rewind"],
                 e["key"]["training_steps"], _fmt(float(e["key"]["scale"]), 2), e["key"]["repeat"],
                 _fmt(e.get("early_stop_iteration")), _fmt(e.get("early_stop_test_accuracy")),
                 _fmt(e.get("final_test_accuracy"))]
                for _, rep, e in sorted(noise, key=lambda t: (
                    t[1].path, t[2]["key"]["level"], t[2]["key"]["mask"], t[2]["key"]["rewind"],
                    t[2]["key"]["training_steps"], t[2]["key"]["scale"], t[2]["key"]["repeat"]))]
        md += _table(["replicate", "level", "mask", "remaining %", "rewind", "budget",
                      "noise scale", "repeat", "early-stop it", "test acc @ES",
                      "final test acc"], rows,
                     ["---", "---:", "---", "---:", "---", "---", "---:", "---:", "---:",
                      "---:", "---:"])
        md.append("")
    transfer = _analysis_entries(single, "transfer")
    if transfer:
        md += ["### Ticket transfer", "",
               "Mask and rewind weights found on the source dataset, trained on the target "
               "(Morcos et al., NeurIPS 2019), against a random mask with the same per-layer "
               "counts, the ticket found on the target and the dense network on the target.",
               ""]
        rows = [[os.path.basename(rep.path), f"{e['key']['source']} → {e['key']['target']}",
                 e["key"]["level"], e["key"]["method"], _fmt(100 * e["weights_remaining"], 2),
                 e["key"]["training_steps"], _fmt(e.get("early_stop_iteration")),
                 _fmt(e.get("early_stop_test_accuracy")), _fmt(e.get("final_test_accuracy")),
                 ", ".join(e.get("reinitialized_layers", [])) or "-"]
                for _, rep, e in transfer]
        md += _table(["replicate", "transfer", "level", "method", "remaining %", "budget",
                      "early-stop it", "test acc @ES", "final test acc", "re-initialized"],
                     rows, ["---", "---", "---:", "---", "---:", "---", "---:", "---:",
                            "---:", "---"])
        md.append("")
    return md


# ----------------------------------------------------------------------- report


def _check_levels(levels):
    if levels is None:
        return None
    if isinstance(levels, int):
        levels = [levels]
    checked = []
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
            raise ValueError(f"`levels` (--levels) must list pruning levels (integers >= 0), "
                             f"e.g. 0,3,7; received {levels!r}.")
        checked.append(int(level))
    return checked


def make_report(run_dirs, out_dir, *, levels=None, prefix: str = "",
                images_only: bool = False) -> dict[str, str]:
    """Writes the plots, ``report.md`` and ``report.json`` of one or more runs.

    Args:
        run_dirs: run directories (see ``load_runs``); several runs share every plot.
        out_dir: output directory (created if needed). Files are written atomically.
        levels: levels whose learning curves are drawn (ints); default: a spread of
            four (``default_levels``). Levels a run lacks are skipped for it.
        prefix: prepended to every file name (``"lenet_"`` -> ``lenet_accuracy.png``).
        images_only: write only the PNG figures.

    Returns:
        ``{kind: path}`` of the files written (``"accuracy"``, ``"early_stop"``,
        ``"learning_curves"``, ``"layer_sparsity"``, ``"one_shot"``, ``"instability"``,
        ``"noise"``, ``"transfer"``, ``"markdown"``, ``"json"``); plots with nothing
        to show are not written.

    Raises:
        ValueError: before writing anything, for bad ``run_dirs`` (see ``load_runs``),
            ``levels`` that are not integers >= 0 or that no run has finished, or a
            ``prefix`` containing a path separator.
    """
    levels = _check_levels(levels)
    if not isinstance(prefix, str) or os.sep in prefix:
        raise ValueError(f"`prefix` (--prefix) must be a file-name prefix without '{os.sep}'; "
                         f"received {prefix!r}.")
    run_list = load_runs(run_dirs)
    if levels is not None:
        available = sorted({k for run in run_list for r in run.replicates for k in r.levels})
        missing = [k for k in levels if k not in available]
        if len(missing) == len(levels):
            raise ValueError(f"`levels` (--levels) {levels} has no finished level in these "
                             f"runs; finished levels: {available}.")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    path = lambda name: os.path.join(out_dir, prefix + name)  # noqa: E731
    plots = {
        "accuracy": plot_accuracy(run_list, path("accuracy.png")),
        "early_stop": plot_early_stop(run_list, path("early_stop.png")),
        "learning_curves": plot_learning_curves(run_list, path("learning_curves.png"), levels),
        "layer_sparsity": plot_layer_sparsity(run_list, path("layer_sparsity.png")),
        "one_shot": plot_one_shot(run_list, path("one_shot.png")),
        "instability": plot_instability(run_list, path("instability.png")),
        "noise": plot_noise(run_list, path("noise.png")),
        "transfer": plot_transfer(run_list, path("transfer.png")),
    }
    written = {k: v for k, v in plots.items() if v is not None}
    if images_only:
        return written

    captions = {
        "accuracy": "Test accuracy at early stopping vs weights remaining",
        "early_stop": "Early-stopping iteration vs weights remaining",
        "learning_curves": "Test accuracy during training",
        "layer_sparsity": "Per-layer sparsity by level",
        "one_shot": "One-shot vs iterative pruning",
        "instability": "Error along the linear path between two trained copies",
        "noise": "Accuracy vs noise added at the rewind point",
        "transfer": "Ticket transfer",
    }
    md = ["# Lottery-ticket report", "",
          "Runs: " + ", ".join(f"`{run.path}`" for run in run_list), ""]
    for kind, file in written.items():
        md += [f"![{captions[kind]}]({os.path.basename(file)})", ""]
    for run in run_list:
        md += _run_markdown(run, levels)
    files.atomic_write_text(path("report.md"), "\n".join(md).rstrip() + "\n")
    written["markdown"] = path("report.md")
    files.atomic_write_json(path("report.json"), {
        "runs": [{
            "path": run.path, "label": run.label, "hparams": run.hparams,
            "replicates": [{"path": r.path, "levels": {str(k): v for k, v in r.levels.items()},
                            "one_shot": {str(k): v for k, v in r.one_shot.items()},
                            "in_progress": r.in_progress, "tfmot": r.tfmot,
                            "analyses": r.analyses} for r in run.replicates],
            "aggregated": aggregate(run),
        } for run in run_list],
        "files": {k: os.path.basename(v) for k, v in written.items()},
    })
    written["json"] = path("report.json")
    return written


if __name__ == "__main__":
    from tf_lottery import main

    main.run_report()
