"""``tf-lottery-report`` / ``python -m tf_lottery.cli report``: plots and tables of runs.

``report analyze ...`` is the old spelling of ``tf-lottery-analyze`` and keeps working.
"""

from __future__ import annotations

import sys

from absl import flags

from tf_lottery.cli.errors import UsageError, exit_with, int_list, parse_or_exit, usage_errors

__all__ = ["USAGE", "flag_values", "main", "run"]

USAGE = """Plots and tables of lottery-ticket runs (finished or still running).

    python -m tf_lottery.cli report RUN_DIR [RUN_DIR ...] --out=DIR [--levels=0,3,7]
    python -m tf_lottery.cli analyze --run_dir=RUN_DIR --analysis=instability ...

RUN_DIR is <run_root>/<name>_<hash> (all replicates) or one of its replicate_<r>
directories; several runs share every plot. Writes DIR/accuracy.png, early_stop.png,
learning_curves.png, layer_sparsity.png (and one_shot.png, instability.png, noise.png,
transfer.png when the runs have them), report.md and report.json.
"""

#: Library argument -> flag (``run_dirs`` are the positional RUN_DIR arguments).
FLAG_NAMES = {"levels": "levels", "prefix": "prefix", "out_dir": "out",
              "images_only": "images_only"}


def flag_values() -> flags.FlagValues:
    """The report command's flags, in a FlagValues of their own."""
    fv = flags.FlagValues()
    flags.DEFINE_string("out", None, "Output directory for the PNG plots, report.md and "
                        "report.json (created if needed).", flag_values=fv)
    flags.DEFINE_list("levels", None, "Levels whose learning curves are drawn, e.g. 0,3,7 "
                      "(default: four levels spread over the finished ones).", flag_values=fv)
    flags.DEFINE_string("prefix", "", "Prefix of every file name written (e.g. "
                        "lenet_fashion_ -> lenet_fashion_accuracy.png).", flag_values=fv)
    flags.DEFINE_bool("images_only", False, "Write only the PNG plots (no report.md or "
                      "report.json), e.g. to refresh README images.", flag_values=fv)
    flags.mark_flag_as_required("out", flag_values=fv)
    return fv


def main(fv: flags.FlagValues, run_dirs: list[str]) -> int:
    """Writes the report of ``run_dirs``; returns the exit code."""
    from tf_lottery import report

    if not run_dirs:
        raise UsageError("name at least one RUN_DIR (a <name>_<hash> run directory or one of "
                         "its replicate_<r> directories) before or after --out.")
    with usage_errors({**FLAG_NAMES, "run_dirs": "RUN_DIR"}):
        written = report.make_report(run_dirs, fv.out, levels=int_list("levels", fv.levels),
                                     prefix=fv.prefix, images_only=fv.images_only)
    for kind, path in written.items():
        print(f"{kind:>16}: {path}")
    return 0


def run(argv=None) -> None:
    """Entry point of ``python -m tf_lottery.cli report`` and ``tf-lottery-report``.

    ``report RUN_DIR ... --out=DIR`` writes plots and tables; ``report analyze ...`` runs
    analyses (``tf_lottery.cli.analyze``). Exits 0 on success and 2, after one
    ``error: ...`` line, on bad input.
    """
    argv = list(sys.argv if argv is None else argv)
    if len(argv) > 1 and argv[1] == "analyze":
        from tf_lottery.cli import analyze

        analyze.run([argv[0]] + argv[2:])
        return
    fv = flag_values()
    run_dirs = parse_or_exit(fv, argv, USAGE, positional=True)
    sys.exit(exit_with(lambda: main(fv, run_dirs)))
