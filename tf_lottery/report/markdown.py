"""The report's text: markdown tables of every plot's numbers and ``report.md`` itself.

Numbers are the runs' ``summary.json`` values rounded for display (4 decimals unless a
column says otherwise); ``report.json`` keeps them at full precision.
"""

from __future__ import annotations

import os

import numpy as np

from tf_lottery.report import stats
from tf_lottery.report.collect import (Run, analysis_entries, branch_key, branch_label,
                                      branch_warnings, flatten, format_value)
from tf_lottery.report.stats import isnan

__all__ = [
    "CAPTIONS",
    "fmt",
    "fmt_stats",
    "level_name",
    "report_markdown",
    "run_markdown",
    "table",
    "warning_marker",
    "warnings_markdown",
]

#: The alt text of each plot in ``report.md``.
CAPTIONS = {
    "accuracy": "Test accuracy at early stopping vs weights remaining",
    "early_stop": "Early-stopping iteration vs weights remaining",
    "learning_curves": "Test accuracy during training",
    "layer_sparsity": "Per-layer sparsity by level",
    "one_shot": "One-shot vs iterative pruning",
    "instability": "Error along the linear path between two trained copies",
    "noise": "Accuracy vs noise added at the rewind point",
    "transfer": "Ticket transfer",
    "adversarial": "Accuracy under FGSM and PGD vs weights remaining",
}


def report_markdown(run_list: list[Run], plots: dict[str, str], levels=None) -> str:
    """The text of ``report.md``: the runs, the warnings (``warnings_markdown``: branches
    that diverged or ended at chance accuracy), a link to each plot written (``plots``:
    ``{name: path}``, linked by base name, in that order) and ``run_markdown`` of every
    run (learning-curve tables at ``levels``, ints or ``None``)."""
    md = ["# Lottery-ticket report", "",
          "Runs: " + ", ".join(f"`{run.path}`" for run in run_list), ""]
    md += warnings_markdown(run_list)
    for kind, file in plots.items():
        md += [f"![{CAPTIONS[kind]}]({os.path.basename(file)})", ""]
    for run in run_list:
        md += run_markdown(run, levels)
    return "\n".join(md).rstrip() + "\n"


def _branches(run: Run):
    """``(replicate, level, branch, draw, summary)`` of every finished branch of a run
    (each draw of the reinit control), one-shot tickets (branch ``"one_shot"``, level
    the target sparsity) last."""
    for replicate in run.replicates:
        for level in sorted(set(replicate.levels) | set(replicate.draws)):
            for branch in replicate.branch_names(level):
                for draw, summary in replicate.summaries(level, branch):
                    yield replicate, level, branch, draw, summary
        for target, summary in replicate.one_shot.items():
            yield replicate, target, "one_shot", 0, summary


def warning_marker(summary: dict) -> str:
    """The mark of a branch in the tables: ``"diverged at <iteration>"``, ``"at
    chance"``, both (``"; "``-joined), or ``""`` (see ``collect.branch_warnings``)."""
    found = branch_warnings(summary)
    marks = []
    if "diverged" in found:
        marks.append("diverged" + ("" if found["diverged"] is None
                                   else f" at {found['diverged']}"))
    if "at_chance" in found:
        marks.append("at chance")
    return "; ".join(marks)


def warnings_markdown(run_list: list[Run]) -> list[str]:
    """The ``## Warnings`` section of ``report.md``: every branch whose training loss
    became non-finite (``summary.json``'s ``"diverged"``: level, branch, iteration) and
    every branch that ended at chance accuracy (``"at_chance"``: final test accuracy vs
    the majority-class fraction of the test split). No lines when there are none
    (summaries written before these keys existed have none)."""
    lines = []
    for run in run_list:
        where = f"`{run.label}` " if len(run_list) > 1 else ""
        for replicate, level, branch, draw, summary in _branches(run):
            found = branch_warnings(summary)
            what = (f"one-shot ticket {level:.4f}" if branch == "one_shot"
                    else f"level {level} {branch_label(branch, draw)}")
            name = f"- {where}`{os.path.basename(replicate.path)}` {what}"
            if "diverged" in found:
                iteration = found["diverged"]
                lines.append(f"{name}: **diverged**" + (
                    "" if iteration is None else f" at iteration {iteration}")
                    + ": the training loss became non-finite and training stopped there; "
                    "its final metrics are those of the diverged network.")
            if "at_chance" in found:
                accuracy, chance = found["at_chance"]
                lines.append(f"{name}: **at chance**: final test accuracy {fmt(accuracy)} vs "
                             f"chance {fmt(chance)} (always predicting the most frequent "
                             "test class).")
    if not lines:
        return []
    return ["## Warnings", "", "Branches whose training went wrong (check the learning "
            "rate, warmup and data); their rows are marked in the tables below.", ""] \
        + lines + [""]


