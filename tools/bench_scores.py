"""Cost of accumulating pruning scores inside the compiled training loop, in one process.

Trains a zoo model (``--model``, default LeNet-300-100; batch 60, Adam,
``jit_compile=True``, the fast loop of ``tf_lottery.training``) three times side by side: with ``criterion="magnitude"`` (no
accumulation, the baseline), ``"movement_score"`` (Sanh et al. 2020: ``S -= w * g`` each
iteration) and ``"accumulated_change"`` (``S += |w_t - w_{t-1}|``). Each engine is built
and warmed up (traced and XLA-compiled) first; then timed calls of ``--steps``
iterations alternate between the three (rotating the order each repeat), so load from
other processes hits all alike. TensorFlow runs on one thread by default, and the
headline figure is this process's CPU time per iteration: on a shared machine, wall
time mostly measures the other processes. Prints a markdown table with the ratio of each
accumulating loop to the baseline (target: <= 1.10) and, with ``--out``, writes JSON.

    python tools/bench_scores.py --out=/tmp/bench_scores.json     # about 2 minutes
    python tools/bench_scores.py --model=conv2 --steps=20 --repeats=5
"""

from __future__ import annotations

import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset (fashion_mnist loads offline; "
                    "synthetic needs nothing).")
flags.DEFINE_string("model", "lenet_300_100", "Zoo model (lenet_300_100, conv2, ...).")
flags.DEFINE_integer("steps", 500, "Iterations per timed call.")
flags.DEFINE_integer("repeats", 9, "Timed calls per variant.")
flags.DEFINE_integer("batch_size", 60, "Batch size (the paper's 60).")
flags.DEFINE_integer("threads", 1, "TensorFlow intra- and inter-op threads; 0 keeps "
                     "TensorFlow's default.")
flags.DEFINE_string("out", None, "Optional JSON output path.")

VARIANTS = ("magnitude", "movement_score", "accumulated_change")
TARGET = 1.10


def main(argv):
    del argv
    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    from tf_lottery import data, models
    from tf_lottery.files import atomic_write_json
    from tf_lottery.hparams import PruningHparams, TrainingHparams
    from tf_lottery.runtime import Runtime
    from tf_lottery.training import _Engine

    dataset = data.load(FLAGS.dataset)
    training = TrainingHparams(batch_size=FLAGS.batch_size,
                               training_steps=f"{FLAGS.steps * (FLAGS.repeats + 2)}it",
                               eval_every=f"{FLAGS.steps}it")

    def model_fn(seed):
        return models.build_model(FLAGS.model, dataset.input_shape, dataset.num_classes,
                                  seed=seed)

    engines = {}
    for name in VARIANTS:
        engine = _Engine(model_fn, dataset, training, PruningHparams(criterion=name), 0,
                         tf.distribute.get_strategy(), Runtime(steps_per_execution=FLAGS.steps),
                         False)
        float(engine._train_loop(tf.constant(0, tf.int64),
                                 tf.constant(FLAGS.steps, tf.int32))["loss"])  # warm up
        engines[name] = engine
    cpu = {name: [] for name in VARIANTS}
    wall = {name: [] for name in VARIANTS}
    for repeat in range(FLAGS.repeats):
        order = VARIANTS[repeat % 3:] + VARIANTS[:repeat % 3]
        for name in order:
            start = tf.constant(FLAGS.steps * (repeat + 1), tf.int64)
            c0, w0 = time.process_time(), time.perf_counter()
            float(engines[name]._train_loop(start, tf.constant(FLAGS.steps, tf.int32))["loss"])
            cpu[name].append((time.process_time() - c0) / FLAGS.steps)
            wall[name].append((time.perf_counter() - w0) / FLAGS.steps)
    base_cpu = statistics.median(cpu["magnitude"])
    base_wall = statistics.median(wall["magnitude"])
    rows = []
    for name in VARIANTS:
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        rows.append({"criterion": name, "cpu_ms_per_iteration": 1e3 * c,
                     "wall_ms_per_iteration": 1e3 * w, "ratio_cpu": c / base_cpu,
                     "ratio_wall": w / base_wall})
    lines = ["| criterion | CPU ms/it | ratio (CPU) | wall ms/it | ratio (wall) | target | met |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        met = "-" if r["criterion"] == "magnitude" else (
            "yes" if r["ratio_cpu"] <= TARGET else "no")
        lines.append(f"| {r['criterion']} | {r['cpu_ms_per_iteration']:.3f} | "
                     f"{r['ratio_cpu']:.3f} | {r['wall_ms_per_iteration']:.3f} | "
                     f"{r['ratio_wall']:.3f} | <= {TARGET:.2f} | {met} |")
    print(f"{FLAGS.model}, batch {FLAGS.batch_size}, {FLAGS.dataset}, {FLAGS.steps} "
          f"iterations x {FLAGS.repeats} calls per variant, {FLAGS.threads or 'all'} "
          f"thread(s), {platform.processor() or platform.machine()}")
    print("\n".join(lines))
    if FLAGS.out:
        atomic_write_json(FLAGS.out, {"rows": rows, "steps": FLAGS.steps,
                                      "repeats": FLAGS.repeats, "threads": FLAGS.threads,
                                      "model": FLAGS.model,
                                      "batch_size": FLAGS.batch_size})


if __name__ == "__main__":
    app.run(main)
