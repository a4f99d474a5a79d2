"""The run layout: artifact names that earlier runs already use, listings, and finding a
replicate from what a user passes."""

import os

import pytest

from tf_lottery import paths


def test_artifact_names_stay_those_of_existing_runs(tmp_path):
    # Runs written by earlier versions must stay readable: these names are on disk.
    run = paths.RunDir.of(tmp_path, "lenet_300_100_fashion_mnist_5e11467130")
    rel = lambda p: os.path.relpath(p, run.path)  # noqa: E731
    assert (rel(run.hparams), rel(run.flags)) == ("hparams.json", "flags.txt")
    rep = run.replicate(2)
    assert rel(rep.path) == "replicate_2" and rep.index == 2
    assert rel(rep.init_weights) == "replicate_2/init.weights.h5"
    assert rel(rep.rewind_weights) == "replicate_2/rewind.weights.h5"
    assert rel(rep.results) == "replicate_2/results.json"
    branch = rep.branch(3, "random_prune")
    assert (branch.level, branch.branch) == (3, "random_prune")
    assert [rel(p) for p in (branch.summary, branch.mask, branch.metrics,
                             branch.final_weights, branch.checkpoint,
                             branch.checkpoint_weights(700), branch.tensorboard,
                             branch.export("int8"))] == [
        f"replicate_2/level_3/random_prune/{name}" for name in (
            "summary.json", "mask.npz", "metrics.csv", "final.weights.h5",
            "checkpoint.json", "checkpoint-700.weights.h5", "tensorboard",
            "export_int8.tflite")]
    assert branch.export_report(branch.export("int8")).endswith("export_int8.json")
    assert rel(rep.one_shot(0.8).path) == "replicate_2/one_shot/sparsity_0.8000/lottery"
    assert rel(rep.analysis("noise")) == "replicate_2/analysis/noise.json"
    assert rel(rep.one_shot_mask(4)) == "replicate_2/analysis/one_shot_masks/level_4.npz"
    assert rel(rep.gradinit_scales(17)) == "replicate_2/gradinit_17.json"
    assert rel(rep.tfmot_baseline("8")) == "replicate_2/tfmot_baseline_8.json"
    tune = paths.TuneDir.of(tmp_path, "tune_x")
    assert [os.path.basename(p) for p in (tune.runs, tune.best_flags, tune.trials_csv,
                                          tune.trials_md)] == [
        "runs", "best.flags", "trials.csv", "trials.md"]
    report = paths.ReportFiles(str(tmp_path), "lenet_")
    assert os.path.basename(report.plot("accuracy")) == "lenet_accuracy.png"
    assert os.path.basename(report.markdown) == "lenet_report.md"


def test_listings_see_only_what_exists(tmp_path):
    run = paths.RunDir(str(tmp_path / "run"))
    assert run.replicates() == [] and not run.is_run()
    rep = run.replicate(0)
    assert rep.levels() == [] and rep.one_shot_targets() == [] and not rep.is_replicate()
    for level, branch in ((0, "lottery"), (2, "lottery"), (2, "reinit"), (10, "lottery")):
        os.makedirs(rep.branch(level, branch).path)
    os.makedirs(rep.one_shot(0.9).path)
    os.makedirs(rep.one_shot(0.5).path)
    open(os.path.join(rep.path, "level_notes.txt"), "w").close()  # not a level
    open(rep.branch(2, "lottery").summary, "w").close()
    open(rep.tfmot_baseline(), "w").close()
    open(rep.tfmot_baseline("3"), "w").close()
    os.makedirs(run.replicate(3).path)
    assert rep.levels() == [0, 2, 10]  # numeric order, files ignored
    assert [b.branch for b in rep.branches(2)] == ["lottery", "reinit"]
    assert rep.finished_levels() == [2] and rep.finished_levels("reinit") == []
    assert rep.one_shot_targets() == [0.5, 0.9]
    assert [os.path.basename(p) for p in rep.tfmot_baselines()] == [
        "tfmot_baseline.json", "tfmot_baseline_3.json"]
    assert [r.index for r in run.replicates()] == [0, 3]
    assert rep.is_replicate() and not rep.branch(2, "lottery").is_finished()
    for path in (rep.branch(2, "lottery").final_weights, rep.branch(2, "lottery").mask):
        open(path, "w").close()
    assert rep.branch(2, "lottery").is_finished()


