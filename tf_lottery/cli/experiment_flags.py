"""The experiment's flags, and what they become: hparams, runtime, strategy, data.

The flags of ``tf-lottery`` (``python -m tf_lottery.main``), shared by ``tf-lottery-tune``,
which searches over the same experiments. Every flag whose default is "unset" also accepts
``none`` (``--prune_rate_output=none``), so a value set by a preset flagfile can be reset
on the command line after it.
"""

from __future__ import annotations

from absl import flags, logging

from tf_lottery import data as data_lib
from tf_lottery import models as models_lib
from tf_lottery.cli.errors import UsageError, usage_errors
from tf_lottery.hparams import (
    CONTROLS,
    GRADINIT_FIELDS,
    OPTIMIZERS,
    PRECISIONS,
    PRUNE_AT,
    RETRAIN_MODES,
    WEIGHT_DECAY_MODES,
    DatasetHparams,
    ExperimentHparams,
    GradInitHparams,
    ModelHparams,
    PruningHparams,
    TrainingHparams,
)
from tf_lottery.pruning import CRITERIA, SCOPES

__all__ = ["FLAGS", "DISTRIBUTIONS", "EXPERIMENT_FLAGS", "FLAG_NAMES", "hparams",
           "runtime", "strategy", "split_cpu", "flagfile_text", "load_data"]

FLAGS = flags.FLAGS
DISTRIBUTIONS = ("default", "mirrored", "multi_worker", "tpu")


class _Optional(flags.ArgumentParser):
    """Parses like ``inner``, and ``none`` (or an empty value) as ``None``: unset."""

    def __init__(self, inner: flags.ArgumentParser):
        self.inner = inner

    def parse(self, argument):
        if argument is None or (isinstance(argument, str)
                                and argument.strip().lower() in ("", "none")):
            return None
        return self.inner.parse(argument)

    def flag_type(self):
        return self.inner.flag_type()


def _optional(inner: flags.ArgumentParser, name: str, help_text: str) -> None:
    flags.DEFINE(_Optional(inner), name, None, help_text + " ('none': unset)",
                 serializer=flags.ArgumentSerializer())


# Model and data.
flags.DEFINE_enum("model", "lenet_300_100", sorted(models_lib.MODELS), "Network of the model zoo.")
flags.DEFINE_enum("dataset", "fashion_mnist", sorted(data_lib.DATASETS), "Dataset.")
_optional(flags.ArgumentParser(), "data_dir", "Directory of the IDX files (mnist, "
          "fashion_mnist; default for fashion_mnist: Debian's "
          "/usr/share/datasets/fashion-mnist) or TFDS data_dir.")
_optional(flags.IntegerParser(), "validation_size", "Training examples held out for "
          "validation (default: 5000 for real data).")
_optional(flags.IntegerParser(), "synthetic_size", "Training examples of --dataset=synthetic.")
flags.DEFINE_bool("augment", False, "Random flip-and-crop of training batches (CIFAR).")
flags.DEFINE_string("initializer", "glorot_normal", "Keras kernel initializer name "
                    "(glorot_normal, he_normal, orthogonal, ...), or gradinit: "
                    "--base_initializer rescaled by GradInit (Zhu et al. 2021).")
flags.DEFINE_float("dropout", 0.0, "Dropout rate after hidden fully-connected layers.")
flags.DEFINE_enum("batch_norm", "default", ["default", "true", "false"],
                  "BatchNormalization in resnet20/vgg (default: the model's own).")
# GradInit (tf_lottery.gradinit); used only with --initializer=gradinit.
_optional(flags.ArgumentParser(), "base_initializer", "Keras initializer GradInit starts "
          "from (default glorot_normal).")
_optional(flags.IntegerParser(), "gradinit_steps", "GradInit iterations (default 390).")
_optional(flags.FloatParser(), "gradinit_eta", "Step size of GradInit's simulated first "
          "optimizer step (default 0.1; use the training learning rate).")
_optional(flags.FloatParser(), "gradinit_gamma", "Bound on the first gradient's norm, L2 "
          "for sgd, L1 for adam (default 1).")
_optional(flags.ArgumentParser(), "gradinit_optimizer", "Optimizer GradInit prepares for: "
          "sgd or adam (default sgd).")
_optional(flags.FloatParser(), "gradinit_scale_lr", "Adam learning rate of the scales "
          "(default 1e-2).")
_optional(flags.FloatParser(), "gradinit_min_scale", "Lower bound of the scales "
          "(default 0.01).")
_optional(flags.IntegerParser(), "gradinit_batch_size", "Examples per GradInit minibatch "
          "(default 128).")
_optional(flags.ArgumentParser(), "gradinit_variant", "second_order "
          "(default: Algorithm 1 differentiated through the first gradient) or authors "
          "(the authors' code: first order, objective / eta, separate Adam moments for "
          "constraint steps).")
