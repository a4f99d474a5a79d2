"""Tests of tf_lottery.hparams: step strings, validation of every field, hashing, seeds."""

import json

import pytest

from tf_lottery.hparams import (
    GRADINIT_FIELDS,
    GradInitHparams,
    DatasetHparams,
    ExperimentHparams,
    ModelHparams,
    PruningHparams,
    Steps,
    TrainingHparams,
    derive_seed,
)


def _experiment(**changes):
    """A small experiment; ``changes`` maps "section.field" (or "seed"/"precision") to values."""
    sections = {
        "model": {"model": "lenet_300_100"},
        "dataset": {"dataset": "fashion_mnist"},
        "training": {"learning_rate": 1.2e-3, "training_steps": "500it"},
        "pruning": {"levels": 3, "rate": 0.2, "rewind": "0it"},
    }
    top = {}
    for key, value in changes.items():
        if "." in key:
            section, field = key.split(".")
            sections[section][field] = value
        else:
            top[key] = value
    return ExperimentHparams(
        model=ModelHparams(**sections["model"]),
        dataset=DatasetHparams(**sections["dataset"]),
        training=TrainingHparams(**sections["training"]),
        pruning=PruningHparams(**sections["pruning"]),
        **top,
    )


# ----------------------------------------------------------------------------- Steps


@pytest.mark.parametrize(
    "text, amount, unit",
    [("500it", 500, "it"), ("40ep", 40, "ep"), (" 7 ep ", 7, "ep"), ("0it", 0, "it"), ("\t12it\n", 12, "it")],
)
def test_steps_parse(text, amount, unit):
    steps = Steps.parse(text)
    assert (steps.amount, steps.unit) == (amount, unit)
    assert str(steps) == f"{amount}{unit}"


def test_steps_parse_passes_steps_through():
    steps = Steps(3, "ep")
    assert Steps.parse(steps) is steps


def test_steps_iterations():
    assert Steps.parse("500it").iterations(100) == 500
    assert Steps.parse("40ep").iterations(100) == 4000
    assert Steps.parse("3ep").iterations(7) == 21
    assert Steps.parse("0ep").iterations(7) == 0


@pytest.mark.parametrize("bad", ["12", "it", "-5it", "1.5ep", "", "5 iterations", "5it5", None, 5])
def test_steps_parse_rejects_malformed(bad):
    with pytest.raises(ValueError) as info:
        Steps.parse(bad, "rewind")
    message = str(info.value)
    assert "`rewind`" in message
    assert repr(bad) in message


# ------------------------------------------------------------------ TrainingHparams


def test_training_defaults_are_valid():
    hp = TrainingHparams()
    assert hp.optimizer == "adam"
    assert hp.iterations("training_steps", 100) == 50000


@pytest.mark.parametrize(
    "changes, flag",
    [
        ({"learning_rate": 0.0}, "`learning_rate`"),
        ({"learning_rate": -0.1}, "`learning_rate`"),
        ({"learning_rate": float("nan")}, "`learning_rate`"),
        ({"learning_rate": float("inf")}, "`learning_rate`"),
        ({"learning_rate": "0.1"}, "`learning_rate`"),
        ({"learning_rate": True}, "`learning_rate`"),
        ({"optimizer": "sgd", "momentum": 1.0}, "`momentum`"),
        ({"optimizer": "sgd", "momentum": -0.5}, "`momentum`"),
        ({"optimizer": "sgd", "nesterov": True}, "`nesterov`"),
        ({"weight_decay": -1e-4}, "`weight_decay`"),
        ({"batch_size": 0}, "`batch_size`"),
        ({"batch_size": -60}, "`batch_size`"),
        ({"batch_size": 60.0}, "`batch_size`"),
        ({"batch_size": True}, "`batch_size`"),
        ({"lr_drop_factor": 0.0}, "`lr_drop_factor`"),
        ({"lr_drop_factor": 1.5}, "`lr_drop_factor`"),
        ({"optimizer": "rmsprop"}, "`optimizer`"),
        ({"training_steps": "0it"}, "`training_steps`"),
        ({"training_steps": "0ep"}, "`training_steps`"),
        ({"training_steps": "50000"}, "`training_steps`"),
        ({"eval_every": "0it"}, "`eval_every`"),
        ({"eval_every": "often"}, "`eval_every`"),
        ({"warmup": "-1it"}, "`warmup`"),
        ({"lr_drops": ("80ep", "1e2it")}, "`lr_drops`"),
    ],
)
def test_training_rejects_bad_values(changes, flag):
    with pytest.raises(ValueError, match=flag):
        TrainingHparams(**changes)


def test_training_error_shows_value():
    with pytest.raises(ValueError) as info:
        TrainingHparams(learning_rate=-0.25)
    assert "-0.25" in str(info.value)


