"""Channel-pruned tickets next to unstructured ones: accuracy, size and speed, one table.

    .venv/bin/python tools/structured_table.py            # writes docs/structured_fashion.md
    .venv/bin/python tools/structured_table.py --models=lenet_300_100 --dataset=synthetic \\
        --quick --run_root=/tmp/st_runs --out=/tmp/st.md

1. Runs (or resumes: a rerun of a finished run only reloads it) two lottery-ticket
   experiments per network with ``python -m tf_lottery.main`` in subprocesses under
   ``--run_root``, without controls, two pruning levels each:

   - ``unstructured``: single weights by magnitude;
   - ``channel`` (``--structure=channel``): whole Dense units and convolution filters by
     their L1 norm (Li et al., ICLR 2017), 50% of the surviving channels per level (the
     output layer's units are never removed, its inputs go with the previous layer's
     units).

   The unstructured rates are chosen so that both structures keep about the same number
   of weights at each level: in LeNet-300-100 nearly every weight is in ``fc1``, whose
   input (the image) channel pruning cannot shrink, so halving its units halves the
   weights (unstructured 50% per level); in Conv-2/Conv-4 a layer between two pruned
   layers loses inputs and outputs alike, so halving the channels leaves a quarter of
   its weights (unstructured 75% per level, output layer 50%).

2. For the dense network (level 0 of the unstructured run) and the tickets of levels 1
   and 2 of each run, rebuilt with ``tf_lottery.export.load_ticket``, measures:

   - test accuracy: ``final_test_accuracy`` of the branch's ``summary.json``;
   - the deployed Keras model: ``tf_lottery.strip(model)`` (dense and unstructured rows)
     or ``tf_lottery.strip(model, shrink=True)`` (channel rows, pruned channels removed);
     its parameters (unstructured: nonzero and total) and the weights left against the
     dense network;
   - Keras ms at batch 1 and 256: median wall time of ``f(x).numpy()`` with
     ``f = tf.function(lambda x: model(x, training=False))`` on test images, TensorFlow's
     default threads, after 3 warm-up calls. The rows of a network are timed in
     ``--rounds`` rounds, their order rotated each round, ``--keras_runs`` calls per row,
     batch and round; the table gives the median of the round medians;
   - ``tf_lottery.export.to_tflite(model, ..., shrink=<channel row>, baseline=<dense
     network>)`` in float32 (file written next to the branch's summary as
     ``export_float32[_shrunk].tflite`` with its JSON report): the encoding written,
     file size raw and gzipped, LiteRT ms at batch 1 (median of ``--latency_runs``
     invokes, one thread, default delegates: XNNPACK) and, in the same call, the dense
     network's LiteRT ms (the paired speedup);
   - the speedup over the dense row: LiteRT batch 1 and Keras batch 256.

3. Writes the table as Markdown to ``--out`` (with the command of each run, the machine
   and how the times were measured), every number to ``--json_out``, and prints the
   table.

``--quick`` shrinks every budget (100 iterations for LeNet, 20 for Conv-N, few timing
runs): for trying the tool, e.g. on ``--dataset=synthetic``; its numbers mean nothing.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["lenet_300_100", "conv2"], "Networks: lenet_300_100, conv2, "
                  "conv4.")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset of every run (synthetic: for "
                    "trying the tool).")
flags.DEFINE_string("run_root", "/work/runs_structured", "Directory holding the runs.")
flags.DEFINE_string("out", os.path.join(ROOT, "docs", "structured_fashion.md"),
                    "Markdown file written.")
flags.DEFINE_string("json_out", None, "JSON file of every number (default: "
                    "<run_root>/structured_table.json).")
flags.DEFINE_string("lenet_steps", "6000it", "Training budget per level of LeNet-300-100.")
flags.DEFINE_string("conv_steps", "2000it", "Training budget per level of Conv-2/Conv-4.")
flags.DEFINE_string("eval_every", "500it", "Evaluation period of every run.")
flags.DEFINE_integer("rounds", 5, "Keras timing rounds (row order rotated each round).")
flags.DEFINE_integer("keras_runs", 10, "Keras calls per row, batch size and round.")
flags.DEFINE_integer("latency_runs", 200, "LiteRT invokes behind each to_tflite median.")
flags.DEFINE_string("machine", "2-core shared x86 CPU", "Machine note of the Markdown file.")
flags.DEFINE_bool("quick", False, "Tiny budgets (100it LeNet, 20it Conv-N, eval every "
                  "50it/10it, 2 rounds, 3 Keras runs, 20 LiteRT runs): numbers mean nothing.")

#: Per network: flagfile, flags of both runs, flags of each structure.
SPECS = {
    "lenet_300_100": {
        "title": "LeNet-300-100",
        "flagfile": "configs/quickstart.flags",
        "steps": "lenet_steps",
        "common": [],
        "unstructured": ["--prune_rate=0.5", "--prune_rate_output=0.5"],
        "channel": ["--structure=channel", "--prune_rate=0.5", "--prune_rate_output=none"],
    },
    "conv2": {
        "title": "Conv-2",
        "flagfile": "configs/conv2.flags",
        "steps": "conv_steps",
        "common": ["--jit_compile=false"],
        "unstructured": ["--prune_rate=0.75", "--prune_rate_conv=0.75",
                         "--prune_rate_output=0.5"],
        "channel": ["--structure=channel", "--prune_rate=0.5", "--prune_rate_conv=0.5",
                    "--prune_rate_output=none"],
    },
}
SPECS["conv4"] = dict(SPECS["conv2"], title="Conv-4", flagfile="configs/conv4.flags")

STRUCTURES = ("unstructured", "channel")
#: (row label, run structure, level) of each network's rows.
ROWS = (("dense", "unstructured", 0), ("unstructured", "unstructured", 1),
        ("unstructured", "unstructured", 2), ("channel, shrunk", "channel", 1),
        ("channel, shrunk", "channel", 2))


# ------------------------------------------------------------------------- the runs
def command(model: str, structure: str) -> list[str]:
    """The ``tf_lottery.main`` arguments of one run (without the interpreter)."""
    spec = SPECS[model]
    steps = getattr(FLAGS, spec["steps"])
    eval_every = FLAGS.eval_every
    if FLAGS.quick:
        steps = "100it" if model == "lenet_300_100" else "20it"
        eval_every = "50it" if model == "lenet_300_100" else "10it"
    return ["-m", "tf_lottery.main", f"--flagfile={spec['flagfile']}",
            f"--dataset={FLAGS.dataset}", *spec["common"], f"--training_steps={steps}",
            f"--eval_every={eval_every}", "--levels=2", "--controls=", *spec[structure],
            f"--run_root={os.path.abspath(FLAGS.run_root)}"]


def run(args: list[str]) -> str:
    """Runs (or resumes) one experiment in a subprocess; returns its replicate directory.

    Raises:
        RuntimeError: the run failed (exit code and the end of its output).
    """
    print(f"$ python {shlex.join(args)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    marker = "\nResults ("
    if proc.returncode != 0 or marker not in proc.stdout:
        raise RuntimeError(f"`python {shlex.join(args)}` exited with {proc.returncode}:\n"
                           + "\n".join(proc.stdout.splitlines()[-30:]))
    tail = proc.stdout[proc.stdout.rindex(marker) + len(marker):]
    print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
    return tail[: tail.index("):")]


# ------------------------------------------------------------------- measurements
def inference_fn(model):
    """``tf.function`` of ``model(x, training=False)``."""
    import tensorflow as tf

    @tf.function
    def fn(x):
        return model(x, training=False)

    return fn


def time_keras(rows, batches, rounds: int, runs: int) -> None:
    """Sets ``row["keras_ms"][batch]``: median over ``rounds`` of the median wall time of
    ``runs`` calls, the rows' order rotated each round."""
    import tensorflow as tf

    jobs = []
    for row in rows:
        fn = inference_fn(row["model"])
        for batch, x in batches.items():
            tensor = tf.constant(x)
            for _ in range(3):
                fn(tensor).numpy()
            jobs.append((row, batch, fn, tensor))
    samples = {id(job): [] for job in jobs}
    for r in range(rounds):
        for job in jobs[r % len(jobs):] + jobs[:r % len(jobs)]:
            _, _, fn, tensor = job
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                fn(tensor).numpy()
                times.append(time.perf_counter() - start)
            samples[id(job)].append(statistics.median(times))
    for job in jobs:
        row, batch = job[0], job[1]
        row.setdefault("keras_ms", {})[batch] = 1000 * statistics.median(samples[id(job)])


