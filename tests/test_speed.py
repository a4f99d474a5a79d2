"""Speed settings do not change results (issue 4): the fast path and the slow path of
the driver give the same masks, weights and metrics under ``--deterministic``.

What can honestly be compared. ``Runtime(deterministic=True)`` turns on TensorFlow op
determinism, and Keras then compiles without XLA whatever ``jit_compile`` says (see
BUILD_NOTES.md, "Op determinism turns XLA off"), so ``jit_compile`` is a no-op here; what
really changes between the runs is

* ``steps_per_execution`` (iterations per call of the compiled train function, and the
  points at which the driver's loop returns to Python) and ``fast_loop`` (the compiled
  loop over the cached data and the in-place evaluation, against Keras's train function
  fed by ``tf.data`` and ``model.evaluate``): every iteration runs Keras's same step on
  the same batch, every evaluation the same ``test_step`` on the same batches, and the
  metrics accumulate in the same order, so the runs must agree **bit for bit**: masks,
  final weights, every metric;
* ``eval_batch_size``: the same examples are evaluated in other batches. Accuracies are
  sums of 0/1 and must agree exactly; a loss is a float32 mean accumulated batch by batch
  (and a matmul over another batch shape may round differently), so losses may differ
  in the last bits (here about half of them do, by at most 1.8e-7 relative, 1-2 float32
  ulps): they are compared to 1e-6 relative, everything else exactly (training never
  sees the evaluation batches).

XLA itself (``jit_compile=True`` without determinism) fuses and reorders float
arithmetic, so it is not bitwise reproducible against the non-XLA path; nothing here
claims it is. No test here times anything (tools/bench.py does).
"""

import math
import os

import numpy as np
import pytest

import tf_lottery as tfl
from tf_lottery import data, files, models, ticket, training
from tf_lottery.hparams import PruningHparams, TrainingHparams
from helpers import without_times

DATA = data.load("synthetic")
# 150 iterations, evaluation every 50, rewind to 30: a steps_per_execution of 100 divides
# none of them, so the driver must still stop exactly on each.
TRAINING = TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="150it",
                           eval_every="50it")
PRUNING = PruningHparams(levels=2, rate=0.5, rate_output=0.25, rewind="30it",
                         controls=("random_prune",))
RUNTIMES = {
    # Evaluation batches of 64: the 200 validation and 500 test examples take both
    # the in-place evaluation's loop over full batches and its last, smaller batch.
    "fast": training.Runtime(deterministic=True, jit_compile=True, steps_per_execution=100,
                           eval_batch_size=64),
    "slow": training.Runtime(deterministic=True, jit_compile=False, steps_per_execution=1,
                           fast_loop=False, eval_batch_size=64),
    "other_eval_batch": training.Runtime(deterministic=True, steps_per_execution=7,
                                       eval_batch_size=1000),
}
BRANCHES = [(0, "lottery")] + [(level, branch) for level in (1, 2)
                               for branch in ("lottery", "random_prune")]


def model_fn(seed):
    return models.build_model("lenet_300_100", DATA.input_shape, DATA.num_classes, seed=seed)


@pytest.fixture(scope="module")
def runs_by_runtime(tmp_path_factory):
    out = {}
    for name, runtime in RUNTIMES.items():
        run_dir = tmp_path_factory.mktemp(name)
        result = ticket.fit(model_fn, DATA, training=TRAINING, pruning_hparams=PRUNING,
                            run_dir=run_dir, seed=5, runtime=runtime)
        out[name] = (run_dir, result)
    return out


def branch_dir(run_dir, level, branch):
    return os.path.join(run_dir, f"level_{level}", branch)


def final_weights(run_dir, level, branch):
    model = tfl.wrap(model_fn(0))
    model.load_weights(os.path.join(branch_dir(run_dir, level, branch), "final.weights.h5"))
    return model.get_weights()


def assert_same_training(a_dir, b_dir):
    for level, branch in BRANCHES:
        ma = tfl.load_masks(os.path.join(branch_dir(a_dir, level, branch), "mask.npz"))
        mb = tfl.load_masks(os.path.join(branch_dir(b_dir, level, branch), "mask.npz"))
        assert ma.keys() == mb.keys()
        for key in ma:
            np.testing.assert_array_equal(ma[key], mb[key], err_msg=f"{level} {branch} {key}")
        for wa, wb in zip(final_weights(a_dir, level, branch),
                          final_weights(b_dir, level, branch), strict=True):
            np.testing.assert_array_equal(wa, wb, err_msg=f"{level} {branch}")


