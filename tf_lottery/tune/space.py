"""The search space of ``tf_lottery.tune``, and what one trial's values make of an experiment.

A trial's values (a keras-tuner ``HyperParameters.values`` dict) name the CLI flags they
stand for (``learning_rate``, ``warmup``, ``rewind``, ``prune_rate``), because the best
ones are written back as a flagfile (``write_flagfile``). Search spaces, around the base
experiment:

* ``learning_rate``: log-uniform in ``[lr / lr_factor, lr * lr_factor]``
  (``lr_factor = 4``), rounded to 4 significant digits.
* ``warmup``: linear warmup of 0, 1, 5 or 10 % of the training budget (iterations,
  multiples of 10).
* ``rewind``: rewinding to iteration 0 or 0.5, 1, 2, 5 % of the budget (Frankle et al.
  2019 rewind to 0.1-7 %), multiples of 10 iterations, all before the end of training.
* ``prune_rate``: 0.2 to 0.6 in steps of 0.05 per level; ``prune_rate_output`` and
  ``prune_rate_conv`` (when set) keep their ratio to ``prune_rate``.

A trial prunes as many levels as it takes to reach the target sparsity
(``levels_to_reach``), with no control branches (``trial_experiment``).
"""

from __future__ import annotations

import dataclasses

import keras_tuner

from tf_lottery import experiment, files, masking, pruning
from tf_lottery.hparams import ArgumentError, ExperimentHparams

__all__ = [
    "TUNABLE",
    "check_names",
    "search_space",
    "levels_to_reach",
    "layer_sizes_and_rates",
    "trial_hparams",
    "trial_experiment",
    "trial_flags",
    "write_flagfile",
]

#: What the search can tune (the names of the CLI flags they stand for).
TUNABLE = ("learning_rate", "warmup", "rewind", "prune_rate")

_WARMUP_FRACTIONS = (0.0, 0.01, 0.05, 0.1)
_REWIND_FRACTIONS = (0.0, 0.005, 0.01, 0.02, 0.05)
_PRUNE_RANGE = (0.2, 0.6, 0.05)


def _round_to(value: float, grid: int = 10) -> int:
    return int(grid * round(value / grid))


