"""IMP tickets vs pruning at initialization (SNIP, GraSP, SynFlow, random) on real data.

Runs, through the command line a user would type (``python -m tf_lottery.main``), on
LeNet-300-100 and Fashion-MNIST with the paper's optimizer (Adam 1.2e-3, batch 60) and
a budget of ``--training_steps`` per network:

* the IMP ticket: layerwise pruning 20% per level (output layer 10%) for 15 levels,
  with the ``random_prune`` control (masks shuffled within each layer);
* SNIP, GraSP and SynFlow at initialization (``--prune_at=init``, global scope, as
  their papers prune), each at the IMP ladder's 21.1%, 10.8% and 3.6% of the weights
  remaining, with the ``random_prune`` control: the sanity check of Frankle et al.
  (ICLR 2021) that tells whether a method found more than per-layer ratios;
* random pruning at initialization, global (the same ratio in every layer) and ERK;
* early-bird IMP (``--early_bird``, at each ``--early_bird_epsilons``): the same ladder,
  each level's mask drawn when it stops changing.

Then writes a markdown table (test accuracy at the early-stopping iteration, the
iteration, weights remaining) to ``--out_dir/at_init.md`` and the plot
``--out_dir/at_init.png``. Finished runs are reused: rerunning only trains what is
missing.

    python tools/compare_at_init.py --run_root=/work/runs --out_dir=docs
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("run_root", "runs", "Run root of the experiments.")
flags.DEFINE_string("out_dir", "docs", "Where the table and the plot go.")
flags.DEFINE_string("training_steps", "10000it", "Budget of every network.")
flags.DEFINE_string("eval_every", "200it", "Evaluation period.")
flags.DEFINE_list("early_bird_epsilons", ["0.1", "0.02"], "Early-bird thresholds to run.")
flags.DEFINE_list("only", [], "Run only these rows (imp, snip, grasp, synflow, random, "
                  "random_erk, early_bird); the table uses what is finished.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The IMP ladder's weights remaining (layerwise 20%, output 10%) at levels 7, 10, 15.
LADDER = {7: 0.211, 10: 0.108, 15: 0.036}
METHODS = ("snip", "grasp", "synflow")
LABELS = {"snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow"}


def common():
    return ["--model=lenet_300_100", "--dataset=fashion_mnist", "--optimizer=adam",
            "--learning_rate=0.0012", "--batch_size=60",
            f"--training_steps={FLAGS.training_steps}", f"--eval_every={FLAGS.eval_every}",
            f"--run_root={FLAGS.run_root}", "--jit_compile=true"]


def run(*args) -> str:
    """Runs one experiment; returns its replicate directory."""
    command = [sys.executable, "-m", "tf_lottery.main", *common(), *args]
    print("$", " ".join(command[1:]), flush=True)
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return re.search(r"^Results \((.*)\):$", proc.stdout, re.M).group(1)


def levels(replicate: str) -> list[dict]:
    with open(os.path.join(replicate, "results.json")) as f:
        return [entry["branches"] for entry in json.load(f)["levels"]]


def main(argv):
    del argv
    wanted = set(FLAGS.only) or {"imp", *METHODS, "random", "random_erk", "early_bird"}
    rows, curves = [], {}
    commands = []

    def add(name, summary, command):
        rows.append((name, 1 - summary["sparsity"], summary["early_stop_test_accuracy"],
                     summary["early_stop_iteration"], command))

    if "imp" in wanted:
        args = ["--levels=15", "--pruning=layerwise", "--prune_rate=0.2",
                "--prune_rate_output=0.1", "--controls=random_prune"]
        rep = run(*args)
        commands.append(args)
        result = levels(rep)
        curves["IMP ticket"] = [(1 - b["lottery"]["sparsity"],
                                 b["lottery"]["early_stop_test_accuracy"]) for b in result]
        curves["IMP, shuffled in each layer"] = [
            (1 - b["random_prune"]["sparsity"], b["random_prune"]["early_stop_test_accuracy"])
            for b in result[1:]]
        add("dense", result[0]["lottery"], args)
        for level in LADDER:
            add("IMP ticket", result[level]["lottery"], args)
            add("IMP, shuffled in each layer", result[level]["random_prune"], args)
    for method in METHODS:
        if method not in wanted:
            continue
        for remaining in LADDER.values():
            args = ["--levels=1", "--pruning=global", f"--prune_rate={1 - remaining:.3f}",
                    f"--criterion={method}", "--prune_at=init", "--controls=random_prune"]
            commands.append(args)
            level = levels(run(*args))[1]
            name = LABELS[method]
            curves.setdefault(name, []).append(
                (1 - level["lottery"]["sparsity"], level["lottery"]["early_stop_test_accuracy"]))
            curves.setdefault(f"{name}, shuffled in each layer", []).append(
                (1 - level["random_prune"]["sparsity"],
                 level["random_prune"]["early_stop_test_accuracy"]))
            add(name, level["lottery"], args)
            add(f"{name}, shuffled in each layer", level["random_prune"], args)
    for name, scope in (("random", "global"), ("random_erk", "erk")):
        if name not in wanted:
            continue
        for remaining in LADDER.values():
            args = ["--levels=1", f"--pruning={scope}", f"--prune_rate={1 - remaining:.3f}",
                    "--criterion=random", "--prune_at=init"]
            commands.append(args)
            level = levels(run(*args))[1]
            label = "random (uniform)" if scope == "global" else "random (ERK)"
            curves.setdefault(label, []).append(
                (1 - level["lottery"]["sparsity"], level["lottery"]["early_stop_test_accuracy"]))
            add(label, level["lottery"], args)
    for epsilon in FLAGS.early_bird_epsilons if "early_bird" in wanted else []:
        args = ["--levels=15", "--pruning=layerwise", "--prune_rate=0.2",
                "--prune_rate_output=0.1", "--early_bird", f"--early_bird_epsilon={epsilon}"]
        commands.append(args)
        result = levels(run(*args))
        drawn = [b["lottery"].get("early_bird_iteration") for b in result[:-1]]
        label = f"early-bird IMP ticket (epsilon {epsilon})"
        # Only the last level trains its whole budget; the others stop at their draw.
        add(label, result[-1]["lottery"], args)
        trained = sum(b["lottery"]["end_iteration"] if b["lottery"].get(
            "early_bird_iteration") is None else b["lottery"]["early_bird_iteration"]
            for b in result)
        budget = len(result) * int(FLAGS.training_steps.rstrip("it"))
        rows.append((f"early-bird (epsilon {epsilon}): draws at levels 0-14 (iteration; None: "
                     f"not drawn), iterations trained {trained} of IMP's {budget} "
                     f"({100 * (1 - trained / budget):.0f}% saved)", None, None,
                     ", ".join(str(d) for d in drawn), args))
        print(f"early-bird {epsilon}: first distances of level 0:",
              [round(d, 4) for d in result[0]["lottery"].get("early_bird_distances", [])[:10]])

    os.makedirs(FLAGS.out_dir, exist_ok=True)
    lines = ["| network | weights remaining % | test acc @ES | early-stop it |",
             "|---|---:|---:|---:|"]
    for name, remaining, acc, es, _ in rows:
        lines.append(f"| {name} | {'-' if remaining is None else f'{100 * remaining:.1f}'} | "
                     f"{'-' if acc is None else f'{acc:.4f}'} | {es} |")
    lines += ["", "Commands (each with: " + " ".join(common()) + "):", ""]
    lines += [f"    python -m tf_lottery.main {' '.join(c)}" for c in commands]
    with open(os.path.join(FLAGS.out_dir, "at_init.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = {}
    for label, points in curves.items():
        points = sorted(points)
        method = label.split(",")[0].replace(" ticket", "")  # with its control: one colour
        colors.setdefault(method, f"C{len(colors)}")
        style = "--" if "shuffled" in label else "-"
        ax.plot([100 * p for p, _ in points], [a for _, a in points], style, marker="o",
                markersize=3, label=label, color=colors[method])
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy at early stopping")
    ax.set_title(f"LeNet-300-100, Fashion-MNIST, {FLAGS.training_steps} per network")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(FLAGS.out_dir, "at_init.png"), dpi=120)


if __name__ == "__main__":
    app.run(main)