_optional(flags.BooleanParser(), "gradinit_normalize_grad", "true: the simulated SGD step "
          "is eta * g / ||g|| (the authors' --gradinit-normalize-grad; default false).")
flags.DEFINE_list("analyses", [], "Analyses run on the experiment's own directory once it "
                  "finishes, with tf-lottery-analyze's defaults: instability (dense network "
                  "and deepest ticket), noise (deepest ticket), one_shot (every level), "
                  "adversarial (every level and branch). "
                  "Transfer needs a target: run tf-lottery-analyze --analysis=transfer.")
# Training.
flags.DEFINE_enum("optimizer", "adam", list(OPTIMIZERS), "Optimizer.")
flags.DEFINE_float("learning_rate", 1.2e-3, "Peak learning rate.")
flags.DEFINE_float("momentum", 0.0, "SGD momentum.")
flags.DEFINE_bool("nesterov", False, "Nesterov momentum (SGD).")
flags.DEFINE_float("weight_decay", 0.0, "Weight decay coefficient (see --weight_decay_mode).")
flags.DEFINE_enum("weight_decay_mode", "decoupled", list(WEIGHT_DECAY_MODES),
                  "decoupled: Keras's w -= lr * wd * w beside the update; coupled: "
                  "PyTorch's L2, wd * w added to the gradient before momentum (the "
                  "ResNet/VGG papers, open_lth).")
_optional(flags.FloatParser(), "clip_grad_norm", "Clip the global L2 norm of the "
          "gradient to this value before the update (default: no clipping).")
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
_optional(flags.FloatParser(), "prune_rate_conv", "Per-level rate of convolutions "
          "(layerwise).")
_optional(flags.FloatParser(), "prune_rate_output", "Per-level rate of the output layer "
          "(layerwise).")
flags.DEFINE_enum("criterion", "magnitude", sorted(CRITERIA), "Pruning criterion.")
flags.DEFINE_string("rewind", "0it", "Rewind point k: '0it' (initialization), '500it', '1ep'.")
flags.DEFINE_enum("retrain", "rewind", list(RETRAIN_MODES), "How pruned networks retrain.")
flags.DEFINE_list("controls", [], f"Control branches per level: {','.join(CONTROLS)}.")
flags.DEFINE_integer("reinit_draws", 1, "Networks the reinit control trains per level, "
                     "each from its own fresh initialization (the paper averages 3); draw "
                     "0 is level_<k>/reinit/, the others reinit_1/, reinit_2/, ...; the "
                     "report averages them. Not in the run's hash: raising it extends a "
                     "run in place.")
flags.DEFINE_list("one_shot", [], "Target sparsities for one-shot pruning, e.g. 0.8,0.9.")
flags.DEFINE_list("exclude", [], "Layer names never pruned.")
flags.DEFINE_enum("prune_at", "trained", list(PRUNE_AT), "Where masks come from: 'trained' "
                  "(IMP: from the previous level's trained network) or 'init': the weights "
                  "at the rewind point pruned straight to each level's sparsity (and each "
                  "--one_shot target) with --criterion (snip, grasp, synflow, magnitude, "
                  "random), then trained like tickets.")
flags.DEFINE_bool("early_bird", False, "Early-bird tickets (You et al. 2020): each level's "
                  "lottery network stops training once the magnitude mask it would be "
                  "pruned to moves less than --early_bird_epsilon over 5 evaluations; the "
                  "next level's mask is drawn there.")
flags.DEFINE_float("early_bird_epsilon", 0.1, "Normalized Hamming distance between "
                   "consecutive masks below which --early_bird draws the ticket, in (0, 1).")
flags.DEFINE_string("structure", "unstructured", "What pruning removes: 'unstructured' "
                    "(single weights), 'channel' (whole units and filters, scored by their L1 "
                    "norm for magnitude; --prune_rate/--prune_rate_conv are fractions of the "
                    "surviving channels; the output layer is never pruned; layerwise or "
                    "global) or 'N:M' such as '2:4' (keep N of every M consecutive input "
                    "weights; level 1 reaches it, later levels keep it; --prune_rate is "
                    "ignored). random_prune keeps the structure.")
# Experiment identity and runtime.
flags.DEFINE_integer("seed", 0, "Seed of initialization, data order and controls.")
flags.DEFINE_integer("replicate", 0, "Replicate index; each replicate derives its own seed.")
flags.DEFINE_string("run_root", "runs", "Directory holding run directories.")
flags.DEFINE_enum("distribution", "default", list(DISTRIBUTIONS), "tf.distribute strategy.")
_optional(flags.ArgumentParser(), "tpu", "TPU address for --distribution=tpu.")
_optional(flags.IntegerParser(), "cpu_devices", "Split the CPU into this many logical "
          "devices (to try --distribution=mirrored without GPUs).")
