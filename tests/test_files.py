"""Tests of tf_lottery.files: atomic writes, JSON and CSV helpers."""

import math
import os

import pytest

from tf_lottery import files


def _listing(directory):
    return sorted(os.listdir(directory))


def test_atomic_write_bytes_writes_and_overwrites(tmp_path):
    path = tmp_path / "blob.bin"
    files.atomic_write_bytes(path, b"\x00\x01first")
    assert path.read_bytes() == b"\x00\x01first"
    files.atomic_write_bytes(path, b"2")
    assert path.read_bytes() == b"2"
    assert _listing(tmp_path) == ["blob.bin"]


def test_atomic_write_text_is_utf8(tmp_path):
    path = tmp_path / "note.txt"
    files.atomic_write_text(path, "sparsity ≈ 0.8\n")
    assert path.read_bytes() == "sparsity ≈ 0.8\n".encode("utf-8")
    files.atomic_write_text(str(path), "short")
    assert path.read_text(encoding="utf-8") == "short"
    assert _listing(tmp_path) == ["note.txt"]


def test_atomic_write_creates_missing_directories(tmp_path):
    path = tmp_path / "a" / "b" / "c.txt"
    files.atomic_write_text(path, "x")
    assert path.read_text() == "x"


def test_atomic_write_json_round_trip(tmp_path):
    path = tmp_path / "state.json"
    obj = {"level": 3, "branches": ["lottery", "reinit"], "sparsity": 0.488, "done": False}
    files.atomic_write_json(path, obj)
    assert files.read_json(path) == obj
    # Key-sorted, indented, newline-terminated: diff-friendly files.
    text = path.read_text()
    assert text.endswith("}\n")
    assert text.index('"branches"') < text.index('"done"') < text.index('"level"')
    files.atomic_write_json(path, {"level": 4})
    assert files.read_json(path) == {"level": 4}
    assert _listing(tmp_path) == ["state.json"]


def test_atomic_path_renames_on_success(tmp_path):
    path = tmp_path / "final.weights.h5"
    path.write_bytes(b"old")
    with files.atomic_path(path) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)
        assert tmp.endswith(".weights.h5")  # Keras checks the whole extension
        assert tmp != str(path)
        with open(tmp, "wb") as f:
            f.write(b"new")
        # Not yet visible under the target name.
        assert path.read_bytes() == b"old"
    assert path.read_bytes() == b"new"
    assert _listing(tmp_path) == ["final.weights.h5"]


def test_atomic_path_keeps_old_file_when_writer_raises(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with files.atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half a fi")
            raise RuntimeError("disk on fire")
    assert path.read_text() == "old"
    assert _listing(tmp_path) == ["metrics.json"]


def test_atomic_path_leaves_nothing_when_writer_raises_without_old_file(tmp_path):
    path = tmp_path / "new.json"
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_path(path):
            raise KeyboardInterrupt
    assert _listing(tmp_path) == []


def test_atomic_path_tolerates_writer_removing_temp_file(tmp_path):
    # A writer may delete its temporary file before failing; the original error survives.
    path = tmp_path / "x.txt"
    with pytest.raises(OSError, match="gone"):
        with files.atomic_path(path) as tmp:
            os.remove(tmp)
            raise OSError("gone")
    assert _listing(tmp_path) == []


def test_read_json_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"level": 3,')
    with pytest.raises(ValueError, match="Corrupt JSON") as info:
        files.read_json(path)
    assert str(path) in str(info.value)


def test_read_json_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        files.read_json(tmp_path / "absent.json")


def test_csv_round_trip_ints_floats_nan(tmp_path):
    path = tmp_path / "metrics.csv"
    columns = ["iteration", "loss", "accuracy", "branch"]
    rows = [
        {"iteration": 0, "loss": 2.302585, "accuracy": 0.1, "branch": "lottery"},
        {"iteration": 100, "loss": float("nan"), "accuracy": 0.875, "branch": "reinit"},
        {"iteration": -1, "loss": 1e-8, "accuracy": 1.0, "branch": "random_prune"},
    ]
    files.write_csv(path, columns, rows)
    back = files.read_csv(path)
    assert len(back) == 3
    assert list(back[0]) == columns
    assert back[0] == rows[0]
    assert back[2] == rows[2]
    assert type(back[1]["iteration"]) is int and back[1]["iteration"] == 100
    assert type(back[2]["accuracy"]) is float and back[2]["accuracy"] == 1.0
    assert isinstance(back[1]["loss"], float) and math.isnan(back[1]["loss"])
    assert back[1]["accuracy"] == 0.875 and back[1]["branch"] == "reinit"
    assert _listing(tmp_path) == ["metrics.csv"]


def test_csv_header_order_and_extra_keys_ignored(tmp_path):
    path = tmp_path / "m.csv"
    files.write_csv(path, ["b", "a"], [{"a": 1, "b": 2, "ignored": 3}])
    assert path.read_text().splitlines() == ["b,a", "2,1"]
    assert files.read_csv(path) == [{"b": 2, "a": 1}]


def test_csv_header_only_and_overwrite(tmp_path):
    path = tmp_path / "m.csv"
    files.write_csv(path, ["x"], [{"x": 1}, {"x": 2}])
    files.write_csv(path, ["x"], [])
    assert path.read_text().splitlines() == ["x"]
    assert files.read_csv(path) == []


def test_atomic_path_suffix_defaults_to_the_extension_and_can_be_given(tmp_path):
    for name, ending in (("mask.npz", ".npz"), ("plain", ""), ("a.b.tflite", ".b.tflite")):
        with files.atomic_path(tmp_path / name) as tmp:
            assert os.path.basename(tmp).startswith(".tmp-") and tmp.endswith(ending)
            open(tmp, "w").close()
    with files.atomic_path(tmp_path / "x.bin", ".h5") as tmp:
        assert tmp.endswith(".h5")
        open(tmp, "w").close()
    assert sorted(os.listdir(tmp_path)) == ["a.b.tflite", "mask.npz", "plain", "x.bin"]
