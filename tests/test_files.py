"""Tests of tf_lottery.files: atomic writes, JSON (strict, non-finite numbers recorded) and
CSV helpers."""

import json
import math
import os

import numpy as np
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


# ------------------------------------------------ strict JSON: non-finite numbers


def strict_loads(text):
    """``json.loads`` that rejects ``NaN``, ``Infinity`` and ``-Infinity`` (RFC 8259)."""
    def reject(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=reject)


def same(a, b):
    """Deep equality where NaN equals NaN (and types match: 1 is not 1.0)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_strict_loads_rejects_nan_tokens():
    for text in ('{"a": NaN}', "[Infinity]", "-Infinity"):
        with pytest.raises(ValueError, match="non-standard"):
            strict_loads(text)


def test_non_finite_numbers_round_trip_and_are_recorded(tmp_path):
    path = tmp_path / "checkpoint.json"
    nan, inf = float("nan"), float("inf")
    obj = {
        "step": 20,
        "rows": [{"iteration": 0, "train_loss": nan, "val_loss": nan, "test_loss": 2.3},
                 {"iteration": 10, "train_loss": inf, "val_loss": -inf, "test_loss": 2.1}],
        "curve": {"test_error": [0.1, nan, 0.3], "nested": [[1.0, [inf]], []]},
        "odd/key~": nan,
        "numpy": [np.float32("nan"), np.float64("-inf"), np.float32(0.5), np.int64(7)],
        "early_stop_iteration": None,
    }
    files.atomic_write_json(path, obj)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    parsed = strict_loads(text)
    assert parsed["non_finite"] == {
        "/rows/0/train_loss": "nan", "/rows/0/val_loss": "nan",
        "/rows/1/train_loss": "inf", "/rows/1/val_loss": "-inf",
        "/curve/test_error/1": "nan", "/curve/nested/0/1/0": "inf",
        "/odd~1key~0": "nan", "/numpy/0": "nan", "/numpy/1": "-inf",
    }
    assert parsed["rows"][0]["train_loss"] is None and parsed["rows"][0]["test_loss"] == 2.3
    assert parsed["early_stop_iteration"] is None
    back = files.read_json(path)
    expected = dict(obj, numpy=[nan, -inf, 0.5, 7])
    assert same(back, expected), back
    assert "non_finite" not in back
    assert back["rows"][1]["val_loss"] == -inf and back["curve"]["nested"][0][1][0] == inf
    # The caller's object is not modified.
    assert math.isnan(obj["rows"][0]["train_loss"]) and "non_finite" not in obj


def test_finite_json_is_written_as_before(tmp_path):
    path = tmp_path / "a.json"
    obj = {"b": [1, 2.5, None], "a": {"x": True}}
    files.atomic_write_json(path, obj)
    assert path.read_text() == json.dumps(obj, indent=2, sort_keys=True) + "\n"
    files.atomic_write_json(path, [1.0, 2.0])
    assert strict_loads(path.read_text()) == [1.0, 2.0]


def test_top_level_non_dict_values_are_wrapped_only_when_needed(tmp_path):
    path = tmp_path / "list.json"
    for value, record in [([1.0, float("nan"), {"x": float("-inf")}], {"/1": "nan",
                                                                       "/2/x": "-inf"}),
                          (float("inf"), {"": "inf"}), ([[float("nan")]], {"/0/0": "nan"})]:
        files.atomic_write_json(path, value)
        parsed = strict_loads(path.read_text())
        assert parsed == {"non_finite": record,
                          "non_finite_value": files.to_strict_json(value)[0]["non_finite_value"]}
        assert same(files.read_json(path), value)


def test_reserved_top_level_keys_cannot_be_written(tmp_path):
    for key in ("non_finite", "non_finite_value"):
        with pytest.raises(ValueError, match="reserved") as info:
            files.atomic_write_json(tmp_path / "x.json", {key: 1})
        assert "x.json" in str(info.value)
    assert _listing(tmp_path) == []
    # Nested keys of those names are ordinary.
    files.atomic_write_json(tmp_path / "x.json", {"a": {"non_finite": float("nan")}})
    assert same(files.read_json(tmp_path / "x.json"), {"a": {"non_finite": float("nan")}})


@pytest.mark.parametrize("text", [
    '{"a": 1.0, "non_finite": {"/a": "nan"}}',          # not null
    '{"a": null, "non_finite": {"/b": "nan"}}',         # no such key
    '{"a": [null], "non_finite": {"/a/1": "nan"}}',     # index out of range
    '{"a": [null], "non_finite": {"/a/x": "nan"}}',     # not an index
    '{"a": null, "non_finite": {"/a": "NaN"}}',         # unknown reason
    '{"a": null, "non_finite": {"a": "nan"}}',          # not a pointer
    '{"a": null, "non_finite": ["/a"]}',                # not a mapping
    '{"non_finite": {"": "nan"}, "non_finite_value": 1}',
    '{"non_finite": {}, "non_finite_value": [], "b": 1}',
])
def test_a_record_that_does_not_match_raises_naming_the_file(tmp_path, text):
    path = tmp_path / "summary.json"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        files.read_json(path)
    assert str(path) in str(info.value) and "non_finite" in str(info.value)


def test_old_files_with_nan_tokens_still_read(tmp_path):
    path = tmp_path / "old.json"
    path.write_text('{"val_loss": NaN, "x": [Infinity, -Infinity]}')
    back = files.read_json(path)
    assert math.isnan(back["val_loss"]) and back["x"] == [float("inf"), float("-inf")]
