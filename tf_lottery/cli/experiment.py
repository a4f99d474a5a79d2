"""``tf-lottery`` / ``python -m tf_lottery.main``: a lottery-ticket experiment from absl flags.

    python -m tf_lottery.main --flagfile=configs/lenet300_100_fashion.flags
    tf-lottery --flagfile=configs/quickstart.flags --levels=3

Turns the flags into ``ExperimentHparams``, checks everything (flags, data, strategy)
before creating any directory, then runs ``tf_lottery.experiment.run_experiment`` and
prints the results table. Bad input exits with code 2 and a one-line message naming the
flag; a branch whose training loss becomes non-finite stops the run with exit code 1
(finished levels are kept); ``SIGTERM`` writes a checkpoint of the branch in training
and exits with 143. Rerunning the same command resumes the run. The run directory is
``<run_root>/<model>_<dataset>_<hash>/`` (see ``tf_lottery.paths``): ``hparams.json``,
``flags.txt`` (a flagfile that reruns the experiment) and ``replicate_<r>/``.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from tf_lottery.cli import experiment_flags as ef
from tf_lottery.cli.errors import HELP_FLAGS, UsageError, exit_with, translate, usage_errors

__all__ = ["USAGE", "main", "run"]

USAGE = """A lottery-ticket experiment: iterative magnitude pruning with rewinding and controls.

    python -m tf_lottery.main --flagfile=configs/quickstart.flags [--flag=value ...]

Writes <run_root>/<model>_<dataset>_<hash>/ (hparams.json, flags.txt, replicate_<r>/)
and prints the results table. A rerun resumes. A preset's value can be reset after the
flagfile: --prune_rate_output=none.
"""

FLAGS = ef.FLAGS
#: Exit code after SIGTERM (128 + 15, as a shell reports a process SIGTERM ended), once
#: the checkpoint of the branch in training is written.
PREEMPTED_EXIT_CODE = 143
#: Analyses ``--analyses`` may run inside the experiment (transfer needs a target).
IN_RUN_ANALYSES = ("instability", "noise", "one_shot", "adversarial")


def main(argv) -> int:
    """Runs the experiment the flags describe; returns the process exit code."""
    del argv
    import keras
    import tensorflow as tf

    from tf_lottery import experiment

    ef.split_cpu()
    hp = ef.hparams()
    runtime = ef.runtime()
    if FLAGS.replicate < 0:
        raise UsageError(f"--replicate must be >= 0; received {FLAGS.replicate}.")
    bad = [name for name in FLAGS.analyses if name not in IN_RUN_ANALYSES]
    if bad:
        raise UsageError(f"--analyses must list analyses among {','.join(IN_RUN_ANALYSES)}; "
                         f"received {','.join(FLAGS.analyses)!r} (transfer: use "
                         "tf-lottery-analyze).")
    strategy = ef.strategy()  # before any TensorFlow op: multi-worker collectives need it
    dataset = ef.load_data(hp)
    keras.mixed_precision.set_global_policy(hp.precision)
    where = experiment.Experiment.at(hp, FLAGS.run_root, FLAGS.replicate)
    from tf_lottery import multi_worker
    from tf_lottery.run_lock import ReplicateLocked
    from tf_lottery.ticket import DivergedError
    from tf_lottery.training import Preempted

    chief = multi_worker.is_chief(strategy)
    if chief:
        logging.info("run directory: %s", where.replicate.path)
    else:
        logging.info("worker %d: the chief writes %s", multi_worker.worker_index(strategy),
                     where.replicate.path)
    try:
        with usage_errors(ef.FLAG_NAMES):
            result = experiment.run_experiment(
                hp, FLAGS.run_root, replicate=FLAGS.replicate, dataset=dataset,
                runtime=runtime, strategy=strategy, flags_text=ef.flagfile_text())
    except DivergedError as err:
        if chief:
            print(f"\nResults ({where.replicate.path}):\n{err.result.table()}")
        print(f"error: {translate(str(err), ef.FLAG_NAMES)}", file=sys.stderr)
        return 1
    except Preempted as err:
        print(f"error: {err}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except ReplicateLocked as err:
        print(f"error: {translate(str(err), ef.FLAG_NAMES)}", file=sys.stderr)
        return 1
    except (tf.errors.UnavailableError, tf.errors.CancelledError,
            tf.errors.DeadlineExceededError) as err:
        if not multi_worker.is_multi_worker(strategy):
            raise
        print(f"error: the cluster lost a worker ({_reason(err)}). Rerun the same command "
              "on every worker to resume from the chief's last checkpoint.", file=sys.stderr)
        return 1
    if not chief:
        print(f"\nworker {multi_worker.worker_index(strategy)}: done; the chief wrote "
              f"{where.replicate.path}")
        return 0
    print(f"\nResults ({where.replicate.path}):\n{result.table()}")
    if FLAGS.analyses:
        from tf_lottery import analysis

        calls = {"instability": analysis.run_instability, "noise": analysis.run_noise,
                 "one_shot": analysis.run_one_shot, "adversarial": analysis.run_adversarial}
        for name in FLAGS.analyses:  # each resumes from its JSON file like the run itself
            done = calls[name](where.run.path, replicate=FLAGS.replicate,
                               data_dir=FLAGS.data_dir, runtime=runtime)
            print(f"{name}: {len(done['entries'])} entries in "
                  f"{where.replicate.analysis(name)}")
    return 0


def _reason(err) -> str:
    """The informative line of a collective's error (TensorFlow leads with "Graph
    execution error:" and node names)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if "unhealthy" in line or "connect" in line
              or "crashed" in line or "is down" in line]
    return f"{type(err).__name__}: {(useful or lines or [''])[0][:300]}"


def _main(argv) -> int:
    return exit_with(lambda: main(argv))


def _parse(argv):
    try:
        return FLAGS(argv)
    except flags.Error as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def print_help_and_exit(argv, usage: str, *modules) -> None:
    """For ``--help`` (and its spellings) in ``argv``: prints ``usage`` and the flags of
    ``modules`` on standard output and exits 0."""
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print(usage + "\nflags:\n" + "\n".join(FLAGS.module_help(m) for m in modules))
        sys.exit(0)


def run(argv=None) -> None:
    """Entry point of ``python -m tf_lottery.main`` and the ``tf-lottery`` script."""
    argv = list(sys.argv if argv is None else argv)
    print_help_and_exit(argv, USAGE, ef)
    logging.set_verbosity(logging.INFO)
    app.run(_main, argv=argv, flags_parser=_parse)
