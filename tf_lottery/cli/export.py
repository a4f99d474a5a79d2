"""``tf-lottery-export`` / ``python -m tf_lottery.cli export``: a trained ticket to sparse TFLite.

Its flags live in a ``FlagValues`` of their own, so the experiment's flags never see them.
"""

from __future__ import annotations

import sys

from absl import flags

from tf_lottery.cli.errors import UsageError, exit_with, parse_or_exit, usage_errors

__all__ = ["USAGE", "flag_values", "main", "run"]

USAGE = """Exports a trained ticket of a run directory to a TFLite file that LiteRT's
default Interpreter runs (sparse weight encoding where it runs there and is smaller).

    python -m tf_lottery.cli export --run_dir=runs/<name>_<hash> --level=8 --quantization=int8

Writes <output_dir>/export_<quantization>[_shrunk].tflite and .json (default output_dir:
the branch directory level_<k>/<branch>/) and prints the report and the test-set
accuracy of the Keras model and of the exported file (run with LiteRT).
"""

#: Library argument -> flag.
FLAG_NAMES = {name: name for name in (
    "run_dir", "level", "branch", "replicate", "quantization", "representative_size",
    "qat_steps", "qat_learning_rate", "latency_runs", "output_dir", "data_dir", "shrink")}
FLAG_NAMES.update(representative_data="representative_size")


def flag_values() -> flags.FlagValues:
    """The export command's flags, in a FlagValues of their own."""
    from tf_lottery.export import QUANTIZATIONS
    from tf_lottery.hparams import BRANCHES

    fv = flags.FlagValues()
    flags.DEFINE_string("run_dir", None, "Run directory <run_root>/<name>_<hash>, or one of "
                        "its replicate_<r> directories.", flag_values=fv)
    flags.DEFINE_integer("level", None, "Pruning level to export (its branch must have "
                         "finished: summary.json exists).", flag_values=fv)
    flags.DEFINE_enum("branch", "lottery", list(BRANCHES), "Branch to export.", flag_values=fv)
    flags.DEFINE_integer("replicate", None, "Replicate index when --run_dir is the "
                         "<name>_<hash> directory (default 0).", flag_values=fv)
    flags.DEFINE_enum("quantization", "float32", list(QUANTIZATIONS),
                      "float32, float16 (weights), dynamic_int8 (weights) or int8 (weights "
                      "and activations, calibrated on training examples).", flag_values=fv)
    flags.DEFINE_integer("representative_size", 500, "Training examples calibrating "
                         "--quantization=int8.", flag_values=fv)
    flags.DEFINE_integer("qat_steps", 0, "With --quantization=int8: iterations of tfmot's "
                         "prune-preserving quantization-aware training first (0: none).",
                         flag_values=fv)
    flags.DEFINE_float("qat_learning_rate", 1e-4, "Adam learning rate of --qat_steps.",
                       flag_values=fv)
    flags.DEFINE_integer("latency_runs", 50, "Timed runs behind each latency median.",
                         flag_values=fv)
    flags.DEFINE_boolean("shrink", False, "Remove pruned channels (Dense units, conv "
                         "filters whose kernel mask column is all zero) first: a "
                         "channel-pruned ticket exports as a small dense network, and the "
                         "report compares its LiteRT latency with the unshrunk network's. "
                         "Files are named export_<quantization>_shrunk.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Directory for the .tflite and .json files "
                        "(default: the branch directory).", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Dataset location, as for the experiment.",
                        flag_values=fv)
    flags.mark_flags_as_required(["run_dir", "level"], flag_values=fv)
    return fv


def main(fv: flags.FlagValues) -> int:
    """Exports the ticket ``fv`` names; returns the exit code (1: nothing runs it)."""
    import numpy as np

    from tf_lottery import export, files, paths

    for name, low in (("representative_size", 1), ("latency_runs", 1), ("qat_steps", 0)):
        if fv[name].value < low:
            raise UsageError(f"--{name} must be >= {low}; received {fv[name].value}.")
    if fv.qat_learning_rate <= 0:
        raise UsageError(f"--qat_learning_rate must be > 0; received {fv.qat_learning_rate}.")
    if fv.qat_steps and fv.quantization != "int8":
        raise UsageError(f"--qat_steps needs --quantization=int8; received "
                         f"--quantization={fv.quantization}.")
    with usage_errors(FLAG_NAMES):
        ticket = export.load_ticket(fv.run_dir, fv.level, branch=fv.branch,
                                    replicate=fv.replicate, data_dir=fv.data_dir)
    data = ticket.dataset
    label = fv.quantization + ("_qat" if fv.qat_steps else "") + ("_shrunk" if fv.shrink else "")
    path = paths.BranchDir(ticket.branch_dir).export(label, fv.output_dir)
    qat = {}
    if fv.qat_steps:
        qat = dict(qat_data=(data.x_train, data.y_train), qat_steps=fv.qat_steps,
                   qat_batch_size=ticket.hparams.training.batch_size,
                   qat_learning_rate=fv.qat_learning_rate)
    try:
        with usage_errors(FLAG_NAMES):
            report = export.to_tflite(
                ticket.model, path, quantization=fv.quantization,
                representative_data=data.x_train[:fv.representative_size],
                sample_inputs=data.x_test[:256], latency_runs=fv.latency_runs,
                shrink=fv.shrink, **qat,
            )
    except RuntimeError as err:  # no encoding runs in LiteRT's default Interpreter
        print(f"error: {err}", file=sys.stderr)
        return 1
    keras_logits = ticket.model.predict(data.x_test, batch_size=1000, verbose=0)
    keras_accuracy = float(np.mean(np.argmax(keras_logits, -1) == data.y_test))
    litert_logits = export.predict(path, data.x_test, batch_size=1000, delegate=report.delegate)
    litert_accuracy = float(np.mean(np.argmax(litert_logits, -1) == data.y_test))
    result = report.to_dict()
    result.update(
        keras_test_accuracy=keras_accuracy, litert_test_accuracy=litert_accuracy,
        test_examples=int(len(data.y_test)),
        ticket={"branch_dir": ticket.branch_dir, "level": fv.level, "branch": fv.branch,
                "sparsity": ticket.summary.get("sparsity"),
                "final_test_accuracy": ticket.summary.get("final_test_accuracy")},
    )
    report_path = paths.BranchDir.export_report(path)
    files.atomic_write_json(report_path, result)
    print(report)
    print(f"  test accuracy ({len(data.y_test):,} examples): Keras {keras_accuracy:.4f}, "
          f"LiteRT {litert_accuracy:.4f} ({litert_accuracy - keras_accuracy:+.4f})")
    print(f"  wrote {path} and {report_path}")
    return 0


def run(argv=None) -> None:
    """Entry point of ``python -m tf_lottery.cli export`` and the ``tf-lottery-export`` script.

    Exits 0 on success; 2, after one ``error: ...`` line naming the flag, on bad input;
    1 when neither encoding of the converted model runs in LiteRT's default Interpreter
    (nothing is written).
    """
    argv = list(sys.argv if argv is None else argv)
    fv = flag_values()
    parse_or_exit(fv, argv, USAGE)
    sys.exit(exit_with(lambda: main(fv)))
