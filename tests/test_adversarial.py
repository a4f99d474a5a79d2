"""Adversarial robustness of tickets: FGSM and PGD on a hand-made linear model and on a
tiny synthetic run, the command line, resuming and the report."""

import json
import os
import shutil
import subprocess
import sys
import types

import keras
import numpy as np
import pytest

from tf_lottery import analysis, data, experiment
from tf_lottery.analysis import adversarial
from tf_lottery.hparams import (DatasetHparams, ExperimentHparams, ModelHparams,
                                PruningHparams, TrainingHparams)
from tf_lottery.report import make_report
from tf_lottery.training import Runtime

pytestmark = pytest.mark.usefixtures("clean_keras")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = data.load("synthetic")
HP = ExperimentHparams(
    model=ModelHparams("lenet_300_100"),
    dataset=DatasetHparams("synthetic"),
    training=TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="60it",
                             eval_every="30it"),
    pruning=PruningHparams(levels=1, rate=0.5, rate_output=0.25, controls=("reinit",)),
)
RUNTIME = Runtime(jit_compile=False, deterministic=True)
W = np.array([1.0, 2.0, 3.0, -0.5], np.float32)  # signs + + + -


def linear_model():
    """Logits ``[0, w . x]`` of a 2x2x1 input: d loss / d x = (p_1 - [y == 1]) * w, whose
    sign is ``+sign(w)`` for label 0 and ``-sign(w)`` for label 1."""
    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    model.layers[-1].set_weights([np.stack([np.zeros(4, np.float32), W], axis=1),
                                  np.zeros(2, np.float32)])
    return model


