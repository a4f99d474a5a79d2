"""Does any LiteRT runtime here run pruned networks faster? Batch-1 latency of .tflite files.

For each network, float32 files of the same architecture with different weight patterns,
each run at batch 1 in the three CPU runtimes of LiteRT (ai-edge-litert), one thread:

- ``default``: ``Interpreter(model_path=...)``'s default delegates (XNNPACK);
- ``builtin``: the interpreter's builtin kernels (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``);
- ``compiled``: LiteRT's ``CompiledModel`` API on the CPU accelerator
  (``CpuOptions(num_threads=1)``; XNNPACK underneath; its YNNPACK option is not in this
  build).

Variants (every prunable kernel, the output layer's too unless stated):

- ``dense``: the unpruned network, dense encoding;
- ``unstructured``: ``--sparsity`` of each kernel pruned by magnitude
  (``tf_lottery.prune``), sparse encoding (``EXPERIMENTAL_SPARSITY``: ``DENSIFY`` ops);
- ``2:4``: N:M sparsity, 2 of every 4 consecutive weights along the input dimension
  kept (largest magnitude), sparse encoding;
- ``1x4 blocks``: whole blocks of 4 consecutive input weights of one output pruned by
  block L1 norm, ``--sparsity`` of the blocks, sparse encoding (the pattern TFLite's
  sparse fully-connected kernel is built for);
- ``channels (shrunk)``: whole output units / filters pruned by L1 norm (not the output
  layer's), the same fraction per layer, chosen so that about ``1 - --sparsity`` of the
  weights remain; ``tf_lottery.strip(model, shrink=True)`` then removes them, dense
  encoding. ``weights kept`` counts the shrunk model's weights.

Networks: LeNet-300-100 (28x28x1), Conv-2 (28x28x1) from the zoo, and ``mobile``: a
small network in the pattern XNNPACK's sparse inference needs (Elsen et al., "Fast
Sparse ConvNets", 2019; tensorflow/lite/delegates/xnnpack/README.md): a 3x3 stride-2
convolution of a 3-channel image (129x129, so that ``same`` padding is 1 on each side),
then 3x3 depthwise and 1x1 convolutions, ending in a spatial mean; only its 1x1
convolutions and the classifier are pruned (the first convolution and the depthwise ones
stay dense). It has no channel variant: shrinking keeps the channels that feed a
depthwise convolution (``ChannelsKeptWarning``).

Timing: the variants of a network are timed in rounds, their order rotated each round,
so that load from other processes hits all alike; per round and variant ``--runs``
invokes (``set_tensor`` + ``invoke`` + ``get_tensor``; ``CompiledModel``: ``write`` +
``run_by_index``) after warm-up. The table gives
the median over ``--rounds`` rounds of the CPU time of this process per invoke (one
thread: it measures the work, not the other processes of a shared machine) and the
speedup against ``dense`` under the same runtime.

    .venv/bin/python tools/bench_sparse_inference.py --out=/tmp/bench_sparse.json
"""

from __future__ import annotations

import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["lenet_300_100", "conv2", "mobile"], "Networks to time.")
flags.DEFINE_float("sparsity", 0.9, "Fraction of weights pruned (unstructured, blocks; "
                   "the channel variant keeps about 1 - sparsity of the weights).")
flags.DEFINE_integer("rounds", 7, "Timed rounds per network.")
flags.DEFINE_integer("runs", 200, "Invokes per variant and round.")
flags.DEFINE_integer("seed", 0, "Seed for weights.")
flags.DEFINE_string("out", None, "Optional JSON output path.")

VARIANTS = ("dense", "unstructured", "2:4", "1x4 blocks", "channels (shrunk)")
RUNTIMES = ("default", "builtin", "compiled")


def mobile(keras, input_shape=(129, 129, 3), num_classes=10):
    """The Fast-Sparse-ConvNets pattern (odd sizes: 'same' padding is 1 on each side)."""
    layers = keras.layers
    x = inputs = keras.Input(input_shape)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="stem")(x)
    for i, (filters, stride) in enumerate([(64, 1), (128, 2), (128, 1), (256, 2)], 1):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", activation="relu",
                                   name=f"dw{i}")(x)
        x = layers.Conv2D(filters, 1, activation="relu", name=f"pw{i}")(x)
    x = layers.GlobalAveragePooling2D(name="mean")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="output")(x), name="mobile")