def measure(model_name: str, dirs: dict, commands: dict) -> list[dict]:
    """Rows of one network: loads, strips, exports and times each ticket."""
    import numpy as np

    import tf_lottery as tfl
    from tf_lottery import files, paths
    from tf_lottery.export import load_ticket, to_tflite

    dense = load_ticket(dirs["unstructured"], 0)
    x = dense.dataset.x_test
    rows = []
    for label, structure, level in ROWS:
        ticket = dense if level == 0 else load_ticket(dirs[structure], level)
        shrink = structure == "channel"
        deployed = tfl.strip(ticket.model, shrink=shrink)
        weights = [np.asarray(w) for w in deployed.get_weights()]
        path = paths.BranchDir(ticket.branch_dir).export(
            "float32_shrunk" if shrink else "float32")
        print(f"  {model_name} {label} level {level}: exporting {path}", flush=True)
        report = to_tflite(ticket.model, path, shrink=shrink, baseline=dense.model,
                           sample_inputs=x[:32], latency_runs=FLAGS.latency_runs)
        files.atomic_write_json(paths.BranchDir.export_report(path), report.to_dict())
        rows.append({
            "network": model_name, "row": label, "structure": structure, "level": level,
            "command": commands[structure], "branch_dir": ticket.branch_dir,
            "test_accuracy": float(ticket.summary["final_test_accuracy"]),
            "sparsity": float(ticket.summary["sparsity"]),
            "params": int(deployed.count_params()),
            "nonzero": int(sum(np.count_nonzero(w) for w in weights)),
            "litert_ms": report.litert_latency_ms,
            "baseline_litert_ms": report.baseline_litert_latency_ms,
            "paired_speedup": report.speedup,
            "dense_encoding_litert_ms": report.dense_litert_latency_ms,
            "encoding": report.encoding, "sparse_tensors": report.sparse_tensors,
            "densify_ops": report.densify_ops, "file_bytes": report.file_bytes,
            "gzip_bytes": report.gzip_bytes, "tflite": path,
            "max_abs_diff": report.max_abs_diff, "model": deployed,
        })
    time_keras(rows, {1: x[:1], 256: x[:256]}, FLAGS.rounds, FLAGS.keras_runs)
    base = rows[0]
    for row in rows:
        row["weights_left"] = row["nonzero"] / base["params"]
        row["litert_speedup"] = base["litert_ms"] / row["litert_ms"]
        row["keras256_speedup"] = base["keras_ms"][256] / row["keras_ms"][256]
    channel0 = load_ticket(dirs["channel"], 0).summary["final_test_accuracy"]
    seconds = {s: run_seconds(d) for s, d in dirs.items()}
    for row in rows:
        row["channel_run_dense_accuracy"] = float(channel0)
        row["run_seconds"] = seconds[row["structure"]]
    return rows