def _sig(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def check_names(names) -> list[str]:
    """``names`` as a list, checked: non-empty, each in ``TUNABLE``, none twice.

    Raises:
        ArgumentError: (a ``ValueError``) naming ``names``.
    """
    names = list(names)
    if not names:
        raise ArgumentError("names", names,
                            f"`names` names no flag to tune; choose from {list(TUNABLE)}.")
    for name in names:
        if name not in TUNABLE:
            raise ArgumentError(
                "names", names,
                f"`names` holds {name!r}, which is not a tunable flag; choose from "
                f"{list(TUNABLE)}, e.g. names=['learning_rate', 'prune_rate'].",
            )
    if len(set(names)) != len(names):
        raise ArgumentError("names", names, f"`names` lists a flag twice; received {names}.")
    return names


def search_space(base: ExperimentHparams, names, steps_per_epoch: int, *,
                 lr_factor: float = 4.0) -> keras_tuner.HyperParameters:
    """The keras-tuner search space of ``names`` around ``base``.

    Args:
        base: the base experiment (its values centre the learning-rate range and fix the
            budget the warmup and rewind choices are fractions of).
        names: what to tune, a subset of ``TUNABLE``.
        steps_per_epoch: iterations per epoch of the training split
            (``base.training.steps_per_epoch(n_train)``; to read ``"ep"`` lengths).
        lr_factor: the learning rate ranges over ``[lr / lr_factor, lr * lr_factor]``.

    Returns:
        A ``keras_tuner.HyperParameters`` with one entry per name: ``learning_rate``
        (Float, log sampling), ``warmup`` and ``rewind`` (Choice of iterations, int),
        ``prune_rate`` (Float, step 0.05).

    Raises:
        ValueError: a name outside ``TUNABLE`` (naming ``names``) or ``lr_factor <= 1``.
    """
    check_names(names)
    if not lr_factor > 1:
        raise ArgumentError("lr_factor", lr_factor,
                            f"`lr_factor` must be > 1; received {lr_factor!r}.")
    budget = base.training.iterations("training_steps", steps_per_epoch)
    hp = keras_tuner.HyperParameters()
    for name in names:
        if name == "learning_rate":
            lr = base.training.learning_rate
            hp.Float("learning_rate", lr / lr_factor, lr * lr_factor, sampling="log")
        elif name == "warmup":
            choices = sorted({_round_to(f * budget) for f in _WARMUP_FRACTIONS})
            hp.Choice("warmup", [c for c in choices if c <= budget], ordered=True)
        elif name == "rewind":
            choices = {0} | {max(10, _round_to(f * budget)) for f in _REWIND_FRACTIONS if f}
            hp.Choice("rewind", sorted(c for c in choices if c < budget), ordered=True)
        elif name == "prune_rate":
            low, high, step = _PRUNE_RANGE
            hp.Float("prune_rate", low, high, step=step)
    return hp


def levels_to_reach(sizes_and_rates, target_sparsity: float, max_levels: int = 200) -> int:
    """The fewest IMP levels whose total sparsity reaches ``target_sparsity``.

    Args:
        sizes_and_rates: ``[(weights in the tensor, per-level pruning rate)]``.
        target_sparsity: fraction in (0, 1).
        max_levels: give up beyond this many levels.

    Returns:
        ``n >= 1`` with ``1 - sum(size * (1 - rate)^n) / sum(size) >= target_sparsity``
        (to 1e-9; per-layer rounding in the pruner can leave a level a hair short).

    Raises:
        ArgumentError: (a ``ValueError``) naming ``target_sparsity`` if it is not in
            (0, 1) or not reachable within ``max_levels`` (e.g. every rate is 0, or too
            many weights are excluded).
    """
    if isinstance(target_sparsity, bool) or not isinstance(target_sparsity, (int, float)) \
            or not 0 < target_sparsity < 1:
        raise ArgumentError("target_sparsity", target_sparsity,
                            "`target_sparsity` must be a fraction in (0, 1); received "
                            f"{target_sparsity!r}.")
    total = sum(size for size, _ in sizes_and_rates)
    for n in range(1, max_levels + 1):
        kept = sum(size * (1 - rate) ** n for size, rate in sizes_and_rates)
        if 1 - kept / total >= target_sparsity - 1e-9:
            return n
    raise ArgumentError(
        "target_sparsity", target_sparsity,
        f"`target_sparsity` {target_sparsity} is not reached in {max_levels} pruning levels "
        "at these rates; lower it, raise the pruning rate (`rate`) or exclude fewer layers.",
    )


def layer_sizes_and_rates(hp: ExperimentHparams, dataset) -> list[tuple[int, float]]:
    """``[(weights, per-level rate)]`` per prunable tensor of ``hp``'s model under IMP.

    The rates are ``tf_lottery.pruning.layer_rates_for``'s layerwise policy (or
    ``hp.pruning.rate`` everywhere for global scope); excluded tensors get 0.

    Args:
        hp: the experiment (its model and ``pruning`` rates, scope and exclusions).
        dataset: a ``tf_lottery.data.Dataset`` (input shape and classes).
    """
    p = hp.pruning
    model = masking.wrap(experiment.build_model(hp.model, dataset.input_shape,
                                                dataset.num_classes))
    layer_rates, output_rate = pruning.layer_rates_for(model, p)
    output = pruning.output_mask_key(model)
    sizes = []
    for key, mask in masking.get_masks(model).items():
        layer = key.rsplit("/", 1)[0]
        if any(e in (key, layer) for e in p.exclude):
            rate = 0.0
        elif key == output and output_rate is not None:
            rate = output_rate
        else:
            rate = layer_rates.get(layer, p.rate)
        sizes.append((mask.size, rate))
    return sizes


def _full_values(base: ExperimentHparams, values: dict) -> dict:
    """Trial values as they go into hparams and flags (rounded, derived rates added)."""
    out = {}
    for name, value in values.items():
        if name.startswith("tuner/"):
            continue
        if name == "learning_rate":
            out["learning_rate"] = _sig(value)
        elif name in ("warmup", "rewind"):
            out[name] = f"{int(value)}it"
        elif name == "prune_rate":
            rate = _sig(value)
            out["prune_rate"] = rate
            p = base.pruning
            for derived, base_value in (("prune_rate_output", p.rate_output),
                                        ("prune_rate_conv", p.rate_conv)):
                if base_value is not None and p.rate > 0:
                    out[derived] = _sig(min(0.99, rate * base_value / p.rate))
    return out


def trial_hparams(base: ExperimentHparams, values: dict, *, levels: int,
                  budget_fraction: float = 1.0, steps_per_epoch: int = 1) -> ExperimentHparams:
    """``base`` with a trial's values, ``levels`` pruning levels and no controls.

    Args:
        base: the base experiment.
        values: ``{name: value}`` from a keras-tuner trial (``"tuner/..."`` entries are
            ignored).
        levels: pruning levels of the trial.
        budget_fraction: in (0, 1]; the trial trains this fraction of the budget
            (Hyperband), rounded to whole evaluation periods, with warmup and rewind
            scaled alike.
        steps_per_epoch: iterations per epoch (to read ``"ep"`` lengths).

    Returns:
        A validated ``ExperimentHparams`` (step fields ``Steps``, in iterations when
        scaled).

    Raises:
        ValueError: from the hparams checks (e.g. a negative rate).
    """
    full = _full_values(base, values)
    t, p = base.training, base.pruning
    training = dataclasses.replace(
        t, learning_rate=full.get("learning_rate", t.learning_rate),
        warmup=full.get("warmup", t.warmup),
    )
    pruning_hp = dataclasses.replace(
        p, rate=full.get("prune_rate", p.rate),
        rate_output=full.get("prune_rate_output", p.rate_output),
        rate_conv=full.get("prune_rate_conv", p.rate_conv),
        rewind=full.get("rewind", p.rewind), levels=levels, controls=(), one_shot=(),
    )
    if budget_fraction < 1:
        spe = steps_per_epoch
        budget = t.iterations("training_steps", spe)
        period = t.iterations("eval_every", spe)
        short = max(period, period * round(budget * budget_fraction / period))
        scale = short / budget
        warmup = min(short, round(training.iterations("warmup", spe) * scale))
        rewind = pruning_hp.rewind.iterations(spe)
        rewind = min(_round_to(rewind * scale), short - period) if rewind else 0
        training = dataclasses.replace(training, training_steps=f"{short}it",
                                       warmup=f"{warmup}it")
        pruning_hp = dataclasses.replace(pruning_hp, rewind=f"{max(0, rewind)}it")
    return dataclasses.replace(base, training=training, pruning=pruning_hp)


def trial_experiment(base: ExperimentHparams, dataset, values: dict, target_sparsity: float,
                     *, hyperband_max_epochs: int | None = None) -> ExperimentHparams:
    """The experiment a trial with ``values`` runs: ``trial_hparams`` with the fewest
    levels that reach ``target_sparsity`` at the trial's rates and, under Hyperband
    (``values["tuner/epochs"]`` and ``hyperband_max_epochs``), the trial's fraction of
    the budget.

    Raises:
        ValueError: naming ``target_sparsity`` (out of (0, 1) or unreachable) or the
            hyperparameter at fault.
    """
    full = _full_values(base, values)
    p = base.pruning
    rates = dataclasses.replace(
        base, pruning=dataclasses.replace(
            p, rate=full.get("prune_rate", p.rate),
            rate_conv=full.get("prune_rate_conv", p.rate_conv),
            rate_output=full.get("prune_rate_output", p.rate_output)))
    levels = levels_to_reach(layer_sizes_and_rates(rates, dataset), target_sparsity)
    fraction = 1.0
    if hyperband_max_epochs and "tuner/epochs" in values:
        fraction = min(1.0, values["tuner/epochs"] / hyperband_max_epochs)
    return trial_hparams(base, values, levels=levels, budget_fraction=fraction,
                         steps_per_epoch=base.training.steps_per_epoch(len(dataset.y_train)))


def trial_flags(base: ExperimentHparams, values: dict) -> dict[str, str]:
    """``{flag name: flag value text}`` of a trial's tuned values, for a flagfile
    (``prune_rate_output``/``prune_rate_conv`` added when derived)."""
    return {name: str(value) for name, value in _full_values(base, values).items()}


def write_flagfile(path: str, base_lines, overrides: dict, header: list[str]) -> None:
    """Writes ``base_lines`` (``"--name=value"`` flagfile lines) with ``overrides``
    (``{flag name: value text}``) replacing or appended to them, under ``header``
    comment lines, atomically."""
    lines = ["# " + h for h in header]
    done = set()
    for line in base_lines:
        name = line[2:].split("=", 1)[0] if line.startswith("--") else None
        if name in overrides:
            lines.append(f"--{name}={overrides[name]}")
            done.add(name)
        else:
            lines.append(line)
    lines += [f"--{name}={value}" for name, value in overrides.items() if name not in done]
    files.atomic_write_text(path, "\n".join(lines) + "\n")
