"""Hyperparameters of one lottery-ticket experiment: frozen dataclasses, step strings, hashing.

Every field is validated when the dataclass is built, so bad input fails with a clear
``ValueError`` before any work starts. Field names equal the ``main.py`` flag names, so
an error about ``learning_rate`` is an error about ``--learning_rate``.

Step lengths carry their unit, as in open_lth: ``"50000it"`` (iterations) or ``"40ep"``
(epochs of the training split; one epoch is ``ceil(train examples / batch size)``
iterations).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import zlib

__all__ = [
    "Steps",
    "ModelHparams",
    "DatasetHparams",
    "TrainingHparams",
    "PruningHparams",
    "ExperimentHparams",
    "BRANCHES",
    "CONTROLS",
    "RETRAIN_MODES",
    "OPTIMIZERS",
    "derive_seed",
]

_STEPS = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")

#: Control branches trained beside the lottery ticket at every level.
CONTROLS = ("reinit", "random_prune")
BRANCHES = ("lottery",) + CONTROLS
#: How a pruned network is retrained: weight rewinding (Frankle & Carbin 2019; Frankle
#: et al. 2019 for k > 0), learning-rate rewinding and fine-tuning (Renda et al. 2020).
RETRAIN_MODES = ("rewind", "lr_rewind", "finetune")
OPTIMIZERS = ("adam", "sgd")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def _fail(field: str, value, fix: str):
    raise ValueError(f"`{field}` (--{field}) {fix}; received {value!r}.")


@dataclasses.dataclass(frozen=True)
class Steps:
    """A training length with its unit: ``Steps.parse("500it")``, ``Steps.parse("2ep")``."""

    amount: int
    unit: str  # "it" or "ep"

    @classmethod
    def parse(cls, text, field: str = "steps") -> Steps:
        """Parses ``"<int>it"`` or ``"<int>ep"``; raises ``ValueError`` naming ``field``."""
        if isinstance(text, Steps):
            return text
        match = _STEPS.match(str(text)) if isinstance(text, str) else None
        if not match:
            _fail(field, text, "must be a step string such as '50000it' (iterations) or '40ep' (epochs)")
        return cls(int(match.group(1)), match.group(2))

    def iterations(self, steps_per_epoch: int) -> int:
        """The length in iterations, given ``steps_per_epoch`` iterations per epoch."""
        return self.amount if self.unit == "it" else self.amount * steps_per_epoch

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


def _check_number(field, value, low, high=None, *, low_open=False, integer=False):
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (
        not integer and not math.isfinite(value)
    ):
        _fail(field, value, f"must be {'an integer' if integer else 'a number'}")
    if (value <= low if low_open else value < low) or (high is not None and value >= high):
        bound = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high is not None else "")
        _fail(field, value, f"must be {bound}")


def _check_choice(field, value, choices):
    if value not in choices:
        _fail(field, value, f"must be one of {list(choices)}")


@dataclasses.dataclass(frozen=True)
class ModelHparams:
    """Which network to build: a ``tf_lottery.models.MODELS`` name and its options.

    ``initializer`` is a Keras initializer name, or ``"gradinit"``: the kernels are drawn
    from ``base_initializer`` and then rescaled by GradInit (Zhu et al., NeurIPS 2021;
    see ``tf_lottery.gradinit``) with the ``gradinit_*`` settings. Those fields are
    ``None`` for any other initializer (and then left out of the hash, so run names of
    experiments without GradInit do not change).
    """

    model: str
    initializer: str = "glorot_normal"
    dropout: float = 0.0
    batch_norm: bool | None = None
    # ---- GradInit settings (tf_lottery.gradinit); None unless initializer == "gradinit".
    base_initializer: str | None = None
    gradinit_steps: int | None = None
    gradinit_eta: float | None = None
    gradinit_gamma: float | None = None
    gradinit_optimizer: str | None = None
    gradinit_scale_lr: float | None = None
    gradinit_min_scale: float | None = None
    gradinit_batch_size: int | None = None

    def __post_init__(self):
        _check_number("dropout", self.dropout, 0.0, 1.0)
        # ---- GradInit settings: defaults of tf_lottery.gradinit.gradinit, checked here.
        if self.initializer != "gradinit":
            for name in GRADINIT_FIELDS:
                if getattr(self, name) is not None:
                    _fail(name, getattr(self, name), "applies only with --initializer=gradinit")
            return
        for name, default in GRADINIT_DEFAULTS.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if self.base_initializer == "gradinit":
            _fail("base_initializer", self.base_initializer,
                  "must name a Keras initializer such as glorot_normal, not gradinit")
        _check_number("gradinit_steps", self.gradinit_steps, 1, integer=True)
        _check_number("gradinit_eta", self.gradinit_eta, 0.0, low_open=True)
        _check_number("gradinit_gamma", self.gradinit_gamma, 0.0, low_open=True)
        _check_choice("gradinit_optimizer", self.gradinit_optimizer, OPTIMIZERS)
        _check_number("gradinit_scale_lr", self.gradinit_scale_lr, 0.0, low_open=True)
        _check_number("gradinit_min_scale", self.gradinit_min_scale, 0.0, low_open=True)
        _check_number("gradinit_batch_size", self.gradinit_batch_size, 1, integer=True)


#: GradInit fields of ``ModelHparams`` and their defaults (Zhu et al. 2021, CIFAR-10:
#: 390 iterations, eta 0.1, gamma 1, scales trained by Adam at 1e-2, floored at 0.01).
GRADINIT_DEFAULTS = {
    "base_initializer": "glorot_normal",
    "gradinit_steps": 390,
    "gradinit_eta": 0.1,
    "gradinit_gamma": 1.0,
    "gradinit_optimizer": "sgd",
    "gradinit_scale_lr": 1e-2,
    "gradinit_min_scale": 0.01,
    "gradinit_batch_size": 128,
}
GRADINIT_FIELDS = tuple(GRADINIT_DEFAULTS)


@dataclasses.dataclass(frozen=True)
class DatasetHparams:
    """Which data: a ``tf_lottery.data.DATASETS`` name, its location and split."""

    dataset: str
    validation_size: int | None = None  # None: 5,000 for real data (the paper's split)
    augment: bool = False
    synthetic_size: int | None = None  # training examples of the synthetic dataset

    def __post_init__(self):
        if self.validation_size is not None:
            _check_number("validation_size", self.validation_size, 0, integer=True)


@dataclasses.dataclass(frozen=True)
class TrainingHparams:
    """How each network is trained (one level, one branch).

    Attributes:
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``/``nesterov``).
        learning_rate: peak learning rate, > 0.
        momentum: SGD momentum in [0, 1).
        nesterov: Nesterov momentum for SGD.
        weight_decay: decoupled weight decay coefficient (Keras ``weight_decay``), >= 0.
        batch_size: global batch size, examples per iteration.
        training_steps: the budget ``T`` as a step string.
        eval_every: validation and test evaluation period (paper: ``"100it"``).
        lr_drops: step strings at which the learning rate is multiplied by
            ``lr_drop_factor`` (e.g. ``("80ep", "120ep")``).
        lr_drop_factor: factor in (0, 1] of each drop.
        warmup: linear learning-rate warmup length from 0 (``"0it"``: none).
    """

    optimizer: str = "adam"
    learning_rate: float = 1.2e-3
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 60
    training_steps: str = "50000it"
    eval_every: str = "100it"
    lr_drops: tuple[str, ...] = ()
    lr_drop_factor: float = 0.1
    warmup: str = "0it"

    def __post_init__(self):
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_number("learning_rate", self.learning_rate, 0.0, low_open=True)
        _check_number("momentum", self.momentum, 0.0, 1.0)
        _check_number("weight_decay", self.weight_decay, 0.0)
        _check_number("batch_size", self.batch_size, 1, integer=True)
        _check_number("lr_drop_factor", self.lr_drop_factor, 0.0, low_open=True)
        if self.lr_drop_factor > 1:
            _fail("lr_drop_factor", self.lr_drop_factor, "must be in (0, 1]")
        if self.momentum == 0 and self.nesterov:
            _fail("nesterov", self.nesterov, "needs --momentum > 0")
        # Canonical step strings ("500it", sorted drops), so equal experiments hash equal.
        for name in ("training_steps", "eval_every", "warmup"):
            object.__setattr__(self, name, str(Steps.parse(getattr(self, name), name)))
        drops = [Steps.parse(drop, "lr_drops") for drop in self.lr_drops]
        object.__setattr__(self, "lr_drops", tuple(
            str(d) for d in sorted(drops, key=lambda d: (d.unit, d.amount))
        ))
        if Steps.parse(self.training_steps).amount == 0:
            _fail("training_steps", self.training_steps, "must be positive")
        if Steps.parse(self.eval_every).amount == 0:
            _fail("eval_every", self.eval_every, "must be positive")

    def iterations(self, field: str, steps_per_epoch: int) -> int:
        """A step-string field (``"training_steps"``, ``"eval_every"``, ``"warmup"``) in
        iterations."""
        return Steps.parse(getattr(self, field), field).iterations(steps_per_epoch)

    def drop_iterations(self, steps_per_epoch: int) -> tuple[int, ...]:
        """``lr_drops`` in iterations, sorted."""
        return tuple(sorted(Steps.parse(d).iterations(steps_per_epoch) for d in self.lr_drops))

    def check_against(self, steps_per_epoch: int, rewind: str | None = None) -> None:
        """Checks the lengths against each other once the epoch length is known.

        Raises:
            ValueError: a rewind point, warmup or drop past the training budget.
        """
        budget = self.iterations("training_steps", steps_per_epoch)
        if rewind is not None and Steps.parse(rewind).iterations(steps_per_epoch) >= budget:
            _fail("rewind", rewind, f"must come before the end of training ({budget} iterations)")
        if self.iterations("warmup", steps_per_epoch) > budget:
            _fail("warmup", self.warmup, f"must not exceed --training_steps ({budget} iterations)")
        for drop in self.lr_drops:
            if Steps.parse(drop).iterations(steps_per_epoch) > budget:
                _fail("lr_drops", drop, f"must not exceed --training_steps ({budget} iterations)")


@dataclasses.dataclass(frozen=True)
class PruningHparams:
    """How tickets are found: iterative magnitude pruning (IMP) with rewinding.

    Attributes:
        levels: number of pruning levels after the dense level 0 (>= 0).
        scope: ``"layerwise"`` or ``"global"``.
        rate: fraction of surviving weights pruned per level from fully-connected
            layers (all included layers for global scope), in [0, 1).
        rate_conv: rate for convolutions (layerwise); ``None`` uses ``rate``.
        rate_output: rate for the output layer (layerwise); ``None`` uses ``rate``.
        criterion: a ``tf_lottery.pruning.CRITERIA`` name.
        rewind: rewind point ``k`` as a step string (``"0it"``: the original paper).
        retrain: ``"rewind"`` (weights and schedule to ``k``), ``"lr_rewind"`` (keep the
            trained weights, schedule back to ``k``) or ``"finetune"`` (keep the weights,
            train at the final learning rate).
        controls: control branches per level, a subset of ``CONTROLS``.
        one_shot: target sparsities (fractions) pruned in one shot from the dense run.
        exclude: layer names never pruned.
    """

    levels: int = 0
    scope: str = "layerwise"
    rate: float = 0.2
    rate_conv: float | None = None
    rate_output: float | None = None
    criterion: str = "magnitude"
    rewind: str = "0it"
    retrain: str = "rewind"
    controls: tuple[str, ...] = ()
    one_shot: tuple[float, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        from tf_lottery.pruning import CRITERIA, SCOPES

        _check_number("levels", self.levels, 0, integer=True)
        _check_choice("pruning", self.scope, SCOPES)
        for name in ("rate", "rate_conv", "rate_output"):
            value = getattr(self, name)
            if value is not None:
                _check_number(f"prune_{name}" if name != "rate" else "prune_rate", value, 0.0, 1.0)
        if self.scope == "global" and (self.rate_conv is not None or self.rate_output is not None):
            _fail(
                "pruning", self.scope,
                "is global: --prune_rate_conv and --prune_rate_output apply to layerwise "
                "pruning only (exclude the output layer with --exclude=output instead)",
            )
        _check_choice("criterion", self.criterion, sorted(CRITERIA))
        object.__setattr__(self, "rewind", str(Steps.parse(self.rewind, "rewind")))
        _check_choice("retrain", self.retrain, RETRAIN_MODES)
        object.__setattr__(self, "controls", tuple(self.controls))
        for control in self.controls:
            _check_choice("controls", control, CONTROLS)
        if len(set(self.controls)) != len(self.controls):
            _fail("controls", self.controls, "lists a control twice")
        object.__setattr__(self, "one_shot", tuple(float(s) for s in self.one_shot))
        for target in self.one_shot:
            if not 0.0 < target < 1.0:
                _fail("one_shot", target, "must hold sparsities (fractions) in (0, 1), e.g. 0.8,0.9")
        object.__setattr__(self, "exclude", tuple(self.exclude))


@dataclasses.dataclass(frozen=True)
class ExperimentHparams:
    """Everything that decides an experiment's results; its hash names the run directory.

    Runtime choices that must not change results (distribution strategy, compilation,
    logging) are not part of it.
    """

    model: ModelHparams
    dataset: DatasetHparams
    training: TrainingHparams
    pruning: PruningHparams
    seed: int = 0
    precision: str = "float32"

    def __post_init__(self):
        _check_number("seed", self.seed, 0, integer=True)
        _check_choice("precision", self.precision, PRECISIONS)

    def to_dict(self) -> dict:
        """A JSON-ready nested dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ExperimentHparams:
        """The inverse of ``to_dict`` (lists become tuples)."""

        def build(kind, values):
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        return cls(
            model=build(ModelHparams, data["model"]),
            dataset=build(DatasetHparams, data["dataset"]),
            training=build(TrainingHparams, data["training"]),
            pruning=build(PruningHparams, data["pruning"]),
            seed=data["seed"],
            precision=data["precision"],
        )

    def digest(self, length: int = 10) -> str:
        """A short, stable hex hash (SHA-256 of canonical JSON) of what fixes results.

        ``pruning.levels``, ``pruning.controls`` and ``pruning.one_shot`` are left out, as
        in open_lth: they add levels or branches without changing the others, so a run
        can be extended (``--levels=15`` after ``--levels=10``) in the same directory.
        """
        values = self.to_dict()
        for extendable in ("levels", "controls", "one_shot"):
            values["pruning"].pop(extendable)
        for name in GRADINIT_FIELDS:  # unset GradInit fields: hashes as before they existed
            if values["model"][name] is None:
                values["model"].pop(name)
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:length]

    def run_name(self) -> str:
        """``<model>_<dataset>_<hash>``, the run directory's name under the run root."""
        return f"{self.model.model}_{self.dataset.dataset}_{self.digest()}"


def derive_seed(seed: int, *tags) -> int:
    """A 31-bit seed derived deterministically from ``seed`` and string/int ``tags``.

    Used so that initialization, data order and each control branch get independent,
    reproducible random streams from the one ``--seed``.
    """
    text = ":".join(str(t) for t in (seed,) + tags)
    return zlib.crc32(text.encode()) & 0x7FFFFFFF
