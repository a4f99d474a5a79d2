"""README's library example runs as written (on the real Fashion-MNIST files)."""

import os
import re

import pytest

from tf_lottery import data

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


@pytest.mark.skipif(
    not os.path.exists(os.path.join(data.FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")),
    reason="Debian's dataset-fashion-mnist is not installed (tools/test.sh installs it as root)",
)
def test_readme_library_example_runs(tmp_path, monkeypatch, capsys):
    with open(README) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    import tf_lottery as tfl

    report = tfl.sparsity_report(namespace["masked"])
    assert report.layers["fc1/kernel"].sparsity == pytest.approx(0.2, abs=1e-4)
    assert report.layers["output/kernel"].sparsity == pytest.approx(0.1, abs=1e-3)
    assert "fc1/kernel" in capsys.readouterr().out
    ticket = namespace["keras"].saving.load_model(tmp_path / "ticket.keras")
    assert tfl.sparsity_report(ticket).sparsity == pytest.approx(report.sparsity)
