"""The training engine: one compiled masked model that trains and evaluates any branch.

The engine trains masked networks for ``ticket.fit`` (the IMP driver) and, through
``tf_lottery.trainer.Trainer``, the analyses and the search. One compiled model serves
every level and branch: weights, masks and optimizer state are *assigned*, never
rebuilt, so nothing is retraced or recompiled between levels. Training data order is a function of the iteration number only (a fixed
permutation stream), so a branch resumed from a checkpoint sees exactly the batches an
uninterrupted run would. Each call's iterations run in one compiled ``tf.while_loop``
over the training set cached as tensors (``Runtime.fast_loop``), or through Keras's own
train function under a ``tf.distribute`` strategy.

What a branch writes (``metrics.csv``, ``final.weights.h5``, ``summary.json``,
checkpoints) is named by ``tf_lottery.paths.BranchDir``.
"""

from __future__ import annotations

import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_lottery import branch_checkpoint, compiled_loops, files, masking, multi_worker, paths
from tf_lottery.accumulated_scores import ScoreAccumulator
from tf_lottery.criteria import SCORED_CRITERIA
from tf_lottery.early_bird import EarlyBird
from tf_lottery.hparams import TrainingHparams, derive_seed
from tf_lottery.layers import is_masked
from tf_lottery.optimizers import StepSchedule, build_optimizer
from tf_lottery.preemption import STOP, Preempted, stop_on_sigterm
from tf_lottery.progress import BranchProgress
from tf_lottery.runtime import Runtime
from tf_lottery.summary import branch_summary, chance_accuracy

__all__ = [
    "Runtime",  # re-exported from tf_lottery.runtime: what an engine is given
    "StepSchedule",  # re-exported from tf_lottery.optimizers
    "Preempted",  # re-exported from tf_lottery.preemption
    "stop_on_sigterm",
    "METRIC_COLUMNS",
]

METRIC_COLUMNS = (
    "iteration", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
    "test_loss", "test_accuracy",
)


def _jit_compile(runtime: Runtime, strategy) -> bool:
    """``runtime.jit_compile``, except off for several replicas on CPU devices.

    XLA cannot reach a variable that lives on another CPU device ("Trying to access
    resource ... located in device CPU:1 from device CPU:0", TensorFlow's XLA known
    issues), which is what ``MirroredStrategy`` over logical CPU devices does.
    """
    if not runtime.jit_compile or strategy.num_replicas_in_sync <= 1:
        return runtime.jit_compile
    devices = getattr(strategy.extended, "worker_devices", ())
    if devices and all("CPU" in device.upper() for device in devices):
        logging.warning(
            "jit_compile is off: XLA cannot share variables across the %d CPU replicas "
            "of %s.", strategy.num_replicas_in_sync, type(strategy).__name__,
        )
        return False
    return runtime.jit_compile