def run_seconds(run_dir: str) -> float:
    """Training plus evaluation seconds of a run's lottery levels (their summaries)."""
    from tf_lottery import files, paths

    _, rep = paths.resolve_replicate(run_dir)
    total = 0.0
    for level in rep.finished_levels("lottery"):
        summary = files.read_json(rep.branch(level, "lottery").summary)
        total += summary.get("train_seconds", 0.0) + summary.get("eval_seconds", 0.0)
    return total


# ------------------------------------------------------------------------- markdown
def versions() -> dict:
    """Installed versions of TensorFlow, Keras and ai-edge-litert."""
    from importlib import metadata

    out = {}
    for key, dist in (("tensorflow", "tensorflow"), ("keras", "keras"),
                      ("ai_edge_litert", "ai-edge-litert")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = "not installed"
    return out


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f}" if n >= 10 * 1024 else f"{n / 1024:,.1f}"


def stored(row: dict) -> str:
    """How the file stores its weights: ``dense``, or ``sparse (n tensors)``."""
    n = row["sparse_tensors"]
    return f"sparse ({n} tensor{'s' * (n != 1)})" if n else "dense"


def table(rows: list[dict]) -> str:
    """The Markdown table of ``rows``."""
    head = ("| network | ticket | level | test acc | weights left | Keras params "
            "| Keras ms b1 | Keras ms b256 | LiteRT ms b1 | .tflite KiB (gzip) "
            "| weights stored | speedup LiteRT b1 | speedup Keras b256 |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for row in rows:
        params = (f"{row['nonzero']:,} of {row['params']:,}" if row["structure"] ==
                  "unstructured" and row["level"] else f"{row['params']:,}")
        lines.append(
            f"| {SPECS[row['network']]['title']} | {row['row']} | {row['level']} "
            f"| {100 * row['test_accuracy']:.2f}% | {100 * row['weights_left']:.1f}% "
            f"| {params} | {_ms(row['keras_ms'][1])} | {_ms(row['keras_ms'][256])} "
            f"| {_ms(row['litert_ms'])} | {_kib(row['file_bytes'])} ({_kib(row['gzip_bytes'])}) "
            f"| {stored(row)} | {row['litert_speedup']:.2f}x "
            f"| {row['keras256_speedup']:.2f}x |")
    return "\n".join(lines)


def comparisons(rows: list[dict]) -> list[str]:
    """One line per network and level: channel against unstructured accuracy."""
    out = []
    for network in dict.fromkeys(r["network"] for r in rows):
        mine = [r for r in rows if r["network"] == network]
        for level in (1, 2):
            u = next(r for r in mine if r["structure"] == "unstructured" and r["level"] == level)
            c = next(r for r in mine if r["structure"] == "channel" and r["level"] == level)
            out.append(
                f"- {SPECS[network]['title']} level {level}: channel "
                f"{100 * c['test_accuracy']:.2f}% "
                f"with {100 * c['weights_left']:.1f}% of the weights, unstructured "
                f"{100 * u['test_accuracy']:.2f}% with {100 * u['weights_left']:.1f}% "
                f"({100 * (c['test_accuracy'] - u['test_accuracy']):+.2f} points); "
                f"LiteRT batch 1 {c['litert_speedup']:.2f}x against "
                f"{u['litert_speedup']:.2f}x, Keras batch 256 {c['keras256_speedup']:.2f}x "
                f"against {u['keras256_speedup']:.2f}x.")
    return out


DATASET_TITLES = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}


