"""The six speed figures of issue 4, each a ratio of two timings taken in one process.

    .venv/bin/python tools/bench.py --out=/tmp/bench.json
    .venv/bin/python tools/bench.py --figures=roofline,eval --repeats=5

1. mask overhead: wrapped / dense step time, LeNet-300-100 and Conv-6, batch 60
   (target <= 1.05);
2. roofline: LeNet-300-100 epoch at batch 60 through ``trainer.Trainer`` / the compute
   bound, 6 x weights x examples FLOPs at the matmul rate measured here (<= 2.0);
3. IMP overhead: ``ticket.fit`` with 3 levels / 3 x one level (<= 1.05);
4. evaluation cost: a level evaluated every 100 iterations / evaluated only at its ends
   (<= 1.25);
5. against tfmot: step time of tfmot's ``prune_low_magnitude`` on a ``tf_keras`` twin of
   LeNet-300-100 / ours, same sparsity (>= 1.5);
6. branches together: a level of lottery + reinit + random_prune / one branch (<= 1.6).

Everything runs the package's own training path on random data of the real shapes
(MNIST: 55,000 / 5,000 / 10,000 examples of 28x28x1; CIFAR-10 32x32x3 for Conv-6).

How it measures:

* Figure 1 is ``tools/bench_masking.py`` (imported: its ``bench_model`` and its flags
  ``--lenet_*``, ``--conv6_*``, ``--sparsity``, ``--jit_compile``), with fewer Conv-6 steps
  by default so that the whole bench stays under ten minutes.
* Figures 2-6 time ``trainer.Trainer.train`` and ``ticket.fit`` with their default
  ``Runtime`` (XLA, ``steps_per_execution=100`` iterations per call of the compiled
  loop, ``fast_loop``, evaluation batch 1,000). Every
  ``Trainer`` is run once untimed first (tracing, XLA compilation). Figures 3 and 6 time
  whole ``ticket.fit`` calls from scratch, start-up and compilation included, as a user
  sees them, and compare them with one level (one branch) trained by a warm ``Trainer``
  with the same budget and evaluation cadence: figure 3 divides the 3-level ``fit`` by
  3 such levels and also reports the start-up (``fit`` with 1 level minus one level) and
  the cost of each further level ((3-level ``fit`` - 1-level ``fit``) / 2); figure 6
  divides the cost of a level with both controls (``fit`` with 2 levels and both
  controls minus ``fit`` with 1 level) by one branch.
* The timed runs of the two sides of a ratio alternate (A B B A A B ...), so slow drifts
  in the load of a shared machine hit both alike.
* Headline numbers are **CPU time of the process** (``time.process_time``, all its
  threads) with TensorFlow on ``--threads=1`` (intra- and inter-op): on a machine shared
  with other jobs, wall-clock time mostly measures the others, while the CPU time of a
  single-threaded computation is the work it does. The wall-clock ratio is printed next
  to it; on an idle machine the two agree up to the fsync of the files ``fit`` writes
  (in wall time only).
* Figure 2's compute bound uses the rate of a ``--matmul_size`` square float32 matmul,
  measured in CPU time on the same thread count and interleaved with the epochs, and
  the paper's weight count (266,200); the table also gives the bound at the rate of the
  actual batch-60 matmuls of a training step.
* Figure 5 runs tfmot in a child process (``--tfmot_worker``): importing tfmot switches
  ``tf.keras`` to Keras 2 for the whole process, and ``tf_lottery.tfmot_bridge`` is the
  only module allowed to import it. The child imports the bridge only, and uses its
  public ``gmp_baseline`` (``prune_low_magnitude`` + ``PolynomialDecay`` on the
  ``to_tf_keras`` twin, ``model.fit`` with ``UpdatePruningStep``); since that call
  builds, trains and evaluates in one go, the tfmot step time is the difference of two
  calls with ``--tfmot_steps`` budgets over the difference of steps (the fixed costs
  cancel). The child stays alive and the parent drives it over a pipe, so the tfmot runs
  and our runs alternate in time; each side's CPU time is measured in its own process
  while the other one waits.

Figure 4 has a floor set by arithmetic: at the paper's cadence a level evaluates
15,000 examples (2 x weights FLOPs each) every 100 iterations of 60 examples
(6 x weights FLOPs each), so if training and evaluation ran at the same FLOP rate the
ratio would be 1.6-1.8; the table prints that "equal-efficiency" ratio next to the
measurement.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_masking  # noqa: E402  (figure 1; also defines --threads, --seed, --out, ...)

FLAGS = flags.FLAGS
FIGURES = ("mask", "roofline", "imp", "eval", "tfmot", "branches")
TARGETS = {  # figure -> (comparison, target)
    "mask": ("<=", 1.05),
    "roofline": ("<=", 2.0),
    "imp": ("<=", 1.05),
    "eval": ("<=", 1.25),
    "tfmot": (">=", 1.5),
    "branches": ("<=", 1.6),
}
flags.DEFINE_list("figures", list(FIGURES), f"Figures to measure, from {list(FIGURES)}.")
flags.DEFINE_integer("repeats", 3, "Timed runs per variant (figures 2, 4, 5).")
flags.DEFINE_integer("fit_repeats", 2, "Timed ticket.fit runs per variant (figures 3, 6).")
flags.DEFINE_string("level_steps", "1000it", "Training budget of one level (figures 3, 4, 6).")
flags.DEFINE_string("eval_every", "100it", "Evaluation period (figures 3, 4, 6).")
flags.DEFINE_integer("train_steps", 1000, "Iterations per timed run of our step (figure 5).")
flags.DEFINE_list("tfmot_steps", ["100", "1100"],
                  "Two tfmot training budgets; the step time is the difference of their "
                  "times over the difference of steps (figure 5).")
flags.DEFINE_integer("tfmot_train_size", 6000,
                     "Training examples given to the tfmot child (its tf.data shuffle "
                     "buffer; the step cost does not depend on it).")
flags.DEFINE_integer("train_size", 55000, "Training examples (MNIST with 5,000 held out).")
flags.DEFINE_integer("val_size", 5000, "Validation examples.")
flags.DEFINE_integer("test_size", 10000, "Test examples.")
flags.DEFINE_integer("matmul_size", 1024, "Side of the square matmul giving the FLOP rate.")
flags.DEFINE_boolean("tfmot_worker", False, "Internal: run as figure 5's tfmot child.")

# Figure 1 uses bench_masking's flags; fewer Conv-6 steps keep the bench under 10 min.
FLAGS.set_default("conv6_steps", 5)
FLAGS.set_default("conv6_repeats", 3)
FLAGS.set_default("lenet_repeats", 7)

LENET_WEIGHTS = 266_200  # Frankle & Carbin (2019), Table 1: 784*300 + 300*100 + 100*10
INPUT_SHAPE = (28, 28, 1)
PROTOCOL = "BENCH_JSON "


# --------------------------------------------------------------------------- helpers
class Clock:
    """CPU time of this process (all threads) and wall time of a ``with`` block."""

    def __enter__(self):
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu = time.process_time() - self._cpu
        self.wall = time.perf_counter() - self._wall


def _median(values):
    return statistics.median(values) if values else float("nan")


def _set_threads():
    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)


def random_dataset(train, val, test, seed):
    """A ``tf_lottery.data.Dataset`` of uniform random 28x28x1 images, 10 classes."""
    import numpy as np

    from tf_lottery import data

    rng = np.random.default_rng(seed)

    def split(n):
        return (rng.random((n, *INPUT_SHAPE), dtype=np.float32),
                rng.integers(0, 10, size=n).astype(np.int32))

    (xt, yt), (xv, yv), (xs, ys) = split(train), split(val), split(test)
    return data.Dataset(x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs, y_test=ys,
                        name="random_mnist_shape", num_classes=10, input_shape=INPUT_SHAPE,
                        source="synthetic")


def lenet_fn(seed):
    from tf_lottery import models

    return models.build_model("lenet_300_100", INPUT_SHAPE, 10, seed=seed)


def _training(steps, eval_every=None):
    from tf_lottery.hparams import TrainingHparams

    return TrainingHparams(learning_rate=1.2e-3, batch_size=FLAGS.batch_size,
                           training_steps=steps, eval_every=eval_every or steps)


def _trainer(dataset, training):
    from tf_lottery.trainer import Trainer

    return Trainer(lenet_fn, dataset, training, seed=FLAGS.seed)


def _start_state(trainer, sparsity=0.0):
    """(initial weights, masks pruning ``sparsity`` of every layer) for ``trainer``."""
    import numpy as np

    import tf_lottery

    model = trainer.model
    weights = model.get_weights()
    if sparsity > 0:
        masks = tf_lottery.prune(model, rate=sparsity)
    else:
        masks = {k: np.ones_like(v) for k, v in tf_lottery.get_masks(model).items()}
    return weights, masks


def _timed_train(trainer, weights, masks):
    with Clock() as clock:
        trainer.train(weights=weights, masks=masks)
    return clock


def _alternate(variants, repeats):
    """Runs ``{name: fn}`` ``repeats`` times each, alternating the order (ABBA...);
    returns ``{name: [Clock, ...]}``."""
    names = list(variants)
    out = {name: [] for name in names}
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            out[name].append(variants[name]())
    return out


def _summary(clocks):
    return {"cpu_s": [c.cpu for c in clocks], "wall_s": [c.wall for c in clocks],
            "cpu_median_s": _median([c.cpu for c in clocks]),
            "wall_median_s": _median([c.wall for c in clocks])}


def _engine_S(trainer):
    return trainer._engine.S  # the steps per execution the driver chose


# --------------------------------------------------------------------------- figures
def figure_mask():
    results = [bench_masking.bench_model(name) for name in ("lenet", "conv6")]
    worst = max(results, key=lambda r: r["ratio"])
    return {
        "ratio": worst["ratio"],
        "wall_ratio": max(r["pair_ratio_median"] for r in results),
        "details": ", ".join(
            f"{r['model']} {r['wrapped_cpu_ms']:.2f}/{r['dense_cpu_ms']:.2f} ms = {r['ratio']:.3f}"
            for r in results) + " (worst shown)",
        "models": results,
    }


def matmul_rate(n, calls=5, chain=8):
    """Best float32 matmul rate (FLOP/s of CPU time) of an n x n x n product."""
    import tensorflow as tf

    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2) / math.sqrt(n)

    @tf.function
    def f(a, b):
        for _ in range(chain):
            a = tf.matmul(a, b)
        return a

    f(a, b).numpy()
    best = float("inf")
    for _ in range(calls):
        with Clock() as clock:
            f(a, b).numpy()
        best = min(best, clock.cpu)
    return chain * 2 * n ** 3 / best


def step_matmul_seconds(batch, calls=5, reps=20):
    """CPU seconds of the 8 matmuls of one LeNet-300-100 training step at ``batch``
    (3 forward, 3 weight gradients, 2 input gradients), best of ``calls``."""
    import tensorflow as tf

    dims = (784, 300, 100, 10)
    x = [tf.random.normal((batch, d), seed=i) for i, d in enumerate(dims)]
    w = [tf.random.normal((dims[i], dims[i + 1]), seed=10 + i) for i in range(3)]

    @tf.function
    def step(x, w):
        total = tf.constant(0.0)
        for _ in range(reps):  # each repetition depends on the last: no CSE across them
            xs = [xi + 1e-30 * total for xi in x]
            for i in range(3):
                y = tf.matmul(xs[i], w[i])                          # forward
                gw = tf.matmul(xs[i], xs[i + 1], transpose_a=True)  # dL/dW
                total += y[0, 0] + gw[0, 0]
                if i > 0:                                           # dL/dx
                    total += tf.matmul(xs[i + 1], w[i], transpose_b=True)[0, 0]
        return total

    step(x, w).numpy()
    best = float("inf")
    for _ in range(calls):
        with Clock() as clock:
            step(x, w).numpy()
        best = min(best, clock.cpu)
    return best / reps


def figure_roofline(datasets):
    import tf_lottery

    trainer = _trainer(datasets["train_only"], _training("1ep"))
    weights, masks = _start_state(trainer)
    weights_count = tf_lottery.sparsity_report(trainer.model).weights
    with Clock() as first:
        trainer.train(weights=weights, masks=masks)
    epochs, rates = [], []
    for _ in range(FLAGS.repeats):
        rates.append(matmul_rate(FLAGS.matmul_size))
        epochs.append(_timed_train(trainer, weights, masks))
    rates.append(matmul_rate(FLAGS.matmul_size))
    rate = max(rates)
    n = FLAGS.train_size
    flops = 6 * LENET_WEIGHTS * n
    bound = flops / rate
    steps = trainer.iterations
    step_mm = step_matmul_seconds(FLAGS.batch_size)
    shape_bound = step_mm * steps
    epoch = _summary(epochs)
    ratio = epoch["cpu_median_s"] / bound
    out = {
        "ratio": ratio,
        "wall_ratio": epoch["wall_median_s"] / bound,
        "details": (
            f"epoch {epoch['cpu_median_s']:.2f} s CPU ({steps} it, steps_per_execution "
            f"{_engine_S(trainer)}); bound {bound:.2f} s = 6 x {LENET_WEIGHTS:,} x {n:,} / "
            f"{rate / 1e9:.0f} GFLOP/s; at the batch-{FLAGS.batch_size} matmul rate "
            f"{shape_bound:.2f} s (ratio {epoch['cpu_median_s'] / shape_bound:.2f})"),
        "epoch": epoch,
        "iterations": steps,
        "steps_per_execution": _engine_S(trainer),
        "first_epoch_s": {"cpu": first.cpu, "wall": first.wall},
        "weights": LENET_WEIGHTS,
        "masked_kernel_weights": weights_count,
        "matmul_rates_flops": rates,
        "matmul_rate_flops": rate,
        "bound_s": bound,
        "step_matmuls_s": step_mm,
        "shape_bound_s": shape_bound,
        "ratio_to_shape_bound": epoch["cpu_median_s"] / shape_bound,
    }
    del trainer
    gc.collect()
    return out


def _eval_trainers(datasets):
    """Figure 4's trainers: evaluating every ``--eval_every`` and only at the ends."""
    return {
        "periodic": _trainer(datasets["full"], _training(FLAGS.level_steps, FLAGS.eval_every)),
        "ends": _trainer(datasets["full"], _training(FLAGS.level_steps)),
    }


