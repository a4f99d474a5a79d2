"""Bridge to tensorflow-model-optimization (tfmot): baselines and sparsity-preserving QAT.

tfmot 0.8 works on Keras 2 (``tf_keras``) models only and rejects Keras 3 ones, so this
module builds a ``tf_keras`` *twin* of a tf_lottery model (``to_tf_keras``: same
architecture, same weights, same outputs) and runs tfmot on the twin:

* ``gmp_baseline``: gradual magnitude pruning (Zhu & Gupta 2017, tfmot's
  ``prune_low_magnitude`` with a ``PolynomialDecay`` schedule) of the dense network to
  the sparsity of a ticket, with the same training budget, as a baseline for tickets.
* ``prune_preserving_qat``: quantization-aware training with tfmot's prune-preserving
  scheme (``tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme``), which
  keeps pruned weights at zero, feeding ``tf_lottery.export.to_tflite(...,
  quantization="int8", qat_data=...)``.

This is the only module of tf_lottery that imports tfmot, and only inside functions
(``_tfmot()``), so ``import tf_lottery`` never pays for it or changes the process.

Importing tfmot sets ``os.environ["TF_USE_LEGACY_KERAS"] = "1"`` and reads
TensorFlow's ``keras`` attribute, which from then on resolves to ``tf_keras`` for the
rest of the process (TF's lazy loader binds it once). tf_lottery never uses that
attribute (only ``import keras``, always Keras 3), and ``_tfmot()`` restores
``TF_USE_LEGACY_KERAS`` to its previous value right after the import so that child
processes and later imports of other libraries are not switched to Keras 2; tfmot keeps
its own reference to ``tf_keras``. ``tests/test_tfmot_bridge.py`` checks that Keras 3
training, masking and export keep working in the same process after tfmot ran.
Third-party code that reaches Keras through TensorFlow after this module ran gets
``tf_keras``: run such code in another process if that matters.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import time

import keras
import numpy as np

from tf_lottery.layers import is_masked

__all__ = [
    "SUPPORTED_LAYERS",
    "GMPResult",
    "gmp_baseline",
    "prune_preserving_qat",
    "to_tf_keras",
]

#: Keras 3 layer class name -> config keys copied to the tf_keras twin. Other keys
#: (initializers, regularizers, constraints) do not change a forward pass: weights are
#: copied, and the model zoo uses none of the others.
SUPPORTED_LAYERS: dict[str, tuple[str, ...]] = {
    "InputLayer": (),
    "Flatten": ("data_format",),
    "Dense": ("units", "activation", "use_bias"),
    "Conv2D": ("filters", "kernel_size", "strides", "padding", "data_format",
               "dilation_rate", "groups", "activation", "use_bias"),
    "MaxPooling2D": ("pool_size", "strides", "padding", "data_format"),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "Activation": ("activation",),
    "ReLU": ("max_value", "negative_slope", "threshold"),
    "Add": (),
    "GlobalAveragePooling2D": ("data_format", "keepdims"),
    "Dropout": ("rate", "noise_shape", "seed"),
}
_PRUNABLE = ("Dense", "Conv2D")


def _tfmot():
    """Imports tfmot (and tf_keras) lazily; restores ``TF_USE_LEGACY_KERAS`` after."""
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot
        import tf_keras
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "tf_lottery.tfmot_bridge needs the `tfmot` extra: pip install "
            "'tf-lottery[tfmot]' (tensorflow-model-optimization 0.8 and tf-keras 2.21)."
        ) from err
    finally:
        if before is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = before
    return tfmot, tf_keras


# ---------------------------------------------------------------------------- twins
def _check_graph_model(model, arg="model"):
    if not isinstance(model, keras.Model):
        raise ValueError(f"`{arg}` must be a Keras 3 keras.Model; received "
                         f"{type(model).__name__}.")
    if not (isinstance(model, keras.Sequential) or type(model).__name__ == "Functional"):
        raise ValueError(
            f"`{arg}` {model.name!r} is a subclassed model ({type(model).__name__}); "
            "to_tf_keras translates Sequential and Functional models only."
        )
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(f"`{arg}` {model.name!r} is not built; build it on keras.Input.")


def _layer_config(layer) -> dict:
    kind = type(layer).__name__
    if type(layer).__module__.split(".")[0] != "keras" or kind not in SUPPORTED_LAYERS:
        raise ValueError(
            f"to_tf_keras cannot translate layer {layer.name!r} of type "
            f"{type(layer).__module__}.{type(layer).__qualname__}; supported Keras layers: "
            f"{', '.join(SUPPORTED_LAYERS)}."
        )
    config = layer.get_config()
    out = {"name": layer.name}
    for key in SUPPORTED_LAYERS[kind]:
        if key in config:
            value = config[key]
            if key == "activation" and not isinstance(value, str):
                raise ValueError(
                    f"to_tf_keras cannot translate the activation {value!r} of layer "
                    f"{layer.name!r}; only built-in activations given by name are supported."
                )
            out[key] = list(value) if isinstance(value, tuple) else value
    if kind == "ReLU" and out.get("negative_slope") is not None:
        out["negative_slope"] = float(out["negative_slope"])
    return out


def _history(argument):
    """``[(layer name, node index, tensor index), ...]`` of a serialized call argument."""
    if isinstance(argument, dict) and argument.get("class_name") == "__keras_tensor__":
        name, node, index = argument["config"]["keras_history"]
        return [(name, int(node), int(index))]
    if isinstance(argument, (list, tuple)):
        return [h for item in argument for h in _history(item)]
    return []


def to_tf_keras(model):
    """A ``tf_keras`` twin of a Keras 3 model: same layers, names and weights.

    Masked models are stripped first (``tf_lottery.strip``), so pruned weights are
    zero in the twin. The twin computes in float32 and its outputs equal the Keras 3
    model's (up to float rounding). Supported layers: see ``SUPPORTED_LAYERS``
    (InputLayer, Flatten, Dense, Conv2D, MaxPooling2D, BatchNormalization, Activation,
    ReLU, Add, GlobalAveragePooling2D, Dropout), i.e. every layer of the model zoo.
    Initializers, regularizers and constraints are not carried over.

    Args:
        model: a built Sequential or Functional Keras 3 model (masked or plain), one
            call per layer (no shared layers, no nested models).

    Returns:
        An uncompiled ``tf_keras.Model`` (Functional) with the same input and output
        shapes (float32).

    Raises:
        ValueError: ``model`` is not a built Sequential/Functional Keras 3 model, uses a
            layer type outside ``SUPPORTED_LAYERS`` (named in the message), a custom
            activation, nested models or shared layers.
    """
    _check_graph_model(model)
    if any(is_masked(layer) for layer in model.layers):
        from tf_lottery.masking import fold_masks

        model = fold_masks(model)
    layers = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise ValueError(
                f"to_tf_keras cannot translate the nested model {layer.name!r}; flatten it "
                "into one Functional model first."
            )
        layers[layer.name] = (layer, _layer_config(layer))
    _, tf_keras = _tfmot()

    if isinstance(model, keras.Sequential):
        spec = model.inputs[0]
        x = tf_keras.Input(shape=tuple(spec.shape[1:]), dtype="float32")
        inputs = [x]
        for layer in model.layers:
            x = _make_layer(tf_keras, layer, layers[layer.name][1])(x)
        outputs = [x]
    else:
        config = model.get_config()  # Keras 3's serialized graph: layers and call args
        tensors = {}  # (layer name, node index, tensor index) -> tf_keras tensor
        for entry in config["layers"]:
            name = entry["config"]["name"]
            if entry["class_name"] == "InputLayer":
                shape = tuple(entry["config"]["batch_shape"][1:])
                tensors[(name, 0, 0)] = tf_keras.Input(shape=shape, name=name, dtype="float32")
                continue
            if len(entry.get("inbound_nodes", [])) != 1:
                raise ValueError(
                    f"to_tf_keras cannot translate layer {name!r}: it is called "
                    f"{len(entry.get('inbound_nodes', []))} times (shared layers are not "
                    "supported)."
                )
            node = entry["inbound_nodes"][0]
            args = [tensors[h] for h in
                    _history(node.get("args", [])) + _history(node.get("kwargs", {}))]
            layer, layer_config = layers[name]
            tensors[(name, 0, 0)] = _make_layer(tf_keras, layer, layer_config)(
                args if len(args) > 1 else args[0])

        def endpoints(spec):  # ["name", 0, 0] or [["name", 0, 0], ...]
            spec = [spec] if spec and isinstance(spec[0], str) else spec
            return [tensors[(s[0], int(s[1]), int(s[2]))] for s in spec]

        inputs = endpoints(config["input_layers"])
        outputs = endpoints(config["output_layers"])
    twin = tf_keras.Model(inputs if len(inputs) > 1 else inputs[0],
                          outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        values = [keras.ops.convert_to_numpy(w) for w in layer.weights]
        target = twin.get_layer(layer.name)
        shapes = [tuple(w.shape) for w in target.weights]
        if shapes != [v.shape for v in values]:
            raise ValueError(
                f"to_tf_keras: layer {layer.name!r} has weights {[v.shape for v in values]} "
                f"but its tf_keras twin {shapes}; the layer order of the two differs."
            )
        target.set_weights(values)
    return twin


def _make_layer(tf_keras, layer, config):
    kind = type(layer).__name__
    cls = getattr(tf_keras.layers, kind)
    return cls(**config, dtype="float32")


# ------------------------------------------------------------------------ baselines
@dataclasses.dataclass(frozen=True)
class GMPResult:
    """Outcome of ``gmp_baseline``.

    Attributes:
        test_accuracy: accuracy on ``dataset.x_test`` after training, in [0, 1].
        sparsity: fraction of the prunable weights (Dense/Conv2D kernels) that are zero
            after ``strip_pruning``.
        layer_sparsity: ``{"<layer>/kernel": sparsity}``.
        target_sparsity: ``{"<layer>/kernel": target}`` the schedule aimed at.
        training_steps: iterations trained.
        begin_step, end_step, frequency: the ``PolynomialDecay`` schedule.
        seconds: wall time of training and evaluation.
    """

    test_accuracy: float
    sparsity: float
    layer_sparsity: dict
    target_sparsity: dict
    training_steps: int
    begin_step: int
    end_step: int
    frequency: int
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_fraction(arg, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"`{arg}` must be a sparsity (fraction) in [0, 1); received {value!r}.")
    return float(value)


def _check_int(arg, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"`{arg}` must be an integer >= {low}; received {value!r}.")
    return int(value)


def gmp_baseline(model, dataset, *, target_sparsity, training_steps, batch_size,
                 learning_rate, optimizer="adam", momentum=0.0, nesterov=False,
                 weight_decay=0.0, warmup_steps=0, lr_drops=(), lr_drop_factor=0.1,
                 begin_step=0, end_step=None, frequency=100, seed=0,
                 verbose=0) -> GMPResult:
    """Trains and prunes a dense network with tfmot's gradual magnitude pruning.

    The baseline for a ticket at matched sparsity and budget: the network starts dense
    (the given weights), trains for ``training_steps`` iterations of ``batch_size``
    examples (the same budget as one level of the lottery run), and tfmot's
    ``prune_low_magnitude`` raises each prunable kernel's sparsity from 0 to its target
    along ``PolynomialDecay(0, target, begin_step, end_step, power=3, frequency)``
    (Zhu & Gupta 2017), then trains on at the final sparsity.

    Args:
        model: a dense Keras 3 model (Sequential/Functional, see ``to_tf_keras``)
            outputting logits, or ``model_fn(seed) -> keras.Model``.
        dataset: a ``tf_lottery.data.Dataset`` (trains on ``x_train``, reports
            accuracy on ``x_test``).
        target_sparsity: a fraction in [0, 1) for every Dense/Conv2D kernel, or
            ``{layer name or "<layer>/kernel": fraction}`` per layer (e.g. a ticket's
            ``sparsity_report``); layers not named stay dense.
        training_steps: iterations, >= 1.
        batch_size: examples per iteration, >= 1.
        learning_rate: peak learning rate, > 0.
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum`` and ``nesterov``).
        weight_decay: decoupled weight decay of the optimizer, >= 0 (as
            ``TrainingHparams.weight_decay``).
        warmup_steps, lr_drops, lr_drop_factor: the run's learning-rate schedule in
            iterations, as ``tf_lottery.training.StepSchedule``: ``lr(t) = learning_rate *
            min(1, t / warmup_steps) * lr_drop_factor ** #{d in lr_drops: t >= d}``
            (``warmup_steps >= 0``, each drop in ``[1, training_steps]``,
            ``0 < lr_drop_factor <= 1``). Defaults: a constant learning rate.
        begin_step, end_step: pruning window in iterations,
            ``0 <= begin_step < end_step <= training_steps``, with ``end_step -
            begin_step`` a multiple of ``frequency``: tfmot updates the masks only at
            ``begin_step + i * frequency``, so the last update lands on ``end_step`` and
            reaches the target (otherwise the final sparsity would fall short, or stay 0
            when ``frequency`` exceeds the window). Default end: the last such step at or
            before 75% of ``training_steps`` (at least ``begin_step + frequency``).
        frequency: iterations between mask updates, >= 1.
        seed: data-order seed.
        verbose: passed to ``fit``.

    Returns:
        A ``GMPResult``.

    Raises:
        ValueError: before any work, for a bad argument (named in the message), e.g.
            an ``end_step`` not on the ``frequency`` grid or a ``frequency`` longer than
            the training budget.
    """
    training_steps = _check_int("training_steps", training_steps, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    frequency = _check_int("frequency", frequency, 1)
    begin_step = _check_int("begin_step", begin_step, 0)
    if end_step is None:
        if begin_step + frequency > training_steps:
            raise ValueError(
                f"`frequency` {frequency} leaves no mask update between `begin_step` "
                f"{begin_step} and `training_steps` {training_steps}: tfmot prunes only at "
                "begin_step + i * frequency. Lower `frequency` or train longer."
            )
        end_step = begin_step + frequency * max(
            1, (int(0.75 * training_steps) - begin_step) // frequency)
    end_step = _check_int("end_step", end_step, 1)
    if not begin_step < end_step <= training_steps:
        raise ValueError(
            f"`begin_step` and `end_step` must satisfy 0 <= begin_step < end_step <= "
            f"training_steps ({training_steps}); received {begin_step}, {end_step}."
        )
    if (end_step - begin_step) % frequency:
        below = begin_step + (end_step - begin_step) // frequency * frequency
        raise ValueError(
            f"`end_step` - `begin_step` ({end_step} - {begin_step}) must be a multiple of "
            f"`frequency` ({frequency}): tfmot updates masks only at begin_step + i * "
            f"frequency, so the target sparsity would never be reached. Use end_step="
            f"{below if below > begin_step else begin_step + frequency} or another frequency."
        )
    for name, value in (("learning_rate", learning_rate), ("lr_drop_factor", lr_drop_factor)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
            raise ValueError(f"`{name}` must be > 0; received {value!r}.")
    if lr_drop_factor > 1:
        raise ValueError(f"`lr_drop_factor` must be in (0, 1]; received {lr_drop_factor!r}.")
    for name, value in (("momentum", momentum), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
            raise ValueError(f"`{name}` must be a number >= 0; received {value!r}.")
    warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
    if isinstance(lr_drops, (str, bytes)) or not hasattr(lr_drops, "__iter__"):
        raise ValueError(f"`lr_drops` must be a sequence of iterations; received {lr_drops!r}.")
    lr_drops = tuple(sorted(_check_int("lr_drops", d, 1) for d in lr_drops))
    if lr_drops and lr_drops[-1] > training_steps:
        raise ValueError(
            f"`lr_drops` {list(lr_drops)} has drops after `training_steps` "
            f"({training_steps}); drop the ones the budget never reaches."
        )
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"`optimizer` must be 'adam' or 'sgd'; received {optimizer!r}.")
    if not isinstance(nesterov, bool):
        raise ValueError(f"`nesterov` must be True or False; received {nesterov!r}.")
    for name in ("x_train", "y_train", "x_test", "y_test"):
        if not hasattr(dataset, name):
            raise ValueError(f"`dataset` must be a tf_lottery.data.Dataset; it has no {name}.")
    if not isinstance(model, keras.Model):
        if not callable(model):
            raise ValueError(f"`model` must be a keras.Model or model_fn(seed); received "
                             f"{type(model).__name__}.")
        model = model(seed)
    _check_graph_model(model)
    prunable = [layer.name for layer in model.layers if type(layer).__name__ in _PRUNABLE]
    if isinstance(target_sparsity, dict):
        targets = {}
        for key, value in target_sparsity.items():
            name = key[: -len("/kernel")] if key.endswith("/kernel") else key
            if name not in prunable:
                raise ValueError(
                    f"`target_sparsity` names {key!r}, which is not a Dense/Conv2D layer of "
                    f"{model.name!r}; prunable layers: {prunable}."
                )
            targets[name] = _check_fraction(f"target_sparsity[{key!r}]", value)
    else:
        value = _check_fraction("target_sparsity", target_sparsity)
        targets = {name: value for name in prunable}

    tfmot, tf_keras = _tfmot()
    import tensorflow as tf

    start = time.perf_counter()
    twin = to_tf_keras(model)
    sparsity_api = tfmot.sparsity.keras

    def prune(layer):
        if layer.name in targets and targets[layer.name] > 0:
            schedule = sparsity_api.PolynomialDecay(
                initial_sparsity=0.0, final_sparsity=targets[layer.name],
                begin_step=begin_step, end_step=end_step, frequency=frequency)
            return sparsity_api.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    # clone_model keeps the twin's layer objects (and weights) where `prune` returns
    # them, and wraps the others, so training starts from the given weights.
    pruned = tf_keras.models.clone_model(twin, clone_function=prune)
    rate = _learning_rate(tf, tf_keras, float(learning_rate), warmup_steps, lr_drops,
                          float(lr_drop_factor))
    decay = float(weight_decay) or None
    if optimizer == "adam":
        opt = tf_keras.optimizers.Adam(rate, weight_decay=decay)
    else:
        opt = tf_keras.optimizers.SGD(rate, momentum=float(momentum), nesterov=nesterov,
                                      weight_decay=decay)
    pruned.compile(optimizer=opt, metrics=["accuracy"],
                   loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    n = len(dataset.y_train)
    data = (tf.data.Dataset.from_tensor_slices((dataset.x_train, dataset.y_train))
            .shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
            .batch(batch_size, drop_remainder=True))
    pruned.fit(data, epochs=1, steps_per_epoch=training_steps, verbose=verbose,
               callbacks=[sparsity_api.UpdatePruningStep()])
    final = sparsity_api.strip_pruning(pruned)
    final.compile(metrics=["accuracy"],
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logits = final.predict(dataset.x_test, batch_size=1000, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, -1) == dataset.y_test))
    layer_sparsity, zeros, total = {}, 0, 0
    for name in prunable:
        kernel = final.get_layer(name).kernel.numpy()
        layer_sparsity[f"{name}/kernel"] = 1.0 - np.count_nonzero(kernel) / kernel.size
        zeros += kernel.size - np.count_nonzero(kernel)
        total += kernel.size
    return GMPResult(
        test_accuracy=accuracy,
        sparsity=zeros / total if total else 0.0,
        layer_sparsity=layer_sparsity,
        target_sparsity={f"{k}/kernel": v for k, v in targets.items()},
        training_steps=training_steps, begin_step=begin_step, end_step=end_step,
        frequency=frequency, seconds=time.perf_counter() - start,
    )


def _learning_rate(tf, tf_keras, learning_rate, warmup_steps, lr_drops, lr_drop_factor):
    """A float, or a tf_keras schedule computing ``tf_lottery.training.StepSchedule``'s
    ``learning_rate * min(1, t / warmup) * factor ** #{d in drops: t >= d}``."""
    if not warmup_steps and not lr_drops:
        return learning_rate

    class StepSchedule(tf_keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            t = tf.cast(step, tf.float32)
            lr = tf.constant(learning_rate, tf.float32)
            if warmup_steps:
                lr = lr * tf.minimum(1.0, t / float(warmup_steps))
            for drop in lr_drops:
                lr = lr * tf.where(t >= float(drop), lr_drop_factor, 1.0)
            return lr

        def get_config(self):
            return {"learning_rate": learning_rate, "warmup": warmup_steps,
                    "drops": list(lr_drops), "drop_factor": lr_drop_factor}

    return StepSchedule()


# ---------------------------------------------------------------------------- QAT
def prune_preserving_qat(model, x, y, *, steps, batch_size=32, learning_rate=1e-4, seed=0,
                         verbose=0):
    """Quantization-aware training that keeps a ticket's pruned weights at zero.

    Builds the ``tf_keras`` twin (``to_tf_keras``; masked models are stripped), applies
    ``tfmot.quantization.keras.quantize_apply`` with
    ``tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()`` (8-bit
    weights and activations; zero weights stay zero through training) and fine-tunes
    it for ``steps`` iterations with Adam on sparse categorical cross-entropy of logits.
    Convert the result with ``tf_lottery.export.to_tflite(model, path,
    quantization="int8", qat_data=(x, y))``, which calls this function.

    Args:
        model: a (pruned) Keras 3 model outputting logits, see ``to_tf_keras``.
        x: float32 inputs ``(N, *input_shape)``; y: int class ids ``(N,)``.
        steps: training iterations, >= 1.
        batch_size: examples per iteration, >= 1.
        learning_rate: Adam learning rate, > 0 (fine-tuning: about a tenth of the
            training rate).
        seed: data-order seed.

    Returns:
        The trained quantization-aware ``tf_keras.Model``.

    Raises:
        ValueError: before any work, for bad arguments or an unsupported model.
    """
    steps = _check_int("steps", steps, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real) \
            or not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0; received {learning_rate!r}.")
    x = np.asarray(x, np.float32)
    y = np.asarray(y)
    if len(x) == 0 or y.shape != (len(x),):
        raise ValueError(f"`x` and `y` must hold the same number (>= 1) of examples; "
                         f"received shapes {x.shape} and {y.shape}.")
    _check_graph_model(model)
    tfmot, tf_keras = _tfmot()
    import tensorflow as tf

    twin = to_tf_keras(model)
    annotated = tfmot.quantization.keras.quantize_annotate_model(twin)
    qat = tfmot.quantization.keras.quantize_apply(
        annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    qat.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
                loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = (tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
            .shuffle(len(x), seed=seed).repeat().batch(batch_size, drop_remainder=False))
    qat.fit(data, epochs=1, steps_per_epoch=steps, verbose=verbose)
    return qat
