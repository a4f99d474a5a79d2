"""Plots and tables from run directories, in the style of Frankle & Carbin's figures.

``make_report(run_dirs, out_dir)`` reads one or more runs and writes to ``out_dir`` (the
names come from ``tf_lottery.paths.ReportFiles``; the command line is
``python -m tf_lottery.cli report RUN_DIR ... --out=DIR``):

* ``accuracy.png``: test accuracy at the early-stopping iteration vs the fraction of
  weights remaining (log axis, reversed so that sparsity grows rightwards, percent
  labels), one line per branch (``lottery``, ``reinit``, ``random_prune``, one-shot
  tickets, and a tfmot gradual-magnitude-pruning baseline, at its final accuracy, when
  the replicate directory holds ``tfmot_baseline.json`` or ``tfmot_baseline_<any>.json``
  files written by ``tools/compare_tfmot.py --output``), the mean over replicates with a
  min-max band (Frankle & Carbin, ICLR 2019, Figs. 3-5). With ``reinit_draws > 1`` the
  reinit line is the mean (and band) over every draw of every replicate, as the paper
  averages its reinitializations.
* ``early_stop.png``: the early-stopping iteration (iteration of minimum validation
  loss) vs weights remaining, same lines.
* ``learning_curves.png``: test accuracy over training iterations of chosen levels
  (lottery solid, controls dashed/dotted), the mean over replicates.
* ``layer_sparsity.png``: sparsity of each layer of the lottery ticket by level.
* ``one_shot.png`` (runs with one-shot tickets, from ``PruningHparams.one_shot`` or the
  ``one_shot`` analysis): one-shot vs iterative pruning at matched sparsities (Frankle &
  Carbin 2019, Sec. 5 / Appendix).
* ``instability.png``, ``noise.png``, ``transfer.png``, ``adversarial.png``: analyses
  found in ``<replicate>/analysis/<name>.json`` (see ``tf_lottery.analysis``);
  ``adversarial.png`` is accuracy under FGSM and PGD vs weights remaining per epsilon
  and branch.
* ``report.md``: the tables behind every plot (numbers are the runs' ``summary.json``
  values, rounded for display) and the hyperparameters; ``report.json``: the same
  numbers at full precision. A ``Warnings`` section at the top lists every branch whose
  training diverged (``summary.json``'s ``"diverged"``: the training loss became
  non-finite, at ``"diverged_iteration"``) or ended at chance accuracy (``"at_chance"``:
  final test accuracy no better than ``"chance_accuracy"``, the majority-class fraction
  of the test split), and the tables mark their rows (``diverged at 40``, ``at
  chance``). Summaries written before these keys existed report as before. NaN metrics
  (a diverged branch, no validation split) are drawn as gaps and shown as ``-``.

An unfinished run is reported as far as it got: every finished branch is read directly,
so ``results.json`` is not needed, and branches still training are listed with the
iteration of their last checkpoint. A replicate directory written by
``tf_lottery.ticket.fit`` without ``hparams.json`` above it is reported too (without the
hyperparameter table).

The package, in import order: ``collect`` (reading runs: ``Run``, ``Replicate``,
``load_runs``), ``stats`` (statistics over replicates: ``aggregate``), ``figures``
(matplotlib helpers and styles), ``plots`` (the ``plot_*`` functions), ``markdown``
(the tables and ``report.md``), and ``make_report`` here.
"""

from __future__ import annotations

import os

import numpy as np

from tf_lottery import files, paths
from tf_lottery.report.collect import (Replicate, Run, branch_warnings, load_runs,
                                      read_replicate)
from tf_lottery.report.markdown import report_markdown
from tf_lottery.report.plots import (
    plot_accuracy,
    plot_adversarial,
    plot_early_stop,
    plot_instability,
    plot_layer_sparsity,
    plot_learning_curves,
    plot_noise,
    plot_one_shot,
    plot_transfer,
)
from tf_lottery.report.stats import aggregate, default_levels

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
    "plot_adversarial",
    "default_levels",
]


def _check_levels(levels) -> list[int] | None:
    if levels is None:
        return None
    if isinstance(levels, int):
        levels = [levels]
    checked = []
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
            raise ValueError(f"`levels` must list pruning levels (integers >= 0), e.g. "
                             f"[0, 3, 7]; received {levels!r}.")
        checked.append(int(level))
    return checked


