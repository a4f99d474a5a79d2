"""Command line: lottery-ticket experiments from absl flags.

    python -m tf_lottery.main --flagfile=configs/lenet300_100_fashion.flags
    tf-lottery --flagfile=configs/quickstart.flags --levels=3

The only module that reads absl flags. It turns them into ``ExperimentHparams``, checks
everything (flags, data, strategy) before creating any directory, then calls
``tf_lottery.ticket.fit`` and prints the results table. Bad input exits with code 2 and
a one-line message naming the flag. Rerunning the same command resumes the run.

Run directory: ``<run_root>/<model>_<dataset>_<hash>/`` holds ``hparams.json`` and
``flags.txt`` (a flagfile that reruns the experiment); ``replicate_<r>/`` below it holds
the weights, levels and ``results.json`` (see ``tf_lottery.ticket``).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from tf_lottery import data as data_lib
from tf_lottery import models as models_lib
from tf_lottery.hparams import (
    CONTROLS,
    OPTIMIZERS,
    PRECISIONS,
    RETRAIN_MODES,
    DatasetHparams,
    ExperimentHparams,
    ModelHparams,
    PruningHparams,
    TrainingHparams,
    derive_seed,
)
from tf_lottery.pruning import CRITERIA, SCOPES

FLAGS = flags.FLAGS
DISTRIBUTIONS = ("default", "mirrored", "multi_worker", "tpu")

# Model and data.
flags.DEFINE_enum("model", "lenet_300_100", sorted(models_lib.MODELS), "Network of the model zoo.")
flags.DEFINE_enum("dataset", "fashion_mnist", sorted(data_lib.DATASETS), "Dataset.")
flags.DEFINE_string("data_dir", None, "Directory of the IDX files (mnist, fashion_mnist; "
                    "default for fashion_mnist: Debian's /usr/share/datasets/fashion-mnist) "
                    "or TFDS data_dir.")
flags.DEFINE_integer("validation_size", None, "Training examples held out for validation "
                     "(default: 5000 for real data).")
flags.DEFINE_integer("synthetic_size", None, "Training examples of --dataset=synthetic.")
flags.DEFINE_bool("augment", False, "Random flip-and-crop of training batches (CIFAR).")
flags.DEFINE_string("initializer", "glorot_normal", "Keras kernel initializer name "
                    "(glorot_normal, he_normal, orthogonal, ...), or gradinit: "
                    "--base_initializer rescaled by GradInit (Zhu et al. 2021).")
# ---- GradInit flags (tf_lottery.gradinit); used only with --initializer=gradinit ----
flags.DEFINE_string("base_initializer", None, "Keras initializer GradInit starts from "
                    "(default glorot_normal).")
flags.DEFINE_integer("gradinit_steps", None, "GradInit iterations (default 390).")
flags.DEFINE_float("gradinit_eta", None, "Step size of GradInit's simulated first optimizer "
                   "step (default 0.1; use the training learning rate).")
flags.DEFINE_float("gradinit_gamma", None, "Bound on the first gradient's norm, L2 for sgd, "
                   "L1 for adam (default 1).")
flags.DEFINE_string("gradinit_optimizer", None, "Optimizer GradInit prepares for: sgd or adam "
                    "(default sgd).")
flags.DEFINE_float("gradinit_scale_lr", None, "Adam learning rate of the scales (default 1e-2).")
flags.DEFINE_float("gradinit_min_scale", None, "Lower bound of the scales (default 0.01).")
flags.DEFINE_integer("gradinit_batch_size", None, "Examples per GradInit minibatch "
                     "(default 128).")
_GRADINIT_FLAGS = [
    "base_initializer", "gradinit_steps", "gradinit_eta", "gradinit_gamma",
    "gradinit_optimizer", "gradinit_scale_lr", "gradinit_min_scale", "gradinit_batch_size",
]
# ---- end of GradInit flags ----
flags.DEFINE_list("analyses", [], "Analyses run on the experiment's own directory once it "
                  "finishes, with tf-lottery-analyze's defaults: instability (dense network "
                  "and deepest ticket), noise (deepest ticket), one_shot (every level). "
                  "Transfer needs a target: run tf-lottery-analyze --analysis=transfer.")
flags.DEFINE_float("dropout", 0.0, "Dropout rate after hidden fully-connected layers.")
flags.DEFINE_enum("batch_norm", "default", ["default", "true", "false"],
                  "BatchNormalization in resnet20/vgg (default: the model's own).")
# Training.
flags.DEFINE_enum("optimizer", "adam", list(OPTIMIZERS), "Optimizer.")
flags.DEFINE_float("learning_rate", 1.2e-3, "Peak learning rate.")
flags.DEFINE_float("momentum", 0.0, "SGD momentum.")
flags.DEFINE_bool("nesterov", False, "Nesterov momentum (SGD).")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay.")
flags.DEFINE_integer("batch_size", 60, "Global batch size.")
flags.DEFINE_string("training_steps", "50000it", "Training budget per level: '50000it' or '40ep'.")
flags.DEFINE_string("eval_every", "100it", "Validation/test evaluation period.")
flags.DEFINE_list("lr_drops", [], "Step strings where the learning rate drops, e.g. 80ep,120ep.")
flags.DEFINE_float("lr_drop_factor", 0.1, "Factor of each learning-rate drop.")
flags.DEFINE_string("warmup", "0it", "Linear learning-rate warmup length.")
# Pruning.
flags.DEFINE_integer("levels", 0, "Pruning levels after the dense level 0.")
flags.DEFINE_enum("pruning", "layerwise", list(SCOPES), "Pruning scope.")
flags.DEFINE_float("prune_rate", 0.2, "Fraction of surviving weights pruned per level "
                   "(fully-connected layers; all layers for --pruning=global).")
flags.DEFINE_float("prune_rate_conv", None, "Per-level rate of convolutions (layerwise).")
flags.DEFINE_float("prune_rate_output", None, "Per-level rate of the output layer (layerwise).")
flags.DEFINE_enum("criterion", "magnitude", sorted(CRITERIA), "Pruning criterion.")
flags.DEFINE_string("rewind", "0it", "Rewind point k: '0it' (initialization), '500it', '1ep'.")
flags.DEFINE_enum("retrain", "rewind", list(RETRAIN_MODES), "How pruned networks retrain.")
flags.DEFINE_list("controls", [], f"Control branches per level: {','.join(CONTROLS)}.")
flags.DEFINE_list("one_shot", [], "Target sparsities for one-shot pruning, e.g. 0.8,0.9.")
flags.DEFINE_list("exclude", [], "Layer names never pruned.")
# Experiment identity and runtime.
flags.DEFINE_integer("seed", 0, "Seed of initialization, data order and controls.")
flags.DEFINE_integer("replicate", 0, "Replicate index; each replicate derives its own seed.")
flags.DEFINE_string("run_root", "runs", "Directory holding run directories.")
flags.DEFINE_enum("distribution", "default", list(DISTRIBUTIONS), "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU address for --distribution=tpu.")
flags.DEFINE_integer("cpu_devices", None, "Split the CPU into this many logical devices "
                     "(to try --distribution=mirrored without GPUs).")
flags.DEFINE_enum("precision", "float32", list(PRECISIONS), "Keras dtype policy.")
flags.DEFINE_bool("deterministic", False, "TensorFlow op determinism: reruns are identical.")
flags.DEFINE_bool("tensorboard", False, "Write TensorBoard logs per branch.")
flags.DEFINE_bool("jit_compile", True, "XLA-compile train and eval steps.")
flags.DEFINE_integer("steps_per_execution", 100, "Max iterations per compiled call.")
flags.DEFINE_bool("fast_loop", True, "Train and evaluate in compiled loops over the cached "
                  "data; false: Keras's train function fed by tf.data and model.evaluate.")
flags.DEFINE_integer("eval_batch_size", 1000, "Evaluation batch size.")
flags.DEFINE_string("checkpoint_every", None, "Checkpoint period within a level "
                    "(default: 10 evaluation periods).")

_OWN_FLAGS = [
    "model", "dataset", "data_dir", "validation_size", "synthetic_size", "augment",
    "initializer", "dropout", "batch_norm", "optimizer", "learning_rate", "momentum",
    "nesterov", "weight_decay", "batch_size", "training_steps", "eval_every", "lr_drops",
    "lr_drop_factor", "warmup", "levels", "pruning", "prune_rate", "prune_rate_conv",
    "prune_rate_output", "criterion", "rewind", "retrain", "controls", "one_shot", "exclude",
    "seed", "replicate", "run_root", "distribution", "tpu", "cpu_devices", "precision",
    "deterministic", "tensorboard", "jit_compile", "steps_per_execution", "eval_batch_size",
    "checkpoint_every", "fast_loop",
]
_OWN_FLAGS += ["analyses"]
_OWN_FLAGS += _GRADINIT_FLAGS  # GradInit (None unless set, so absent from other runs' flags.txt)


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2."""