def figure_eval(datasets, cache):
    trainers = cache.setdefault("eval_trainers", _eval_trainers(datasets))
    state = _start_state(trainers["periodic"])
    warm = cache.setdefault("warm", set())
    for name, trainer in trainers.items():  # warm-up (the first call compiles)
        if name not in warm:
            _timed_train(trainer, *state)
            warm.add(name)
    runs = _alternate({name: (lambda t=t: _timed_train(t, *state))
                       for name, t in trainers.items()}, FLAGS.repeats)
    periodic, ends = _summary(runs["periodic"]), _summary(runs["ends"])
    cache.setdefault("level", periodic)  # one level (branch) for figures 3 and 6
    # Equal-efficiency ratio: evaluation FLOPs per example are 1/3 of training's.
    engine = trainers["periodic"]._engine
    T, E, B = engine.T, engine.E, engine.batch_size
    n_eval = FLAGS.val_size + FLAGS.test_size
    evals_periodic = 1 + math.ceil(T / E)
    evals_ends = 2
    train_units = 3 * T * B
    equal = (train_units + evals_periodic * n_eval) / (train_units + evals_ends * n_eval)
    with Clock() as one_eval:
        trainers["periodic"].evaluate()
    ratio = periodic["cpu_median_s"] / ends["cpu_median_s"]
    return {
        "ratio": ratio,
        "wall_ratio": periodic["wall_median_s"] / ends["wall_median_s"],
        "details": (
            f"{T} it: {evals_periodic} evaluations {periodic['cpu_median_s']:.2f} s, "
            f"{evals_ends} evaluations {ends['cpu_median_s']:.2f} s CPU; one evaluation of "
            f"{n_eval:,} examples {one_eval.cpu * 1e3:.0f} ms; equal-efficiency ratio "
            f"{equal:.2f}"),
        "periodic": periodic,
        "ends": ends,
        "evaluations": {"periodic": evals_periodic, "ends": evals_ends},
        "one_evaluation_cpu_s": one_eval.cpu,
        "equal_efficiency_ratio": equal,
        "steps_per_execution": _engine_S(trainers["periodic"]),
    }