def build(keras, name, seed):
    from tf_lottery.models import build_model

    keras.utils.set_random_seed(seed)
    if name == "mobile":
        return mobile(keras)
    return build_model(name, (28, 28, 1), 10, seed=seed)


def prunable(name, key):
    """Kernels pruned in a variant: all but mobile's stem and depthwise convolutions."""
    return name != "mobile" or key.startswith(("pw", "output"))


def n_of_m(np, weight, n, m):
    """Keep the ``n`` largest of every ``m`` consecutive weights along the input axis."""
    w = np.moveaxis(weight, -2, -1)  # (..., out, in)
    if w.shape[-1] % m:
        return np.ones_like(weight)
    groups = np.abs(w).reshape(*w.shape[:-1], -1, m)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros_like(groups)
    np.put_along_axis(keep, order[..., :n], 1.0, axis=-1)
    return np.moveaxis(keep.reshape(w.shape), -1, -2)


def blocks(np, weight, sparsity, m=4):
    """Prune whole blocks of ``m`` consecutive input weights by block L1 norm."""
    w = np.moveaxis(weight, -2, -1)
    if w.shape[-1] % m:
        return np.ones_like(weight)
    norms = np.abs(w).reshape(*w.shape[:-1], -1, m).sum(-1)
    cut = np.quantile(norms, sparsity)
    keep = np.repeat((norms > cut).astype(np.float32), m, axis=-1)
    return np.moveaxis(keep.reshape(w.shape), -1, -2)


def channel_masks(np, weights, name, keep_fraction):
    masks = {}
    for key, w in weights.items():
        if not prunable(name, key) or key.startswith("output"):
            masks[key] = np.ones_like(w)
            continue
        norms = np.abs(w).reshape(-1, w.shape[-1]).sum(0)
        keep = max(1, int(round(keep_fraction * w.shape[-1])))
        mask = np.zeros_like(w)
        mask[..., np.argsort(-norms, kind="stable")[:keep]] = 1.0
        masks[key] = mask
    return masks


def variant_masks(np, tfl, model, name, variant, sparsity):
    weights = tfl.get_prunable_weights(model)
    if variant == "unstructured":
        masks = tfl.prune(model, rate=sparsity)
        return {k: (v if prunable(name, k) else np.ones_like(v)) for k, v in masks.items()}
    if variant == "2:4":
        return {k: n_of_m(np, w, 2, 4) if prunable(name, k) else np.ones_like(w)
                for k, w in weights.items()}
    if variant == "1x4 blocks":
        return {k: blocks(np, w, sparsity) if prunable(name, k) else np.ones_like(w)
                for k, w in weights.items()}
    # Channels: the keep fraction (bisected) whose shrunk model keeps about 1 - sparsity
    # of the prunable weights.
    total = tfl.sparsity_report(tfl.strip(model)).weights
    low, high = 0.0, 1.0
    for _ in range(10):
        middle = (low + high) / 2
        masks = channel_masks(np, weights, name, middle)
        tfl.set_masks(model, masks)
        kept = tfl.sparsity_report(tfl.strip(model, shrink=True)).weights / total
        low, high = (middle, high) if kept < 1 - sparsity else (low, middle)
    return channel_masks(np, weights, name, high)


def runner(litert, flat, runtime, example):
    """A function running one batch-1 inference of ``flat`` in ``runtime``, one thread."""
    if runtime == "compiled":
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.cpu_options import CpuOptions
        from ai_edge_litert.options import Options

        model = CompiledModel.from_buffer(
            flat, options=Options(cpu_options=CpuOptions(num_threads=1)))
        inputs, outputs = model.create_input_buffers(0), model.create_output_buffers(0)

        def run():
            inputs[0].write(example)
            model.run_by_index(0, inputs, outputs)

        run.keep = model  # the buffers need the model alive
        return run
    interp = litert.open_interpreter(
        flat, delegate="xnnpack" if runtime == "default" else "builtin", num_threads=1)
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()

    def run():
        interp.set_tensor(inp["index"], example)
        interp.invoke()
        interp.get_tensor(out["index"])

    return run


