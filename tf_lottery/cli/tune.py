"""``tf-lottery-tune`` / ``python -m tf_lottery.cli tune``: keras-tuner search over experiments.

A search is an experiment flagfile plus the flags below, so they join the experiment's
flags (``tf_lottery.cli.experiment_flags``); they are defined only when this command runs.
"""

from __future__ import annotations

from absl import app, flags, logging

from tf_lottery.cli import experiment_flags as ef
from tf_lottery.cli.errors import UsageError, exit_with, usage_errors
from tf_lottery.cli.experiment import _parse, print_help_and_exit

__all__ = ["USAGE", "define_flags", "main", "run"]

USAGE = """A keras-tuner search over lottery experiments (short trials, scored at a sparsity).

    python -m tf_lottery.cli tune --flagfile=configs/quickstart.flags \\
        --tune=learning_rate,warmup --max_trials=10

Writes best.flags, trials.md and trials.csv into --tune_dir; a rerun resumes the search.
Distributed (keras-tuner's KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP,
KERASTUNER_ORACLE_PORT on every process, a shared --tune_dir): the chief serves the oracle
and writes the results, the workers run the trials; on one machine:
python -m tf_lottery.cluster --workers=2 -- tune --flagfile=... --tune=...
"""

FLAGS = ef.FLAGS
#: Library argument -> flag.
FLAG_NAMES = {**ef.FLAG_NAMES, "names": "tune", "target_sparsity": "tune_target_sparsity",
              "objective": "tune_objective", "tuner": "tuner", "max_trials": "max_trials",
              "tune_dir": "tune_dir", "hyperband_max_epochs": "hyperband_max_epochs",
              "overwrite": "tune_overwrite"}


def define_flags() -> None:
    """Defines the tune command's flags (once) next to the experiment's."""
    if "tune" in FLAGS:
        return
    from tf_lottery import tune as tune_lib

    flags.DEFINE_list("tune", [], "Flags to search, from: " + ",".join(tune_lib.TUNABLE) + ".")
    flags.DEFINE_integer("max_trials", 10, "Trials in all (a resumed search counts the "
                         "finished ones); each trial is a short lottery experiment.")
    flags.DEFINE_enum("tuner", "bayesian", list(tune_lib.TUNERS), "keras-tuner oracle.")
    flags.DEFINE_float("tune_target_sparsity", 0.8, "Trials prune until this fraction of "
                       "the weights is gone; the ticket there is scored.")
    flags.DEFINE_enum("tune_objective", "val", list(tune_lib.OBJECTIVES), "Score: the "
                      "ticket's validation (default) or test accuracy at early stopping.")
    flags.DEFINE_string("tune_dir", None, "Directory of the search: keras-tuner project, "
                        "trial runs, best.flags, trials.md, trials.csv (default: "
                        "<run_root>/tune_<model>_<dataset>_<hash>; the same search resumes).")
    flags.DEFINE_integer("hyperband_max_epochs", 9, "--tuner=hyperband: the full "
                         "--training_steps in Hyperband budget units.")
    flags.DEFINE_bool("tune_overwrite", False, "Start the search afresh instead of "
                      "resuming it.")


def main(argv) -> int:
    """Runs the search the flags describe; returns the exit code."""
    del argv
    import keras

    from tf_lottery import experiment
    from tf_lottery import tune as tune_lib

    names = list(FLAGS.tune)
    if not names:
        raise UsageError("--tune names no flag; e.g. --tune=learning_rate,warmup,rewind,"
                         "prune_rate.")
    for name in names:
        if name not in tune_lib.TUNABLE:
            kind = "cannot be tuned" if name in FLAGS else "is not a flag"
            raise UsageError(f"--tune={name} {kind}; tunable flags: "
                             f"{','.join(tune_lib.TUNABLE)}.")
    ef.split_cpu()
    hp = ef.hparams()
    runtime = ef.runtime()
    dataset = ef.load_data(hp)
    with usage_errors(FLAG_NAMES):  # the base experiment, before any search directory
        experiment.check(hp, dataset)
    strategy = ef.strategy()
    keras.mixed_precision.set_global_policy(hp.precision)
    with usage_errors(FLAG_NAMES):
        result = tune_lib.tune(
            hp, dataset, names=names, tune_dir=FLAGS.tune_dir, run_root=FLAGS.run_root,
            base_flag_lines=ef.flagfile_text().splitlines(), tuner=FLAGS.tuner,
            max_trials=FLAGS.max_trials, target_sparsity=FLAGS.tune_target_sparsity,
            objective=FLAGS.tune_objective, hyperband_max_epochs=FLAGS.hyperband_max_epochs,
            runtime=runtime, strategy=strategy, overwrite=FLAGS.tune_overwrite,
        )
    if result is None:  # a keras-tuner worker
        import os

        print(f"\nkeras-tuner worker {os.environ.get('KERASTUNER_TUNER_ID')}: no trial left. "
              "The chief (KERASTUNER_TUNER_ID=chief) writes best.flags, trials.md and "
              "trials.csv once every trial has ended.")
        return 0
    print(f"\n{result.table}\nBest trial {result.best_trial}: "
          + " ".join(f"--{k}={v}" for k, v in result.best_flags.items())
          + f" ({FLAGS.tune_objective}_accuracy {result.best_score:.4f})\n"
          f"Search directory: {result.tune_dir}\n"
          f"Best flagfile: {result.flagfile}\n"
          f"Run it: python -m tf_lottery.main --flagfile={result.flagfile}")
    return 0


def run(argv=None) -> None:
    """Entry point of ``python -m tf_lottery.cli tune`` and the ``tf-lottery-tune`` script.

    Exits 0 after writing ``best.flags``, ``trials.md`` and ``trials.csv`` into
    ``--tune_dir`` (default ``<run_root>/tune_<model>_<dataset>_<hash>``) (a worker of a
    distributed search: after its last trial; the chief writes them), and 2 after one
    ``error: ...`` line on bad input (before any trial or directory).
    """
    import sys

    define_flags()
    argv = list(sys.argv if argv is None else argv)
    print_help_and_exit(argv, USAGE, ef, sys.modules[__name__])
    logging.set_verbosity(logging.INFO)
    app.run(lambda argv: exit_with(lambda: main(argv)), argv=argv, flags_parser=_parse)