def _fit(dataset, levels, controls, run_dir):
    from tf_lottery import ticket
    from tf_lottery.hparams import PruningHparams

    pruning = PruningHparams(levels=levels, rate=0.2, rate_output=0.1, controls=controls)
    with Clock() as clock:
        ticket.fit(lenet_fn, dataset, training=_training(FLAGS.level_steps, FLAGS.eval_every),
                   pruning_hparams=pruning, run_dir=run_dir, seed=FLAGS.seed)
    shutil.rmtree(run_dir, ignore_errors=True)
    gc.collect()
    return clock


def _fits(datasets, cache):
    """Whole ``ticket.fit`` runs from scratch, alternating: 1 level (dense only),
    3 levels of lottery only, 2 levels with both controls."""
    if "fits" in cache:
        return cache["fits"]
    variants = {
        "levels1": (0, ()),
        "levels3": (2, ()),
        "levels2_controls": (1, ("reinit", "random_prune")),
    }
    if "branches" not in FLAGS.figures:
        del variants["levels2_controls"]
    if "imp" not in FLAGS.figures:
        del variants["levels3"]
    root = tempfile.mkdtemp(prefix="tf_lottery_bench_")
    counter = iter(range(10 ** 6))
    try:
        runs = _alternate(
            {name: (lambda lv=lv, c=c: _fit(datasets["full"], lv, c,
                                            os.path.join(root, str(next(counter)))))
             for name, (lv, c) in variants.items()},
            FLAGS.fit_repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cache["fits"] = {name: _summary(clocks) for name, clocks in runs.items()}
    return cache["fits"]


def _level(datasets, cache):
    """One level (one branch) trained by a warm ``trainer.Trainer``, as in figure 4."""
    if "level" not in cache:
        trainers = cache.setdefault("eval_trainers", _eval_trainers(datasets))
        state = _start_state(trainers["periodic"])
        _timed_train(trainers["periodic"], *state)  # warm-up (the first call compiles)
        cache.setdefault("warm", set()).add("periodic")
        cache["level"] = _summary([_timed_train(trainers["periodic"], *state)
                                   for _ in range(FLAGS.repeats)])
    return cache["level"]


def figure_imp(datasets, cache):
    level = _level(datasets, cache)
    fits = _fits(datasets, cache)
    L, Lw = level["cpu_median_s"], level["wall_median_s"]
    t1, t3 = fits["levels1"]["cpu_median_s"], fits["levels3"]["cpu_median_s"]
    per_level = (t3 - t1) / 2
    # Projection to the paper's budget (LeNet: 50,000 iterations per level): the level
    # scales with the iterations; the start-up and the per-level overhead (pruning,
    # files) do not.
    training = _training(FLAGS.level_steps)
    scale = 50_000 / training.iterations(
        "training_steps", training.steps_per_epoch(FLAGS.train_size))
    projected = ((t1 - L) + 3 * L * scale + 2 * (per_level - L)) / (3 * L * scale)
    return {
        "ratio": t3 / (3 * L),
        "wall_ratio": fits["levels3"]["wall_median_s"] / (3 * Lw),
        "details": (
            f"fit, 3 levels of {FLAGS.level_steps}: {t3:.2f} s; one level {L:.2f} s CPU; "
            f"start-up (fit with 1 level - one level) {t1 - L:.2f} s; each further level "
            f"{per_level:.2f} s = {per_level / L:.3f} x a level; projected to 50000it "
            f"levels {projected:.3f}"),
        "level": level,
        "fits": {k: v for k, v in fits.items() if k in ("levels1", "levels3")},
        "startup_cpu_s": t1 - L,
        "per_level_cpu_s": per_level,
        "per_level_ratio": per_level / L,
        "projected_ratio_50000it": projected,
    }


def figure_branches(datasets, cache):
    level = _level(datasets, cache)
    fits = _fits(datasets, cache)
    L, Lw = level["cpu_median_s"], level["wall_median_s"]
    three = fits["levels2_controls"]["cpu_median_s"] - fits["levels1"]["cpu_median_s"]
    three_wall = fits["levels2_controls"]["wall_median_s"] - fits["levels1"]["wall_median_s"]
    return {
        "ratio": three / L,
        "wall_ratio": three_wall / Lw,
        "details": (
            f"level 1 with lottery + reinit + random_prune {three:.2f} s (fit with 2 levels "
            f"and both controls - fit with 1 level), one branch {L:.2f} s CPU "
            "(trainer.Trainer); the driver trains branches one after another"),
        "level": level,
        "fits": {k: v for k, v in fits.items() if k in ("levels1", "levels2_controls")},
        "three_branches_cpu_s": three,
    }


class TfmotChild:
    """Figure 5's child process: ``tools/bench.py --tfmot_worker`` over a pipe."""

    def __init__(self):
        args = [sys.executable, os.path.abspath(__file__), "--tfmot_worker",
                f"--threads={FLAGS.threads}", f"--seed={FLAGS.seed}",
                f"--sparsity={FLAGS.sparsity}", f"--batch_size={FLAGS.batch_size}",
                f"--tfmot_train_size={FLAGS.tfmot_train_size}",
                f"--test_size={min(FLAGS.test_size, 1000)}"]
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1)
        self.ready = self._read()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL):
                return json.loads(line[len(PROTOCOL):])
        self.stderr.seek(0)
        raise RuntimeError("the tfmot child exited:\n" + self.stderr.read()[-4000:])

    def run(self, steps):
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.stderr.close()


