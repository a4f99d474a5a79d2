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

    # The LotteryTicket callback example continues from the same session.
    callback_example = next(b for b in blocks if "LotteryTicket" in b)
    exec(compile(callback_example, "README.md", "exec"), namespace)
    history = namespace["lottery"].history
    assert [h["level"] for h in history] == [1, 2, 3]
    fc1 = [h["masks_sparsity_per_layer"]["fc1/kernel"] for h in history]
    # fc1 started at 20% sparsity: three more rounds of 20% of the survivors.
    assert fc1 == pytest.approx([1 - 0.8 ** 2, 1 - 0.8 ** 3, 1 - 0.8 ** 4], abs=1e-4)
    assert os.listdir(tmp_path / "logs")  # the TensorBoard event files


@pytest.mark.skipif(
    not os.path.exists(os.path.join(data.FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")),
    reason="Debian's dataset-fashion-mnist is not installed (tools/test.sh installs it as root)",
)
def test_readme_pruning_at_initialization_example_runs(capsys):
    with open(README) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    example = next(b for b in blocks if 'criterion="snip"' in b)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    np = namespace["np"]
    for name in ("snip", "synflow", "erk_random"):
        masks = namespace[name]
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.size for m in masks.values())
        assert kept == pytest.approx(0.1 * total, abs=3), name
    # ERK gives the small output layer a higher density than the large first layer.
    erk = namespace["erk_random"]
    assert np.mean(erk["output/kernel"]) > np.mean(erk["fc1/kernel"])
    assert "fc1/kernel" in capsys.readouterr().out
