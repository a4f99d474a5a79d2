"""Reports from run directories: plots, tables equal to the summaries, unfinished runs, CLI."""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest

from tf_lottery import experiment, files, paths, report, training
from tf_lottery.report import figures, plots
from tf_lottery.hparams import (DatasetHparams, ExperimentHparams, ModelHparams,
                                PruningHparams, TrainingHparams)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HP = ExperimentHparams(
    model=ModelHparams("lenet_300_100"),
    dataset=DatasetHparams("synthetic"),
    training=TrainingHparams(learning_rate=2e-3, batch_size=32, training_steps="200it",
                             eval_every="50it"),
    pruning=PruningHparams(levels=2, rate=0.5, rate_output=0.25,
                           controls=("reinit", "random_prune"), one_shot=(0.6,)),
)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run (replicate 0), written by experiment.run_experiment."""
    run_root = tmp_path_factory.mktemp("runs")
    experiment.run_experiment(
        HP, run_root, replicate=0,
        runtime=training.Runtime(steps_per_execution=50, jit_compile=False))
    return run_root / HP.run_name()


def summaries(replicate):
    """{(level, branch): summary.json dict} of every finished branch of a replicate."""
    rep = paths.ReplicateDir(str(replicate))
    return {(level, b.branch): files.read_json(b.summary)
            for level in rep.levels() for b in rep.branches(level)
            if os.path.exists(b.summary)}


def table_rows(markdown):
    """Rows of the 'Levels and branches' table: {(level, branch): cells}."""
    section = markdown.split("### Levels and branches")[1].split("\n\n")[2]
    rows = {}
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[(cells[1], cells[2])] = cells
    return rows


def test_report_writes_plots_and_tables_equal_to_the_summaries(run, tmp_path):
    written = report.make_report([run], tmp_path, levels=[0, 2])
    for kind in ("accuracy", "early_stop", "learning_curves", "layer_sparsity", "one_shot"):
        with open(written[kind], "rb") as f:
            content = f.read()
        assert content.startswith(PNG) and len(content) > 10_000, kind
    assert "instability" not in written  # no analysis ran: no empty plot
    markdown = (tmp_path / "report.md").read_text()
    for kind in ("accuracy", "early_stop", "learning_curves", "layer_sparsity", "one_shot"):
        assert f"]({kind}.png)" in markdown
    rows = table_rows(markdown)
    expected = summaries(run / "replicate_0")
    one_shot = json.loads(
        (run / "replicate_0" / "one_shot" / "sparsity_0.6000" / "lottery" / "summary.json")
        .read_text())
    shown = {(str(level), branch): s for (level, branch), s in expected.items()}
    shown[("one-shot 0.6000", "one_shot")] = one_shot
    assert set(rows) == set(shown) and len(rows) == 8
    for key, s in shown.items():
        cells = rows[key]
        assert cells[3] == f"{100 * (1 - s['sparsity']):.2f}"
        assert cells[4] == f"{s['sparsity']:.4f}"
        assert cells[5] == str(s["early_stop_iteration"])
        assert cells[6] == f"{s['early_stop_test_accuracy']:.4f}"
        assert cells[7] == f"{s['final_test_accuracy']:.4f}"
    # Full precision in report.json, hyperparameters in report.md.
    saved = json.loads((tmp_path / "report.json").read_text())["runs"][0]["replicates"][0]
    assert saved["levels"]["2"]["random_prune"] == expected[(2, "random_prune")]
    assert "| pruning.rate_output | `0.25` |" in markdown
    # Per-layer table: level 2 keeps (1 - 0.5)^2 of fc1 and (1 - 0.25)^2 of the output.
    layer_line = next(line for line in markdown.splitlines() if line.startswith("| 2 | 0.7"))
    cells = layer_line.strip("|").split("|")
    assert float(cells[1]) == pytest.approx(0.75, abs=1e-3)   # fc1/kernel
    assert float(cells[3]) == pytest.approx(1 - 0.75 ** 2, abs=1e-2)  # output/kernel


def test_learning_curve_table_reads_metrics_csv(run, tmp_path):
    report.make_report([run], tmp_path, levels=[1])
    markdown = (tmp_path / "report.md").read_text()
    section = markdown.split("### Learning curves (test accuracy)")[1]
    header = next(line for line in section.splitlines() if line.startswith("| level"))
    iterations = [int(c.strip()[3:]) for c in header.strip("|").split("|")[3:]]
    line = next(line for line in section.splitlines() if line.startswith("| 1 | reinit"))
    values = [float(c) for c in line.strip("|").split("|")[3:]]
    csv = {r["iteration"]: r["test_accuracy"] for r in
           files.read_csv(run / "replicate_0" / "level_1" / "reinit" / "metrics.csv")}
    assert iterations == sorted(csv)  # 5 evaluations (0..200 every 50): all shown
    assert values == [round(csv[i], 4) for i in iterations]


def test_unfinished_run_reports_what_exists(run, tmp_path):
    partial = tmp_path / "run"
    shutil.copytree(run, partial)
    replicate = partial / "replicate_0"
    branch = replicate / "level_2" / "reinit"
    (branch / "summary.json").unlink()
    (replicate / "results.json").unlink()
    files.atomic_write_json(branch / "checkpoint.json", {"step": 150})
    shutil.rmtree(replicate / "level_2" / "random_prune")
    written = report.make_report([replicate], tmp_path / "out")
    assert os.path.getsize(written["accuracy"]) > 10_000
    markdown = (tmp_path / "out" / "report.md").read_text()
    rows = table_rows(markdown)
    assert ("2", "lottery") in rows and ("2", "reinit") not in rows
    assert ("2", "random_prune") not in rows and ("1", "random_prune") in rows
    assert "`replicate_0` level 2 reinit: checkpoint at iteration 150" in markdown
    aggregated = report.aggregate(report.load_runs([replicate])[0])
    assert {(r["branch"], r["level"]) for r in aggregated if r["branch"] == "reinit"} == {
        ("reinit", 1)}


def test_replicates_are_aggregated_with_min_and_max(run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(run, root)
    shutil.copytree(root / "replicate_0", root / "replicate_1")
    for r, (accuracy, iteration) in enumerate([(0.5, 100), (0.7, 200)]):
        path = root / f"replicate_{r}" / "level_1" / "lottery" / "summary.json"
        summary = json.loads(path.read_text())
        summary.update(early_stop_test_accuracy=accuracy, early_stop_iteration=iteration)
        path.write_text(json.dumps(summary))
    (row,) = [r for r in report.aggregate(report.load_runs(root)[0])
              if r["branch"] == "lottery" and r["level"] == 1]
    assert row["n"] == 2
    assert row["early_stop_test_accuracy"] == {"mean": pytest.approx(0.6), "min": 0.5,
                                               "max": 0.7, "n": 2}
    assert row["early_stop_iteration"]["mean"] == 150
    markdown = report.make_report([root], tmp_path / "md")["markdown"]
    assert "| 1 | lottery | 2 |" in open(markdown).read()
    assert "0.6000 [0.5000, 0.7000]" in open(markdown).read()


def test_tfmot_baseline_is_read_when_present(run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(run, root)
    # tools/compare_tfmot.py --output=...: one file per ticket level, any suffix.
    (root / "replicate_0" / "tfmot_baseline.json").write_text(json.dumps(
        {"level": 2, "gmp": {"sparsity": 0.74, "test_accuracy": 0.91}}))
    (root / "replicate_0" / "tfmot_baseline_level1.json").write_text(json.dumps(
        {"level": 1, "gmp": {"sparsity": 0.49, "test_accuracy": 0.93}}))
    loaded = report.load_runs(root)[0]
    rows = {r["level"]: r for r in report.aggregate(loaded) if r["branch"] == "tfmot_gmp"}
    assert rows[2]["final_test_accuracy"]["mean"] == 0.91
    assert rows[2]["weights_remaining"] == pytest.approx(0.26)
    assert rows[2]["early_stop_test_accuracy"]["mean"] is None
    assert rows[1]["final_test_accuracy"]["mean"] == 0.93
    # Drawn in accuracy.png (final accuracy: tfmot has no early stopping), not in
    # early_stop.png.
    (line,) = [s for s in plots.branch_series([loaded], "early_stop_test_accuracy")
               if s["branch"] == "tfmot_gmp"]
    assert line["x"] == [pytest.approx(51.0), pytest.approx(26.0)]
    assert line["mean"] == [0.93, 0.91]
    assert "tfmot_gmp" not in {
        s["branch"] for s in plots.branch_series([loaded], "early_stop_iteration")}
    markdown = open(report.make_report([root], tmp_path / "out")["markdown"]).read()
    assert "| replicate_0 | 2 | 26.00 | 0.7400 | 0.9100 |" in markdown
    assert "| replicate_0 | 1 | 51.00 | 0.4900 | 0.9300 |" in markdown


def test_accuracy_lines_follow_the_summaries(run):
    """Every branch's line: weights remaining (%) decreasing, test accuracy at early
    stopping from summary.json; the controls start at the dense network."""
    loaded = report.load_runs([run])
    expected = summaries(run / "replicate_0")
    lines = {s["branch"]: s for s in plots.branch_series(loaded, "early_stop_test_accuracy")}
    assert set(lines) == {"lottery", "reinit", "random_prune", "one_shot"}
    for branch in ("lottery", "reinit", "random_prune"):
        levels = [0, 1, 2] if branch == "lottery" else [(0, "lottery"), 1, 2]
        keys = [lv if isinstance(lv, tuple) else (lv, branch) for lv in levels]
        assert lines[branch]["x"] == [100 * expected[k]["weights_remaining"] for k in keys]
        assert lines[branch]["mean"] == [expected[k]["early_stop_test_accuracy"] for k in keys]
        assert lines[branch]["x"] == sorted(lines[branch]["x"], reverse=True)
    its = {s["branch"]: s for s in plots.branch_series(loaded, "early_stop_iteration")}
    assert its["lottery"]["mean"] == [expected[(k, "lottery")]["early_stop_iteration"]
                                      for k in (0, 1, 2)]


def test_several_runs_share_the_plots_with_distinct_labels(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    hp = json.loads((other / "hparams.json").read_text())
    hp["training"]["learning_rate"] = 0.001
    (other / "hparams.json").write_text(json.dumps(hp))
    loaded = report.load_runs([run, other])
    assert [r.label for r in loaded] == ["learning_rate=0.002", "learning_rate=0.001"]
    written = report.make_report([run, other], tmp_path / "out")
    assert written["accuracy"] and "## learning_rate=0.001" in open(written["markdown"]).read()


def test_small_helpers():
    assert report.default_levels(range(11)) == [0, 3, 7, 10]
    assert report.default_levels([0, 1]) == [0, 1]
    assert figures.smooth([0, 0, 3, 0, 0], 3) == [0, 1, 1, 1, 0]
    assert figures.smooth([4, 0, 0], 3) == [2, 4 / 3, 0]
    # 501 evaluations (50K iterations every 100): 9; short curves are not flattened.
    assert [figures.window(n, 9) for n in (501, 90, 70, 50, 16)] == [9, 9, 7, 5, 1]
    figure, axes = figures.figure()
    figures.remaining_axis(axes[0, 0], [100, 80, 64.1, 51.3, 50.0])
    left, right = axes[0, 0].get_xlim()
    assert left > right and axes[0, 0].get_xscale() == "log"  # sparser to the right
    assert [t.get_text() for t in axes[0, 0].get_xticklabels()] == ["100", "80", "64.1", "51.3"]


def test_bad_arguments_raise_before_writing(run, tmp_path):
    out = tmp_path / "out"
    cases = [
        ([tmp_path / "missing"], {}, "does not exist"),
        ([tmp_path], {}, "is not a run directory"),
        ([run], {"levels": [-1]}, "integers >= 0"),
        ([run], {"levels": [9]}, "finished levels: [0, 1, 2]"),
        ([run], {"prefix": "a/b"}, "file-name prefix"),
    ]
    for run_dirs, kwargs, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            report.make_report(run_dirs, out, **kwargs)
    assert not out.exists()
    empty = tmp_path / "empty" / "replicate_0"
    (empty / "level_0" / "lottery").mkdir(parents=True)
    with pytest.raises(ValueError, match="no finished branch yet"):
        report.load_runs([empty])


def cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def run_report(*args):
    """``tf_lottery.cli.report.run`` (``tf-lottery-report``) in-process: its exit code."""
    from tf_lottery.cli import report as report_cli

    with pytest.raises(SystemExit) as exit_info:
        report_cli.run(["tf-lottery-report", *map(str, args)])
    return exit_info.value.code


def test_command_line_flags_and_errors(run, tmp_path, capsys):
    assert run_report(run, f"--out={tmp_path}", "--prefix=tiny_", "--levels=0,2",
                      "--images_only") == 0
    assert (tmp_path / "tiny_accuracy.png").read_bytes().startswith(PNG)
    assert not (tmp_path / "tiny_report.md").exists()
    assert "accuracy: " + str(tmp_path / "tiny_accuracy.png") in capsys.readouterr().out
    for args, message in [
        ((run, f"--out={tmp_path}", "--levels=x"),
         "error: --levels must list integers such as 0,3,7; received 'x'."),
        ((tmp_path / "nope", f"--out={tmp_path}"), "error: RUN_DIR "),
        ((f"--out={tmp_path}",), "error: name at least one RUN_DIR"),
        ((run,), "error: flag --out=None: Flag --out must have a value other than None."),
        ((run, f"--out={tmp_path}", "--levels=7"), "error: --levels [7] has no "),
    ]:
        assert run_report(*args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(message), (args, err)


def test_python_dash_m_report_runs(run, tmp_path):
    ok = cli("tf_lottery.cli", "report", str(run), f"--out={tmp_path}")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "report.md").exists() and (tmp_path / "accuracy.png").exists()


def test_report_flags_stay_out_of_the_experiment_flags():
    from tf_lottery.cli import analyze as analyze_cli
    from tf_lottery.cli import experiment_flags
    from tf_lottery.cli import report as report_cli

    report_flags = report_cli.flag_values()
    analyze_flags = analyze_cli.flag_values()
    assert "images_only" in report_flags and "noise_scales" in analyze_flags
    # --helpfull of `python -m tf_lottery.main` lists the experiment's FLAGS only.
    for name in ("out", "images_only", "prefix", "analysis", "noise_scales", "target_dataset"):
        assert name not in experiment_flags.FLAGS, name


# ------------------------------------------- divergence and chance-accuracy warnings

FLAG_KEYS = ("diverged", "diverged_iteration", "chance_accuracy", "at_chance")
HEALTHY = {"diverged": False, "diverged_iteration": None, "chance_accuracy": 0.114,
           "at_chance": False}


def edit_summary(path, drop=(), **changes):
    """Rewrites a summary.json with ``changes`` and without the keys in ``drop``."""
    summary = files.read_json(path)
    summary.update(changes)
    for key in drop:
        summary.pop(key, None)
    files.atomic_write_json(path, summary)


def all_summaries(root):
    """Every summary.json under ``root`` (levels and one-shot tickets)."""
    return sorted(str(p) for p in root.rglob("summary.json"))


def test_diverged_and_chance_branches_are_warned_and_marked(run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(run, root)
    for path in all_summaries(root):
        edit_summary(path, **HEALTHY)
    rep = paths.ReplicateDir(str(root / "replicate_0"))
    # Level 1 reinit: the training loss became infinite at iteration 100; training stopped.
    nan, inf = float("nan"), float("inf")
    diverged = rep.branch(1, "reinit")
    rows = [r for r in files.read_csv(diverged.metrics) if r["iteration"] <= 100]
    rows[-1].update(train_loss=inf, val_loss=nan, test_loss=nan, val_accuracy=nan,
                    test_accuracy=nan)
    files.write_csv(diverged.metrics, training.METRIC_COLUMNS, rows)
    edit_summary(diverged.summary, diverged=True, diverged_iteration=100, end_iteration=100,
                 final_train_loss=inf, final_test_loss=nan, final_test_accuracy=nan,
                 early_stop_test_accuracy=nan)
    # Level 2 random pruning and the one-shot ticket ended at chance accuracy.
    edit_summary(rep.branch(2, "random_prune").summary, at_chance=True,
                 final_test_accuracy=0.1)
    edit_summary(rep.one_shot(0.6).summary, at_chance=True, final_test_accuracy=0.112)
    # A second replicate in which only the level 2 random pruning went wrong.
    shutil.copytree(root / "replicate_0", root / "replicate_1")
    edit_summary(root / "replicate_1" / "level_1" / "reinit" / "summary.json", **HEALTHY)
    edit_summary(root / "replicate_1" / "one_shot" / "sparsity_0.6000" / "lottery" /
                 "summary.json", **HEALTHY)

    written = report.make_report([root], tmp_path / "out", levels=[1, 2])
    for kind in ("accuracy", "early_stop", "learning_curves", "layer_sparsity", "one_shot"):
        assert open(written[kind], "rb").read().startswith(PNG), kind
    markdown = open(written["markdown"]).read()
    warnings = markdown.split("## Warnings\n")[1].split("\n## ")[0]
    assert markdown.index("## Warnings") < markdown.index("![") < markdown.index("## run")
    items = [line for line in warnings.splitlines() if line.startswith("- ")]
    assert items == [
        "- `replicate_0` level 1 reinit: **diverged** at iteration 100: the training loss "
        "became non-finite and training stopped there; its final metrics are those of the "
        "diverged network.",
        "- `replicate_0` level 2 random_prune: **at chance**: final test accuracy 0.1000 vs "
        "chance 0.1140 (always predicting the most frequent test class).",
        "- `replicate_0` one-shot ticket 0.6000: **at chance**: final test accuracy 0.1120 "
        "vs chance 0.1140 (always predicting the most frequent test class).",
        "- `replicate_1` level 2 random_prune: **at chance**: final test accuracy 0.1000 vs "
        "chance 0.1140 (always predicting the most frequent test class).",
    ]
    # The per-replicate table gets a warning column; the marked rows say what happened.
    section = markdown.split("### Levels and branches")[1].split("\n\n")[2]
    assert section.splitlines()[0].endswith("| train s | warning |")
    marks = {}
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        marks[(cells[0], cells[1], cells[2])] = (cells[7], cells[-1])
    assert marks[("replicate_0", "1", "reinit")] == ("-", "diverged at 100")
    assert marks[("replicate_0", "2", "random_prune")] == ("0.1000", "at chance")
    assert marks[("replicate_0", "one-shot 0.6000", "one_shot")] == ("0.1120", "at chance")
    assert marks[("replicate_1", "1", "reinit")][1] == "-"
    assert marks[("replicate_1", "2", "random_prune")][1] == "at chance"
    assert [m for m in marks.values() if m[1] != "-"] == [
        ("-", "diverged at 100"), ("0.1000", "at chance"), ("0.1120", "at chance"),
        ("0.1000", "at chance")]
    # Over replicates: how many of them diverged or ended at chance.
    over = markdown.split("### Over replicates (plotted)")[1].split("\n\n")[2]
    assert over.splitlines()[0].endswith("| final test acc | warnings |")
    assert "| 1 | reinit | 2 |" in over
    line = next(r for r in over.splitlines() if r.startswith("| 1 | reinit | 2 |"))
    assert line.endswith("| 1 diverged |")
    line = next(r for r in over.splitlines() if r.startswith("| 2 | random_prune | 2 |"))
    assert line.endswith("| 2 at chance |")
    line = next(r for r in over.splitlines() if r.startswith("| 1 | lottery | 2 |"))
    assert line.endswith("| - |")
    assert "None" not in markdown
    # report.json: strict JSON, the same warnings, NaN metrics recorded and read back.
    saved = json.loads(open(written["json"]).read(), parse_constant=pytest.fail)
    assert [(w["level"], w["branch"], w["diverged"], w["at_chance"])
            for w in saved["runs"][0]["warnings"]] == [
        (1, "reinit", True, False), (2, "random_prune", False, True),
        (0.6, "one_shot", False, True), (2, "random_prune", False, True)]
    assert saved["runs"][0]["warnings"][0]["diverged_iteration"] == 100
    assert any(p.endswith("/1/reinit/final_train_loss") for p in saved["non_finite"])
    back = files.read_json(written["json"])["runs"][0]["replicates"][0]["levels"]["1"]
    assert back["reinit"]["final_train_loss"] == inf


def test_summaries_without_the_new_keys_report_as_before(run, tmp_path):
    """Old summaries (no divergence keys) and healthy new ones give the same report."""
    texts = {}
    for kind in ("old", "healthy"):
        root = tmp_path / kind / run.name
        shutil.copytree(run, root)
        for path in all_summaries(root):
            if kind == "old":
                edit_summary(path, drop=FLAG_KEYS)
            else:
                edit_summary(path, **HEALTHY)
        written = report.make_report([root], tmp_path / f"out_{kind}", levels=[0, 2])
        texts[kind] = open(written["markdown"]).read().replace(str(tmp_path / kind), "ROOT")
        assert files.read_json(written["json"])["runs"][0]["warnings"] == []
    assert texts["old"] == texts["healthy"]
    markdown = texts["old"]
    assert "Warnings" not in markdown and "warning" not in markdown
    section = markdown.split("### Levels and branches")[1].split("\n\n")[2]
    assert section.splitlines()[0] == (
        "| replicate | level | branch | remaining % | sparsity | early-stop it | "
        "test acc @ES | final test acc | train s |")
    assert "None" not in markdown


def test_plot_helpers_skip_non_finite_values():
    nan, inf = float("nan"), float("inf")
    smoothed = figures.smooth([0, 0, 3, nan, 0, 0], 3)
    assert smoothed[:3] == [0, 1, 1.5] and math.isnan(smoothed[3]) and smoothed[4:] == [0, 0]
    all_nan = figures.smooth([nan] * 5, 3)
    assert all(math.isnan(v) for v in all_nan)
    curve = {"iteration": [0, 50, 100, 150], "min": [0.1, 0.8, nan, 0.9],
             "max": [0.1, 0.85, nan, inf]}
    assert figures.zoom_floor([curve]) == (pytest.approx(0.78), pytest.approx(0.86))
    assert figures.zoom_floor([{"iteration": [0, 1], "min": [nan, nan],
                                "max": [nan, nan]}]) is None
    assert figures.finite_values([1, None, nan, inf, -inf, 0.5]) == [1.0, 0.5]