flags.DEFINE_enum("precision", "float32", list(PRECISIONS), "Keras dtype policy.")
flags.DEFINE_bool("deterministic", False, "TensorFlow op determinism: reruns are identical.")
flags.DEFINE_bool("tensorboard", False, "Write TensorBoard logs per branch.")
flags.DEFINE_bool("jit_compile", True, "XLA-compile train and eval steps.")
flags.DEFINE_integer("steps_per_execution", 100, "Max iterations per compiled call.")
flags.DEFINE_bool("fast_loop", True, "Train and evaluate in compiled loops over the cached "
                  "data; false: Keras's train function fed by tf.data and model.evaluate.")
flags.DEFINE_integer("eval_batch_size", 1000, "Evaluation batch size.")
_optional(flags.ArgumentParser(), "checkpoint_every", "Checkpoint period within a level "
          "(default: 10 evaluation periods).")
flags.DEFINE_float("checkpoint_minutes", 5.0, "Also checkpoint the level in progress every "
                   "this many minutes of wall time, so a killed run loses at most about "
                   "that much (0: only --checkpoint_every).")

#: The experiment's flags, in the order ``flags.txt`` lists them.
EXPERIMENT_FLAGS = (
    "model", "dataset", "data_dir", "validation_size", "synthetic_size", "augment",
    "initializer", "dropout", "batch_norm", "optimizer", "learning_rate", "momentum",
    "nesterov", "weight_decay", "weight_decay_mode", "clip_grad_norm", "batch_size",
    "training_steps", "eval_every", "lr_drops",
    "lr_drop_factor", "warmup", "levels", "pruning", "prune_rate", "prune_rate_conv",
    "prune_rate_output", "criterion", "rewind", "retrain", "controls", "reinit_draws",
    "one_shot", "exclude", "prune_at", "early_bird", "early_bird_epsilon", "structure",
    "seed", "replicate", "run_root", "distribution", "tpu", "cpu_devices", "precision",
    "deterministic", "tensorboard", "jit_compile", "steps_per_execution", "eval_batch_size",
    "checkpoint_every", "checkpoint_minutes", "fast_loop", "analyses",
) + GRADINIT_FIELDS  # GradInit's are None unless set, so absent from other runs' flags.txt

#: Library argument -> flag, for the arguments whose flag has another name or that
#: several commands share. Arguments named like their flag map to themselves.
FLAG_NAMES = {name: name for name in EXPERIMENT_FLAGS}
FLAG_NAMES.update(scope="pruning", rate="prune_rate", rate_conv="prune_rate_conv",
                  rate_output="prune_rate_output")
#: GradInitHparams field -> flag.
GRADINIT_FLAG_NAMES = {field: flat for field, flat in zip(
    ("base_initializer", "steps", "eta", "gamma", "optimizer", "scale_lr", "min_scale",
     "batch_size", "variant", "normalize_grad"), GRADINIT_FIELDS)}


def _gradinit() -> tuple[GradInitHparams | None, str]:
    """GradInit's settings of the flags, and the initializer flag the kernels use."""
    given = {name: FLAGS[name].value for name in GRADINIT_FIELDS}
    if FLAGS.initializer != "gradinit":
        if any(value is not None for value in given.values()):
            logging.warning("--initializer=%s: the --base_initializer/--gradinit_* flags are "
                            "ignored (they apply to --initializer=gradinit).",
                            FLAGS.initializer)
        return None, "initializer"
    with usage_errors(GRADINIT_FLAG_NAMES):
        settings = GradInitHparams.from_flat(given) or GradInitHparams()
    if settings.optimizer != FLAGS.optimizer:
        logging.warning(
            "--gradinit_optimizer=%s prepares the network for %s, but it trains with "
            "--optimizer=%s; GradInit works best with --gradinit_optimizer=%s and "
            "--gradinit_eta=<the learning rate>.", settings.optimizer, settings.optimizer,
            FLAGS.optimizer, FLAGS.optimizer)
    return settings, "base_initializer"


