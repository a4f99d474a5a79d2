"""tools/gpu_check.sh fails loudly, never skips, where TensorFlow sees no GPU."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_fails_loudly_without_a_gpu(tmp_path):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU: run tools/gpu_check.sh itself")
    done = subprocess.run(["bash", "tools/gpu_check.sh"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path)))
    assert done.returncode == 1
    assert "error: TensorFlow sees no GPU" in done.stderr
    assert "| precision |" not in done.stdout  # no table, no silent skip
