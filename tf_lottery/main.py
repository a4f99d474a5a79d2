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
flags.DEFINE_string("initializer", "glorot_normal", "Keras kernel initializer name.")
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
    "checkpoint_every",
]


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
    try:
        import keras

        keras.initializers.get(FLAGS.initializer)
    except (ValueError, TypeError):
        raise UsageError(
            f"--initializer={FLAGS.initializer!r} is not a Keras initializer; use e.g. "
            "glorot_normal, glorot_uniform, he_normal, he_uniform, lecun_normal, orthogonal."
        ) from None
    try:
        return ExperimentHparams(
            model=ModelHparams(FLAGS.model, FLAGS.initializer, FLAGS.dropout, batch_norm),
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


def experiment(argv) -> int:
    """Runs the experiment the flags describe; returns the process exit code."""
    del argv
    import keras

    from tf_lottery import runs, ticket

    _split_cpu()
    hp = _hparams()
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
        )
        models_lib.build_model(  # validates model options before any directory exists
            hp.model.model, dataset.input_shape, dataset.num_classes,
            initializer=hp.model.initializer, dropout=hp.model.dropout,
            batch_norm=hp.model.batch_norm,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    if FLAGS.replicate < 0:
        raise UsageError(f"--replicate must be >= 0; received {FLAGS.replicate}.")
    strategy = _strategy()
    keras.mixed_precision.set_global_policy(hp.precision)

    root = os.path.join(FLAGS.run_root, hp.run_name())
    replicate_dir = os.path.join(root, f"replicate_{FLAGS.replicate}")
    os.makedirs(replicate_dir, exist_ok=True)
    runs.atomic_write_json(os.path.join(root, "hparams.json"), hp.to_dict())
    runs.atomic_write_text(os.path.join(root, "flags.txt"), _flagfile_text())
    logging.info("run directory: %s", replicate_dir)

    def model_fn(seed):
        return models_lib.build_model(
            hp.model.model, dataset.input_shape, dataset.num_classes,
            initializer=hp.model.initializer, dropout=hp.model.dropout, seed=seed,
            batch_norm=hp.model.batch_norm,
        )

    result = ticket.fit(
        model_fn, dataset, training=hp.training, pruning_hparams=hp.pruning,
        run_dir=replicate_dir, seed=derive_seed(hp.seed, "replicate", FLAGS.replicate),
        strategy=strategy, runtime=runtime, augment=hp.dataset.augment,
    )
    print(f"\nResults ({replicate_dir}):\n{result.table()}")
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


if __name__ == "__main__":
    run()
