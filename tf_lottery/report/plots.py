"""The report's figures (matplotlib): one ``plot_*`` function per PNG.

Each takes the runs of ``tf_lottery.report.load_runs`` and the PNG path, draws every run
into the same figure (one panel per run where lines would collide), writes the PNG
atomically and returns its path, or returns ``None`` without writing when the runs have
nothing to show (no one-shot tickets, no analysis of that name, ...).
"""

from __future__ import annotations

import os

import numpy as np

from tf_lottery.report import figures, stats
from tf_lottery.report.collect import Run, analysis_entries, branch_key

__all__ = [
    "TRANSFER_METHODS",
    "branch_series",
    "plot_accuracy",
    "plot_adversarial",
    "plot_early_stop",
    "plot_instability",
    "plot_layer_sparsity",
    "plot_learning_curves",
    "plot_noise",
    "plot_one_shot",
    "plot_transfer",
]


def branch_series(run_list: list[Run], metric: str, branches=None) -> list[dict]:
    """The lines of ``accuracy.png`` / ``early_stop.png``: one per run and branch.

    Each ``{"run", "branch", "label", "x", "mean", "min", "max", "n"}``: ``x`` the
    weights remaining in percent (decreasing), ``mean``/``min``/``max`` the ``metric``
    over replicates (and over the reinit control's draws, ``reinit_draws``), ``n`` the
    most networks behind a point. The ``reinit`` and
    ``random_prune`` lines start at the dense network (level 0 of ``lottery``), as in
    the paper's figures. The tfmot baseline has no early-stopping point (tfmot trains
    without a validation split): it shows its final test accuracy for
    ``early_stop_test_accuracy`` and is absent for ``early_stop_iteration``.
    """
    series = []
    for run in run_list:
        rows = stats.aggregate(run)
        for branch in sorted({r["branch"] for r in rows}, key=branch_key):
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
            label = figures.BRANCH_LABEL.get(branch, branch)
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
    series = branch_series(run_list, metric, branches)
    if not series:
        return None
    fig, axes = figures.figure()
    ax = axes[0, 0]
    run_index = {id(run): i for i, run in enumerate(run_list)}
    for line in series:
        style = figures.line_style(run_index[id(line["run"])], len(run_list), line["branch"])
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
    figures.remaining_axis(ax, [x for line in series for x in line["x"]])
    if metric == "early_stop_iteration":
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    n = max(len(r.replicates) for r in run_list)
    draws = max((row["n"] // max(row["replicates"], 1) for run in run_list
                 for row in stats.aggregate(run) if row["branch"] == "reinit"), default=1)
    if n > 1 or draws > 1:
        title += (f" (mean, min-max band over {n} replicate{'s' if n > 1 else ''}"
                  + (f"; reinit: {draws} draws each" if draws > 1 else "") + ")")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return figures.save(fig, path)


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
    fig, axes = figures.figure(ncols=len(run_list))
    dashes = {"lottery": "-", "reinit": "--", "random_prune": ":"}
    drawn = False
    for i, run in enumerate(run_list):
        ax = axes[0, i]
        available = sorted({k for r in run.replicates for k in r.levels})
        chosen = [k for k in (levels if levels is not None
                              else stats.default_levels(available)) if k in available]
        cmap = colormaps["viridis"]
        curves, windows = [], []
        for j, level in enumerate(chosen):
            color = cmap(j / max(1, len(chosen) - 1) * 0.9)
            branches = sorted({b for r in run.replicates for b in r.branch_names(level)},
                              key=branch_key)
            for branch in branches:
                curve = stats.curve(run, level, branch)
                if curve is None:
                    continue
                summaries = [s for r in run.replicates for _, s in r.summaries(level, branch)]
                label = f"{100 * summaries[0]['weights_remaining']:.1f}%"
                if level == 0:
                    label += " (dense)"
                elif branch != "lottery":
                    label += f" {figures.BRANCH_LABEL.get(branch, branch)}"
                style = dict(color=color, linestyle=dashes.get(branch, "-."))
                x = curve["iteration"]
                window = figures.window(len(x), smooth)
                windows.append(window)
                if window > 1:
                    ax.plot(x, curve["mean"], linewidth=0.5, alpha=0.25, **style)
                ax.plot(x, figures.smooth(curve["mean"], window), linewidth=1.4, label=label,
                        **style)
                if curve["n"] > 1:
                    ax.fill_between(x, figures.smooth(curve["min"], window),
                                    figures.smooth(curve["max"], window),
                                    color=color, alpha=0.15, linewidth=0)
                stops = [(s["early_stop_iteration"], s["early_stop_test_accuracy"])
                         for s in summaries if s.get("early_stop_iteration") is not None]
                if stops:
                    ax.plot([p[0] for p in stops], [p[1] for p in stops], linestyle="none",
                            marker="o" if branch == "lottery" else "s", markersize=6,
                            markerfacecolor=color, markeredgecolor="black")
                curves.append(curve)
                drawn = True
        limits = figures.zoom_floor(curves)
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
    return figures.save(fig, path)