def fmt(value, digits: int = 4) -> str:
    """A number for a table: ``digits`` decimals, ints as they are, ``-`` for None/NaN."""
    if value is None or isnan(value):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def fmt_stats(described: dict, digits: int = 4, integer: bool = False) -> str:
    """``mean [min, max]`` of a ``stats.describe`` dict (the mean alone when ``n <= 1``,
    ``-`` when empty); ``integer`` rounds to whole numbers (iterations)."""
    if described["mean"] is None:
        return "-"
    mean = f"{described['mean']:.0f}" if integer else fmt(described["mean"], digits)
    if described["n"] <= 1:
        return mean
    low = f"{described['min']:.0f}" if integer else fmt(described["min"], digits)
    high = f"{described['max']:.0f}" if integer else fmt(described["max"], digits)
    return f"{mean} [{low}, {high}]"


def table(header: list[str], rows: list[list], align=None) -> list[str]:
    """The lines of a markdown table; ``align`` one ``---``/``---:`` per column (default:
    all right-aligned)."""
    align = align or ["---:"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def level_name(level, branch: str) -> str:
    """The level column: ``one-shot <target>`` for one-shot tickets, else ``level``."""
    if branch == "one_shot":
        return f"one-shot {level:.4f}"
    return "-" if level is None else str(level)


def run_markdown(run: Run, curve_levels) -> list[str]:
    """The lines of one run's section of ``report.md``: hyperparameters, every branch
    of every replicate, statistics over replicates, tfmot baselines, per-layer sparsity,
    one-shot vs iterative, learning curves at ``curve_levels`` (ints, or ``None`` for
    ``stats.default_levels``) and the analyses."""
    md = [f"## {run.label}", "", f"Run directory: `{run.path}`; replicates: "
          + ", ".join(f"`{os.path.basename(r.path)}`" for r in run.replicates), ""]
    if run.hparams:
        md += ["### Hyperparameters", ""]
        flat = flatten(run.hparams)
        md += table(["setting", "value"], [[k, f"`{format_value(v)}`"] for k, v in flat.items()],
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
    rows, marks = [], []
    for replicate, level, branch, draw, s in _branches(run):
        rows.append([os.path.basename(replicate.path), level_name(level, branch),
                     branch_label(branch, draw),
                     fmt(100 * s["weights_remaining"], 2) if "weights_remaining" in s
                     else fmt(100 * (1 - s["sparsity"]), 2),
                     fmt(s["sparsity"]), fmt(s.get("early_stop_iteration")),
                     fmt(s.get("early_stop_test_accuracy")),
                     fmt(s.get("final_test_accuracy")),
                     fmt(s.get("train_seconds"), 0)])
        marks.append(warning_marker(s))
    header = ["replicate", "level", "branch", "remaining %", "sparsity", "early-stop it",
              "test acc @ES", "final test acc", "train s"]
    align = ["---", "---:", "---", "---:", "---:", "---:", "---:", "---:", "---:"]
    if any(marks):  # a warning column only when a branch diverged or ended at chance
        rows = [row + [mark or "-"] for row, mark in zip(rows, marks)]
        header, align = header + ["warning"], align + ["---"]
    md += table(header, rows, align)
    md.append("")
    pending = [(os.path.basename(r.path), p) for r in run.replicates for p in r.in_progress]
    if pending:
        md += ["Not finished yet (no `summary.json`):", ""]
        md += [f"- `{name}` level {p['level']} "
               f"{branch_label(p['branch'], p.get('draw', 0))}: "
               + (f"checkpoint at iteration {p['iteration']}" if p["iteration"] is not None
                  else "started, no checkpoint yet") for name, p in pending]
        md.append("")

    aggregated = stats.aggregate(run)
    drawn = any(r["n"] > r["replicates"] for r in aggregated)  # several reinit draws
    if len(run.replicates) > 1 or drawn:
        md += ["### Over replicates (plotted)", "", "mean [min, max] over the replicates "
               "that finished each branch" + (
                   "; the reinit control over every finished draw of every replicate "
                   "(`reinit_draws`), `n` counting networks" if drawn else "") + ".", ""]
        counts: dict[tuple, dict[str, int]] = {}
        for _, level, branch, _, s in _branches(run):
            for kind in branch_warnings(s):
                found = counts.setdefault((branch, level), {})
                found[kind] = found.get(kind, 0) + 1
        rows = [[level_name(r["level"], r["branch"]), r["branch"], r["n"],
                 fmt(100 * r["weights_remaining"], 2),
                 fmt_stats(r["early_stop_iteration"], integer=True),
                 fmt_stats(r["early_stop_test_accuracy"]), fmt_stats(r["final_test_accuracy"])]
                for r in aggregated]
        header = ["level", "branch", "n", "remaining %", "early-stop it", "test acc @ES",
                  "final test acc"]
        align = ["---:", "---", "---:", "---:", "---:", "---:", "---:"]
        if counts:  # how many of the n replicates diverged or ended at chance
            for row, r in zip(rows, aggregated):
                found = counts.get((r["branch"], r["level"]), {})
                row.append(", ".join(f"{n} {kind.replace('_', ' ')}"
                                     for kind, n in sorted(found.items())) or "-")
            header, align = header + ["warnings"], align + ["---"]
        md += table(header, rows, align)
        md.append("")
    tfmot = [(os.path.basename(r.path), p) for r in run.replicates for p in r.tfmot]
    if tfmot:
        md += ["### tfmot baseline (`tfmot_baseline*.json`)", "",
               "Gradual magnitude pruning (tfmot, Zhu & Gupta 2017) to the ticket's per-layer "
               "sparsity with one level's budget; final test accuracy (no early stopping).", ""]
        md += table(["replicate", "ticket level", "remaining %", "sparsity", "final test acc"],
                     [[n, fmt(p["level"]), fmt(100 * (1 - p["sparsity"]), 2),
                       fmt(p["sparsity"]), fmt(p["test_accuracy"])] for n, p in tfmot],
                     ["---", "---:", "---:", "---:", "---:"])
        md.append("")

    keys, layer_rows = stats.layer_table(run)
    if layer_rows:
        md += ["### Per-layer sparsity of the lottery ticket", ""]
        md += table(["level"] + [f"`{k}`" for k in keys] + ["total"],
                     [[level] + [fmt(layers.get(k)) for k in keys]
                      + [fmt(float(np.mean([r.levels[level]["lottery"]["sparsity"]
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
            rows.append([fmt(shot["level"]), fmt(shot["sparsity"]),
                         fmt_stats(shot["early_stop_test_accuracy"]),
                         fmt_stats(shot["early_stop_iteration"], integer=True),
                         "-" if near is None else near["level"],
                         "-" if near is None else fmt(near["sparsity"]),
                         "-" if near is None else fmt_stats(near["early_stop_test_accuracy"]),
                         "-" if near is None else fmt_stats(near["early_stop_iteration"],
                                                             integer=True)])
        md += table(["one-shot target", "sparsity", "test acc @ES", "early-stop it",
                      "IMP level", "IMP sparsity", "IMP test acc @ES", "IMP early-stop it"],
                     rows)
        md.append("")

    md += _curve_markdown(run, curve_levels)
    md += _analysis_markdown(run)
    return md


def _curve_markdown(run: Run, curve_levels) -> list[str]:
    available = sorted({k for r in run.replicates for k in r.levels})
    chosen = [k for k in (curve_levels if curve_levels is not None
                          else stats.default_levels(available)) if k in available]
    if not chosen:
        return []
    curves = []
    for level in chosen:
        for branch in sorted({b for r in run.replicates for b in r.branch_names(level)},
                             key=branch_key):
            curve = stats.curve(run, level, branch)
            if curve is not None:
                curves.append((level, branch, curve))
    if not curves:
        return []
    longest = max(curves, key=lambda c: len(c[2]["iteration"]))[2]["iteration"]
    picks = sorted({longest[int(i)] for i in np.linspace(0, len(longest) - 1, 8).round()})
    md = ["### Learning curves (test accuracy)", "",
          f"Levels {', '.join(map(str, chosen))}; test accuracy (mean over replicates and "
          "reinit draws) at "
          "eight of the evaluated iterations; the full curves are each branch's "
          "`metrics.csv`.", ""]
    rows = []
    for level, branch, curve in curves:
        lookup = dict(zip(curve["iteration"], curve["mean"]))
        remaining = next(s["weights_remaining"] for r in run.replicates
                         for _, s in r.summaries(level, branch))
        rows.append([level, branch, fmt(100 * remaining, 1)]
                    + [fmt(lookup.get(i)) for i in picks])
    md += table(["level", "branch", "remaining %"] + [f"it {i}" for i in picks], rows,
                 ["---:", "---"] + ["---:"] * (len(picks) + 1))
    md.append("")
    return md


def _bn_stats(entry: dict) -> str:
    """How an instability entry treated BatchNorm statistics: the number of batches they
    were re-estimated on, ``interp.`` (interpolated) for a network with BatchNorm, ``-``
    for one without (or an entry written before ``bn_layers`` was recorded)."""
    if "bn_reestimate" in entry["key"]:
        return f"{entry['key']['bn_reestimate']} batches"
    return "interp." if entry.get("bn_layers") else "-"


def _analysis_markdown(run: Run) -> list[str]:
    md = []
    single = [run]
    instability = analysis_entries(single, "instability")
    if instability:
        md += ["### Instability (linear mode connectivity)", "",
               "Two copies of the network at the rewind point trained with different data "
               "orders; test error of `a*w1 + (1-a)*w2` at evenly spaced `a`. Instability = "
               "max error minus the mean of the two end errors (Frankle et al., ICML 2020); "
               "stable means below 0.02. *train* is the same barrier on train error (a fixed "
               "subset of the training split); *BN stats*: the BatchNorm statistics of each "
               "network on the path re-estimated on that many training batches, or "
               "interpolated (`interp.`); `-` without BatchNorm.", ""]
        rows = []
        for _, replicate, e in instability:
            key = e["key"]
            rows.append([os.path.basename(replicate.path), key["level"], key["mask"],
                         fmt(100 * e["weights_remaining"], 2), key["rewind"],
                         key["training_steps"], len(e["alphas"]),
                         fmt(e["test_error"][0]), fmt(e["test_error"][-1]),
                         fmt(max(e["test_error"])), fmt(e["instability"]),
                         fmt(e.get("instability_train")), fmt(e.get("val_instability")),
                         _bn_stats(e), "yes" if e["instability"] < 0.02 else "no"])
        md += table(["replicate", "level", "mask", "remaining %", "rewind", "budget", "points",
                      "error a=0", "error a=1", "max error", "instability (test)",
                      "instability (train)", "instability (val)", "BN stats", "stable"], rows,
                     ["---", "---:", "---", "---:", "---", "---", "---:", "---:", "---:",
                      "---:", "---:", "---:", "---:", "---", "---"])
        md.append("")
    noise = analysis_entries(single, "noise")
    if noise:
        md += ["### Noise robustness of the rewind weights", "",
               "Gaussian noise with std `scale` x (std of the layer's initial kernel) added "
               "to the surviving weights at the rewind point, then retrained (Frankle, "
               "Schwab & Morcos, ICLR 2020).", ""]
        rows = [[os.path.basename(rep.path), e["key"]["level"], e["key"]["mask"],
                 fmt(100 * e["weights_remaining"], 2), e["key"]["rewind"],
                 e["key"]["training_steps"], fmt(float(e["key"]["scale"]), 2), e["key"]["repeat"],
                 fmt(e.get("early_stop_iteration")), fmt(e.get("early_stop_test_accuracy")),
                 fmt(e.get("final_test_accuracy"))]
                for _, rep, e in sorted(noise, key=lambda t: (
                    t[1].path, t[2]["key"]["level"], t[2]["key"]["mask"], t[2]["key"]["rewind"],
                    t[2]["key"]["training_steps"], t[2]["key"]["scale"], t[2]["key"]["repeat"]))]
        md += table(["replicate", "level", "mask", "remaining %", "rewind", "budget",
                      "noise scale", "repeat", "early-stop it", "test acc @ES",
                      "final test acc"], rows,
                     ["---", "---:", "---", "---:", "---", "---", "---:", "---:", "---:",
                      "---:", "---:"])
        md.append("")
    transfer = analysis_entries(single, "transfer")
    if transfer:
        md += ["### Ticket transfer", "",
               "Mask and rewind weights found on the source dataset, trained on the target "
               "(Morcos et al., NeurIPS 2019), against a random mask with the same per-layer "
               "counts, the ticket found on the target and the dense network on the target.",
               ""]
        rows = [[os.path.basename(rep.path), f"{e['key']['source']} → {e['key']['target']}"
                 + (f" ({e['key']['target_preprocess']})" if "target_preprocess" in e["key"]
                    else ""),
                 e["key"]["level"], e["key"]["method"], fmt(100 * e["weights_remaining"], 2),
                 e["key"]["training_steps"], fmt(e.get("early_stop_iteration")),
                 fmt(e.get("early_stop_test_accuracy")), fmt(e.get("final_test_accuracy")),
                 ", ".join(e.get("reinitialized_layers", [])) or "-"]
                for _, rep, e in transfer]
        md += table(["replicate", "transfer", "level", "method", "remaining %", "budget",
                      "early-stop it", "test acc @ES", "final test acc", "re-initialized"],
                     rows, ["---", "---", "---:", "---", "---:", "---", "---:", "---:",
                            "---:", "---"])
        md.append("")
    return md + _adversarial_markdown(run)


def _adversarial_column(attack: str, pgd, epsilon: float, several: bool) -> str:
    if attack == "none":
        return "clean"
    if attack == "fgsm":
        return f"FGSM {epsilon:g}"
    name = f"PGD-{pgd[0]}"
    if several:
        name += f" (step {pgd[1]:g} eps{'' if pgd[2] else ', no random start'})"
    return f"{name} {epsilon:g}"


def _adversarial_markdown(run: Run) -> list[str]:
    rows = stats.adversarial_rows(run)
    if not rows:
        return []
    settings = sorted({r["pgd"] for r in rows if r["pgd"] is not None})
    md = ["### Adversarial robustness", "",
          "Test accuracy of each branch's final weights under FGSM (Goodfellow et al., ICLR "
          "2015) and L-infinity PGD (Madry et al., ICLR 2018) at each epsilon, in units of "
          "the [0, 1] pixel range (divided by the channel std for standardized inputs), on "
          "the first examples of the test split; clean is the accuracy on the same examples. "
          "PGD: " + "; ".join(f"{s[0]} steps of {s[1]:g} x epsilon, "
                              + ("random start" if s[2] else "no random start")
                              for s in settings) + ". Level 0 is the dense network.", ""]
    for examples in sorted({r["examples"] for r in rows}):
        chosen = [r for r in rows if r["examples"] == examples]
        columns = sorted({(r["attack"], r["pgd"], r["epsilon"]) for r in chosen},
                         key=lambda c: ({"none": 0, "fgsm": 1}.get(c[0], 2), c[1] or (), c[2]))
        networks = sorted({(r["level"], r["branch"]) for r in chosen},
                          key=lambda n: (n[0], branch_key(n[1])))
        cells = {(r["level"], r["branch"], r["attack"], r["pgd"], r["epsilon"]): r
                 for r in chosen}
        table_rows = []
        for level, branch in networks:
            found = [r for r in chosen if (r["level"], r["branch"]) == (level, branch)]
            line = [level, "dense" if level == 0 else branch,
                    fmt(100 * found[0]["weights_remaining"], 2)]
            for attack, pgd, eps in columns:
                cell = cells.get((level, branch, attack, pgd, eps))
                line.append("-" if cell is None else fmt_stats(cell["accuracy"]))
            table_rows.append(line)
        md += [f"{examples} test examples; mean [min, max] over replicates where there are "
               "several.", ""]
        md += table(["level", "network", "remaining %"]
                    + [_adversarial_column(a, p, e, len(settings) > 1) for a, p, e in columns],
                    table_rows, ["---:", "---", "---:"] + ["---:"] * len(columns))
        md.append("")
    return md
