"""Every JSON file a run, its analyses and its report hold is strictly valid JSON.

A tiny experiment without a validation split (every validation loss and accuracy is
NaN), an instability analysis on it and a report: every ``*.json`` file under the run
root and the report directory, and every JSON file written along the way (checkpoints
are removed when their branch finishes), parses with a parser that rejects ``NaN`` and
``Infinity``; the NaN values come back through ``tf_lottery.files.read_json`` and the
report shows them as ``-`` as before.
"""

import json
import math
import os
import re

import pytest

from tf_lottery import analysis, data, experiment, files, paths, report, training
from tf_lottery.hparams import (DatasetHparams, ExperimentHparams, ModelHparams,
                                PruningHparams, TrainingHparams)

HP = ExperimentHparams(
    model=ModelHparams("lenet_300_100"),
    dataset=DatasetHparams("synthetic", validation_size=0),
    training=TrainingHparams(batch_size=100, training_steps="30it", eval_every="10it"),
    pruning=PruningHparams(levels=1, controls=("reinit",), one_shot=(0.5,)),
)
RUNTIME = training.Runtime(jit_compile=False, checkpoint_every="10it")


def strict_load(path):
    """Parses ``path`` as RFC 8259 JSON: ``NaN``/``Infinity``/``-Infinity`` raise."""
    def reject(token):
        raise ValueError(f"{path}: non-standard JSON token {token}")

    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_constant=reject)


def json_files(*roots):
    found = []
    for root in roots:
        for directory, _, names in os.walk(root):
            found += [os.path.join(directory, n) for n in names if n.endswith(".json")]
    return sorted(found)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """``(run_dir, report_dir, {path: strict JSON as written})``: every JSON file written
    through ``files.atomic_write_json`` while the run, the analysis and the report ran,
    parsed strictly right after it was written."""
    root = tmp_path_factory.mktemp("strict")
    seen = {}
    original = files.atomic_write_json

    def spy(path, obj):
        original(path, obj)
        seen.setdefault(os.fspath(path), []).append(strict_load(path))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(files, "atomic_write_json", spy)
        dataset = data.load("synthetic", validation_size=0)
        experiment.run_experiment(HP, root / "runs", dataset=dataset, runtime=RUNTIME)
        run_dir = root / "runs" / HP.run_name()
        analysis.run_instability(run_dir, rewind_points=["0it"], training_steps="20it",
                                 points=3, runtime=RUNTIME)
        report.make_report([run_dir], root / "report")
    return run_dir, root / "report", seen


def test_every_json_file_of_the_run_and_report_is_strict(written):
    run_dir, report_dir, seen = written
    found = json_files(run_dir, report_dir)
    rep = paths.RunDir(str(run_dir)).replicate(0)
    expected = [paths.RunDir(str(run_dir)).hparams, rep.results, rep.analysis("instability"),
                rep.branch(0).summary, rep.branch(1).summary, rep.branch(1, "reinit").summary,
                rep.one_shot(0.5).summary, paths.ReportFiles(str(report_dir)).json]
    assert set(expected) <= set(found), sorted(set(expected) - set(found))
    records = {}
    for path in found:
        parsed = strict_load(path)  # raises on NaN / Infinity
        records[path] = parsed.get("non_finite", {}) if isinstance(parsed, dict) else {}
    # No validation split: validation metrics are NaN, written as null with the reason.
    summary = rep.branch(1, "reinit").summary
    assert {"/final_val_accuracy": "nan", "/final_val_loss": "nan"}.items() <= \
        records[summary].items()
    assert strict_load(summary)["final_val_loss"] is None
    assert any(p.endswith("/final_val_loss") for p in records[rep.results])
    assert any(p.endswith("/final_val_loss") for p in records[paths.ReportFiles(
        str(report_dir)).json])
    assert all(set(r.values()) <= {"nan", "inf", "-inf"} for r in records.values())
    # Every file written along the way was strict too, checkpoints included (each
    # branch's first row has a NaN training loss).
    checkpoints = [p for p in seen if os.path.basename(p) == "checkpoint.json"]
    assert checkpoints, sorted(seen)
    for path in checkpoints:
        for parsed in seen[path]:
            assert parsed["non_finite"]["/rows/0/train_loss"] == "nan"
            assert parsed["rows"][0]["train_loss"] is None
    assert set(found) <= set(seen)  # nothing JSON was written another way


def test_readers_see_the_nan_values_as_before(written):
    run_dir, _, _ = written
    rep = paths.RunDir(str(run_dir)).replicate(0)
    summary = files.read_json(rep.branch(1, "reinit").summary)
    assert "non_finite" not in summary
    assert math.isnan(summary["final_val_loss"]) and math.isnan(summary["final_val_accuracy"])
    assert summary["early_stop_iteration"] is None
    assert 0.0 <= summary["final_test_accuracy"] <= 1.0
    results = files.read_json(rep.results)
    assert "non_finite" not in results
    assert math.isnan(results["levels"][0]["branches"]["lottery"]["final_val_loss"])
    entries = files.read_json(rep.analysis("instability"))["entries"]
    assert {e["key"]["level"] for e in entries} == {0, 1}
    for entry in entries:
        assert entry["val_instability"] is None and entry["val_error"] == [None] * 3
        assert len(entry["test_error"]) == 3 and math.isfinite(entry["instability"])
        assert entry["val_loss"] == [None] * 3  # None by design, not NaN


def test_the_report_shows_what_it_showed(written):
    run_dir, report_dir, _ = written
    markdown = (report_dir / "report.md").read_text()
    assert "None" not in markdown and not re.search(r"\bnan\b", markdown, re.IGNORECASE)
    rep = paths.RunDir(str(run_dir)).replicate(0)
    flagged = [s for s in report.load_runs(run_dir)[0].replicates[0].levels[1].values()
               if s.get("diverged") or s.get("at_chance")]
    assert ("## Warnings" in markdown) == bool(flagged)
    section = markdown.split("### Levels and branches")[1].split("\n\n")[2]
    rows = {}
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[(cells[1], cells[2])] = cells
    assert set(rows) == {("0", "lottery"), ("1", "lottery"), ("1", "reinit"),
                         ("one-shot 0.5000", "one_shot")}
    for (level, branch), cells in rows.items():
        where = rep.one_shot(0.5) if branch == "one_shot" else rep.branch(int(level), branch)
        s = files.read_json(where.summary)
        assert cells[5] == "-" and cells[6] == "-"  # no early stopping without validation
        assert cells[7] == f"{s['final_test_accuracy']:.4f}"
    instability = markdown.split("### Instability")[1]
    assert "| replicate_0 | 0 | dense |" in instability
    for line in instability.splitlines():
        if line.startswith("| replicate_0"):
            assert line.split("|")[13].strip() == "-"  # instability (val), after (train)
    saved = files.read_json(report_dir / "report.json")
    level_1 = saved["runs"][0]["replicates"][0]["levels"]["1"]["reinit"]
    assert math.isnan(level_1["final_val_loss"])
    assert level_1["final_test_accuracy"] == files.read_json(
        rep.branch(1, "reinit").summary)["final_test_accuracy"]