def _shard_by_data(ds):
    """``ds`` (elements: global batches) with ``AutoShardPolicy.DATA``: under several
    workers each global batch is split, every worker computing on its slice of every
    batch (no input files to shard; TensorFlow would otherwise try files first and warn)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options)


class _Engine:
    """One compiled masked model and the loops that train and evaluate it."""

    def __init__(self, model_fn, dataset, training: TrainingHparams, pruning_hp, seed,
                 strategy, runtime: Runtime, augment: bool):
        self.model_fn = model_fn
        self.data = dataset
        self.hp = training
        self.pruning_hp = pruning_hp
        self.seed = seed
        self.strategy = strategy
        self.runtime = runtime
        self.augment = augment
        n_train = len(dataset.y_train)
        self.batch_size = training.batch_size
        self.steps_per_epoch = training.steps_per_epoch(n_train)
        spe = self.steps_per_epoch
        self.T = training.iterations("training_steps", spe)
        self.E = training.iterations("eval_every", spe)
        self.k = pruning_hp.rewind.iterations(spe)
        ckpt = runtime.checkpoint_every
        self.checkpoint_every = (
            ckpt.iterations(spe) if ckpt is not None else 10 * self.E
        )
        minutes = runtime.checkpoint_minutes
        self.checkpoint_seconds = None if minutes is None else 60.0 * minutes
        self.chance_accuracy, self.chance_threshold = chance_accuracy(dataset.y_test)
        # S need not divide E, T or k: train_branch gives a chunk that S does not divide
        # a batch stream ending at its boundary, where the compiled loop stops early.
        self.S = min(runtime.steps_per_execution, self.T)
        self.multi_worker = multi_worker.is_multi_worker(strategy)
        if self.S > 1 and strategy.num_replicas_in_sync > 1 and not isinstance(
            strategy, tf.distribute.TPUStrategy
        ) and not self.multi_worker:
            # Keras 3.15's multi-step loop under MirroredStrategy fails at run time
            # ("You must feed a value for placeholder tensor 'while/.../Placeholder'").
            logging.warning(
                "steps_per_execution=1: Keras's multi-step train loop fails under %s with "
                "%d replicas.", type(strategy).__name__, strategy.num_replicas_in_sync,
            )
            self.S = 1

        with strategy.scope():
            self.model = self._build(derive_seed(seed, "init"))
            optimizer, self.schedule = build_optimizer(training, spe, model=self.model)
            self.model.compile(
                optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
                jit_compile=_jit_compile(runtime, strategy),
                steps_per_execution=self.S,
            )
            self.model.optimizer.build(self.model.trainable_variables)
        self.optimizer_state = [v.numpy() for v in self.model.optimizer.variables]
        self.accumulator = None
        if pruning_hp.criterion in SCORED_CRITERIA:
            if type(strategy).__name__ != "_DefaultDistributionStrategy":
                raise ValueError(
                    f"criterion={pruning_hp.criterion!r} accumulates its scores in the "
                    f"single-device training loop; received a {type(strategy).__name__}. "
                    "Run it without a distribution strategy.")
            self.accumulator = ScoreAccumulator(self.model, pruning_hp.criterion)
        # The in-graph loop calls train_step outside strategy.run, which only the default
        # (no) strategy allows; under any other, Keras's train function feeds the replicas.
        self.fast_loop = runtime.fast_loop and (
            type(strategy).__name__ == "_DefaultDistributionStrategy"
        )
        self._make_data()
        if self.fast_loop:
            self._make_loops()
        elif self.multi_worker:
            if runtime.jit_compile:
                logging.info("jit_compile: multi-worker steps run without XLA.")
            self._make_multi_worker_functions()
        else:
            self.model.make_train_function()
            self.model.make_test_function()

    def _build(self, seed: int):
        model = self.model_fn(seed)
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"`model_fn(seed)` must return a keras.Model; it returned {type(model).__name__}."
            )
        if not any(is_masked(layer) for _, layer in masking._walk(model)):
            model = masking.wrap(model)
        return model

    def fresh_weights(self, seed: int) -> list[np.ndarray]:
        """All weights of a newly initialized network (the reinit control)."""
        return self._build(seed).get_weights()

    # ----------------------------------------------------------------- data
    def _make_data(self):
        data = self.data
        # tf.data reads the cache on the host; the fast loop where the model runs.
        with tf.device(None if self.fast_loop else "/cpu:0"):
            self.x_train = tf.Variable(data.x_train, trainable=False, name="x_train")
            self.y_train = tf.Variable(data.y_train.astype(np.int32), trainable=False, name="y_train")
            self.order = tf.Variable(self._order(derive_seed(self.seed, "data")),
                                     trainable=False, name="order")
        if self.fast_loop:  # validation then test, one cache, evaluated in place
            self.eval_splits = (("val", 0, len(data.y_val)),
                                ("test", len(data.y_val), len(data.y_test)))
            self.x_eval = tf.Variable(np.concatenate([data.x_val, data.x_test]),
                                      trainable=False, name="x_eval")
            self.y_eval = tf.Variable(
                np.concatenate([data.y_val, data.y_test]).astype(np.int32),
                trainable=False, name="y_eval")
            return
        bs = self.runtime.eval_batch_size

        def eval_ds(x, y):
            if len(y) == 0:
                return None
            return _shard_by_data(
                tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32))).batch(bs).cache())

        # Distributed once: every evaluation iterates the same distributed datasets.
        self.eval_sets = {
            split: None if ds is None else (
                self.strategy.experimental_distribute_dataset(ds), math.ceil(len(y) / bs))
            for split, ds, y in (("val", eval_ds(data.x_val, data.y_val), data.y_val),
                                 ("test", eval_ds(data.x_test, data.y_test), data.y_test))}

    def _order(self, seed: int) -> np.ndarray:
        """The example-index stream: concatenated permutations, ``(T + 1) * B`` int32."""
        n = len(self.data.y_train)
        rng = np.random.default_rng(seed)
        total = (self.T + 1) * self.batch_size
        return np.concatenate(
            [rng.permutation(n).astype(np.int32) for _ in range(math.ceil(total / n))]
        )[:total]

    def set_data_order(self, seed: int) -> None:
        """Draws a new training data order (same compiled pipeline, no retracing)."""
        self.order.assign(self._order(seed))

    def batch(self, step):
        """The training batch of iteration ``step`` (an int64 scalar tensor).

        Returns ``(images, labels)``: float32 ``(batch_size, *input_shape)`` gathered
        from the cached training set in the data order (augmented when the run
        augments, seeded by the run and ``step``), int32 ``(batch_size,)``. The one
        definition both training paths use, so they see the same batches.
        """
        from tf_lottery import data as data_module

        B = self.batch_size
        # A gather, not a slice: XLA would compile a slice's start as a constant.
        idx = tf.gather(self.order, step * B + tf.range(B, dtype=tf.int64))
        images = tf.gather(self.x_train, idx)
        if self.augment:
            seed = tf.constant(derive_seed(self.seed, "augment"), tf.int64)
            images = data_module.augment(images, tf.stack([seed, step]))
        return images, tf.gather(self.y_train, idx)

    def train_iterator(self, start: int, end: int):
        """A distributed iterator over the batches of iterations ``[start, end)``."""
        ds = tf.data.Dataset.range(start, end).map(
            self.batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        ).prefetch(4)
        return iter(self.strategy.experimental_distribute_dataset(_shard_by_data(ds)))

    def _make_loops(self):
        """The compiled loops of the fast path (``compiled_loops.fast_loops``)."""
        self._train_loop, self._eval_loop, self._eval_last = compiled_loops.fast_loops(self)

    def _make_multi_worker_functions(self):
        """Keras's train and test functions, remade for multi-worker training
        (``compiled_loops.multi_worker_functions``)."""
        train, self.model.test_function = compiled_loops.multi_worker_functions(
            self.model, self.strategy)
        self._train_chunk = train

    # ----------------------------------------------------------------- state
    def reset_optimizer(self):
        for variable, value in zip(self.model.optimizer.variables, self.optimizer_state):
            variable.assign(value)

    def set_schedule(self, offset: int, frozen: bool):
        self.schedule.offset.assign(offset)
        self.schedule.frozen.assign(int(frozen))

    def _other_variables(self):
        """Variables outside get_weights (dropout seed-generator states)."""
        weights = {id(w) for w in self.model.weights}
        return [v for v in self.model.variables if id(v) not in weights]

    # ------------------------------------------------------------- evaluate
    def evaluate(self) -> dict:
        if self.fast_loop:
            return self._evaluate_in_place()
        # Keras's test function over the split's distributed batches, then the metrics
        # read in cross-replica context: Keras metric variables sum on read, so every
        # worker gets the same global means. (``model.evaluate`` itself fails under
        # MultiWorkerMirroredStrategy in Keras 3.15: its symbolic build reduces a tuple
        # of per-replica batches.)
        model = self.model
        row = {}
        per_call = 1 if self.multi_worker else model.steps_per_execution
        for split, distributed in self.eval_sets.items():
            if distributed is None:
                row[f"{split}_loss"] = row[f"{split}_accuracy"] = float("nan")
                continue
            dataset, batches = distributed
            calls = 0
            model.reset_metrics()
            iterator = iter(dataset)
            while calls * per_call < batches:
                model.test_function(iterator)
                calls += 1
            logs = model.get_metrics_result()
            row[f"{split}_loss"] = float(logs["loss"])
            row[f"{split}_accuracy"] = float(logs["accuracy"])
        return row

    def _evaluate_in_place(self) -> dict:
        """``evaluate`` by the compiled loops: Keras's ``test_step`` on the batches
        ``model.evaluate`` would make (``eval_batch_size``, the last one smaller), read
        from the cached split, without building an iterator and callbacks per call."""
        row = {}
        bs = self.runtime.eval_batch_size
        for split, first, n in self.eval_splits:
            if n == 0:
                row[f"{split}_loss"] = row[f"{split}_accuracy"] = float("nan")
                continue
            self.model.reset_metrics()
            full, last = divmod(n, bs)
            if full:
                logs = self._eval_loop(tf.constant(first, tf.int64), tf.constant(full, tf.int64))
            if last:
                logs = self._eval_last(tf.constant(first + full * bs, tf.int64), last)
            row[f"{split}_loss"] = float(logs["loss"])
            row[f"{split}_accuracy"] = float(logs["accuracy"])
        return row

    # ---------------------------------------------------------------- train
    def train_branch(self, out_dir: str | None, *, start: int, end: int, weights, masks,
                     offset: int, frozen: bool, level: int, branch: str,
                     capture_at: int | None = None, on_capture=None,
                     early_bird: EarlyBird | None = None, keep_scores: bool = False) -> dict:
        """Trains one network for iterations ``[start, end)``; resumes a checkpoint.

        Writes the branch's mask, metrics, final weights and, last, its summary into
        ``out_dir`` (a ``paths.BranchDir``'s files) and returns the summary (with the
        metric rows under ``"metrics"`` when ``out_dir`` is None, which writes nothing).

        ``early_bird`` (an ``EarlyBird``) is asked at every evaluation; once it draws
        the ticket, training stops there and the summary records
        ``early_bird_iteration``, ``early_bird_saved`` (the fraction of
        ``[start, end)`` not trained) and ``early_bird_distances`` (the mask distance at
        each evaluation after the first). ``keep_scores`` writes the scores the engine's
        ``ScoreAccumulator`` collected to ``scores.npz``.
        """
        model = self.model
        state = None
        branch_dir = paths.BranchDir(out_dir) if out_dir is not None else None
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
            state = branch_checkpoint.load(out_dir, model=model,
                                           other_variables=self._other_variables())
        if state is None:
            model.set_weights(weights)
            masking.set_masks(model, masks)
            self.reset_optimizer()
            if self.accumulator is not None:
                self.accumulator.reset()
            step, rows = start, []
            train_seconds = eval_seconds = 0.0
            if out_dir is not None:
                masking.save_masks(branch_dir.mask, masks)
        else:
            step, rows = state["step"], state["rows"]
            train_seconds, eval_seconds = state["train_seconds"], state["eval_seconds"]
            arrays = state["arrays"]
            if self.accumulator is not None:
                self.accumulator.set({k[len("scores/"):]: v for k, v in arrays.items()
                                      if k.startswith("scores/")})
            if early_bird is not None and "early_bird" in state["hooks"]:
                early_bird.restore(state["hooks"]["early_bird"], {
                    k[len("early_bird/"):]: v for k, v in arrays.items()
                    if k.startswith("early_bird/")})
            logging.info("resuming level %d %s from iteration %d (%s)", level, branch, step,
                         out_dir)
        self.set_schedule(offset, frozen)
        callbacks = self._callbacks(out_dir)
        progress = BranchProgress(
            f"level {level} {branch}", start, end, resumed_at=step,
            enabled=(self.runtime.progress and out_dir is not None
                     and multi_worker.is_chief(self.strategy)))
        if not rows:
            t0 = time.perf_counter()
            rows.append({"iteration": start, "train_loss": float("nan"),
                         "train_accuracy": float("nan"), **self.evaluate()})
            eval_seconds += time.perf_counter() - t0
        mid_period = state is not None and state.get("metric_variables") is not None
        if mid_period:  # resumed between two evaluations: the period's running metrics
            for variable, value in zip(model.metrics_variables, state["metric_variables"]):
                variable.assign(np.asarray(value, dtype=variable.dtype))
        iterator = None  # the batch stream to `end` (Keras's path), positioned at `step`
        last_checkpoint, last_checkpoint_time = step, time.monotonic()
        diverged = drawn = None

        def checkpoint(at: int, partial: bool):
            nonlocal last_checkpoint, last_checkpoint_time
            hooks, arrays = {}, {}
            if self.accumulator is not None:
                arrays.update({f"scores/{k}": v for k, v in self.accumulator.get().items()})
            if early_bird is not None:
                hooks["early_bird"], masks_now = early_bird.state()
                arrays.update({f"early_bird/{k}": v for k, v in masks_now.items()})
            branch_checkpoint.save(
                out_dir, model=model, other_variables=self._other_variables(),
                schedule=self.schedule, step=at, rows=rows, train_seconds=train_seconds,
                eval_seconds=eval_seconds, partial=partial, hooks=hooks, arrays=arrays)
            last_checkpoint, last_checkpoint_time = at, time.monotonic()

        def stop_or_checkpoint(at: int, partial: bool):
            """At a chunk or period boundary: a checkpoint when SIGTERM came (then
            ``Preempted``) or when ``checkpoint_minutes`` have passed since the last one.
            Under multi-worker, at evaluations only, when any worker has either reason
            (every worker then checkpoints at the same iteration)."""
            if out_dir is None or at >= end or (self.multi_worker and partial):
                return
            due = (self.checkpoint_seconds is not None
                   and time.monotonic() - last_checkpoint_time >= self.checkpoint_seconds)
            stop, due = multi_worker.any_worker(self.strategy, [STOP.requested, due])
            if stop:
                checkpoint(at, partial)
                raise Preempted(level, branch, at, out_dir)
            if due:
                checkpoint(at, partial)

        stop_or_checkpoint(step, mid_period)
        while step < end and diverged is None and drawn is None:
            boundary = min(end, start + ((step - start) // self.E + 1) * self.E)
            if capture_at is not None and step < capture_at < boundary:
                boundary = capture_at
            t0 = time.perf_counter()
            if not mid_period:
                model.reset_metrics()
            mid_period = False
            if not self.fast_loop:
                # A call runs S iterations or stops early where its stream runs out: a
                # chunk that S does not divide (before `end`) gets a stream of its own.
                if (boundary - step) % self.S and boundary < end:
                    stream, iterator = self.train_iterator(step, boundary), None
                else:
                    if iterator is None:
                        iterator = self.train_iterator(step, end)
                    stream = iterator
            while step < boundary:
                count = min(self.S, boundary - step)
                if self.fast_loop:
                    logs = self._train_loop(
                        tf.constant(step, tf.int64), tf.constant(count, tf.int32))
                elif self.multi_worker:
                    logs = self._train_chunk(stream, tf.constant(count, tf.int32))
                else:
                    logs = model.train_function(stream)
                step += count
                # Keras's TerminateOnNaN, once per compiled call: the running mean loss is
                # non-finite from the first non-finite step on. (A test inside the loop's
                # condition cost 2-3% of a LeNet epoch; a call is at most S iterations.)
                if not math.isfinite(float(logs["loss"])):
                    diverged = step
                    break
                progress.update(step)
                if step < boundary:
                    train_seconds += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    stop_or_checkpoint(step, partial=True)
            train = {k: float(v) for k, v in logs.items()}
            train_seconds += time.perf_counter() - t0
            if capture_at is not None and step == capture_at and diverged is None:
                on_capture()
            if (step - start) % self.E == 0 or step == end or diverged is not None:
                t0 = time.perf_counter()
                row = {"iteration": step, "train_loss": train["loss"],
                       "train_accuracy": train["accuracy"], **self.evaluate()}
                eval_seconds += time.perf_counter() - t0
                rows.append(row)
                progress.update(step, row)
                callbacks.on_epoch_end(step, {k: v for k, v in row.items() if k != "iteration"})
                if diverged is None and early_bird is not None and step < end:
                    if early_bird.observe():
                        drawn = step
                        logging.info("level %d %s: early-bird ticket drawn at iteration %d "
                                     "(mask distances %s)", level, branch, step,
                                     ", ".join(f"{d:.4f}" for d in
                                               early_bird.distances[-early_bird.window:]))
                        break
                if diverged is None:
                    if out_dir and step < end and step - last_checkpoint >= self.checkpoint_every:
                        checkpoint(step, partial=False)
                    stop_or_checkpoint(step, partial=False)
        callbacks.on_train_end()
        progress.update(step, rows[-1], final=True)
        summary = branch_summary(
            rows, masking.sparsity_report(model), level=level, branch=branch, start=start,
            end=end, train_seconds=train_seconds, eval_seconds=eval_seconds,
            diverged=diverged, chance=(self.chance_accuracy, self.chance_threshold))
        if early_bird is not None:
            summary["early_bird_iteration"] = drawn
            summary["early_bird_saved"] = 0.0 if drawn is None else (end - drawn) / (end - start)
            summary["early_bird_distances"] = list(early_bird.distances)
        if diverged is not None:
            logging.error("level %d %s: the training loss became non-finite at iteration %d; "
                          "the branch stops there.", level, branch, diverged)
        elif summary["at_chance"]:
            logging.warning(
                "level %d %s ended at chance accuracy: final test accuracy %.4f, no better "
                "than predicting the most frequent class (%.4f). Check the learning rate "
                "and warmup.", level, branch, summary["final_test_accuracy"],
                summary["chance_accuracy"])
        if out_dir is None:
            return {**summary, "metrics": rows}
        files.write_csv(branch_dir.metrics, METRIC_COLUMNS, rows)
        if keep_scores and self.accumulator is not None:
            files.atomic_write_arrays(branch_dir.scores, self.accumulator.get())
        with files.atomic_path(branch_dir.final_weights) as tmp:
            model.save_weights(tmp)
        files.atomic_write_json(branch_dir.summary, summary)
        branch_checkpoint.remove(out_dir)
        return summary

    def _callbacks(self, out_dir):
        callbacks = []
        if self.runtime.tensorboard and out_dir is not None:
            callbacks.append(keras.callbacks.TensorBoard(
                log_dir=paths.BranchDir(out_dir).tensorboard, write_graph=False,
                update_freq="epoch", profile_batch=0,
            ))
        cb = keras.callbacks.CallbackList(callbacks, model=self.model)
        cb.on_train_begin()
        return cb

def _check_dataset(dataset):
    needed = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    missing = [name for name in needed if not hasattr(dataset, name)]
    if missing:
        raise ValueError(
            f"`dataset` must have the arrays {list(needed)} (see tf_lottery.data.Dataset); "
            f"{type(dataset).__name__} lacks {missing}."
        )
    if len(dataset.y_train) == 0:
        raise ValueError("`dataset` has an empty training split.")


