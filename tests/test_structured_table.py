"""tools/structured_table.py end to end on synthetic data (--quick, LeNet-300-100 only)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_structured_table_quick_synthetic(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "structured_table.py"),
         "--models=lenet_300_100", "--dataset=synthetic", "--quick", f"--run_root={runs}",
         f"--out={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((runs / "structured_table.json").read_text())["rows"]
    assert [(r["row"], r["level"]) for r in rows] == [
        ("dense", 0), ("unstructured", 1), ("unstructured", 2),
        ("channel, shrunk", 1), ("channel, shrunk", 2)]
    # Synthetic images are 8x8x1 (64 inputs). Dense: 64*300+300 + 300*100+100 + 100*10+10.
    dense = 19500 + 30100 + 1010
    assert [r["params"] for r in rows[:3]] == [dense] * 3
    # Channel pruning halves the hidden units per level (output units stay):
    # level 1: 150 and 50 units; level 2: 75 and 25.
    assert rows[3]["params"] == (64 * 150 + 150) + (150 * 50 + 50) + (50 * 10 + 10)
    assert rows[4]["params"] == (64 * 75 + 75) + (75 * 25 + 25) + (25 * 10 + 10)
    # Unstructured: half the kernel weights per level are zero (biases are not pruned).
    kernels = 64 * 300 + 300 * 100 + 100 * 10
    for row, kept in ((rows[1], 0.5), (rows[2], 0.25)):
        assert kept * kernels <= row["nonzero"] <= kept * kernels + 410
    for row in rows:
        assert os.path.exists(row["tflite"])
        assert row["max_abs_diff"] < 1e-4
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert row["weights_left"] == row["nonzero"] / dense
    assert rows[0]["litert_speedup"] == 1.0 and rows[0]["keras256_speedup"] == 1.0
    assert all(r["tflite"].endswith("export_float32_shrunk.tflite") for r in rows[3:])
    text = out.read_text()
    assert text.count("| LeNet-300-100 |") == 5
    assert "2-core shared x86 CPU" in text
    assert "--structure=channel --prune_rate=0.5 --prune_rate_output=none" in text
    assert f"--run_root={runs}" in text