def hparams() -> ExperimentHparams:
    """The ``ExperimentHparams`` the flags describe.

    Raises:
        UsageError: naming the flag at fault.
    """
    try:
        one_shot = tuple(float(s) for s in FLAGS.one_shot)
    except ValueError:
        raise UsageError(
            f"--one_shot must list sparsities such as 0.8,0.9; received {FLAGS.one_shot!r}."
        ) from None
    batch_norm = {"default": None, "true": True, "false": False}[FLAGS.batch_norm]
    gradinit, initializer_flag = _gradinit()
    initializer = gradinit.base_initializer if gradinit else FLAGS.initializer
    try:
        import keras

        keras.initializers.get(initializer)
    except (ValueError, TypeError):
        raise UsageError(
            f"--{initializer_flag}={initializer!r} is not a Keras initializer; use e.g. "
            "glorot_normal, glorot_uniform, he_normal, he_uniform, lecun_normal, orthogonal"
            + (", or gradinit." if initializer_flag == "initializer" else ".")
        ) from None
    hint = ("A preset's value can be unset on the command line after the flagfile, e.g. "
            "--prune_rate_output=none.")
    with usage_errors(FLAG_NAMES, hint if FLAGS.pruning == "global"
                      or FLAGS.structure != "unstructured" else ""):
        return ExperimentHparams(
            model=ModelHparams(FLAGS.model, FLAGS.initializer, FLAGS.dropout, batch_norm,
                               gradinit=gradinit),
            dataset=DatasetHparams(
                FLAGS.dataset, FLAGS.validation_size, FLAGS.augment, FLAGS.synthetic_size
            ),
            training=TrainingHparams(
                optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate,
                momentum=FLAGS.momentum, nesterov=FLAGS.nesterov,
                weight_decay=FLAGS.weight_decay, batch_size=FLAGS.batch_size,
                weight_decay_mode=FLAGS.weight_decay_mode,
                clip_grad_norm=FLAGS.clip_grad_norm,
                training_steps=FLAGS.training_steps, eval_every=FLAGS.eval_every,
                lr_drops=tuple(FLAGS.lr_drops), lr_drop_factor=FLAGS.lr_drop_factor,
                warmup=FLAGS.warmup,
            ),
            pruning=PruningHparams(
                levels=FLAGS.levels, scope=FLAGS.pruning, rate=FLAGS.prune_rate,
                rate_conv=FLAGS.prune_rate_conv, rate_output=FLAGS.prune_rate_output,
                criterion=FLAGS.criterion, rewind=FLAGS.rewind, retrain=FLAGS.retrain,
                controls=tuple(FLAGS.controls), one_shot=one_shot,
                exclude=tuple(FLAGS.exclude), reinit_draws=FLAGS.reinit_draws,
                prune_at=FLAGS.prune_at, early_bird=FLAGS.early_bird,
                early_bird_epsilon=FLAGS.early_bird_epsilon, structure=FLAGS.structure,
            ),
            seed=FLAGS.seed,
            precision=FLAGS.precision,
        )


def runtime():
    """The ``tf_lottery.training.Runtime`` of the flags; ``UsageError`` on bad values."""
    from tf_lottery.training import Runtime

    with usage_errors(FLAG_NAMES):
        return Runtime(
            jit_compile=FLAGS.jit_compile, steps_per_execution=FLAGS.steps_per_execution,
            eval_batch_size=FLAGS.eval_batch_size, checkpoint_every=FLAGS.checkpoint_every,
            tensorboard=FLAGS.tensorboard, deterministic=FLAGS.deterministic,
            fast_loop=FLAGS.fast_loop,
            checkpoint_minutes=FLAGS.checkpoint_minutes or None,
            # absl's --verbosity: progress bars at INFO (0, the default) and above.
            progress=logging.get_verbosity() >= logging.INFO,
        )


def load_data(hp: ExperimentHparams):
    """The experiment's dataset (``--data_dir``); ``UsageError`` naming the flag when it
    cannot be loaded. ``experiment.check`` (lengths against the epoch, model options) is
    the caller's: ``run_experiment`` runs it before any directory exists."""
    from tf_lottery import experiment

    with usage_errors(FLAG_NAMES):
        return experiment.load_dataset(hp.dataset, data_dir=FLAGS.data_dir)


def strategy():
    """The ``tf.distribute`` strategy of ``--distribution``."""
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
            from tf_lottery import multi_worker

            try:
                return multi_worker.create_strategy()
            except ValueError as err:  # TF_CONFIG: its message names it
                raise UsageError(str(err)) from None
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=FLAGS.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise UsageError(
            f"--distribution={name} could not start: {str(err).splitlines()[0]}. Use "
            "--distribution=default (or mirrored) on this machine."
        ) from None


def split_cpu() -> None:
    """Splits the CPU into ``--cpu_devices`` logical devices (before TensorFlow starts)."""
    if FLAGS.cpu_devices is None:
        return
    import tensorflow as tf

    if FLAGS.cpu_devices < 1:
        raise UsageError(f"--cpu_devices must be >= 1; received {FLAGS.cpu_devices}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices
    )


def flagfile_text() -> str:
    """A flagfile of the experiment's flags that are set (``flags.txt``), without
    ``--run_root`` so it reruns the experiment anywhere."""
    lines = []
    for name in EXPERIMENT_FLAGS:
        flag = FLAGS[name]
        if name == "run_root" or flag.value is None:
            continue
        lines.append(flag.serialize())
    return "\n".join(line for line in lines if line) + "\n"