def test_training_accepts_edge_values():
    hp = TrainingHparams(
        optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=0.0, batch_size=1,
        lr_drop_factor=1.0, warmup="0it",
    )
    assert hp.momentum == 0.9 and hp.batch_size == 1
    # An int learning rate is a number too.
    assert TrainingHparams(learning_rate=1).learning_rate == 1


def test_training_iterations_per_field():
    hp = TrainingHparams(training_steps="3ep", eval_every="10it", warmup="1ep")
    assert hp.iterations("training_steps", 50) == 150
    assert hp.iterations("eval_every", 50) == 10
    assert hp.iterations("warmup", 50) == 50


def test_drop_iterations_sorted_and_converted():
    hp = TrainingHparams(training_steps="200ep", lr_drops=("120ep", "500it", "80ep"))
    assert hp.drop_iterations(10) == (500, 800, 1200)
    # Another epoch length reorders: 120ep = 360 < 500it.
    assert hp.drop_iterations(3) == (240, 360, 500)
    assert TrainingHparams().drop_iterations(10) == ()


def test_lr_drops_list_becomes_sorted_tuple_of_steps():
    hp = TrainingHparams(lr_drops=["120ep", "80ep"])
    assert hp.lr_drops == (Steps(80, "ep"), Steps(120, "ep"))
    assert hp.to_dict()["lr_drops"] == ["80ep", "120ep"]


def test_check_against_accepts_consistent_lengths():
    hp = TrainingHparams(training_steps="10ep", warmup="10ep", lr_drops=("5ep", "10ep"))
    # Warmup and drops may reach the end of training exactly; the rewind must come before it.
    assert hp.iterations("training_steps", 100) == hp.iterations("warmup", 100) == 1000
    assert hp.drop_iterations(100) == (500, 1000)
    hp.check_against(steps_per_epoch=100, rewind="999it")
    hp.check_against(steps_per_epoch=100, rewind="9ep")
    hp.check_against(steps_per_epoch=100)


@pytest.mark.parametrize("rewind", ["1000it", "10ep", "2000it", "11ep"])
def test_check_against_rejects_rewind_at_or_past_budget(rewind):
    hp = TrainingHparams(training_steps="10ep")
    with pytest.raises(ValueError, match="`rewind`") as info:
        hp.check_against(steps_per_epoch=100, rewind=rewind)
    assert "1000 iterations" in str(info.value)


def test_check_against_converts_epochs_with_steps_per_epoch():
    # 2ep of rewind against a 500it budget: fine with 100 steps/epoch (200 < 500) and
    # not with 300 (600 >= 500).
    hp = TrainingHparams(training_steps="500it", warmup="1ep", lr_drops=("1ep",))
    hp.check_against(steps_per_epoch=100, rewind="2ep")
    with pytest.raises(ValueError, match="`rewind`"):
        hp.check_against(steps_per_epoch=300, rewind="2ep")
    # Warmup and drop of 1ep: fine at 500 steps/epoch, past the budget at 501.
    hp.check_against(steps_per_epoch=500)
    with pytest.raises(ValueError, match="`warmup`"):
        hp.check_against(steps_per_epoch=501)


def test_check_against_rejects_warmup_past_budget():
    hp = TrainingHparams(training_steps="500it", warmup="501it")
    with pytest.raises(ValueError, match="`warmup`"):
        hp.check_against(steps_per_epoch=10)


def test_check_against_rejects_drop_past_budget():
    hp = TrainingHparams(training_steps="5ep", lr_drops=("2ep", "6ep"))
    with pytest.raises(ValueError, match="`lr_drops`") as info:
        hp.check_against(steps_per_epoch=10)
    assert "'6ep'" in str(info.value)


# ------------------------------------------------------------------- PruningHparams


def test_pruning_defaults_are_valid():
    hp = PruningHparams()
    assert (hp.levels, hp.scope, hp.rate, str(hp.rewind), hp.controls) == (0, "layerwise", 0.2, "0it", ())


