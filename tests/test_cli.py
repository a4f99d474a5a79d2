"""The command-line package and the package's shape: run names of the presets, the public
API, who reads absl flags, flag/argument names in errors, and every command's entry."""

import ast
import glob
import importlib
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tf_lottery")

# The run-directory name of every preset. A change here moves users' runs to new
# directories (their finished levels would no longer be found): never update it as part
# of a refactor.
PRESET_RUN_NAMES = {
    "conv2.flags": "conv2_cifar10_7f5284311d",
    "conv2_dropout.flags": "conv2_cifar10_b0e46fe3e2",
    "conv4.flags": "conv4_cifar10_ff73b4adbf",
    "conv4_dropout.flags": "conv4_cifar10_45d9c97988",
    "conv6.flags": "conv6_cifar10_ca671c1e39",
    "conv6_dropout.flags": "conv6_cifar10_569c27cfef",
    "lstm_fashion.flags": "lstm_fashion_mnist_45af80be83",
    "lenet300_100.flags": "lenet_300_100_mnist_8bfed9f676",
    "lenet300_100_fashion.flags": "lenet_300_100_fashion_mnist_69d67b267c",
    "lenet300_100_initializers.flags": "lenet_300_100_fashion_mnist_7aaee6fa17",
    "quickstart.flags": "lenet_300_100_fashion_mnist_5e11467130",
    "resnet20.flags": "resnet20_cifar10_465bdb8f98",
    "vgg19.flags": "vgg19_cifar10_008a68b4f3",
    "vgg19_gradinit.flags": "vgg19_cifar10_c55b4eba8f",
    "vit_fashion.flags": "vit_tiny_fashion_mnist_9caef43b52",
}


@pytest.fixture
def experiment_flags():
    """The experiment's absl flags, parsed by the test and reset afterwards."""
    from tf_lottery.cli import experiment_flags as ef

    def parse(*args):
        ef.FLAGS.unparse_flags()
        ef.FLAGS(["tf-lottery", *args])
        return ef

    yield parse
    ef.FLAGS.unparse_flags()


def test_every_preset_keeps_its_run_directory_name(experiment_flags):
    presets = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs",
                                                                          "*.flags")))
    assert presets == sorted(PRESET_RUN_NAMES), "pin the run name of every new preset here"
    for preset, name in PRESET_RUN_NAMES.items():
        ef = experiment_flags(f"--flagfile={os.path.join(ROOT, 'configs', preset)}")
        assert ef.hparams().run_name() == name, preset


def test_hparams_json_round_trips_every_preset(experiment_flags):
    from tf_lottery.hparams import ExperimentHparams

    for preset in PRESET_RUN_NAMES:
        hp = experiment_flags(f"--flagfile={os.path.join(ROOT, 'configs', preset)}").hparams()
        again = ExperimentHparams.from_dict(hp.to_dict())
        assert again == hp and again.run_name() == hp.run_name()


def test_a_preset_value_can_be_unset_after_the_flagfile(experiment_flags):
    from tf_lottery.cli.errors import UsageError

    quickstart = f"--flagfile={os.path.join(ROOT, 'configs', 'quickstart.flags')}"
    ef = experiment_flags(quickstart, "--pruning=global")
    with pytest.raises(UsageError, match="--prune_rate_output=none") as info:
        ef.hparams()
    assert "--pruning is global" in str(info.value)  # the flag, not the argument `scope`
    hp = experiment_flags(quickstart, "--pruning=global", "--prune_rate_output=none").hparams()
    assert hp.pruning.scope == "global" and hp.pruning.rate_output is None
    assert "prune_rate_output" not in experiment_flags(
        quickstart, "--prune_rate_output=none").flagfile_text()