def markdown(rows: list[dict], versions: dict, seconds: float) -> str:
    """The whole Markdown page."""
    networks = list(dict.fromkeys(r["network"] for r in rows))
    titles = {n: SPECS[n]["title"] for n in networks}
    commands = []
    for network in networks:
        mine = [r for r in rows if r["network"] == network]
        for structure in STRUCTURES:
            first = next(r for r in mine if r["structure"] == structure)
            levels = [r["level"] for r in mine if r["structure"] == structure]
            commands.append(
                f"- {titles[network]}, {structure} (rows of levels "
                f"{', '.join(map(str, levels))}; levels 0-2 trained and evaluated in "
                f"{first['run_seconds']:.0f} s):\n\n  ```\n  python "
                f"{shlex.join(first['command'])}\n  ```")
    paired = "; ".join(
        f"{titles[r['network']]} {r['row']} level {r['level']}: {r['paired_speedup']:.2f}x"
        for r in rows)
    encodings = "; ".join(
        f"{titles[r['network']]} {r['row']} level {r['level']}: {_ms(r['litert_ms'])} ms "
        f"written, {_ms(r['dense_encoding_litert_ms'])} ms dense encoding"
        for r in rows if r["sparse_tensors"])
    dense_pairs = "; ".join(
        f"{titles[r['network']]}: {100 * r['test_accuracy']:.2f}% (unstructured run), "
        f"{100 * r['channel_run_dense_accuracy']:.2f}% (channel run)"
        for r in rows if r["level"] == 0)
    steps = {r["network"]: next(a.split("=", 1)[1] for a in r["command"]
                                if a.startswith("--training_steps=")) for r in rows}
    budgets = ", ".join(f"{titles[n]} {steps[n]}" for n in networks)
    flags_line = " ".join(f"--{name}={getattr(FLAGS, name)}" for name in (
        "rounds", "keras_runs", "latency_runs"))
    dataset = DATASET_TITLES.get(rows[0]["dataset"], rows[0]["dataset"])
    return f"""# Channel-pruned tickets on {dataset}: accuracy, size and speed

Made by `python tools/structured_table.py {flags_line}` (this invocation took {seconds / 60:.0f}
minutes; runs that had finished before are only reloaded, see the training time of each run
below) on {datetime.date.today()}. Machine: {FLAGS.machine} ({platform.machine()},
{os.cpu_count()} logical CPUs); TensorFlow {versions['tensorflow']}, Keras {versions['keras']},
ai-edge-litert {versions['ai_edge_litert']}. One replicate per run (seed 0), short training
budgets per level ({budgets}), no controls.

{table(rows)}

What each row is:

- **dense**: level 0 of the unstructured run, `tf_lottery.strip(model)`.
- **unstructured**: the ticket of that level of iterative magnitude pruning (rewound to
  initialization and retrained), `tf_lottery.strip(model)`: the dense architecture with the
  pruned weights zero. *Keras params*: nonzero parameters (biases included) of the total.
- **channel, shrunk**: the ticket of that level of a `--structure=channel` run (whole units
  and filters by L1 norm, 50% of the surviving ones per level, output units kept),
  `tf_lottery.strip(model, shrink=True)`: the removed units and filters are gone, a smaller
  dense network. *Keras params*: its `count_params()`.
- *weights left*: nonzero parameters of the deployed model / parameters of the dense network.
  The unstructured rates (LeNet 50% per level, Conv-N 75%, output layer 50%) are chosen so
  that both structures keep about the same weights at each level.

How it was measured:

- *test acc*: `final_test_accuracy` of the branch's `summary.json` (end of training).
- *Keras ms*: median wall time of `f(x).numpy()`, `f = tf.function(lambda x: model(x,
  training=False))`, on test images at batch 1 and 256, TensorFlow's default threads, warm
  (3 calls first); {FLAGS.keras_runs} calls per row, batch and round, {FLAGS.rounds} rounds
  with the rows' order rotated each round; the median of the round medians.
- *LiteRT ms b1*, *.tflite KiB*, *weights stored*: `tf_lottery.export.to_tflite(model, ...,
  shrink=<channel row>, baseline=<dense network>)`, float32: median wall time of
  {FLAGS.latency_runs} invokes (`set_tensor` + `invoke` + `get_tensor`) of one test image,
  one thread, LiteRT's default `Interpreter` delegates (XNNPACK); size of the file written,
  raw and gzip -9; how many weight tensors it stores in TFLite's sparse format (each read
  through a `DENSIFY` op). `to_tflite` writes the sparse encoding only where it runs under
  the default delegates and is smaller gzipped.
- *speedup*: time of the dense row / time of the row. The rows are timed one after the
  other on a shared machine; `to_tflite` also times the dense network in the same call
  (paired LiteRT speedups: {paired}).
- Files with sparse tensors against the dense encoding of the same weights, LiteRT batch 1
  (same call): {encodings}.

Accuracy at about equal weights (channel against unstructured, same level):

{chr(10).join(comparisons(rows))}

Level 0 of both runs of a network is the same training (same seed, data order and budget):
{dense_pairs}. Seed-to-seed variation was not measured (one replicate).

Commands (from the repository root; each run resumes when rerun):

{chr(10).join(commands)}
"""


