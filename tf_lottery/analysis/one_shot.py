"""One-shot vs iterative pruning at the sparsities of a run's tickets.

Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019, Sec. 5: the trained dense
network is pruned at once to the sparsity of each iterative ticket of the run and
retrained like the tickets, at the run's budget (so the two are comparable); the report
draws both in one plot. (A run whose ``pruning.one_shot`` lists target sparsities has
its own one-shot tickets too; the report shows both sources.)
"""

from __future__ import annotations

import os
import time

from absl import logging

from tf_lottery import files, masking, pruning, ticket
from tf_lottery.analysis.run import (EntryFile, check_levels, make_trainer, mask_sparsity,
                                     open_run, short_summary, theta_k, training_for)
from tf_lottery.hparams import ArgumentError, derive_seed
from tf_lottery.training import Runtime

__all__ = [
    "run_one_shot",
]


def run_one_shot(run_dir, *, levels=None, replicate: int | None = None, data_dir=None,
                 runtime: Runtime | None = None, overwrite: bool = False,
                 check_only: bool = False) -> dict | None:
    """One-shot tickets at the sparsities of a run's iterative tickets.

    For every pruned level ``L``: the trained dense network (``level_0/lottery``) is
    pruned at once to the total sparsity of the level-``L`` ticket's mask
    (``tf_lottery.pruning.one_shot_masks``, the run's criterion, scope and per-layer
    rates, as the run's own ``pruning.one_shot`` tickets are) and retrained like the
    run's tickets (from ``theta_k`` with ``pruning.retrain="rewind"``, the run's data
    order, budget and schedule).
    Frankle & Carbin (ICLR 2019), Sec. 5 and Fig. 4: iterative pruning finds tickets
    that stay accurate at higher sparsity than one-shot pruning. ``tf_lottery.report``
    draws both in ``one_shot.png`` and tabulates them side by side.

    Args:
        run_dir, replicate, data_dir: the run (see ``open_run``).
        levels: pruned levels (ints > 0) whose sparsity is matched; default: every level
            with a ticket mask.
        runtime, overwrite, check_only: as for ``run_instability``.

    Returns:
        The content of ``<replicate>/analysis/one_shot.json``; each entry has ``"key"``
        (level, target: the matched sparsity as a fraction, training_steps: the run's),
        the early-stopping iteration and test accuracies (fractions in [0, 1]),
        ``"sparsity"`` (reached; equals ``target`` up to rounding of per-layer counts),
        ``"weights_remaining"``, ``"layer_sparsity"``, ``"iterative"`` (the level's
        lottery summary, short, or ``None`` while it trains), ``"mask_file"`` (the
        one-shot mask, ``tf_lottery.load_masks`` format, relative to
        ``<replicate>/analysis``) and ``"seconds"``.

    Raises:
        ValueError: before any training, for a bad run directory, level 0 or levels
            without a mask, or a run whose dense network (level 0) has not finished.
    """
    ctx = open_run(run_dir, replicate=replicate, data_dir=data_dir)
    levels = check_levels(levels, ctx, "lottery", lambda a: [lv for lv in a if lv > 0])
    if not levels or 0 in levels:
        raise ArgumentError("levels", levels,
                            "`levels` must list pruned levels (> 0) for one_shot; received "
                            f"{levels}; levels with a mask: {ctx.mask_levels()}. Wait until "
                            "level 1 has started if there is none yet.")
    dense = ctx.layout.branch(0, "lottery")
    if not os.path.exists(dense.summary):
        raise ArgumentError("run_dir", run_dir,
                            f"`run_dir` {ctx.replicate_dir!r} has no finished dense network "
                            f"({os.path.relpath(dense.summary, ctx.replicate_dir)}); one-shot "
                            "pruning starts from it, wait until level 0 has finished.")
    hp = ctx.hparams.pruning
    if hp.prune_at == "init":
        raise ArgumentError("run_dir", run_dir,
                            f"`run_dir` {ctx.replicate_dir!r} prunes at initialization "
                            "(prune_at='init'): each of its levels is already pruned in one "
                            "shot. The one_shot analysis compares one-shot with iterative "
                            "pruning of trained networks; run it on an IMP run.")
    # What the criterion scores besides the weights, as for the run's own one-shot tickets.
    evidence = {}
    if hp.criterion in pruning.DATA_CRITERIA:
        evidence["data"] = ticket.score_batch(ctx.dataset, derive_seed(ctx.seed, "score_batch"))
    elif hp.criterion in pruning.SCORED_CRITERIA:
        evidence["scores"] = files.read_arrays(dense.scores)
    training, _ = training_for(ctx, None, None, ctx.dataset)
    k = ctx.rewind_iteration
    if check_only:
        return None
    trainer = make_trainer(ctx, ctx.dataset, training, [("k", k)], runtime)
    store = EntryFile(ctx.analysis_path("one_shot"), "one_shot", ctx, overwrite)
    theta_0 = ctx.load("init").get_weights()
    trainer.model.set_weights(theta_0)
    ones = ctx.masks(0, ones_like=trainer.model)
    rewound = theta_k(ctx, trainer, k, theta_0, ones, {})
    trainer.model.set_weights(rewound)
    reference = masking.get_prunable_weights(trainer.model)
    trainer.model.load_weights(dense.final_weights)
    dense_final = trainer.model.get_weights()
    for level in levels:
        target = round(mask_sparsity(ctx.masks(level)), 6)
        key = {"level": level, "target": target, "training_steps": str(training.training_steps)}
        if store.done(key):
            continue
        t0 = time.perf_counter()
        trainer.model.set_weights(dense_final)
        masks = pruning.one_shot_masks(trainer.model, target, hp, reference_weights=reference,
                                       seed=derive_seed(ctx.seed, "one_shot", target),
                                       **evidence)
        masking.save_masks(ctx.layout.one_shot_mask(level), masks)
        trainer.set_data_order(derive_seed(ctx.seed, "data"))  # the run's order
        summary = trainer.train(weights=rewound if hp.retrain == "rewind" else dense_final,
                                masks=masks, start=k, finetune=hp.retrain == "finetune")
        iterative = ctx.layout.branch(level, "lottery").summary
        store.put({"key": key, **short_summary(summary),
                   "mask_file": ctx.layout.one_shot_mask_name(level),
                   "weights_remaining": 1.0 - summary["sparsity"],
                   "layer_sparsity": summary["layer_sparsity"],
                   "iterative": short_summary(files.read_json(iterative))
                   if os.path.exists(iterative) else None,
                   "seconds": time.perf_counter() - t0})
        logging.info("one-shot to sparsity %.4f (level %d): test accuracy %s at early "
                     "stopping", target, level, summary["early_stop_test_accuracy"])
    return store.data