def plot_layer_sparsity(run_list: list[Run], path: str) -> str | None:
    """Sparsity (fraction pruned) of every prunable layer of the lottery ticket by
    level, total dashed, one panel per run."""
    fig, axes = figures.figure(ncols=len(run_list))
    drawn = False
    for i, run in enumerate(run_list):
        ax = axes[0, i]
        keys, rows = stats.layer_table(run)
        if not rows:
            continue
        levels = [level for level, _ in rows]
        for j, key in enumerate(keys):
            ys = [(level, layers[key]) for level, layers in rows if key in layers]
            ax.plot([lv for lv, _ in ys], [sp for _, sp in ys], marker=figures.RUN_MARKERS[j % 6],
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
    return figures.save(fig, path) if drawn else None


def plot_one_shot(run_list: list[Run], path: str) -> str | None:
    """One-shot vs iterative pruning at matched sparsities: test accuracy at early
    stopping (left) and early-stopping iteration (right) vs weights remaining. ``None``
    when no run has one-shot tickets, or none has an early-stopping point (no validation
    split)."""
    if not any(r.one_shot for run in run_list for r in run.replicates):
        return None
    fig, axes = figures.figure(ncols=2, width=6.0)
    remaining = []
    drawn = False
    for ax, metric, ylabel in (
            (axes[0, 0], "early_stop_test_accuracy", "test accuracy at early stopping"),
            (axes[0, 1], "early_stop_iteration", "early-stopping iteration")):
        for i, run in enumerate(run_list):
            rows = [r for r in stats.aggregate(run) if r["branch"] in ("lottery", "one_shot")
                    and r[metric]["mean"] is not None]
            for branch, name in (("lottery", "iterative (IMP)"), ("one_shot", "one-shot")):
                points = sorted((r for r in rows if r["branch"] == branch),
                                key=lambda r: -r["weights_remaining"])
                if not points:
                    continue
                x = [100 * r["weights_remaining"] for r in points]
                remaining += x
                style = figures.line_style(i, len(run_list), branch)
                label = f"{run.label}: {name}" if len(run_list) > 1 else name
                ax.plot(x, [r[metric]["mean"] for r in points], label=label, markersize=4,
                        **style)
                drawn = True
                if any(r[metric]["n"] > 1 for r in points):
                    ax.fill_between(x, [r[metric]["min"] for r in points],
                                    [r[metric]["max"] for r in points],
                                    color=style["color"], alpha=0.2, linewidth=0)
        figures.remaining_axis(ax, remaining)
        if metric == "early_stop_iteration":
            from matplotlib.ticker import MaxNLocator

            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if not drawn:  # no early-stopping point (no validation split): nothing to compare
        return None
    fig.suptitle("One-shot vs iterative pruning")
    return figures.save(fig, path)


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
    Connectivity and the Lottery Ticket Hypothesis", ICML 2020, Fig. 1-2); the train
    error along the same path dashed, where the entry has it."""
    entries = analysis_entries(run_list, "instability")
    if not entries:
        return None
    entries.sort(key=lambda t: (t[0].path, t[1].path, t[2].get("rewind_iteration", 0),
                                t[2]["key"]["level"], t[2]["key"]["mask"]))
    fig, axes = figures.figure(height=4.5 + 0.22 * len(entries))
    ax = axes[0, 0]
    dashed = False
    for i, (run, replicate, entry) in enumerate(entries):
        train = entry.get("train_error") or []
        extra = (f", {entry['key']['training_steps']}: instability {entry['instability']:.4f}"
                 + (f" (train {entry['instability_train']:.4f})"
                    if entry.get("instability_train") is not None else "")
                 + (f", BN re-estimated ({entry['key']['bn_reestimate']} batches)"
                    if "bn_reestimate" in entry["key"] else ""))
        label = _entry_label(run_list, run, replicate, entry, extra)
        ax.plot(entry["alphas"], [100 * e for e in entry["test_error"]], marker="o",
                markersize=3, color=f"C{i % 10}", label=label)
        if train and None not in train:
            ax.plot(entry["alphas"], [100 * e for e in train], linestyle="--",
                    color=f"C{i % 10}", alpha=0.8)
            dashed = True
    ax.set_xlabel("interpolation a (network a*w1 + (1-a)*w2)")
    ax.set_ylabel("test error (%), train error dashed" if dashed else "test error (%)")
    ax.set_title("Error along the line between two copies trained with different data "
                 "orders\n(instability = max error - mean of the end errors; stable < 0.02)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=8, ncol=1)
    return figures.save(fig, path)


def _noise_groups(run_list):
    groups: dict[tuple, list[dict]] = {}
    labels = {}
    for run, replicate, entry in analysis_entries(run_list, "noise"):
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
    fig, axes = figures.figure()
    ax = axes[0, 0]
    for i, (group, entries) in enumerate(groups.items()):
        scales = sorted({e["key"]["scale"] for e in entries})
        points = [stats.describe(e["early_stop_test_accuracy"]
                                 if e.get("early_stop_test_accuracy") is not None
                                 else e["final_test_accuracy"]
                                 for e in entries if e["key"]["scale"] == s) for s in scales]
        ax.plot(scales, [p["mean"] for p in points], marker="o", color=f"C{i % 10}",
                label=labels[group])
        if any(p["n"] > 1 for p in points):
            ax.fill_between(scales, [p["min"] for p in points], [p["max"] for p in points],
                            color=f"C{i % 10}", alpha=0.2, linewidth=0)
    ax.set_xlabel("noise std / layer's initialization std")
    ax.set_ylabel("test accuracy at early stopping")
    ax.set_title("Robustness of the rewind weights to Gaussian noise")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return figures.save(fig, path)


TRANSFER_METHODS = ("source_ticket", "random_ticket", "target_ticket", "target_dense")


def plot_transfer(run_list: list[Run], path: str) -> str | None:
    """Grouped bars: test accuracy at early stopping on the target dataset of the
    transferred ticket, a random ticket with the same per-layer counts, the ticket found
    on the target and the dense network (Morcos et al., "One ticket to win them all",
    NeurIPS 2019)."""
    entries = analysis_entries(run_list, "transfer")
    if not entries:
        return None
    groups: dict[str, dict] = {}
    for run, replicate, entry in entries:
        key = entry["key"]
        group = f"{key['source']} → {key['target']}" + (
            f" ({key['target_preprocess']})" if "target_preprocess" in key else "")
        group += f"\nlevel {key['level']}"
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
    fig, axes = figures.figure(width=max(6.0, 2.8 * len(groups)))
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
    values = figures.finite_values(e["early_stop_test_accuracy"]
                                   if e.get("early_stop_test_accuracy") is not None
                                   else e["final_test_accuracy"] for _, _, e in entries)
    if values:  # NaN accuracies (a diverged training) are left out of the limits
        ax.set_ylim(max(0.0, min(values) - 0.1), min(1.0, max(values) + 0.05))
    ax.set_ylabel("test accuracy at early stopping (target)")
    ax.set_title("Ticket transfer")
    ax.legend(fontsize=8)
    return figures.save(fig, path)


#: Line style of each branch in ``adversarial.png`` (colors are epsilons there).
_ADVERSARIAL_DASHES = {"lottery": "-", "reinit": "--", "random_prune": ":"}


def adversarial_selection(rows: list[dict]) -> tuple[list[dict], int, tuple | None]:
    """The rows of ``stats.adversarial_rows`` one figure shows: those of the largest
    ``examples``, and of PGD the most frequent setting (ties: the larger setting).
    Returns ``(rows, examples, pgd setting or None)``."""
    examples = max(r["examples"] for r in rows)
    rows = [r for r in rows if r["examples"] == examples]
    settings = [r["pgd"] for r in rows if r["pgd"] is not None]
    pgd = max(set(settings), key=lambda s: (settings.count(s), s)) if settings else None
    return [r for r in rows if r["pgd"] in (None, pgd)], examples, pgd


def plot_adversarial(run_list: list[Run], path: str) -> str | None:
    """Test accuracy under FGSM (left; Goodfellow et al., ICLR 2015) and L-infinity PGD
    (right; Madry et al., ICLR 2018) vs weights remaining, one color per epsilon (pixel
    units of [0, 1]) and black for the clean accuracy, one line style per branch
    (ticket solid, reinit dashed, random pruning dotted; the controls start at the
    dense network, level 0); one row of panels per run, mean and min-max band over
    replicates (``tf_lottery.analysis.run_adversarial``). With several numbers of
    examples or PGD settings in a run, the largest number and the most frequent PGD
    setting are drawn (the report's table has all)."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    per_run = [(run, stats.adversarial_rows(run)) for run in run_list]
    per_run = [(run, *adversarial_selection(rows)) for run, rows in per_run if rows]
    if not per_run:
        return None
    epsilons = sorted({r["epsilon"] for _, rows, _, _ in per_run for r in rows
                       if r["attack"] != "none"})
    colors = {eps: colormaps["plasma"](0.8 * j / max(1, len(epsilons) - 1))
              for j, eps in enumerate(epsilons)}
    colors[0.0] = "black"
    branches = sorted({r["branch"] for _, rows, _, _ in per_run for r in rows}, key=branch_key)
    fig, axes = figures.figure(ncols=2, nrows=len(per_run), width=6.0)
    for i, (run, rows, examples, pgd) in enumerate(per_run):
        for col, attack in enumerate(("fgsm", "pgd")):
            ax = axes[i, col]
            remaining = []
            for eps in [0.0] + epsilons:
                kind = "none" if eps == 0.0 else attack
                chosen = [r for r in rows if r["attack"] == kind and r["epsilon"] == eps]
                dense = [r for r in chosen if r["branch"] == "lottery" and r["level"] == 0]
                for branch in branches:
                    points = [r for r in chosen if r["branch"] == branch]
                    if not points:
                        continue
                    if branch != "lottery":
                        points = dense + points  # every branch's level 0 is the dense network
                    points.sort(key=lambda r: -r["weights_remaining"])
                    x = [100 * r["weights_remaining"] for r in points]
                    remaining += x
                    style = dict(color=colors[eps],
                                 linestyle=_ADVERSARIAL_DASHES.get(branch, "-."),
                                 marker=figures.BRANCH_STYLE.get(branch, {}).get("marker", "o"))
                    ax.plot(x, [r["accuracy"]["mean"] for r in points], markersize=4, **style)
                    if any(r["accuracy"]["n"] > 1 for r in points):
                        ax.fill_between(x, [r["accuracy"]["min"] for r in points],
                                        [r["accuracy"]["max"] for r in points],
                                        color=colors[eps], alpha=0.15, linewidth=0)
            figures.remaining_axis(ax, remaining)
            ax.set_ylim(0, 1)
            ax.set_ylabel("test accuracy under attack")
            name = "FGSM" if attack == "fgsm" else (
                "PGD" if pgd is None else f"PGD-{pgd[0]}, step {pgd[1]:g} eps"
                + (", random start" if pgd[2] else ""))
            ax.set_title(f"{run.label + ': ' if len(per_run) > 1 else ''}{name} "
                         f"({examples} test examples)", fontsize=10)
    handles = [Line2D([], [], color=colors[eps], label="clean" if eps == 0.0 else f"eps = {eps:g}")
               for eps in [0.0] + epsilons]
    handles += [Line2D([], [], color="gray", linestyle=_ADVERSARIAL_DASHES.get(branch, "-."),
                       marker=figures.BRANCH_STYLE.get(branch, {}).get("marker", "o"),
                       label=figures.BRANCH_LABEL.get(branch, branch)) for branch in branches]
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, ncol=len(handles))
    fig.suptitle("Accuracy under L-infinity attacks (eps in units of the [0, 1] pixel range)")
    return figures.save(fig, path)