@pytest.mark.parametrize(
    "changes, flag",
    [
        ({"levels": -1}, "`levels`"),
        ({"levels": 2.0}, "`levels`"),
        ({"rate": 1.0}, "`rate`"),
        ({"rate": -0.1}, "`rate`"),
        ({"rate": 20}, "`rate`"),
        ({"rate": True}, "`rate`"),
        ({"rate_conv": 1.0}, "`rate_conv`"),
        ({"rate_conv": -0.1}, "`rate_conv`"),
        ({"rate_conv": 20}, "`rate_conv`"),
        ({"rate_output": 1.0}, "`rate_output`"),
        ({"rate_output": -0.1}, "`rate_output`"),
        ({"rate_output": 20}, "`rate_output`"),
        ({"scope": "per_layer"}, "`scope`"),
        ({"criterion": "largest"}, "`criterion`"),
        ({"retrain": "restart"}, "`retrain`"),
        ({"rewind": "500"}, "`rewind`"),
        ({"controls": ("reinit", "shuffle")}, "`controls`"),
        ({"controls": ("reinit", "reinit")}, "`controls`"),
        ({"one_shot": (0.8, 1.0)}, "`one_shot`"),
        ({"one_shot": (0.0,)}, "`one_shot`"),
        ({"one_shot": (80,)}, "`one_shot`"),
        ({"one_shot": (-0.5,)}, "`one_shot`"),
        ({"scope": "global", "rate_conv": 0.1}, "`scope`"),
        ({"scope": "global", "rate_output": 0.1}, "`scope`"),
    ],
)
def test_pruning_rejects_bad_values(changes, flag):
    with pytest.raises(ValueError, match=flag):
        PruningHparams(**changes)


def test_pruning_error_shows_value():
    with pytest.raises(ValueError) as info:
        PruningHparams(rate=20)
    assert "received 20" in str(info.value)
    with pytest.raises(ValueError) as info:
        PruningHparams(controls=("shuffle",))
    assert "'shuffle'" in str(info.value)


def test_pruning_global_scope_with_rate_conv_names_the_rate_flag():
    with pytest.raises(ValueError, match="`rate_conv`"):
        PruningHparams(scope="global", rate_conv=0.1)


def test_pruning_accepts_valid_choices_and_normalizes_sequences():
    hp = PruningHparams(
        levels=2, scope="layerwise", rate=0.0, rate_conv=0.1, rate_output=0.999,
        criterion="large_init", rewind="1ep", retrain="lr_rewind",
        controls=["random_prune", "reinit"], one_shot=["0.5", 0.9], exclude=["output"],
    )
    assert hp.controls == ("random_prune", "reinit")
    assert hp.one_shot == (0.5, 0.9)
    assert hp.exclude == ("output",)
    assert PruningHparams(scope="global", rate=0.5).scope == "global"


# -------------------------------------------------------- Model / Dataset / Experiment


@pytest.mark.parametrize("dropout", [1.0, -0.1, 20, True])
def test_model_rejects_bad_dropout(dropout):
    with pytest.raises(ValueError, match="`dropout`"):
        ModelHparams("lenet_300_100", dropout=dropout)


def test_model_accepts_dropout_in_range():
    assert ModelHparams("conv2", dropout=0.5).dropout == 0.5


@pytest.mark.parametrize("size", [-1, 1.5, True])
def test_dataset_rejects_bad_validation_size(size):
    with pytest.raises(ValueError, match="`validation_size`"):
        DatasetHparams("fashion_mnist", validation_size=size)


def test_dataset_accepts_zero_and_none_validation_size():
    assert DatasetHparams("mnist", validation_size=0).validation_size == 0
    assert DatasetHparams("mnist").validation_size is None


@pytest.mark.parametrize(
    "changes, flag",
    [({"seed": -1}, "`seed`"), ({"seed": 1.0}, "`seed`"), ({"precision": "float16"}, "`precision`")],
)
def test_experiment_rejects_bad_values(changes, flag):
    with pytest.raises(ValueError, match=flag):
        _experiment(**changes)


def test_experiment_accepts_every_precision():
    for precision in ("float32", "mixed_float16", "mixed_bfloat16"):
        assert _experiment(precision=precision).precision == precision


# --------------------------------------------------------------- dict round trip, hash


def test_to_dict_from_dict_round_trip():
    hp = _experiment(**{
        "training.lr_drops": ("80ep", "120ep"),
        "pruning.controls": ("reinit",),
        "pruning.one_shot": (0.8, 0.9),
        "pruning.exclude": ("output",),
        "dataset.validation_size": 100,
        "model.batch_norm": True,
        "seed": 7,
        "precision": "mixed_bfloat16",
    })
    data = hp.to_dict()
    assert data["training"]["learning_rate"] == 1.2e-3
    assert data["seed"] == 7
    assert ExperimentHparams.from_dict(data) == hp
    # What hparams.json holds: step strings, lists; it reads back to the same object.
    assert data["training"]["lr_drops"] == ["80ep", "120ep"]
    assert ExperimentHparams.from_dict(json.loads(json.dumps(data))) == hp
    # Through JSON, where tuples become lists, too.
    restored = ExperimentHparams.from_dict(json.loads(json.dumps(data)))
    assert restored == hp
    assert restored.digest() == hp.digest()


def test_from_dict_validates():
    data = _experiment().to_dict()
    data["training"]["learning_rate"] = 0
    with pytest.raises(ValueError, match="`learning_rate`"):
        ExperimentHparams.from_dict(data)


