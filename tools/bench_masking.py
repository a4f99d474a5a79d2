"""Step time of masked (``tf_lottery.wrap``) vs dense training, in one process.

Trains LeNet-300-100 (784-300-100-10, batch 60) and Conv-6 (Frankle & Carbin 2019;
32x32x3, batch 60) on random data of the right shape, once as plain Keras models and
once wrapped with masks pruned to ``--sparsity``, with identical compile settings
(Adam, ``jit_compile=True``, ``steps_per_execution``). Prints a markdown table of the
median step time and the wrapped/dense ratio (target <= 1.05) and, with ``--out``,
writes the numbers as JSON.

Measurement: both models are compiled and warmed up first (the first call traces and
XLA-compiles); then dense and wrapped runs alternate (AB BA AB ...) so that load from
other processes hits both alike; each run is one ``model.fit`` over a cached, repeated
``tf.data`` dataset (the train function is traced once, so later calls only execute).
By default TensorFlow runs on one thread (``--threads=1``), and the headline numbers
are the CPU time of this process per step: on a shared machine wall-clock time mostly
measures the other processes, while single-threaded CPU time measures the work of the
step. The wall-clock ratio (median of the per-pair ratios, robust to slow drifts in
load) is reported next to it. Conv-6 takes about 1.2 s per step on one core, hence
its few steps; the defaults run in about 3-4 minutes.

    python tools/bench_masking.py --models=lenet,conv6 --out=/tmp/bench.json
"""

from __future__ import annotations

import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["lenet", "conv6"], "Models to time: lenet, conv6.")
flags.DEFINE_integer("lenet_steps", 500, "LeNet-300-100 training steps per timed run.")
flags.DEFINE_integer("conv6_steps", 10, "Conv-6 training steps per timed run.")
flags.DEFINE_integer("lenet_repeats", 9, "Timed runs per variant for LeNet-300-100.")
flags.DEFINE_integer("conv6_repeats", 4, "Timed runs per variant for Conv-6.")
flags.DEFINE_integer("lenet_steps_per_execution", 50, "steps_per_execution for LeNet.")
flags.DEFINE_integer("conv6_steps_per_execution", 5, "steps_per_execution for Conv-6.")
flags.DEFINE_float("sparsity", 0.5, "Fraction of each layer's weights pruned in the wrapped model.")
flags.DEFINE_integer("batch_size", 60, "Batch size (the paper's 60).")
flags.DEFINE_boolean("jit_compile", True, "Compile the train step with XLA.")
flags.DEFINE_integer(
    "threads", 1,
    "TensorFlow intra- and inter-op threads; 0 keeps TensorFlow's default (all cores). "
    "One thread gives the least noisy numbers on a shared machine: CPU time then "
    "equals work done, with no thread-pool spinning.")
flags.DEFINE_integer("seed", 0, "Seed for weights and data.")
flags.DEFINE_string("out", None, "Optional JSON output path.")


def lenet300_100(keras):
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(300, activation="relu", kernel_initializer="glorot_normal"),
            keras.layers.Dense(100, activation="relu", kernel_initializer="glorot_normal"),
            keras.layers.Dense(10, kernel_initializer="glorot_normal"),
        ],
        name="lenet300_100",
    )


def conv6(keras):
    """Conv-6: 2x conv64, pool, 2x conv128, pool, 2x conv256, pool, fc 256, 256, 10."""
    init = "glorot_normal"
    layers = [keras.Input((32, 32, 3))]
    for filters in (64, 128, 256):
        for _ in range(2):
            layers.append(
                keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=init)
            )
        layers.append(keras.layers.MaxPooling2D(2))
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(256, activation="relu", kernel_initializer=init),
        keras.layers.Dense(256, activation="relu", kernel_initializer=init),
        keras.layers.Dense(10, kernel_initializer=init),
    ]
    return keras.Sequential(layers, name="conv6")


MODELS = {
    "lenet": (lenet300_100, (28, 28, 1)),
    "conv6": (conv6, (32, 32, 3)),
}


def _dataset(tf, np, shape, batch_size, seed):
    rng = np.random.default_rng(seed)
    n = batch_size * 20
    x = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)
    return ds.cache().repeat().prefetch(tf.data.AUTOTUNE)