def test_steps_per_execution_and_jit_flag_change_nothing(runs_by_runtime):
    (fast_dir, fast), (slow_dir, slow) = runs_by_runtime["fast"], runs_by_runtime["slow"]
    assert without_times(fast.to_dict()) == without_times(slow.to_dict())
    assert_same_training(fast_dir, slow_dir)
    for level, branch in BRANCHES:
        rows_fast = files.read_csv(os.path.join(branch_dir(fast_dir, level, branch), "metrics.csv"))
        rows_slow = files.read_csv(os.path.join(branch_dir(slow_dir, level, branch), "metrics.csv"))
        np.testing.assert_equal(rows_fast, rows_slow, err_msg=f"{level} {branch}")  # nan == nan
    # The comparison is not vacuous: the runs trained, pruned and early-stopped.
    lottery = fast.levels[2]["lottery"]
    assert lottery["sparsity"] > 0.6 and lottery["final_test_accuracy"] > 0.5
    assert [r["iteration"] for r in files.read_csv(
        os.path.join(branch_dir(fast_dir, 1, "lottery"), "metrics.csv"))] == [30, 80, 130, 150]


def test_eval_batch_size_changes_losses_at_most_in_the_last_bits(runs_by_runtime):
    (a_dir, a), (b_dir, b) = runs_by_runtime["slow"], runs_by_runtime["other_eval_batch"]
    assert_same_training(a_dir, b_dir)  # training never sees the evaluation batches
    for level, branch in BRANCHES:
        rows_a = files.read_csv(os.path.join(branch_dir(a_dir, level, branch), "metrics.csv"))
        rows_b = files.read_csv(os.path.join(branch_dir(b_dir, level, branch), "metrics.csv"))
        assert len(rows_a) == len(rows_b)
        for ra, rb in zip(rows_a, rows_b):
            for key, value in ra.items():
                if key.endswith("_loss") and key != "train_loss":
                    assert value == pytest.approx(rb[key], rel=1e-6, abs=0), (level, branch, key)
                elif isinstance(value, float) and math.isnan(value):
                    assert math.isnan(rb[key])
                else:  # iteration, train metrics, accuracies: exact
                    assert value == rb[key], (level, branch, key)
        sa, sb = a.levels[level][branch], b.levels[level][branch]
        assert sa["early_stop_iteration"] == sb["early_stop_iteration"]
        assert sa["final_test_accuracy"] == sb["final_test_accuracy"]
        assert sa["layer_sparsity"] == sb["layer_sparsity"]


XLA_IDENTITY = r"""
import numpy as np, tf_lottery as tfl
from tf_lottery import data, models
from tf_lottery.hparams import TrainingHparams
from tf_lottery.runtime import Runtime
from tf_lottery.trainer import Trainer
ds = data.load("synthetic")
training = TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="90it",
                           eval_every="40it")
out = []
for fast_loop in (True, False):
    t = Trainer(lambda s: models.build_model("lenet_300_100", ds.input_shape,
                                             ds.num_classes, seed=s),
                ds, training, seed=3,
                runtime=Runtime(fast_loop=fast_loop, steps_per_execution=25,
                                eval_batch_size=64))
    weights = t.model.get_weights()
    masks = tfl.prune(t.model, rate=0.5)
    rows = t.train(weights=weights, masks=masks)["metrics"]
    out.append((rows, t.model.get_weights(), t.model.jit_compile))
(rows_a, w_a, jit_a), (rows_b, w_b, jit_b) = out
assert jit_a and jit_b
np.testing.assert_equal(rows_a, rows_b)
for a, b in zip(w_a, w_b, strict=True):
    np.testing.assert_array_equal(a, b)
print("IDENTICAL", [r["iteration"] for r in rows_a])
"""


def test_fast_loop_is_bit_identical_under_xla_too():
    """Without --deterministic (so with XLA), the in-graph loop and Keras's train function
    train LeNet-300-100 identically. In a child process: op determinism, once on in this
    one, would turn XLA off."""
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", XLA_IDENTITY], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "IDENTICAL [0, 40, 80, 90]" in proc.stdout
