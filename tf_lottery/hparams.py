"""Hyperparameters of one lottery-ticket experiment: frozen dataclasses, step strings, hashing.

Every field is validated when the dataclass is built, so bad input fails with a clear
``ArgumentError`` (a ``ValueError``) before any work starts. Errors name the field (the
library argument); ``tf_lottery.cli`` maps fields to its flags.

Step lengths carry their unit, as in open_lth: ``"50000it"`` (iterations) or ``"40ep"``
(epochs of the training split; one epoch is ``ceil(train examples / batch size)``
iterations).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib

from tf_lottery.arguments import ArgumentError, Steps, _check_choice, _check_number, _fail

__all__ = [
    "Steps",
    "ArgumentError",
    "GradInitHparams",
    "ModelHparams",
    "DatasetHparams",
    "TrainingHparams",
    "PruningHparams",
    "ExperimentHparams",
    "BRANCHES",
    "CONTROLS",
    "RETRAIN_MODES",
    "PRUNE_AT",
    "OPTIMIZERS",
    "WEIGHT_DECAY_MODES",
    "GRADINIT_VARIANTS",
    "derive_seed",
]


#: Control branches trained beside the lottery ticket at every level.
CONTROLS = ("reinit", "random_prune")
BRANCHES = ("lottery",) + CONTROLS
#: When masks are chosen: from the trained network of the previous level (IMP, Frankle &
#: Carbin 2019) or at the rewind point before any training of the pruned network
#: (pruning at initialization: SNIP, GraSP, SynFlow; Frankle et al., ICLR 2021).
PRUNE_AT = ("trained", "init")
#: How a pruned network is retrained: weight rewinding (Frankle & Carbin 2019; Frankle
#: et al. 2019 for k > 0), learning-rate rewinding and fine-tuning (Renda et al. 2020).
RETRAIN_MODES = ("rewind", "lr_rewind", "finetune")
OPTIMIZERS = ("adam", "sgd")
#: How ``weight_decay`` acts: ``"decoupled"``, Keras's ``w -= lr * wd * w`` beside the
#: update (Loshchilov & Hutter 2019); ``"coupled"``, PyTorch SGD's L2: ``wd * w`` added to
#: the gradient before momentum (He et al. 2016; Frankle et al. 2019; open_lth).
WEIGHT_DECAY_MODES = ("decoupled", "coupled")
#: GradInit variants (see ``tf_lottery.gradinit``): differentiated through the inner step,
#: or the authors' code (zhuchen03/gradinit): first order, objective / eta.
GRADINIT_VARIANTS = ("second_order", "authors")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


#: GradInit fields added after runs were named, with their defaults: left out of
#: ``to_flat`` (and so of the hash) while at them.
_GRADINIT_LATER = {"variant": "second_order", "normalize_grad": False}


@dataclasses.dataclass(frozen=True)
class GradInitHparams:
    """GradInit's settings (Zhu et al., "GradInit: Learning to Initialize Neural Networks
    for Stable and Efficient Training", NeurIPS 2021; see ``tf_lottery.gradinit``).

    Defaults are the paper's CIFAR-10 settings: 390 iterations, ``eta`` 0.1, ``gamma`` 1,
    scales trained by Adam at 1e-2 and floored at 0.01, minibatches of 128.

    Attributes:
        base_initializer: Keras initializer name the kernels are drawn from before
            GradInit rescales them (not ``"gradinit"``).
        steps: GradInit iterations, >= 1.
        eta: step size of the simulated first optimizer step, > 0.
        gamma: bound on the first gradient's norm (L2 for sgd, L1 for adam), > 0.
        optimizer: the optimizer GradInit prepares for, ``"sgd"`` or ``"adam"``.
        scale_lr: Adam learning rate of the scales, > 0.
        min_scale: lower bound of the scales, > 0.
        batch_size: examples per GradInit minibatch, >= 1.
        variant: ``"second_order"`` (the objective differentiated through the inner
            gradient, one Adam state for both branches) or ``"authors"`` (the authors'
            code, zhuchen03/gradinit: inner gradient detached, objective divided by
            ``eta``, separate Adam first moments for constraint steps); see
            ``tf_lottery.gradinit``.
        normalize_grad: the simulated SGD step is ``eta * g / ||g||_2`` (the authors'
            ``--gradinit-normalize-grad``); ``optimizer="sgd"`` only.

    ``variant`` and ``normalize_grad`` enter ``to_flat`` (``hparams.json``, the run's
    hash) only when not at their defaults, so runs made before they existed keep their
    names.
    """

    base_initializer: str = "glorot_normal"
    steps: int = 390
    eta: float = 0.1
    gamma: float = 1.0
    optimizer: str = "sgd"
    scale_lr: float = 1e-2
    min_scale: float = 0.01
    batch_size: int = 128
    variant: str = "second_order"
    normalize_grad: bool = False

    def __post_init__(self):
        if self.base_initializer == "gradinit":
            _fail("base_initializer", self.base_initializer,
                  "must name a Keras initializer such as glorot_normal, not gradinit")
        _check_number("steps", self.steps, 1, integer=True)
        _check_number("eta", self.eta, 0.0, low_open=True)
        _check_number("gamma", self.gamma, 0.0, low_open=True)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_number("scale_lr", self.scale_lr, 0.0, low_open=True)
        _check_number("min_scale", self.min_scale, 0.0, low_open=True)
        _check_number("batch_size", self.batch_size, 1, integer=True)
        _check_choice("variant", self.variant, GRADINIT_VARIANTS)
        if not isinstance(self.normalize_grad, bool):
            _fail("normalize_grad", self.normalize_grad, "must be True or False")
        if self.normalize_grad and self.optimizer != "sgd":
            _fail("normalize_grad", self.normalize_grad,
                  "applies to optimizer='sgd' only (Adam's first step is eta * sign(g))")

    def to_flat(self) -> dict:
        """The fields under the names ``hparams.json`` stores them (``base_initializer``,
        ``gradinit_<field>``), which are also the CLI's flag names; ``variant`` and
        ``normalize_grad`` only when not at their defaults."""
        return {("base_initializer" if k == "base_initializer" else f"gradinit_{k}"): v
                for k, v in dataclasses.asdict(self).items()
                if k not in _GRADINIT_LATER or v != _GRADINIT_LATER[k]}

    @classmethod
    def from_flat(cls, values: dict) -> GradInitHparams | None:
        """The inverse of ``to_flat``; ``None`` when every value is ``None`` (absent)."""
        kwargs = {}
        for name, value in values.items():
            if value is None:
                continue
            field = name if name == "base_initializer" else name[len("gradinit_"):]
            kwargs[field] = value
        return cls(**kwargs) if kwargs else None


#: The flat names of GradInit's fields in ``hparams.json`` (and the CLI's flags).
GRADINIT_FIELDS = tuple(
    "base_initializer" if f.name == "base_initializer" else f"gradinit_{f.name}"
    for f in dataclasses.fields(GradInitHparams))


@dataclasses.dataclass(frozen=True)
class ModelHparams:
    """Which network to build: a ``tf_lottery.models.MODELS`` name and its options.

    Attributes:
        model: a ``tf_lottery.models.MODELS`` name.
        initializer: a Keras initializer name, or ``"gradinit"``: the kernels are drawn
            from ``gradinit.base_initializer`` and then rescaled by GradInit (Zhu et al.,
            NeurIPS 2021; see ``tf_lottery.gradinit``).
        dropout: rate of the Dropout after hidden fully-connected layers, in [0, 1).
        batch_norm: ``None`` for the model's own default, else with or without BN.
        gradinit: GradInit's settings; defaults to ``GradInitHparams()`` when
            ``initializer == "gradinit"`` and must be ``None`` otherwise.
    """

    model: str
    initializer: str = "glorot_normal"
    dropout: float = 0.0
    batch_norm: bool | None = None
    gradinit: GradInitHparams | None = None

    def __post_init__(self):
        _check_number("dropout", self.dropout, 0.0, 1.0)
        if self.initializer != "gradinit":
            if self.gradinit is not None:
                _fail("gradinit", self.gradinit, "applies only with initializer='gradinit'")
            return
        if self.gradinit is None:
            object.__setattr__(self, "gradinit", GradInitHparams())
        elif not isinstance(self.gradinit, GradInitHparams):
            _fail("gradinit", self.gradinit, "must be a GradInitHparams")

    @property
    def kernel_initializer(self) -> str:
        """The Keras initializer the kernels are drawn from: ``initializer``, or
        GradInit's ``base_initializer`` (before GradInit rescales them)."""
        return self.gradinit.base_initializer if self.gradinit else self.initializer

    def to_dict(self) -> dict:
        """The fields as ``hparams.json`` stores them: GradInit's flat, and only when set
        (so runs without GradInit hash as before GradInit existed)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name != "gradinit"}
        if self.gradinit is not None:
            values.update(self.gradinit.to_flat())
        return values

    @classmethod
    def from_dict(cls, values: dict) -> ModelHparams:
        """The inverse of ``to_dict``; reads both the flat GradInit fields and a nested
        ``"gradinit"`` dict."""
        values = dict(values)
        flat = {name: values.pop(name) for name in GRADINIT_FIELDS if name in values}
        nested = values.pop("gradinit", None)
        gradinit = GradInitHparams(**nested) if nested else GradInitHparams.from_flat(flat)
        return cls(gradinit=gradinit, **values)


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
        weight_decay: weight decay coefficient ``wd``, >= 0; how it acts is
            ``weight_decay_mode``.
        batch_size: global batch size, examples per iteration.
        training_steps: the budget ``T``, a ``Steps`` (a step string such as
            ``"50000it"`` or ``"40ep"`` is parsed when the dataclass is built).
        eval_every: validation and test evaluation period (paper: ``"100it"``).
        lr_drops: ``Steps`` at which the learning rate is multiplied by
            ``lr_drop_factor`` (e.g. ``("80ep", "120ep")``), sorted.
        lr_drop_factor: factor in (0, 1] of each drop.
        warmup: linear learning-rate warmup length from 0 (``"0it"``: none).
        weight_decay_mode: ``"decoupled"`` (Keras's ``weight_decay``: ``w -= lr * wd * w``
            beside the optimizer's update, outside momentum and Adam's moments) or
            ``"coupled"`` (L2 as PyTorch's ``weight_decay``: ``wd * w`` is added to the
            gradient before the update, so it enters momentum; He et al. 2016, Frankle et
            al. 2019, open_lth). Pruned weights are never decayed in ``"coupled"`` mode.
        clip_grad_norm: ``None`` or a bound > 0 on the global L2 norm of the loss
            gradient (all weights together, summed over replicas), which is rescaled to
            the bound when above it before weight decay is added
            (``torch.nn.utils.clip_grad_norm_``, as in the GradInit authors' VGG runs).

    Step fields are parsed once, here, into ``Steps``; ``str()`` gives the canonical
    step string, which is what ``hparams.json`` stores. ``weight_decay_mode`` and
    ``clip_grad_norm`` enter ``to_dict`` (and the run's hash) only when not at their
    defaults, so runs made before they existed keep their names.
    """

    optimizer: str = "adam"
    learning_rate: float = 1.2e-3
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 60
    training_steps: Steps | str = "50000it"
    eval_every: Steps | str = "100it"
    lr_drops: tuple[Steps | str, ...] = ()
    lr_drop_factor: float = 0.1
    warmup: Steps | str = "0it"
    weight_decay_mode: str = "decoupled"
    clip_grad_norm: float | None = None

    def __post_init__(self):
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_number("learning_rate", self.learning_rate, 0.0, low_open=True)
        _check_number("momentum", self.momentum, 0.0, 1.0)
        _check_number("weight_decay", self.weight_decay, 0.0)
        _check_choice("weight_decay_mode", self.weight_decay_mode, WEIGHT_DECAY_MODES)
        if self.clip_grad_norm is not None:
            _check_number("clip_grad_norm", self.clip_grad_norm, 0.0, low_open=True)
            object.__setattr__(self, "clip_grad_norm", float(self.clip_grad_norm))
        _check_number("batch_size", self.batch_size, 1, integer=True)
        _check_number("lr_drop_factor", self.lr_drop_factor, 0.0, low_open=True)
        if self.lr_drop_factor > 1:
            _fail("lr_drop_factor", self.lr_drop_factor, "must be in (0, 1]")
        if self.momentum == 0 and self.nesterov:
            _fail("nesterov", self.nesterov, "needs `momentum` > 0")
        # Parsed once into Steps (canonical: sorted drops), so equal experiments hash equal.
        for name in ("training_steps", "eval_every", "warmup"):
            object.__setattr__(self, name, Steps.parse(getattr(self, name), name))
        if isinstance(self.lr_drops, (str, Steps)):
            _fail("lr_drops", self.lr_drops, "must be a sequence of step strings")
        drops = [Steps.parse(drop, "lr_drops") for drop in self.lr_drops]
        object.__setattr__(self, "lr_drops", tuple(
            sorted(drops, key=lambda d: (d.unit, d.amount))))
        if self.training_steps.amount == 0:
            _fail("training_steps", str(self.training_steps), "must be positive")
        if self.eval_every.amount == 0:
            _fail("eval_every", str(self.eval_every), "must be positive")

    def steps_per_epoch(self, train_examples: int) -> int:
        """Iterations per epoch: ``ceil(train_examples / batch_size)`` (the last batch of
        an epoch may be smaller). The one place an epoch's length is computed."""
        return -(-int(train_examples) // self.batch_size)

    def iterations(self, field: str, steps_per_epoch: int) -> int:
        """A step field (``"training_steps"``, ``"eval_every"``, ``"warmup"``) in
        iterations, given ``steps_per_epoch`` iterations per epoch."""
        return getattr(self, field).iterations(steps_per_epoch)

    def drop_iterations(self, steps_per_epoch: int) -> tuple[int, ...]:
        """``lr_drops`` in iterations, sorted."""
        return tuple(sorted(d.iterations(steps_per_epoch) for d in self.lr_drops))

    def check_against(self, steps_per_epoch: int, rewind: str | None = None) -> None:
        """Checks the lengths against each other once the epoch length is known.

        Raises:
            ValueError: a rewind point, warmup or drop past the training budget.
        """
        budget = self.iterations("training_steps", steps_per_epoch)
        if rewind is not None and Steps.parse(rewind, "rewind").iterations(
                steps_per_epoch) >= budget:
            _fail("rewind", str(rewind), f"must come before the end of training ({budget} "
                  "iterations)")
        if self.iterations("warmup", steps_per_epoch) > budget:
            _fail("warmup", str(self.warmup), f"must not exceed `training_steps` ({budget} "
                  "iterations)")
        for drop in self.lr_drops:
            if drop.iterations(steps_per_epoch) > budget:
                _fail("lr_drops", str(drop), f"must not exceed `training_steps` ({budget} "
                      "iterations)")

    def to_dict(self) -> dict:
        """The fields as ``hparams.json`` stores them (step fields as step strings)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("training_steps", "eval_every", "warmup"):
            values[name] = str(values[name])
        values["lr_drops"] = [str(d) for d in self.lr_drops]
        if self.weight_decay_mode == "decoupled":  # the defaults: as before they existed
            values.pop("weight_decay_mode")
        if self.clip_grad_norm is None:
            values.pop("clip_grad_norm")
        return values


@dataclasses.dataclass(frozen=True)
class PruningHparams:
    """How tickets are found: iterative magnitude pruning (IMP) with rewinding.

    Attributes:
        levels: number of pruning levels after the dense level 0 (>= 0).
        scope: ``"layerwise"``, ``"global"`` or ``"erk"`` (the Erdős–Rényi-Kernel
            per-layer budget, see ``tf_lottery.pruning.prune``).
        rate: fraction of surviving weights pruned per level from fully-connected
            layers (all included layers for global and erk scope), in [0, 1).
        rate_conv: rate for convolutions (layerwise); ``None`` uses ``rate``.
        rate_output: rate for the output layer (layerwise); ``None`` uses ``rate``.
        criterion: a ``tf_lottery.pruning.CRITERIA`` name.
        rewind: rewind point ``k``, a ``Steps`` (``"0it"``: the original paper).
        retrain: ``"rewind"`` (weights and schedule to ``k``), ``"lr_rewind"`` (keep the
            trained weights, schedule back to ``k``) or ``"finetune"`` (keep the weights,
            train at the final learning rate).
        controls: control branches per level, a subset of ``CONTROLS``.
        one_shot: target sparsities (fractions) pruned in one shot from the dense run.
        exclude: layer names never pruned.
        reinit_draws: networks the ``reinit`` control trains per level, each from its own
            fresh initialization (an integer >= 1; Frankle & Carbin 2019 average three).
            Draw 0 is the ``reinit`` branch; the others only add branches, so the number
            is left out of the run's hash (and out of ``hparams.json`` while it is 1).
        prune_at: ``"trained"`` (IMP: each level's mask is pruned from the previous
            level's trained network) or ``"init"``: each level's (and each one-shot
            target's) mask is chosen from the weights at the rewind point (``theta_0``
            for ``rewind="0it"``) with one of ``tf_lottery.criteria.INIT_CRITERIA``, pruning straight to that
            level's sparsity (the ladder ``levels`` and the rates give, or the one-shot
            target); the networks then train exactly like tickets.
        early_bird: draw each level's mask early (You et al., ICLR 2020): the lottery
            branch of every level but the last stops once the mask it would be pruned
            to changes by less than ``early_bird_epsilon`` (normalized Hamming
            distance) over 5 consecutive evaluations. Needs ``criterion="magnitude"``
            and ``prune_at="trained"``.
        early_bird_epsilon: the early-bird distance threshold, in (0, 1).
        structure: ``"unstructured"`` (default), ``"channel"`` (whole units and
            filters; ``rate``/``rate_conv`` are fractions of the surviving channels, the
            output layer is never pruned, scope ``"layerwise"`` or ``"global"``) or
            ``"N:M"`` such as ``"2:4"`` (level 1 reaches the ``N:M`` mask and later levels
            keep it; the rates are ignored; layerwise scope, no one-shot targets, no
            early bird). See ``tf_lottery.structure``. Left out of ``hparams.json`` (and
            the run's hash) while it is ``"unstructured"``.
    """

    levels: int = 0
    scope: str = "layerwise"
    rate: float = 0.2
    rate_conv: float | None = None
    rate_output: float | None = None
    criterion: str = "magnitude"
    rewind: Steps | str = "0it"
    retrain: str = "rewind"
    controls: tuple[str, ...] = ()
    one_shot: tuple[float, ...] = ()
    exclude: tuple[str, ...] = ()
    reinit_draws: int = 1
    prune_at: str = "trained"
    early_bird: bool = False
    early_bird_epsilon: float = 0.1
    structure: str = "unstructured"

    def __post_init__(self):
        from tf_lottery.criteria import CRITERIA, INIT_CRITERIA
        from tf_lottery.pruning import SCOPES

        _check_number("levels", self.levels, 0, integer=True)
        _check_choice("scope", self.scope, SCOPES)
        for name in ("rate", "rate_conv", "rate_output"):
            value = getattr(self, name)
            if value is not None:
                _check_number(name, value, 0.0, 1.0)
        if self.scope != "layerwise" and (self.rate_conv is not None
                                          or self.rate_output is not None):
            _fail(
                "scope", self.scope,
                f"is {self.scope}: `rate_conv` and `rate_output` apply to layerwise pruning only "
                "(exclude the output layer through `exclude` instead)",
            )
        _check_choice("criterion", self.criterion, sorted(CRITERIA))
        object.__setattr__(self, "rewind", Steps.parse(self.rewind, "rewind"))
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
        _check_number("reinit_draws", self.reinit_draws, 1, integer=True)
        if self.reinit_draws > 1 and "reinit" not in self.controls:
            _fail("reinit_draws", self.reinit_draws,
                  "applies to the reinit control: add 'reinit' to `controls` or use 1")
        _check_choice("prune_at", self.prune_at, PRUNE_AT)
        if self.prune_at == "init":
            if self.criterion not in INIT_CRITERIA:
                _fail("criterion", self.criterion,
                      f"must be one of {sorted(INIT_CRITERIA)} with `prune_at`='init': it "
                      "scores trained weights (or a training run) that pruning at "
                      "initialization does not have")
            if self.retrain != "rewind":
                _fail("retrain", self.retrain,
                      "must be 'rewind' with `prune_at`='init': 'lr_rewind' and 'finetune' "
                      "start from a trained network, which pruning at initialization "
                      "does not have")
        if not isinstance(self.early_bird, bool):
            _fail("early_bird", self.early_bird, "must be True or False")
        # The normalized Hamming distance below which consecutive masks count as settled.
        _check_number("early_bird_epsilon", self.early_bird_epsilon, 0.0, 1.0, low_open=True)
        if self.early_bird:
            if self.prune_at == "init":
                _fail("early_bird", self.early_bird,
                      "draws masks during training, so it needs `prune_at`='trained'")
            if self.criterion != "magnitude":
                _fail("early_bird", self.early_bird,
                      f"watches the magnitude mask; received `criterion`={self.criterion!r}: "
                      "use `criterion`='magnitude'")
        self._check_structure()

    def _check_structure(self):
        from tf_lottery.structure import parse_structure

        spec = parse_structure(self.structure)
        object.__setattr__(self, "structure", str(spec))
        if spec.kind == "channel":
            if self.scope == "erk":
                _fail("scope", self.scope, "cannot be 'erk' with `structure`='channel' (the "
                      "Erdős–Rényi-Kernel budget has no channel form): use 'layerwise' or "
                      "'global'")
            if self.rate_output is not None:
                _fail("rate_output", self.rate_output, "does not apply with `structure`="
                      "'channel': the output layer's units are never removed; leave it unset")
            if self.one_shot and self.scope != "layerwise":
                _fail("one_shot", self.one_shot, "needs `scope`='layerwise' with `structure`="
                      "'channel': a global channel rate cannot aim at a weight sparsity")
        elif spec.kind == "n:m":
            fixed = f"with `structure`={self.structure!r}, whose sparsity is 1 - {spec.n}/{spec.m}"
            if self.scope != "layerwise":
                _fail("scope", self.scope, f"must be 'layerwise' {fixed} in every layer")
            for name in ("rate_conv", "rate_output"):
                if getattr(self, name) is not None:
                    _fail(name, getattr(self, name), f"does not apply {fixed}; leave it unset")
            if self.one_shot:
                _fail("one_shot", self.one_shot, f"has no targets to reach {fixed}")
            if self.early_bird:
                _fail("early_bird", self.early_bird, f"has no next mask to draw early {fixed}: "
                      "every level keeps the N:M mask of level 1")


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
        """A JSON-ready nested dict of every field: what ``hparams.json`` holds (step
        fields as step strings; GradInit's fields flat in ``"model"`` when set)."""
        pruning = dataclasses.asdict(self.pruning)
        pruning.update(rewind=str(self.pruning.rewind), controls=list(self.pruning.controls),
                       one_shot=list(self.pruning.one_shot), exclude=list(self.pruning.exclude))
        # Defaults are left out: hparams.json (and the run's hash) as before they existed.
        for name, default in (("reinit_draws", 1), ("prune_at", "trained"),
                              ("early_bird", False), ("structure", "unstructured")):
            if pruning[name] == default:
                pruning.pop(name)
        if not self.pruning.early_bird:
            pruning.pop("early_bird_epsilon")
        return {
            "model": self.model.to_dict(),
            "dataset": dataclasses.asdict(self.dataset),
            "training": self.training.to_dict(),
            "pruning": pruning,
            "seed": self.seed,
            "precision": self.precision,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ExperimentHparams:
        """The inverse of ``to_dict`` (lists become tuples)."""

        def build(kind, values):
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        return cls(
            model=ModelHparams.from_dict(data["model"]),
            dataset=build(DatasetHparams, data["dataset"]),
            training=build(TrainingHparams, data["training"]),
            pruning=build(PruningHparams, data["pruning"]),
            seed=data["seed"],
            precision=data["precision"],
        )

    def digest(self, length: int = 10) -> str:
        """A short, stable hex hash (SHA-256 of canonical JSON) of what fixes results.

        ``pruning.levels``, ``pruning.controls``, ``pruning.one_shot`` and
        ``pruning.reinit_draws`` are left out, as in open_lth: they add levels or branches
        without changing the others, so a run can be extended (``--levels=15`` after
        ``--levels=10``) in the same directory.
        """
        values = self.to_dict()
        for extendable in ("levels", "controls", "one_shot", "reinit_draws"):
            values["pruning"].pop(extendable, None)
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
