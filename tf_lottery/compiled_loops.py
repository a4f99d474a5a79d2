"""The compiled functions the training engine calls, beyond Keras's own.

- ``fast_loops``: the single-device fast path (``Runtime.fast_loop``): a call trains many
  iterations in one ``tf.while_loop`` over the training set cached as tensors, and
  evaluation runs in place over the cached splits.
- ``multi_worker_functions``: Keras's train and test functions remade for
  ``MultiWorkerMirroredStrategy``.

Both run Keras's own ``train_step`` and ``test_step``, so the model trains as under
``model.fit``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["fast_loops", "multi_worker_functions"]


def fast_loops(engine):
    """The compiled loops of an engine's fast path (``Runtime.fast_loop``).

    Returns ``(train_loop, eval_loop, eval_last)``: ``train_loop(start, count)`` trains
    iterations ``[start, start + count)`` in one call of a compiled function (XLA with
    ``jit_compile``) and returns the logs; ``eval_loop(first, count)`` and
    ``eval_last(first, size)`` run ``test_step`` on ``count`` full evaluation batches of
    ``engine.x_eval`` and on the last, smaller one.

    The body is Keras's own ``model.train_step`` on ``batch(step)``, so a call does
    exactly what ``count`` calls of Keras's train function do, without the per-step
    return to the ``tf.data`` iterator. ``start`` and ``count`` are int64/int32
    scalar tensors: one trace and one compilation serve every call.
    """
    model = engine.model
    # Keras builds its compiled metrics at their first update; do it here, eagerly,
    # since variables cannot be created inside the loop.
    x, y = engine.data.x_train[:1], engine.data.y_train[:1].astype(np.int32)
    model.compute_metrics(x, y, model(x, training=False))
    model.reset_metrics()

    @tf.function(jit_compile=model.jit_compile, reduce_retracing=True)
    def loop(start, count):
        def body(i):
            model.train_step(engine.batch(start + tf.cast(i, tf.int64)))
            return (i + 1,)

        tf.while_loop(lambda i: i < count, body, (tf.constant(0, tf.int32),))
        return model.get_metrics_result()

    bs = engine.runtime.eval_batch_size

    def eval_batch(first, size):
        idx = first + tf.range(size, dtype=tf.int64)
        return tf.gather(engine.x_eval, idx), tf.gather(engine.y_eval, idx)

    @tf.function(jit_compile=model.jit_compile, reduce_retracing=True)
    def eval_loop(first, count):
        def body(i):
            model.test_step(eval_batch(first + i * bs, bs))
            return (i + 1,)

        tf.while_loop(lambda i: i < count, body, (tf.constant(0, tf.int64),))
        return model.get_metrics_result()

    @tf.function(jit_compile=model.jit_compile)
    def eval_last(first, size):  # the last, smaller batch; `size` is a Python int
        model.test_step(eval_batch(first, size))
        return model.get_metrics_result()

    return loop, eval_loop, eval_last


def multi_worker_functions(model, strategy):
    """Train and test functions for ``MultiWorkerMirroredStrategy``.

    Keras 3.15's own functions fail under it (their per-replica metric results are
    reduced with ``strategy.reduce("MEAN", scalar, axis=0)``). Here Keras's
    ``train_step`` / ``test_step`` run on every replica with ``strategy.run``, and the
    metrics are read in cross-replica context, where Keras's sum-on-read metric
    variables give every worker the same global values, so every worker takes the same
    decisions (divergence, early stopping, early-bird draws).

    Returns:
        ``(train, test)``: ``train(iterator, count)`` runs ``count`` iterations (an int32
        scalar tensor) in one compiled call and returns the metrics; ``test(iterator)``
        runs one evaluation batch.
    """

    @tf.function(reduce_retracing=True)
    def train_steps(iterator, count):
        for _ in tf.range(count):
            strategy.run(model.train_step, args=(next(iterator),))

    @tf.function(reduce_retracing=True)
    def test_step(iterator):
        strategy.run(model.test_step, args=(next(iterator),))

    def train(iterator, count):
        train_steps(iterator, count)
        return model.get_metrics_result()

    return train, test_step