def tfmot_worker():
    """Child side of figure 5: imports tfmot only through ``tf_lottery.tfmot_bridge``."""
    _set_threads()
    from tf_lottery import tfmot_bridge

    data = random_dataset(FLAGS.tfmot_train_size, 0, FLAGS.test_size, FLAGS.seed + 1)

    def run(steps):
        with Clock() as clock:
            result = tfmot_bridge.gmp_baseline(
                lenet_fn, data, target_sparsity=FLAGS.sparsity, training_steps=steps,
                batch_size=FLAGS.batch_size, learning_rate=1.2e-3, frequency=100,
                seed=FLAGS.seed)
        return {"steps": steps, "cpu": clock.cpu, "wall": clock.wall,
                "sparsity": result.sparsity, "seconds": result.seconds}

    def send(obj):
        sys.stdout.write(PROTOCOL + json.dumps(obj) + "\n")
        sys.stdout.flush()

    warm = run(int(FLAGS.tfmot_steps[0]))  # imports tfmot, first traces
    import tensorflow as tf

    send({"ready": True, "warmup": warm, "tensorflow": tf.__version__})
    for line in sys.stdin:
        if line.strip():
            send(run(int(line)))


def figure_tfmot(datasets):
    n1, n2 = (int(s) for s in FLAGS.tfmot_steps)
    if not 0 < n1 < n2:
        raise app.UsageError("--tfmot_steps needs two budgets 0 < n1 < n2.")
    child = TfmotChild()
    try:
        trainer = _trainer(datasets["train_only"], _training(f"{FLAGS.train_steps}it"))
        weights, masks = _start_state(trainer, FLAGS.sparsity)
        import tf_lottery

        tf_lottery.set_masks(trainer.model, masks)
        sparsity = tf_lottery.sparsity_report(trainer.model).sparsity
        _timed_train(trainer, weights, masks)  # warm-up
        ours, tfmot_runs = [], {n1: [], n2: []}
        for i in range(FLAGS.repeats):
            order = ("ours", n1, n2) if i % 2 == 0 else (n2, n1, "ours")
            for item in order:
                if item == "ours":
                    ours.append(_timed_train(trainer, weights, masks))
                else:
                    tfmot_runs[item].append(child.run(item))
    finally:
        child.close()
    steps = trainer.iterations
    ours_cpu = _median([c.cpu for c in ours]) / steps
    ours_wall = _median([c.wall for c in ours]) / steps
    tf_cpu = (_median([r["cpu"] for r in tfmot_runs[n2]])
              - _median([r["cpu"] for r in tfmot_runs[n1]])) / (n2 - n1)
    tf_wall = (_median([r["wall"] for r in tfmot_runs[n2]])
               - _median([r["wall"] for r in tfmot_runs[n1]])) / (n2 - n1)
    out = {
        "ratio": tf_cpu / ours_cpu,
        "wall_ratio": tf_wall / ours_wall,
        "details": (
            f"tfmot {tf_cpu * 1e3:.2f} ms/step (gmp_baseline {n2} - {n1} steps, child "
            f"process), ours {ours_cpu * 1e3:.2f} ms/step (steps_per_execution "
            f"{_engine_S(trainer)}, XLA) CPU, sparsity {sparsity:.2f}"),
        "ours_step_cpu_s": ours_cpu,
        "ours_step_wall_s": ours_wall,
        "ours_runs": _summary(ours),
        "ours_steps": steps,
        "sparsity": sparsity,
        "tfmot_step_cpu_s": tf_cpu,
        "tfmot_step_wall_s": tf_wall,
        "tfmot_runs": {str(k): v for k, v in tfmot_runs.items()},
        "tfmot_child": child.ready,
    }
    del trainer
    gc.collect()
    return out


