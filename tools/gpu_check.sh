#!/usr/bin/env bash
# The GPU check: one table of the quick start's first level on a GPU (float32 and
# mixed_float16, XLA on and off, MirroredStrategy over every GPU when there are several)
# and the tools/bench.py figures that mean something on a GPU (mask overhead, roofline).
# Under 5 minutes on one GPU. It fails (exit 1) when TensorFlow sees no GPU: it never
# skips. CPU-only machines do not run it; nothing in the test suite needs a GPU.
#
#     tools/gpu_check.sh            # uses .venv/bin/python, else python3 (PYTHON=... to choose)
#
# Needs TensorFlow with CUDA in that Python (pip install "tensorflow[and-cuda]==2.21.*"
# and pip install -e .): the script installs nothing. Real data when Debian's
# dataset-fashion-mnist is installed, otherwise the synthetic dataset (the
# table says which).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
export OUT PYTHON TF_CPP_MIN_LOG_LEVEL=2
"$PYTHON" - <<'PY'
import json, os, subprocess, sys, time

out, python = os.environ["OUT"], os.environ["PYTHON"]
import tensorflow as tf

gpus = tf.config.list_physical_devices("GPU")
if not gpus:
    sys.exit("error: TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is "
             f"empty; TensorFlow {tf.__version__}, built with CUDA: "
             f"{tf.test.is_built_with_cuda()}). Install tensorflow[and-cuda] and check "
             "nvidia-smi; this check does not run on CPU.")
names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
real = os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
data = [] if real else ["--dataset=synthetic", "--synthetic_size=60000"]
base = ["--flagfile=configs/quickstart.flags", "--levels=0", "--controls=", "--verbosity=-1",
        *data]
configs = [("float32", "xla", ["--precision=float32", "--jit_compile=true"]),
           ("float32", "no xla", ["--precision=float32", "--jit_compile=false"]),
           ("mixed_float16", "xla", ["--precision=mixed_float16", "--jit_compile=true"]),
           ("mixed_float16", "no xla", ["--precision=mixed_float16", "--jit_compile=false"])]
if len(gpus) > 1:
    configs.append(("float32", f"mirrored x{len(gpus)}",
                    ["--precision=float32", "--distribution=mirrored"]))
rows = []
for i, (precision, mode, flags) in enumerate(configs):
    root = os.path.join(out, f"run{i}")
    t0 = time.time()
    done = subprocess.run([python, "-m", "tf_lottery.main", *base, *flags,
                           f"--run_root={root}"], capture_output=True, text=True)
    wall = time.time() - t0
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
        sys.exit(f"error: the quick start's first level failed with {precision}, {mode} "
                 f"(exit {done.returncode}); output above.")
    (path,) = [os.path.join(d, "summary.json") for d, _, f in os.walk(root) if "summary.json" in f]
    with open(path) as f:
        s = json.load(f)
    its = s["end_iteration"] - s.get("start_iteration", 0)
    rows.append((precision, mode, wall, s["train_seconds"], its / s["train_seconds"],
                 s["final_test_accuracy"]))
bench_json = os.path.join(out, "bench.json")
bench = subprocess.run([python, "tools/bench.py", "--figures=mask,roofline", "--repeats=2",
                        f"--out={bench_json}"], capture_output=True, text=True)
print(f"\nGPU check: {len(gpus)} GPU(s) {names}; TensorFlow {tf.__version__}; data: "
      f"{'Fashion-MNIST' if real else 'synthetic (Fashion-MNIST files absent)'}")
print("| precision | mode | wall s | train s | it/s | test accuracy |")
print("|---|---|---:|---:|---:|---:|")
for precision, mode, wall, train, rate, acc in rows:
    print(f"| {precision} | {mode} | {wall:.1f} | {train:.1f} | {rate:.0f} | {acc:.4f} |")
print("\ntools/bench.py --figures=mask,roofline (ratios; targets as on CPU):")
print(bench.stdout[-3000:] if bench.returncode == 0 else
      f"bench.py failed (exit {bench.returncode}):\n{bench.stderr[-3000:]}")
sys.exit(0 if bench.returncode == 0 else 1)
PY