IDENTITY = adversarial.InputSpace(np.zeros(1, np.float32), np.ones(1, np.float32))
# Pixels p in [0, 1] seen as x = (p - 0.25) / 0.5: eps 0.1 is 0.2, range [-0.5, 1.5].
STANDARDIZED = adversarial.InputSpace(np.array([0.25], np.float32),
                                      np.array([0.5], np.float32))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run: dense level 0, level 1 ticket and its reinit control."""
    run_root = tmp_path_factory.mktemp("runs")
    experiment.run_experiment(HP, run_root, replicate=0, dataset=DATA, runtime=RUNTIME)
    return run_root / HP.run_name()


# ---------------------------------------------------------------- pure functions


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fgsm_on_a_linear_model_is_epsilon_times_the_sign_of_w(jit_compile):
    x = np.full((2, 2, 2, 1), 0.5, np.float32)
    y = np.array([0, 1], np.int32)
    adv = adversarial.fgsm(linear_model(), x, y, 0.1, IDENTITY, jit_compile=jit_compile)
    np.testing.assert_allclose(adv[0].ravel(), [0.6, 0.6, 0.6, 0.4], atol=1e-6)  # +sign(w)
    np.testing.assert_allclose(adv[1].ravel(), [0.4, 0.4, 0.4, 0.6], atol=1e-6)  # -sign(w)


def test_fgsm_converts_epsilon_and_the_valid_range_to_standardized_inputs():
    pixels = np.array([0.5, 0.98, 0.02, 0.5], np.float32)
    x = ((pixels - 0.25) / 0.5).reshape(1, 2, 2, 1)       # [0.5, 1.46, -0.46, 0.5]
    adv = adversarial.fgsm(linear_model(), x, np.array([0]), 0.1, STANDARDIZED,
                           jit_compile=False)
    # Pixels + 0.1 * sign(w) = [0.6, 1.08 -> 1.0 (clipped), 0.12, 0.4], standardized.
    np.testing.assert_allclose(adv.ravel(), [0.7, 1.5, -0.26, 0.3], atol=1e-6)
    np.testing.assert_allclose(STANDARDIZED.epsilon(0.1), [0.2])
    np.testing.assert_allclose([STANDARDIZED.low, STANDARDIZED.high], [[-0.5], [1.5]])


def test_input_space_follows_the_datasets_preprocessing():
    scaled = adversarial.input_space(DATA)             # synthetic: pixels only scaled
    np.testing.assert_array_equal([scaled.mean, scaled.std], [[0.0], [1.0]])
    cifar_like = types.SimpleNamespace(input_shape=(4, 4, 3),
                                       channel_mean=np.array([0.5, 0.4, 0.3], np.float32),
                                       channel_std=np.array([0.25, 0.2, 0.1], np.float32))
    space = adversarial.input_space(cifar_like)
    np.testing.assert_allclose(space.epsilon(0.01), [0.04, 0.05, 0.1], rtol=1e-6)
    np.testing.assert_allclose(space.low, [-2.0, -2.0, -3.0], rtol=1e-6)
    np.testing.assert_allclose(space.high, [2.0, 3.0, 7.0], rtol=1e-6)


def test_pgd_stays_in_the_ball_and_reaches_the_fgsm_corner_of_a_linear_model():
    x = np.full((3, 2, 2, 1), 0.5, np.float32)
    y = np.array([0, 1, 0], np.int32)
    model = linear_model()
    fgsm = adversarial.fgsm(model, x, y, 0.1, IDENTITY, jit_compile=False)
    one = adversarial.pgd(model, x, y, 0.1, IDENTITY, steps=1, step_size=0.25,
                          random_start=True, seed=3, jit_compile=False)
    assert np.abs(one - x).max() <= 0.1 + 1e-6 and not np.allclose(one, fgsm)
    # The gradient's sign is constant for a linear model: 10 steps of 0.25 eps from any
    # start in the ball end at the corner FGSM jumps to.
    ten = adversarial.pgd(model, x, y, 0.1, IDENTITY, steps=10, step_size=0.25,
                          random_start=True, seed=3, jit_compile=False)
    np.testing.assert_allclose(ten, fgsm, atol=1e-6)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(attack="fgsm", epsilon=0.0), "epsilons"),
    (dict(attack="fgsm", epsilon=1.5), "epsilons"),
    (dict(attack="pgd", epsilon=0.1, steps=0), "pgd_steps"),
    (dict(attack="pgd", epsilon=0.1, step_size=-1.0), "pgd_step_size"),
    (dict(attack="cw", epsilon=0.1), "attack"),
])
def test_bad_attack_arguments_name_the_argument(kwargs, argument):
    x = np.full((1, 2, 2, 1), 0.5, np.float32)
    with pytest.raises(ValueError, match=f"`{argument}`") as info:
        adversarial.adversarial_accuracy(linear_model(), x, np.array([0]), IDENTITY,
                                         jit_compile=False, **kwargs)
    assert info.value.argument == argument


# ----------------------------------------------------------------------- on a run


def _accuracy(result):
    return {tuple(e["key"][k] for k in ("level", "branch", "attack", "epsilon")):
            e["accuracy"] for e in result["entries"]}


def test_pgd_is_at_most_fgsm_at_most_clean_on_a_trained_run(run, monkeypatch):
    result = analysis.run_adversarial(run, epsilons=[0.05, 0.2], pgd_steps=10,
                                      examples=300, runtime=RUNTIME)
    path = run / "replicate_0" / "analysis" / "adversarial.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(result))
    acc = _accuracy(result)
    networks = {(0, "lottery"), (1, "lottery"), (1, "reinit")}
    assert {(k[0], k[1]) for k in acc} == networks
    assert len(acc) == 3 * 5                      # clean, FGSM and PGD at two epsilons
    for level, branch in networks:
        clean = acc[(level, branch, "none", 0.0)]
        assert clean > 0.5, (level, branch, clean)  # trained well above chance (0.1)
        for eps in (0.05, 0.2):
            fgsm, pgd = acc[(level, branch, "fgsm", eps)], acc[(level, branch, "pgd", eps)]
            assert pgd <= fgsm <= clean, (level, branch, eps, clean, fgsm, pgd)
        assert acc[(level, branch, "pgd", 0.2)] < clean
    for entry in result["entries"]:
        assert entry["key"]["examples"] == 300
        summary = json.loads((run / "replicate_0" / f"level_{entry['key']['level']}"
                              / entry["key"]["branch"] / "summary.json").read_text())
        assert entry["weights_remaining"] == pytest.approx(summary["weights_remaining"])
        assert entry["epsilon_input"] == [pytest.approx(entry["key"]["epsilon"])]
        assert entry["valid_range_input"] == [[0.0], [1.0]]
    # A rerun finds every entry done and attacks nothing.
    monkeypatch.setattr(adversarial, "adversarial_accuracy",
                        lambda *a, **k: pytest.fail("finished entries were recomputed"))
    again = analysis.run_adversarial(run, epsilons=[0.2, 0.05], examples=300,
                                     runtime=RUNTIME)
    assert again["entries"] == result["entries"]


@pytest.mark.parametrize("kwargs, argument", [
    (dict(levels=[5]), "levels"),
    (dict(levels=[-1]), "levels"),
    (dict(branches=["nope"]), "branches"),
    (dict(branches=["random_prune"]), "branches"),   # the run has no such control
    (dict(epsilons=[]), "epsilons"),
    (dict(epsilons=[0.1, 2.0]), "epsilons"),
    (dict(pgd_steps=0), "pgd_steps"),
    (dict(pgd_step_size=0.0), "pgd_step_size"),
    (dict(random_start="yes"), "random_start"),
    (dict(examples=0), "examples"),
])
def test_bad_run_arguments_fail_before_any_attack(run, kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`") as info:
        analysis.run_adversarial(run, check_only=True, **kwargs)
    assert info.value.argument == argument


def test_command_line_writes_the_json_and_names_flags_in_errors(run, tmp_path, capsys):
    copy = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    shutil.copytree(run, copy)
    done = subprocess.run(
        [sys.executable, "-m", "tf_lottery.cli", "analyze", f"--run_dir={copy}",
         "--analysis=adversarial", "--levels=0,1", "--branches=lottery,reinit",
         "--epsilons=0.1", "--pgd_steps=3", "--pgd_step_size=0.5", "--nopgd_random_start",
         "--adversarial_examples=100", "--nojit_compile"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    written = json.loads((copy / "replicate_0" / "analysis" / "adversarial.json").read_text())
    keys = [e["key"] for e in written["entries"] if e["key"]["examples"] == 100]
    assert len(keys) == 3 * 3                    # 3 networks: clean, FGSM, PGD at 0.1
    assert {"level": 1, "branch": "reinit", "attack": "pgd", "epsilon": 0.1, "examples": 100,
            "pgd_steps": 3, "pgd_step_size": 0.5, "random_start": False} in keys
    assert "level=1, branch=reinit, attack=pgd, epsilon=0.1, examples=100, pgd_steps=3, " \
           "pgd_step_size=0.5, random_start=False: accuracy " in done.stdout

    from tf_lottery.cli import analyze as analyze_cli

    for args, message in [
        (("--epsilons=a",), "error: --epsilons must list numbers"),
        (("--epsilons=0",), "error: --epsilons must list numbers in (0, 1]"),
        (("--pgd_steps=0",), "error: --pgd_steps must be an integer >= 1"),
        (("--adversarial_examples=0",), "error: --adversarial_examples must be an integer"),
        (("--branches=random_prune",), "error: --branches ['random_prune'] finished at"),
        (("--nopgd_random_start", "--levels=3"), "error: --levels 3 has no finished branch"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            analyze_cli.run(["tf-lottery-analyze", f"--run_dir={copy}",
                             "--analysis=adversarial", *args])
        assert exit_info.value.code == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(message), (args, err)


def test_report_shows_the_table_and_the_plot(run, tmp_path):
    analysis.run_adversarial(run, epsilons=[0.05, 0.2], examples=300, runtime=RUNTIME)
    written = make_report([run], tmp_path)
    assert os.path.basename(written["adversarial"]) == "adversarial.png"
    assert os.path.getsize(written["adversarial"]) > 10_000
    md = (tmp_path / "report.md").read_text()
    assert "![Accuracy under FGSM and PGD vs weights remaining](adversarial.png)" in md
    section = md[md.index("### Adversarial robustness"):]
    assert "| level | network | remaining % | clean | FGSM 0.05 | FGSM 0.2 | PGD-10 0.05 | " \
           "PGD-10 0.2 |" in section
    result = json.loads((run / "replicate_0" / "analysis" / "adversarial.json").read_text())
    acc = _accuracy(result)
    ticket = next(e for e in result["entries"] if e["key"]["level"] == 1)
    row = (f"| 1 | reinit | {100 * ticket['weights_remaining']:.2f} | "
           f"{acc[(1, 'reinit', 'none', 0.0)]:.4f} | {acc[(1, 'reinit', 'fgsm', 0.05)]:.4f} |")
    assert row in section
    assert "| 0 | dense | 100.00 |" in section
