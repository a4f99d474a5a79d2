"""Ticket vs tfmot gradual magnitude pruning at matched sparsity and training budget.

    .venv/bin/python tools/compare_tfmot.py --run_dir=runs/<name>_<hash> --level=8
    .venv/bin/python tools/compare_tfmot.py --run_dir=... --level=8 --training_steps=5000

Rebuilds the ticket of ``--level`` (``tf_lottery.export.load_ticket``), reads its
per-layer sparsity from its masks, and trains the same dense architecture (fresh
initialization, ``--seed``) with tfmot's ``prune_low_magnitude`` + ``PolynomialDecay``
to the same per-layer sparsity (``tf_lottery.tfmot_bridge.gmp_baseline``), with the
run's optimizer, learning rate and batch size and ``--training_steps`` iterations
(default: the run's budget per level, ``training_steps`` in hparams.json). The run's
learning-rate schedule (warmup, drops), momentum/Nesterov and weight decay carry over;
with a shorter ``--training_steps``, drops past the budget are left out. Pruning runs
from iteration 0 to the last multiple of ``--frequency`` at or before
``--end_fraction`` of the budget (tfmot updates masks only every ``--frequency``
iterations, so the last update must land on the end step to reach the target). Prints
both test accuracies and optionally writes them as JSON (``--output``).

Budget note: a ticket at level k has been trained k + 1 times (each level retrains
from the rewind point); the baseline gets one level's budget, as in Frankle & Carbin
(2019) and the gradual-pruning comparisons of Gale et al. (2019).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Run directory <run_root>/<name>_<hash> or its "
                    "replicate_<r> directory.")
flags.DEFINE_integer("level", None, "Level of the ticket to compare.")
flags.DEFINE_integer("replicate", None, "Replicate (default 0).")
flags.DEFINE_string("branch", "lottery", "Branch of the ticket.")
flags.DEFINE_integer("training_steps", None, "Iterations of the GMP baseline (default: the "
                     "run's budget per level).")
flags.DEFINE_float("end_fraction", 0.75, "Pruning ends at this fraction of training.")
flags.DEFINE_integer("frequency", 100, "Iterations between GMP mask updates.")
flags.DEFINE_integer("seed", 0, "Initialization and data-order seed of the baseline.")
flags.DEFINE_string("data_dir", None, "Dataset location.")
flags.DEFINE_string("output", None, "Optional JSON file for the comparison.")
flags.mark_flags_as_required(["run_dir", "level"])


def compare() -> dict:
    import numpy as np

    from tf_lottery import experiment, export, files, masking, tfmot_bridge

    ticket = export.load_ticket(FLAGS.run_dir, FLAGS.level, branch=FLAGS.branch,
                                replicate=FLAGS.replicate, data_dir=FLAGS.data_dir)
    hp = ticket.hparams
    data = ticket.dataset
    spe = hp.training.steps_per_epoch(len(data.y_train))
    steps = FLAGS.training_steps or hp.training.iterations("training_steps", spe)
    if steps < 1 or FLAGS.frequency < 1 or not 0 < FLAGS.end_fraction <= 1:
        raise ValueError(
            f"--training_steps ({steps}) and --frequency ({FLAGS.frequency}) must be >= 1 "
            f"and --end_fraction ({FLAGS.end_fraction}) in (0, 1].")
    if FLAGS.frequency > steps:
        raise ValueError(f"--frequency ({FLAGS.frequency}) is longer than the training budget "
                         f"({steps} iterations): tfmot would never prune. Lower --frequency.")
    end_step = FLAGS.frequency * max(1, int(FLAGS.end_fraction * steps) // FLAGS.frequency)
    report = masking.sparsity_report(ticket.model)
    targets = {key: layer.sparsity for key, layer in report.layers.items()}

    def model_fn(seed):
        return experiment.build_model(hp.model, data.input_shape, data.num_classes, seed=seed)

    baseline = tfmot_bridge.gmp_baseline(
        model_fn, data, target_sparsity=targets, training_steps=steps,
        batch_size=hp.training.batch_size, learning_rate=hp.training.learning_rate,
        optimizer=hp.training.optimizer, momentum=hp.training.momentum,
        nesterov=hp.training.nesterov, weight_decay=hp.training.weight_decay,
        warmup_steps=hp.training.iterations("warmup", spe),
        lr_drops=[d for d in hp.training.drop_iterations(spe) if d <= steps],
        lr_drop_factor=hp.training.lr_drop_factor,
        end_step=end_step, frequency=FLAGS.frequency, seed=FLAGS.seed, verbose=0)
    logits = ticket.model.predict(data.x_test, batch_size=1000, verbose=0)
    ticket_accuracy = float(np.mean(np.argmax(logits, -1) == data.y_test))
    result = {
        "run_dir": ticket.branch_dir,
        "level": FLAGS.level,
        "sparsity": report.sparsity,
        "layer_sparsity": targets,
        "ticket_test_accuracy": ticket_accuracy,
        "ticket_early_stop_test_accuracy": ticket.summary.get("early_stop_test_accuracy"),
        "ticket_training_steps_per_level": str(hp.training.training_steps),
        "gmp": baseline.to_dict(),
    }
    print(f"{ticket.branch_dir}: sparsity {report.sparsity:.4f} "
          f"({100 * (1 - report.sparsity):.1f}% of weights remaining)")
    print("| method | training | sparsity | test accuracy |\n|---|---|---:|---:|")
    print(f"| lottery ticket, level {FLAGS.level} | {hp.training.training_steps} per level, "
          f"{FLAGS.level + 1} levels | {report.sparsity:.4f} | {ticket_accuracy:.4f} |")
    print(f"| tfmot GMP (PolynomialDecay 0 -> target, steps 0-{baseline.end_step}) | "
          f"{steps}it | {baseline.sparsity:.4f} | {baseline.test_accuracy:.4f} |")
    print(f"GMP wall time {baseline.seconds:.0f} s")
    if FLAGS.output:
        files.atomic_write_json(FLAGS.output, result)
    return result


def _main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
        return 2
    try:
        compare()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(_main)