def _compile(keras, model, steps_per_execution):
    model.compile(
        optimizer=keras.optimizers.Adam(1.2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=FLAGS.jit_compile,
        steps_per_execution=steps_per_execution,
    )


def _run(model, ds, steps):
    """Seconds per step: (wall clock, CPU time of this process over all its threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def bench_model(name):
    import keras
    import numpy as np
    import tensorflow as tf

    import tf_lottery

    build, shape = MODELS[name]
    steps = getattr(FLAGS, f"{name}_steps")
    repeats = getattr(FLAGS, f"{name}_repeats")
    spe = getattr(FLAGS, f"{name}_steps_per_execution")
    if steps % spe:
        raise app.UsageError(f"--{name}_steps={steps} must be a multiple of --{name}_steps_per_execution={spe}.")

    keras.utils.set_random_seed(FLAGS.seed)
    dense = build(keras)
    wrapped = tf_lottery.wrap(dense)
    tf_lottery.set_masks(wrapped, tf_lottery.prune(wrapped, rate=FLAGS.sparsity))
    report = tf_lottery.sparsity_report(wrapped)
    ds = _dataset(tf, np, shape, FLAGS.batch_size, FLAGS.seed)
    for model in (dense, wrapped):
        _compile(keras, model, spe)

    # Warm-up: tracing + XLA compilation, then one untimed run each.
    compile_s = {}
    for label, model in (("dense", dense), ("wrapped", wrapped)):
        start = time.perf_counter()
        model.fit(ds, steps_per_epoch=spe, epochs=1, verbose=0, shuffle=False)
        compile_s[label] = time.perf_counter() - start
    for model in (dense, wrapped):
        _run(model, ds, spe)

    times = {"dense": [], "wrapped": []}
    cpu = {"dense": [], "wrapped": []}
    for i in range(repeats):
        order = (("dense", dense), ("wrapped", wrapped))
        if i % 2:  # ABBA: neither variant always runs first
            order = order[::-1]
        for label, model in order:
            wall_s, cpu_s = _run(model, ds, steps)
            times[label].append(wall_s)
            cpu[label].append(cpu_s)

    dense_ms = statistics.median(times["dense"]) * 1e3
    wrapped_ms = statistics.median(times["wrapped"]) * 1e3
    pair_ratios = [w / d for d, w in zip(times["dense"], times["wrapped"])]
    dense_cpu_ms = statistics.median(cpu["dense"]) * 1e3
    wrapped_cpu_ms = statistics.median(cpu["wrapped"]) * 1e3
    return {
        "model": name,
        "params": int(dense.count_params()),
        "prunable_weights": report.weights,
        "sparsity": report.sparsity,
        "steps": steps,
        "repeats": repeats,
        "steps_per_execution": spe,
        "batch_size": FLAGS.batch_size,
        "first_call_s": compile_s,
        "threads": FLAGS.threads,
        "dense_cpu_ms": dense_cpu_ms,
        "wrapped_cpu_ms": wrapped_cpu_ms,
        "ratio": wrapped_cpu_ms / dense_cpu_ms,
        "dense_ms": dense_ms,
        "wrapped_ms": wrapped_ms,
        "wall_ratio": wrapped_ms / dense_ms,
        "pair_ratio_median": statistics.median(pair_ratios),
        "dense_step_s": times["dense"],
        "wrapped_step_s": times["wrapped"],
        "dense_cpu_step_s": cpu["dense"],
        "wrapped_cpu_step_s": cpu["wrapped"],
    }


def markdown(results):
    rows = [
        "| model | params | sparsity | steps x repeats | dense CPU ms/step "
        "| wrapped CPU ms/step | ratio (CPU) | dense wall ms/step | wrapped wall ms/step "
        "| ratio (wall, median of pairs) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r['model']} | {r['params']:,} | {r['sparsity']:.2f} | {r['steps']} x {r['repeats']} "
            f"| {r['dense_cpu_ms']:.2f} | {r['wrapped_cpu_ms']:.2f} | {r['ratio']:.3f} "
            f"| {r['dense_ms']:.2f} | {r['wrapped_ms']:.2f} | {r['pair_ratio_median']:.3f} |"
        )
    return "\n".join(rows)


def main(argv):
    del argv
    unknown = [m for m in FLAGS.models if m not in MODELS]
    if unknown:
        raise app.UsageError(f"--models: unknown {unknown}; choose from {sorted(MODELS)}.")
    import keras
    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    results = [bench_model(name) for name in FLAGS.models]
    table = markdown(results)
    print(table)
    if FLAGS.out:
        payload = {
            "results": results,
            "table": table,
            "settings": {
                "jit_compile": FLAGS.jit_compile,
                "threads": FLAGS.threads,
                "optimizer": "Adam(1.2e-3)",
                "keras": keras.__version__,
                "tensorflow": tf.__version__,
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "loadavg_end": os.getloadavg(),
            },
        }
        from tf_lottery.files import atomic_write_json

        atomic_write_json(FLAGS.out, payload)


if __name__ == "__main__":
    app.run(main)