def _hparams() -> ExperimentHparams:
    try:
        one_shot = tuple(float(s) for s in FLAGS.one_shot)
    except ValueError:
        raise UsageError(
            f"--one_shot must list sparsities such as 0.8,0.9; received {FLAGS.one_shot!r}."
        ) from None
    batch_norm = {"default": None, "true": True, "false": False}[FLAGS.batch_norm]
    # ---- GradInit: --initializer=gradinit checks --base_initializer instead ----
    gradinit_kwargs = {}
    checked = ("initializer", FLAGS.initializer)
    if FLAGS.initializer == "gradinit":
        gradinit_kwargs = {name: FLAGS[name].value for name in _GRADINIT_FLAGS}
        checked = ("base_initializer", FLAGS.base_initializer or "glorot_normal")
        if (FLAGS.gradinit_optimizer or "sgd") != FLAGS.optimizer:
            logging.warning(
                "--gradinit_optimizer=%s prepares the network for %s, but it trains with "
                "--optimizer=%s; GradInit works best with --gradinit_optimizer=%s and "
                "--gradinit_eta=<the learning rate>.", FLAGS.gradinit_optimizer or "sgd",
                FLAGS.gradinit_optimizer or "sgd", FLAGS.optimizer, FLAGS.optimizer)
    elif any(FLAGS[name].value is not None for name in _GRADINIT_FLAGS):
        logging.warning("--initializer=%s: the --base_initializer/--gradinit_* flags are "
                        "ignored (they apply to --initializer=gradinit).", FLAGS.initializer)
    # ---- end of GradInit block ----
    try:
        import keras

        keras.initializers.get(checked[1])
    except (ValueError, TypeError):
        raise UsageError(
            f"--{checked[0]}={checked[1]!r} is not a Keras initializer; use e.g. "
            "glorot_normal, glorot_uniform, he_normal, he_uniform, lecun_normal, orthogonal"
            + (", or gradinit." if checked[0] == "initializer" else ".")
        ) from None
    try:
        return ExperimentHparams(
            model=ModelHparams(FLAGS.model, FLAGS.initializer, FLAGS.dropout, batch_norm,
                               **gradinit_kwargs),
            dataset=DatasetHparams(
                FLAGS.dataset, FLAGS.validation_size, FLAGS.augment, FLAGS.synthetic_size
            ),
            training=TrainingHparams(
                optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate,
                momentum=FLAGS.momentum, nesterov=FLAGS.nesterov,
                weight_decay=FLAGS.weight_decay, batch_size=FLAGS.batch_size,
                training_steps=FLAGS.training_steps, eval_every=FLAGS.eval_every,
                lr_drops=tuple(FLAGS.lr_drops), lr_drop_factor=FLAGS.lr_drop_factor,
                warmup=FLAGS.warmup,
            ),
            pruning=PruningHparams(
                levels=FLAGS.levels, scope=FLAGS.pruning, rate=FLAGS.prune_rate,
                rate_conv=FLAGS.prune_rate_conv, rate_output=FLAGS.prune_rate_output,
                criterion=FLAGS.criterion, rewind=FLAGS.rewind, retrain=FLAGS.retrain,
                controls=tuple(FLAGS.controls), one_shot=one_shot,
                exclude=tuple(FLAGS.exclude),
            ),
            seed=FLAGS.seed,
            precision=FLAGS.precision,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None


def _strategy():
    import tensorflow as tf

    name = FLAGS.distribution
    try:
        if name == "default":
            return tf.distribute.get_strategy()
        if name == "mirrored":
            if tf.config.list_logical_devices("GPU"):
                return tf.distribute.MirroredStrategy()
            return tf.distribute.MirroredStrategy(
                [d.name for d in tf.config.list_logical_devices("CPU")]
            )
        if name == "multi_worker":
            return tf.distribute.MultiWorkerMirroredStrategy()
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=FLAGS.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise UsageError(
            f"--distribution={name} could not start: {str(err).splitlines()[0]}. Use "
            "--distribution=default (or mirrored) on this machine."
        ) from None


def _split_cpu():
    if FLAGS.cpu_devices is None:
        return
    import tensorflow as tf

    if FLAGS.cpu_devices < 1:
        raise UsageError(f"--cpu_devices must be >= 1; received {FLAGS.cpu_devices}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices
    )


def _flagfile_text() -> str:
    lines = []
    for name in _OWN_FLAGS:
        flag = FLAGS[name]
        if name in ("run_root",) or flag.value is None:
            continue
        lines.append(flag.serialize())
    return "\n".join(line for line in lines if line) + "\n"


def _data_and_runtime(hp: ExperimentHparams):
    """``(dataset, ticket.Runtime)`` of the flags; ``UsageError`` for missing data or a
    rewind point past the budget."""
    from tf_lottery import ticket

    try:
        dataset = data_lib.load(
            hp.dataset.dataset, data_dir=FLAGS.data_dir,
            validation_size=hp.dataset.validation_size,
            synthetic_size=hp.dataset.synthetic_size,
        )
        spe = -(-len(dataset.y_train) // hp.training.batch_size)
        hp.training.check_against(spe, hp.pruning.rewind)
        runtime = ticket.Runtime(
            jit_compile=FLAGS.jit_compile, steps_per_execution=FLAGS.steps_per_execution,
            eval_batch_size=FLAGS.eval_batch_size, checkpoint_every=FLAGS.checkpoint_every,
            tensorboard=FLAGS.tensorboard, deterministic=FLAGS.deterministic,
            fast_loop=FLAGS.fast_loop,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    return dataset, runtime


def experiment(argv) -> int:
    """Runs the experiment the flags describe; returns the process exit code."""
    del argv
    import keras

    from tf_lottery import files, ticket

    _split_cpu()
    hp = _hparams()
    dataset, runtime = _data_and_runtime(hp)
    try:
        models_lib.build_model(  # validates model options before any directory exists
            hp.model.model, dataset.input_shape, dataset.num_classes,
            initializer=hp.model.base_initializer or hp.model.initializer,  # GradInit
            dropout=hp.model.dropout, batch_norm=hp.model.batch_norm,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    if FLAGS.replicate < 0:
        raise UsageError(f"--replicate must be >= 0; received {FLAGS.replicate}.")
    in_run = ("instability", "noise", "one_shot")
    bad = [name for name in FLAGS.analyses if name not in in_run]
    if bad:
        raise UsageError(f"--analyses must list analyses among {','.join(in_run)}; received "
                         f"{','.join(FLAGS.analyses)!r} (transfer: use tf-lottery-analyze).")
    strategy = _strategy()
    keras.mixed_precision.set_global_policy(hp.precision)

    root = os.path.join(FLAGS.run_root, hp.run_name())
    replicate_dir = os.path.join(root, f"replicate_{FLAGS.replicate}")
    os.makedirs(replicate_dir, exist_ok=True)
    files.atomic_write_json(os.path.join(root, "hparams.json"), hp.to_dict())
    files.atomic_write_text(os.path.join(root, "flags.txt"), _flagfile_text())
    logging.info("run directory: %s", replicate_dir)

    def model_fn(seed):
        return models_lib.build_model(
            hp.model.model, dataset.input_shape, dataset.num_classes,
            initializer=hp.model.initializer, dropout=hp.model.dropout, seed=seed,
            batch_norm=hp.model.batch_norm,
        )

    # ---- GradInit: theta_0 and every reinit network are rescaled by GradInit; the
    # learned scales are kept in replicate_<r>/gradinit_<seed>.json (resume replays them).
    if hp.model.initializer == "gradinit":
        from tf_lottery import gradinit

        model_fn = gradinit.make_model_fn(hp.model, dataset, cache_dir=replicate_dir)
    # ---- end of GradInit block ----

    result = ticket.fit(
        model_fn, dataset, training=hp.training, pruning_hparams=hp.pruning,
        run_dir=replicate_dir, seed=derive_seed(hp.seed, "replicate", FLAGS.replicate),
        strategy=strategy, runtime=runtime, augment=hp.dataset.augment,
    )
    print(f"\nResults ({replicate_dir}):\n{result.table()}")
    if FLAGS.analyses:
        from tf_lottery import analysis

        calls = {"instability": analysis.run_instability, "noise": analysis.run_noise,
                 "one_shot": analysis.run_one_shot}
        for name in FLAGS.analyses:  # each resumes from its JSON file like the run itself
            done = calls[name](root, replicate=FLAGS.replicate, data_dir=FLAGS.data_dir,
                               runtime=runtime)
            print(f"{name}: {len(done['entries'])} entries in "
                  f"{os.path.join(replicate_dir, 'analysis', name + '.json')}")
    return 0


def _main(argv):
    try:
        return experiment(argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _parse(argv):
    try:
        return FLAGS(argv)
    except flags.Error as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def run():
    """Console-script entry point (``tf-lottery``)."""
    logging.set_verbosity(logging.INFO)
    app.run(_main, flags_parser=_parse)




# ---- export command (tf_lottery.export) ----
# `python -m tf_lottery.export` / `tf-lottery-export`: TFLite export of a trained ticket.
# Its flags live in their own FlagValues, created only by `run_export`, so the
# experiment command above never sees them (nor they its flags).

_EXPORT_USAGE = """Exports a trained ticket of a run directory to a sparse TFLite file.

    python -m tf_lottery.export --run_dir=runs/<name>_<hash> --level=8 --quantization=int8

Writes <output_dir>/export_<quantization>.tflite and .json (default output_dir: the
branch directory level_<k>/<branch>/) and prints the report and the test-set accuracy
of the Keras model and of the exported file (run with LiteRT).
"""


def _export_flag_values() -> flags.FlagValues:
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
    flags.DEFINE_string("output_dir", None, "Directory for the .tflite and .json files "
                        "(default: the branch directory).", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Dataset location, as for the experiment.",
                        flag_values=fv)
    flags.mark_flags_as_required(["run_dir", "level"], flag_values=fv)
    return fv


def _export(fv: flags.FlagValues) -> int:
    import numpy as np

    from tf_lottery import export, files

    for name, low in (("representative_size", 1), ("latency_runs", 1), ("qat_steps", 0)):
        if fv[name].value < low:
            raise UsageError(f"--{name} must be >= {low}; received {fv[name].value}.")
    if fv.qat_learning_rate <= 0:
        raise UsageError(f"--qat_learning_rate must be > 0; received {fv.qat_learning_rate}.")
    if fv.qat_steps and fv.quantization != "int8":
        raise UsageError(f"--qat_steps needs --quantization=int8; received "
                         f"--quantization={fv.quantization}.")
    try:
        ticket = export.load_ticket(fv.run_dir, fv.level, branch=fv.branch,
                                    replicate=fv.replicate, data_dir=fv.data_dir)
    except ValueError as err:
        raise UsageError(str(err)) from None
    data = ticket.dataset
    label = fv.quantization + ("_qat" if fv.qat_steps else "")
    out_dir = fv.output_dir or ticket.branch_dir
    path = os.path.join(out_dir, f"export_{label}.tflite")
    qat = {}
    if fv.qat_steps:
        qat = dict(qat_data=(data.x_train, data.y_train), qat_steps=fv.qat_steps,
                   qat_batch_size=ticket.hparams.training.batch_size,
                   qat_learning_rate=fv.qat_learning_rate)
    try:
        report = export.to_tflite(
            ticket.model, path, quantization=fv.quantization,
            representative_data=data.x_train[:fv.representative_size],
            sample_inputs=data.x_test[:256], latency_runs=fv.latency_runs, **qat,
        )
    except RuntimeError as err:  # the file runs under no LiteRT kernels: nothing written
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
    files.atomic_write_json(path[: -len(".tflite")] + ".json", result)
    print(report)
    print(f"  test accuracy ({len(data.y_test):,} examples): Keras {keras_accuracy:.4f}, "
          f"LiteRT {litert_accuracy:.4f} ({litert_accuracy - keras_accuracy:+.4f})")
    print(f"  wrote {path} and {path[: -len('.tflite')]}.json")
    return 0


def run_export(argv=None) -> None:
    """Entry point of ``python -m tf_lottery.export`` and the ``tf-lottery-export`` script.

    Exits 0 on success; 2, after one ``error: ...`` line naming the flag, on bad input;
    1 when the converted file runs under none of LiteRT's kernels (nothing is written).
    """
    argv = list(sys.argv if argv is None else argv)
    fv = _export_flag_values()
    if any(arg in ("-h", "-?", "--help", "--helpshort", "--helpfull") for arg in argv[1:]):
        print(_EXPORT_USAGE + "\nflags:\n" + fv.get_help())
        sys.exit(0)
    try:
        extra = fv(argv)[1:]
        if extra:
            raise flags.Error(f"unexpected arguments {extra}; every option is a --flag.")
    except flags.Error as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        code = _export(fv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)
# ---- end of export command ----


# ---- report and analysis commands ----
# `python -m tf_lottery.report RUN_DIR ... --out=DIR` / `tf-lottery-report`: plots and
# tables of runs (tf_lottery.report); `... report analyze --run_dir=... --analysis=...`
# / `tf-lottery-analyze`: instability, noise and transfer analyses (tf_lottery.analysis).
# Their flags live in FlagValues of their own, created only by `run_report`, so the
# experiment command above never lists them.

_REPORT_USAGE = """Plots and tables of lottery-ticket runs (finished or still running).

    python -m tf_lottery.report RUN_DIR [RUN_DIR ...] --out=DIR [--levels=0,3,7]
    python -m tf_lottery.report analyze --run_dir=RUN_DIR --analysis=instability ...

RUN_DIR is <run_root>/<name>_<hash> (all replicates) or one of its replicate_<r>
directories; several runs share every plot. Writes DIR/accuracy.png, early_stop.png,
learning_curves.png, layer_sparsity.png (and one_shot.png, instability.png, noise.png,
transfer.png when the runs have them), report.md and report.json.
"""

_ANALYZE_USAGE = """Analyses of a run, written to <replicate>/analysis/<name>.json.

    python -m tf_lottery.report analyze --run_dir=RUN_DIR --analysis=instability \\
        --levels=0,7 --rewind_points=0it,500it --training_steps=10000it
    python -m tf_lottery.report analyze --run_dir=RUN_DIR --analysis=noise --levels=7
    python -m tf_lottery.report analyze --run_dir=RUN_DIR --analysis=transfer \\
        --levels=7 --target_dataset=mnist
    python -m tf_lottery.report analyze --run_dir=RUN_DIR --analysis=one_shot

instability: linear mode connectivity of two copies trained with different data orders
(Frankle et al. 2020); noise: accuracy after Gaussian noise on the rewind weights;
transfer: the ticket trained on another dataset (Morcos et al. 2019); one_shot: one-shot
pruning to the sparsity of each iterative ticket (Frankle & Carbin 2019). Finished
entries are kept, so a rerun resumes. Then run the report on the same directory.
"""


def _report_flag_values() -> flags.FlagValues:
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


def _analyze_flag_values() -> flags.FlagValues:
    """The analyze subcommand's flags, in a FlagValues of their own."""
    from tf_lottery import analysis

    fv = flags.FlagValues()
    flags.DEFINE_string("run_dir", None, "Run directory <run_root>/<name>_<hash>, or one of "
                        "its replicate_<r> directories.", flag_values=fv)
    flags.DEFINE_integer("replicate", None, "Replicate index when --run_dir is the "
                         "<name>_<hash> directory (default 0).", flag_values=fv)
    flags.DEFINE_list("analysis", None, f"Analyses to run, in order: "
                      f"{','.join(analysis.ANALYSES)}.", flag_values=fv)
    flags.DEFINE_list("levels", None, "Mask levels to analyse (0: the dense network). "
                      "Default: instability 0 and the deepest level with a mask; noise and "
                      "transfer the deepest; one_shot every pruned level.", flag_values=fv)
    flags.DEFINE_enum("mask", "lottery", list(analysis.MASK_KINDS), "Masks of the pruned "
                      "levels: the run's winning tickets or random masks with the same "
                      "per-layer counts.", flag_values=fv)
    flags.DEFINE_list("rewind_points", None, "Rewind points k of instability and noise, "
                      "e.g. 0it,100it,500it (default: the run's --rewind).", flag_values=fv)
    flags.DEFINE_string("training_steps", None, "Budget of every training, e.g. 10000it "
                        "(default: the run's; one_shot always uses the run's, to compare "
                        "with its tickets).", flag_values=fv)
    flags.DEFINE_string("eval_every", None, "Evaluation period of noise and transfer "
                        "trainings (default: the run's).", flag_values=fv)
    flags.DEFINE_integer("points", 30, "Interpolation points of instability.", flag_values=fv)
    flags.DEFINE_list("noise_scales", ["0.5", "1", "2", "3"], "Noise std in units of each "
                      "layer's initialization std (0 is always added).", flag_values=fv)
    flags.DEFINE_integer("repeats", 1, "Noise draws per scale.", flag_values=fv)
    flags.DEFINE_string("target_dataset", None, "Transfer target dataset (same input shape "
                        "as the run's, e.g. mnist for fashion_mnist, cifar100 for cifar10).",
                        flag_values=fv)
    flags.DEFINE_string("target_run_dir", None, "A run of the same model on the target "
                        "dataset providing the target's own tickets (default: find them by "
                        "pruning on the target with the run's settings).", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Location of the run's dataset.", flag_values=fv)
    flags.DEFINE_string("target_data_dir", None, "Location of the target dataset.",
                        flag_values=fv)
    flags.DEFINE_bool("deterministic", False, "TensorFlow op determinism (process-wide).",
                      flag_values=fv)
    flags.DEFINE_bool("jit_compile", True, "XLA-compile train and eval steps.", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Recompute entries already in the analysis file.",
                      flag_values=fv)
    flags.mark_flags_as_required(["run_dir", "analysis"], flag_values=fv)
    return fv


def _int_list(name: str, values) -> list[int] | None:
    if values is None:
        return None
    try:
        return [int(v) for v in values]
    except ValueError:
        raise UsageError(f"--{name} must list integers such as 0,3,7; received "
                         f"{','.join(values)!r}.") from None


def _report(fv: flags.FlagValues, run_dirs: list[str]) -> int:
    from tf_lottery import report

    if not run_dirs:
        raise UsageError("name at least one RUN_DIR (a <name>_<hash> run directory or one of "
                         "its replicate_<r> directories) before or after --out.")
    try:
        written = report.make_report(run_dirs, fv.out, levels=_int_list("levels", fv.levels),
                                     prefix=fv.prefix, images_only=fv.images_only)
    except ValueError as err:
        raise UsageError(str(err)) from None
    for kind, path in written.items():
        print(f"{kind:>16}: {path}")
    return 0


def _analyze(fv: flags.FlagValues) -> int:
    from tf_lottery import analysis, ticket

    unknown = [a for a in fv.analysis if a not in analysis.ANALYSES]
    if unknown or not fv.analysis:
        raise UsageError(f"--analysis must list analyses among {','.join(analysis.ANALYSES)}; "
                         f"received {','.join(fv.analysis)!r}.")
    if "transfer" in fv.analysis and not fv.target_dataset:
        raise UsageError("--analysis=transfer needs --target_dataset (e.g. mnist for a "
                         "fashion_mnist run).")
    try:
        scales = [float(s) for s in fv.noise_scales]
    except ValueError:
        raise UsageError(f"--noise_scales must list numbers such as 0.5,1,2,3; received "
                         f"{','.join(fv.noise_scales)!r}.") from None
    levels = _int_list("levels", fv.levels)
    runtime = ticket.Runtime(jit_compile=fv.jit_compile, deterministic=fv.deterministic)
    common = dict(replicate=fv.replicate, runtime=runtime, overwrite=fv.overwrite,
                  training_steps=fv.training_steps, levels=levels)
    calls = {
        "instability": lambda **kw: analysis.run_instability(
            fv.run_dir, rewind_points=fv.rewind_points, mask=fv.mask, points=fv.points,
            data_dir=fv.data_dir, **common, **kw),
        "noise": lambda **kw: analysis.run_noise(
            fv.run_dir, scales=scales, repeats=fv.repeats, rewind_points=fv.rewind_points,
            mask=fv.mask, eval_every=fv.eval_every, data_dir=fv.data_dir, **common, **kw),
        "transfer": lambda **kw: analysis.run_transfer(
            fv.run_dir, target_dataset=fv.target_dataset, target_run_dir=fv.target_run_dir,
            eval_every=fv.eval_every, target_data_dir=fv.target_data_dir, **common, **kw),
        "one_shot": lambda **kw: analysis.run_one_shot(
            fv.run_dir, levels=levels, replicate=fv.replicate, data_dir=fv.data_dir,
            runtime=runtime, overwrite=fv.overwrite, **kw),
    }
    if "one_shot" in fv.analysis and fv.training_steps:
        logging.warning("--analysis=one_shot trains with the run's budget; --training_steps=%s "
                        "applies to the other analyses only.", fv.training_steps)
    try:
        for name in fv.analysis:  # every analysis checks its arguments before any training
            calls[name](check_only=True)
        results = {name: calls[name]() for name in fv.analysis}
    except ValueError as err:
        raise UsageError(str(err)) from None
    for name, result in results.items():
        print(f"\n{name}: {len(result['entries'])} entries in "
              f"{os.path.join(result['replicate_dir'], 'analysis', name + '.json')}")
        for entry in result["entries"]:
            key = ", ".join(f"{k}={v}" for k, v in entry["key"].items() if k != "data_orders")
            if name == "instability":
                value = f"instability {entry['instability']:.4f}"
            elif name == "one_shot" and entry.get("early_stop_test_accuracy") is not None:
                iterative = (entry.get("iterative") or {}).get("early_stop_test_accuracy")
                value = (f"test accuracy at early stopping {entry['early_stop_test_accuracy']:.4f}"
                         + (f" (iterative ticket {iterative:.4f})" if iterative is not None
                            else ""))
            else:
                acc = entry.get("early_stop_test_accuracy")
                value = ("test accuracy at early stopping " + f"{acc:.4f}" if acc is not None
                         else f"final test accuracy {entry['final_test_accuracy']:.4f}")
            print(f"  {key}: {value}")
    return 0


def _parse_own(fv: flags.FlagValues, argv: list[str], usage: str) -> list[str]:
    if any(arg in ("-h", "-?", "--help", "--helpshort", "--helpfull") for arg in argv[1:]):
        print(usage + "\nflags:\n" + fv.get_help())
        sys.exit(0)
    try:
        return fv(argv)[1:]
    except flags.Error as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def run_report(argv=None) -> None:
    """Entry point of ``python -m tf_lottery.report`` and ``tf-lottery-report``.

    ``report RUN_DIR ... --out=DIR`` writes plots and tables; ``report analyze ...`` runs
    analyses (see ``run_analysis``). Exits 0 on success and 2, after one
    ``error: ...`` line, on bad input.
    """
    argv = list(sys.argv if argv is None else argv)
    if len(argv) > 1 and argv[1] == "analyze":
        run_analysis([argv[0]] + argv[2:])
        return
    fv = _report_flag_values()
    run_dirs = _parse_own(fv, argv, _REPORT_USAGE)
    try:
        code = _report(fv, run_dirs)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)


def run_analysis(argv=None) -> None:
    """Entry point of ``tf-lottery-analyze`` and ``python -m tf_lottery.report analyze``
    (also ``python -m tf_lottery.analysis``). Exits 0, or 2 after one ``error: ...``
    line on bad input."""
    argv = list(sys.argv if argv is None else argv)
    fv = _analyze_flag_values()
    extra = _parse_own(fv, argv, _ANALYZE_USAGE)
    if extra:
        print(f"error: unexpected arguments {extra}; every option of analyze is a --flag.",
              file=sys.stderr)
        sys.exit(2)
    logging.set_verbosity(logging.INFO)
    try:
        code = _analyze(fv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)
# ---- end of report and analysis commands ----


# ---- tune command ----
# `python -m tf_lottery.tune` / `tf-lottery-tune`: keras-tuner search over lottery
# experiments (tf_lottery.tune). A search is an experiment flagfile plus the flags
# below, so they join the experiment's FLAGS; they are defined only by `run_tune`.


def _define_tune_flags() -> None:
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


def _tune(argv) -> int:
    del argv
    import keras

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
    _split_cpu()
    hp = _hparams()
    dataset, runtime = _data_and_runtime(hp)
    strategy = _strategy()
    keras.mixed_precision.set_global_policy(hp.precision)
    try:
        result = tune_lib.tune(
            hp, dataset, names=names, tune_dir=FLAGS.tune_dir, run_root=FLAGS.run_root,
            base_flag_lines=_flagfile_text().splitlines(), tuner=FLAGS.tuner,
            max_trials=FLAGS.max_trials, target_sparsity=FLAGS.tune_target_sparsity,
            objective=FLAGS.tune_objective, hyperband_max_epochs=FLAGS.hyperband_max_epochs,
            runtime=runtime, strategy=strategy, overwrite=FLAGS.tune_overwrite,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"\n{result.table}\nBest trial {result.best_trial}: "
          + " ".join(f"--{k}={v}" for k, v in result.best_flags.items())
          + f" ({FLAGS.tune_objective}_accuracy {result.best_score:.4f})\n"
          f"Search directory: {result.tune_dir}\n"
          f"Best flagfile: {result.flagfile}\n"
          f"Run it: python -m tf_lottery.main --flagfile={result.flagfile}")
    return 0


def _tune_main(argv):
    try:
        return _tune(argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run_tune(argv=None) -> None:
    """Entry point of ``python -m tf_lottery.tune`` and the ``tf-lottery-tune`` script.

    Exits 0 after writing ``best.flags``, ``trials.md`` and ``trials.csv`` into
    ``--tune_dir`` (default ``<run_root>/tune_<model>_<dataset>_<hash>``), and 2 after
    one ``error: ...`` line on bad input (before any trial or directory).
    """
    _define_tune_flags()
    logging.set_verbosity(logging.INFO)
    app.run(_tune_main, argv=argv, flags_parser=_parse)
# ---- end of tune command ----

if __name__ == "__main__":
    run()