def main(argv):
    del argv
    import gzip

    import keras
    import numpy as np

    import tf_lottery as tfl
    from tf_lottery.export import convert, flatbuffer, litert

    rows = []
    for name in FLAGS.models:
        base = build(keras, name, FLAGS.seed)
        example = np.random.default_rng(FLAGS.seed).uniform(
            size=(1, *base.inputs[0].shape[1:])).astype(np.float32)
        dense_weights = tfl.sparsity_report(base).weights
        variants = [v for v in VARIANTS if not (name == "mobile" and v.startswith("channels"))]
        files = {}
        for variant in variants:
            model = tfl.wrap(base)
            if variant != "dense":
                tfl.set_masks(model, variant_masks(np, tfl, model, name, variant,
                                                   FLAGS.sparsity))
            shrink = variant == "channels (shrunk)"
            plain = tfl.strip(model, shrink=shrink)
            flat = convert(plain, sparse=variant not in ("dense", "channels (shrunk)"))
            expected = keras.ops.convert_to_numpy(model(example, training=False))
            outputs, error = litert.run_default(flat, example)
            if error is not None:
                raise RuntimeError(f"{name} {variant}: {error}")
            files[variant] = flat
            rows.append(dict(
                model=name, variant=variant,
                weights_kept=tfl.sparsity_report(plain).alive / dense_weights,
                params=int(plain.count_params()), file_bytes=len(flat),
                gzip_bytes=len(gzip.compress(flat, 9, mtime=0)),
                densify=flatbuffer.operator_names(flat).count("DENSIFY"),
                max_abs_diff=float(np.max(np.abs(outputs - expected))),
                cpu_ms={}, wall_ms={}))
        runners = {(v, rt): runner(litert, files[v], rt, example)
                   for v in variants for rt in RUNTIMES}
        samples = {key: ([], []) for key in runners}
        keys = list(runners)
        for r in range(FLAGS.rounds):
            for key in keys[r % len(keys):] + keys[:r % len(keys)]:
                run = runners[key]
                for _ in range(5):
                    run()
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(FLAGS.runs):
                    run()
                samples[key][0].append((time.process_time() - cpu) * 1000 / FLAGS.runs)
                samples[key][1].append((time.perf_counter() - wall) * 1000 / FLAGS.runs)
        for row in rows:
            if row["model"] == name:
                for rt in RUNTIMES:
                    cpu, wall = samples[(row["variant"], rt)]
                    row["cpu_ms"][rt] = statistics.median(cpu)
                    row["wall_ms"][rt] = statistics.median(wall)

    from importlib import metadata

    machine = platform.processor() or platform.machine()
    print(f"ai-edge-litert {metadata.version('ai-edge-litert')}, {machine}, "
          f"{os.cpu_count()} CPUs; batch 1, float32, one thread; median of {FLAGS.rounds} "
          f"rounds x {FLAGS.runs} invokes, CPU ms per invoke (wall ms in brackets)")
    print("| network | variant | weights kept | params | file KiB | gzip KiB | DENSIFY | "
          + " | ".join(f"{rt} ms | vs dense" for rt in RUNTIMES) + " |")
    print("|---|---|---:|---:|---:|---:|---:|" + "---:|---:|" * len(RUNTIMES))
    for row in rows:
        dense = next(r for r in rows if r["model"] == row["model"] and r["variant"] == "dense")
        cells = []
        for rt in RUNTIMES:
            cells.append(f"{row['cpu_ms'][rt]:.3f} ({row['wall_ms'][rt]:.3f})")
            cells.append(f"{dense['cpu_ms'][rt] / row['cpu_ms'][rt]:.2f}x")
        print(f"| {row['model']} | {row['variant']} | {row['weights_kept']:.3f} | "
              f"{row['params']:,} | {row['file_bytes'] / 1024:,.1f} | "
              f"{row['gzip_bytes'] / 1024:,.1f} | {row['densify']} | " + " | ".join(cells) + " |")
    if FLAGS.out:
        from tf_lottery import files as tfl_files

        tfl_files.atomic_write_json(FLAGS.out, {"rows": rows, "flags": {
            "sparsity": FLAGS.sparsity, "rounds": FLAGS.rounds, "runs": FLAGS.runs}})


if __name__ == "__main__":
    app.run(main)