def test_reinit_draws_have_their_own_directories_and_listing(tmp_path):
    rep = paths.ReplicateDir(str(tmp_path / "replicate_0"), 0)
    rel = lambda b: os.path.relpath(b.path, rep.path)  # noqa: E731
    # Draw 0 is the reinit branch as it always was; further draws are reinit_<d>.
    assert rel(rep.branch(1, "reinit")) == rel(rep.branch(1, "reinit", 0)) == "level_1/reinit"
    assert rel(rep.branch(1, "reinit", 2)) == "level_1/reinit_2"
    assert (rep.branch(1, "reinit", 2).branch, rep.branch(1, "reinit", 2).draw) == ("reinit", 2)
    assert [paths.branch_dir_name("reinit", d) for d in (0, 1, 12)] == [
        "reinit", "reinit_1", "reinit_12"]
    for name, parsed in (("reinit_3", ("reinit", 3)), ("reinit", ("reinit", 0)),
                         ("lottery", ("lottery", 0)), ("reinit_0", ("reinit_0", 0)),
                         ("random_prune", ("random_prune", 0)), ("reinit_x", ("reinit_x", 0))):
        assert paths.parse_branch_dir_name(name) == parsed, name
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="`draw` must be an integer >= 0"):
            paths.branch_dir_name("reinit", bad)
    with pytest.raises(ValueError, match="`draw` 1 applies only to"):
        rep.branch(1, "lottery", 1)
    assert rep.draws(1) == []
    for draw in (2, 0, 1):
        os.makedirs(rep.branch(1, "reinit", draw).path)
    os.makedirs(rep.branch(1, "lottery").path)
    os.makedirs(rep.branch(2, "reinit").path)
    assert rep.draws(1) == [0, 1, 2] and rep.draws(2) == [0] and rep.draws(1, "lottery") == [0]
    assert [(b.branch, b.draw, os.path.basename(b.path)) for b in rep.branches(1)] == [
        ("lottery", 0, "lottery"), ("reinit", 0, "reinit"), ("reinit", 1, "reinit_1"),
        ("reinit", 2, "reinit_2")]


def test_resolve_replicate_from_a_run_or_a_replicate_directory(tmp_path):
    run = paths.RunDir(str(tmp_path / "run"))
    os.makedirs(run.replicate(0).path)
    os.makedirs(run.replicate(1).path)
    open(run.hparams, "w").close()
    found_run, found = paths.resolve_replicate(run.path)
    assert (found_run.path, found.index) == (os.path.abspath(run.path), 0)
    assert paths.resolve_replicate(run.path, 1)[1].index == 1
    assert paths.resolve_replicate(run.replicate(1).path)[1].index == 1
    assert paths.resolve_replicate(run.replicate(1).path, 1)[0].path == run.path


@pytest.mark.parametrize("where, replicate, message", [
    ("nowhere", None, "`run_dir` must be an existing run directory"),
    ("plain", None, "is not a run directory"),
    ("run", 5, "`replicate` 5 has no directory"),
    ("run", -1, "`replicate` must be an integer >= 0"),
    ("run", True, "`replicate` must be an integer >= 0"),
    ("run/replicate_0", 1, "`replicate` 1 disagrees with `run_dir`"),
])
def test_resolve_replicate_names_the_argument_at_fault(tmp_path, where, replicate, message):
    run = paths.RunDir(str(tmp_path / "run"))
    os.makedirs(run.replicate(0).path)
    open(run.hparams, "w").close()
    os.makedirs(tmp_path / "plain")
    with pytest.raises(ValueError, match=message) as info:
        paths.resolve_replicate(str(tmp_path / where), replicate)
    assert "--" not in str(info.value)