def test_digest_is_stable_hex_of_requested_length():
    first, second = _experiment(), _experiment()
    assert first is not second
    assert first.digest() == second.digest()
    assert len(first.digest()) == 10
    assert int(first.digest(), 16) >= 0
    assert len(first.digest(16)) == 16
    assert first.digest(16).startswith(first.digest())


@pytest.mark.parametrize(
    "changes",
    [
        {"training.learning_rate": 1e-3},
        {"training.training_steps": "600it"},
        {"seed": 1},
        {"pruning.rewind": "100it"},
        {"pruning.rate": 0.3},
        {"pruning.criterion": "random"},
        {"pruning.retrain": "finetune"},
        {"precision": "mixed_float16"},
        {"model.model": "conv2"},
        {"dataset.augment": True},
    ],
)
def test_digest_changes_with_result_relevant_fields(changes):
    assert _experiment(**changes).digest() != _experiment().digest()


@pytest.mark.parametrize(
    "changes",
    [
        {"pruning.levels": 15},
        {"pruning.controls": ("reinit", "random_prune")},
        {"pruning.one_shot": (0.5, 0.9)},
    ],
)
def test_digest_ignores_extendable_fields(changes):
    base = _experiment()
    extended = _experiment(**changes)
    assert extended != base
    assert extended.digest() == base.digest()
    assert extended.run_name() == base.run_name()


def test_digest_does_not_strip_fields_from_the_object():
    hp = _experiment(**{"pruning.controls": ("reinit",)})
    hp.digest()
    assert hp.to_dict()["pruning"]["controls"] == ["reinit"]
    assert hp.pruning.levels == 3


def test_run_name_format():
    hp = _experiment(**{"model.model": "conv2", "dataset.dataset": "cifar10"})
    assert hp.run_name() == f"conv2_cifar10_{hp.digest()}"
    other = _experiment(**{"model.model": "conv2", "dataset.dataset": "cifar10", "seed": 3})
    assert other.run_name().startswith("conv2_cifar10_")
    assert other.run_name() != hp.run_name()


# --------------------------------------------------------------------- derive_seed


def test_derive_seed_is_deterministic():
    assert derive_seed(0, "init") == derive_seed(0, "init")
    assert derive_seed(5, "reinit", 3) == derive_seed(5, "reinit", 3)


def test_derive_seed_differs_across_tags_and_seeds():
    seeds = {
        derive_seed(0, "init"),
        derive_seed(0, "data"),
        derive_seed(0, "reinit", 1),
        derive_seed(0, "reinit", 2),
        derive_seed(0, "random_prune", 1),
        derive_seed(1, "init"),
        derive_seed(0),
    }
    assert len(seeds) == 7


def test_derive_seed_range():
    for seed in (0, 1, 2**31 - 1, 2**40):
        for tags in ((), ("init",), ("replicate", 4), ("one_shot", 0.9)):
            value = derive_seed(seed, *tags)
            assert isinstance(value, int)
            assert 0 <= value < 2**31


def test_gradinit_settings_nest_and_store_flat():
    hp = _experiment(**{"model.initializer": "gradinit"})
    assert hp.model.gradinit == GradInitHparams()  # the paper's defaults
    assert hp.model.kernel_initializer == "glorot_normal"
    stored = hp.to_dict()["model"]
    assert stored["gradinit_eta"] == 0.1 and stored["base_initializer"] == "glorot_normal"
    assert "gradinit" not in stored  # hparams.json keeps the flat names of earlier versions
    assert ExperimentHparams.from_dict(json.loads(json.dumps(hp.to_dict()))) == hp
    custom = ModelHparams("lenet_300_100", initializer="gradinit",
                          gradinit=GradInitHparams(base_initializer="he_normal", eta=0.01))
    assert custom.kernel_initializer == "he_normal"
    assert ModelHparams.from_dict(custom.to_dict()) == custom


def test_gradinit_errors_name_their_own_fields():
    with pytest.raises(ValueError, match="^`eta` must be > 0"):
        GradInitHparams(eta=0.0)
    with pytest.raises(ValueError, match="`gradinit` applies only with initializer='gradinit'"):
        ModelHparams("lenet_300_100", gradinit=GradInitHparams())


def test_hparams_json_of_earlier_versions_still_reads():
    # Before GradInit was nested, hparams.json held its fields flat, null when unused.
    hp = _experiment()
    old = json.loads(json.dumps(hp.to_dict()))
    old["model"].update({name: None for name in GRADINIT_FIELDS})
    again = ExperimentHparams.from_dict(old)
    assert again == hp and again.model.gradinit is None and again.digest() == hp.digest()