def main(argv):
    del argv
    unknown = [m for m in FLAGS.models if m not in SPECS]
    if unknown or not FLAGS.models:
        raise app.UsageError(f"--models must list networks among {','.join(SPECS)}; "
                             f"received {','.join(FLAGS.models)!r}.")
    if FLAGS.rounds < 1 or FLAGS.keras_runs < 1 or FLAGS.latency_runs < 1:
        raise app.UsageError("--rounds, --keras_runs and --latency_runs must be >= 1.")
    if FLAGS.quick:
        FLAGS.rounds, FLAGS.keras_runs, FLAGS.latency_runs = 2, 3, 20
    start = time.perf_counter()
    plan = {m: {s: command(m, s) for s in STRUCTURES} for m in FLAGS.models}
    dirs = {m: {s: run(args) for s, args in plan[m].items()} for m in FLAGS.models}

    import tensorflow as tf

    from tf_lottery import files

    tf.get_logger().setLevel("ERROR")  # tf.function retracing warnings
    absl_logging.set_verbosity(absl_logging.WARNING)  # the converter's INFO lines
    rows = []
    for m in FLAGS.models:
        rows.extend(measure(m, dirs[m], plan[m]))
    for row in rows:
        row["dataset"] = FLAGS.dataset
    text = markdown(rows, versions(), time.perf_counter() - start)
    files.atomic_write_text(FLAGS.out, text)
    json_out = FLAGS.json_out or os.path.join(FLAGS.run_root, "structured_table.json")
    files.atomic_write_json(json_out, {
        "rows": [{k: v for k, v in r.items() if k != "model"} for r in rows],
        "flags": {name: getattr(FLAGS, name) for name in (
            "models", "dataset", "run_root", "lenet_steps", "conv_steps", "eval_every",
            "rounds", "keras_runs", "latency_runs", "quick")}})
    print(text)
    print(f"wrote {FLAGS.out} and {json_out}")


if __name__ == "__main__":
    app.run(main)