# ----------------------------------------------------------------------------- output
NAMES = {
    "mask": "1. mask overhead (wrapped / dense step)",
    "roofline": "2. roofline (LeNet epoch / compute bound)",
    "imp": "3. IMP overhead (3-level fit / 3 x one level)",
    "eval": "4. evaluation cost (eval every 100it / at the ends)",
    "tfmot": "5. against tfmot (tfmot step / ours)",
    "branches": "6. branches together (3 branches / 1, one level)",
}


def _met(name, ratio):
    op, target = TARGETS[name]
    return ratio <= target if op == "<=" else ratio >= target


def markdown(results):
    rows = ["| figure | ratio (CPU) | ratio (wall) | target | met | measured |",
            "|---|---:|---:|---:|:---:|---|"]
    for name in FIGURES:
        if name not in results:
            continue
        r = results[name]
        op, target = TARGETS[name]
        if "error" in r:
            rows.append(f"| {NAMES[name]} | - | - | {op} {target:g} | no | failed: {r['error']} |")
            continue
        rows.append(
            f"| {NAMES[name]} | {r['ratio']:.2f} | {r['wall_ratio']:.2f} | {op} {target:g} "
            f"| {'yes' if _met(name, r['ratio']) else 'no'} | {r['details']} |")
    return "\n".join(rows)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if FLAGS.tfmot_worker:
        return tfmot_worker()
    unknown = [f for f in FLAGS.figures if f not in FIGURES]
    if unknown:
        raise app.UsageError(f"--figures: unknown {unknown}; choose from {list(FIGURES)}.")
    _set_threads()
    logging.set_verbosity(logging.WARNING)  # ticket.fit logs every branch at INFO
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    datasets = {}
    if set(FLAGS.figures) - {"mask"}:
        full = random_dataset(FLAGS.train_size, FLAGS.val_size, FLAGS.test_size, FLAGS.seed)
        datasets["full"] = full
        # Training only: empty validation and test splits make evaluation free.
        import numpy as np
        from tf_lottery import data

        empty = np.zeros((0, *INPUT_SHAPE), np.float32), np.zeros((0,), np.int32)
        datasets["train_only"] = data.Dataset(
            x_train=full.x_train, y_train=full.y_train, x_val=empty[0], y_val=empty[1],
            x_test=empty[0], y_test=empty[1], name=full.name, num_classes=10,
            input_shape=INPUT_SHAPE, source="synthetic")
    results, cache, seconds = {}, {}, {}
    for name in FIGURES:
        if name not in FLAGS.figures:
            continue
        t0 = time.perf_counter()
        try:
            if name == "mask":
                results[name] = figure_mask()
            elif name in ("roofline", "tfmot"):
                results[name] = globals()[f"figure_{name}"](datasets)
            else:
                results[name] = globals()[f"figure_{name}"](datasets, cache)
        except Exception as err:  # noqa: BLE001 - one failing figure must not hide the rest
            logging.exception("figure %s failed", name)
            results[name] = {"error": f"{type(err).__name__}: {err}"}
        seconds[name] = time.perf_counter() - t0
        print(f"{NAMES[name]}: {results[name].get('ratio', float('nan')):.3f} "
              f"({seconds[name]:.0f} s)", file=sys.stderr, flush=True)
    table = markdown(results)
    print(table)
    total = time.perf_counter() - started
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu_total = sum(u.ru_utime + u.ru_stime for u in usage)
    print(f"\n{len(results)} figures in {total:.0f} s wall, {cpu_total:.0f} s CPU (this process "
          f"and the tfmot child) on {os.cpu_count()} CPUs, TensorFlow threads "
          f"{FLAGS.threads or 'default'}, load average at the end {os.getloadavg()[0]:.1f}.")
    if FLAGS.out:
        from tf_lottery.files import atomic_write_json

        atomic_write_json(FLAGS.out, {
            "results": results,
            "met": {k: "ratio" in v and _met(k, v["ratio"]) for k, v in results.items()},
            "targets": {k: list(v) for k, v in TARGETS.items()},
            "table": table,
            "seconds": seconds,
            "total_seconds": total,
            "total_cpu_seconds": cpu_total,
            "settings": {
                "threads": FLAGS.threads, "repeats": FLAGS.repeats,
                "fit_repeats": FLAGS.fit_repeats, "level_steps": FLAGS.level_steps,
                "eval_every": FLAGS.eval_every, "train_steps": FLAGS.train_steps,
                "tfmot_steps": FLAGS.tfmot_steps, "batch_size": FLAGS.batch_size,
                "sparsity": FLAGS.sparsity, "sizes": [FLAGS.train_size, FLAGS.val_size,
                                                      FLAGS.test_size],
                "keras": keras.__version__, "tensorflow": tf.__version__,
                "cpu_count": os.cpu_count(), "platform": platform.platform(),
                "loadavg_end": os.getloadavg(), "argv": sys.argv,
            },
        })


if __name__ == "__main__":
    app.run(main)