def _warnings(run: Run) -> list[dict]:
    """The branches of a run that diverged or ended at chance accuracy (the ``Warnings``
    of ``report.md``): ``{"replicate", "level", "branch", "draw", "diverged",
    "diverged_iteration", "at_chance", "final_test_accuracy", "chance_accuracy"}``
    (``draw``: which reinit draw, 0 for every other branch)."""
    out = []
    for replicate in run.replicates:
        found = [(level, branch, draw, s)
                 for level in sorted(set(replicate.levels) | set(replicate.draws))
                 for branch in replicate.branch_names(level)
                 for draw, s in replicate.summaries(level, branch)]
        found += [(target, "one_shot", 0, s) for target, s in replicate.one_shot.items()]
        for level, branch, draw, s in found:
            if branch_warnings(s):
                out.append({"replicate": replicate.path, "level": level, "branch": branch,
                            "draw": draw,
                            "diverged": bool(s.get("diverged")),
                            "diverged_iteration": s.get("diverged_iteration"),
                            "at_chance": bool(s.get("at_chance")),
                            "final_test_accuracy": s.get("final_test_accuracy"),
                            "chance_accuracy": s.get("chance_accuracy")})
    return out


def _report_json(run_list: list[Run], written: dict[str, str]) -> dict:
    """The content of ``report.json``: every run's replicates as read, at full precision,
    its ``aggregate`` rows, its ``warnings`` (branches that diverged or ended at chance
    accuracy), and the base names of the files written."""
    return {
        "runs": [{
            "path": run.path, "label": run.label, "hparams": run.hparams,
            "replicates": [{"path": r.path, "levels": {str(k): v for k, v in r.levels.items()},
                            "draws": {str(k): {b: {str(d): s for d, s in found.items()}
                                               for b, found in v.items()}
                                      for k, v in r.draws.items()},
                            "one_shot": {str(k): v for k, v in r.one_shot.items()},
                            "in_progress": r.in_progress, "tfmot": r.tfmot,
                            "analyses": r.analyses} for r in run.replicates],
            "aggregated": aggregate(run),
            "warnings": _warnings(run),
        } for run in run_list],
        "files": {k: os.path.basename(v) for k, v in written.items()},
    }


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
        ``"noise"``, ``"transfer"``, ``"adversarial"``, ``"markdown"``, ``"json"``); plots
        with nothing to show are not written.

    Raises:
        ValueError: before writing anything, for bad ``run_dirs`` (see ``load_runs``),
            ``levels`` that are not integers >= 0 or that no run has finished, or a
            ``prefix`` containing a path separator.
    """
    levels = _check_levels(levels)
    if not isinstance(prefix, str) or os.sep in prefix:
        raise ValueError(f"`prefix` must be a file-name prefix without '{os.sep}'; "
                         f"received {prefix!r}.")
    run_list = load_runs(run_dirs)
    if levels is not None:
        available = sorted({k for run in run_list for r in run.replicates for k in r.levels})
        missing = [k for k in levels if k not in available]
        if len(missing) == len(levels):
            raise ValueError(f"`levels` {levels} has no finished level in these runs; "
                             f"finished levels: {available}.")
    out = paths.ReportFiles(os.fspath(out_dir), prefix)
    os.makedirs(out.out, exist_ok=True)
    plots = {
        "accuracy": plot_accuracy(run_list, out.plot("accuracy")),
        "early_stop": plot_early_stop(run_list, out.plot("early_stop")),
        "learning_curves": plot_learning_curves(run_list, out.plot("learning_curves"), levels),
        "layer_sparsity": plot_layer_sparsity(run_list, out.plot("layer_sparsity")),
        "one_shot": plot_one_shot(run_list, out.plot("one_shot")),
        "instability": plot_instability(run_list, out.plot("instability")),
        "noise": plot_noise(run_list, out.plot("noise")),
        "transfer": plot_transfer(run_list, out.plot("transfer")),
        "adversarial": plot_adversarial(run_list, out.plot("adversarial")),
    }
    written = {k: v for k, v in plots.items() if v is not None}
    if images_only:
        return written
    files.atomic_write_text(out.markdown, report_markdown(run_list, written, levels))
    written["markdown"] = out.markdown
    files.atomic_write_json(out.json, _report_json(run_list, written))
    written["json"] = out.json
    return written