def test_library_errors_name_arguments_and_the_cli_names_flags():
    from tf_lottery.cli.errors import UsageError, translate, usage_errors
    from tf_lottery.cli.experiment_flags import FLAG_NAMES
    from tf_lottery.hparams import ArgumentError, PruningHparams

    with pytest.raises(ArgumentError) as info:
        PruningHparams(rate=1.5)
    assert info.value.argument == "rate" and "--" not in str(info.value)
    assert str(info.value).startswith("`rate` must be")
    with pytest.raises(UsageError, match=r"^--prune_rate must be .*received 1\.5\.$"):
        with usage_errors(FLAG_NAMES):
            PruningHparams(rate=1.5)
    assert translate("`run_dirs` is empty", {"run_dirs": "RUN_DIR"}) == "RUN_DIR is empty"
    assert translate("`other` stays", FLAG_NAMES) == "`other` stays"


def _modules():
    for path in sorted(glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True)):
        rel = os.path.relpath(path, ROOT)
        with open(path, encoding="utf-8") as f:
            yield rel, ast.parse(f.read(), rel)


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


# The program's entry (`python -m tf_lottery.main`); the other commands run as
# `python -m tf_lottery.cli COMMAND` (`python -m tf_lottery.cluster` runs its `cluster`).
ENTRY_POINTS = {"tf_lottery/main.py"}


def test_only_the_cli_package_reads_absl_flags_and_nothing_imports_it():
    readers, importers, cli_readers = [], [], []
    for rel, tree in _modules():
        inside = rel.startswith(os.path.join("tf_lottery", "cli") + os.sep)
        names = set(_imports(tree))
        if "absl.flags" in names:
            (cli_readers if inside else readers).append(rel)
        # Neither the command-line layer nor the entry that runs it is imported by a
        # library module (nor by the command-line layer itself, for the entry).
        if rel not in ENTRY_POINTS and (
                any(n == "tf_lottery.main" or n.startswith("tf_lottery.main.") for n in names)
                or (not inside and any(n.startswith("tf_lottery.cli") for n in names))):
            importers.append(rel)
    assert readers == [] and importers == []
    # The scan does see imports: the commands read flags, the entry imports them.
    assert "tf_lottery/cli/experiment_flags.py" in cli_readers
    assert any(n.startswith("tf_lottery.cli") for n in _imports(
        dict(_modules())["tf_lottery/main.py"]))


def test_no_module_grows_past_600_lines():
    sizes = {rel: len(open(os.path.join(ROOT, rel), encoding="utf-8").read().splitlines())
             for rel, _ in _modules()}
    assert {rel: n for rel, n in sizes.items() if n > 600} == {}


def test_every_public_name_imports():
    import tf_lottery

    packages = ["tf_lottery"] + sorted(
        "tf_lottery." + os.path.relpath(os.path.dirname(p), PACKAGE).replace(os.sep, ".")
        for p in glob.glob(os.path.join(PACKAGE, "*", "__init__.py")))
    assert "tf_lottery.cli" in packages
    checked = 0
    for name in packages:
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", []):
            assert getattr(module, public) is not None, f"{name}.{public}"
            checked += 1
    assert checked >= len(tf_lottery.__all__)


@pytest.mark.parametrize("command, usage", [
    (["tf_lottery.main"], "--flagfile"),
    (["tf_lottery.cli", "experiment"], "--flagfile"),
    (["tf_lottery.cli", "analyze"], "Analyses of a run"),
    (["tf_lottery.cli", "report", "analyze"], "Analyses of a run"),  # the old spelling
    (["tf_lottery.cli", "report"], "Plots and tables"),
    (["tf_lottery.cli", "export"], "Exports a trained ticket"),
    (["tf_lottery.cli", "tune"], "--max_trials"),
    (["tf_lottery.cluster"], "--workers"),
    (["tf_lottery.cli", "cluster"], "--workers"),
    (["tf_lottery.cli"], "COMMAND"),
])
def test_every_command_answers_help(command, usage):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run([sys.executable, "-m", *command, "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert usage in run.stdout
