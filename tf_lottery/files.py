"""Atomic writes and strict reads of the files a run holds (JSON, CSV, weights).

Every file this module writes goes to a temporary file in the same directory first and
is then renamed over the target (``os.replace``, atomic on POSIX), so a crash leaves
either the old file or the new one, never a torn one.

JSON files are strictly valid JSON (RFC 8259: no ``NaN`` or ``Infinity`` tokens), so any
parser reads them. ``atomic_write_json`` writes every non-finite float (NaN, +inf,
-inf; Python or NumPy) as ``null`` and records what it was under the key
``"non_finite"``; ``read_json`` puts the values back, so a reader sees exactly what the
writer passed. The rule:

* ``"non_finite"`` maps the JSON pointer (RFC 6901: ``/``-separated keys and list
  indices, ``~`` written ``~0`` and ``/`` written ``~1``, ``""`` for the value itself) of
  every replaced number to ``"nan"``, ``"inf"`` or ``"-inf"``. Pointers address the
  object given to ``atomic_write_json``, which is the object ``read_json`` returns, e.g.
  ``{"/rows/0/train_loss": "nan"}``.
* A top-level dict carries the record as its own ``"non_finite"`` key, added only when
  something was replaced (a file without non-finite numbers is written as before).
* Any other top-level value (a list, a number) is written as it is when it holds no
  non-finite number; otherwise inside an envelope ``{"non_finite": {...},
  "non_finite_value": <the value>}``, which ``read_json`` unwraps.
* ``"non_finite"`` and ``"non_finite_value"`` are reserved: a top-level dict with
  either key cannot be written (``ValueError``).

``read_json`` raises ``ValueError`` naming the file when the record does not match the
content (a pointer to nothing or to a value that is not ``null``, an unknown reason).
Files written before this rule, with bare ``NaN``/``Infinity`` tokens, still read.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile

import numpy as np

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "read_json",
    "NON_FINITE",
    "NON_FINITE_VALUE",
    "to_strict_json",
    "write_csv",
    "read_csv",
    "atomic_write_arrays",
    "read_arrays",
]


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yields a temporary path next to ``path``; renames it onto ``path`` on success.

    For writers that want a file name (e.g. ``model.save_weights``). The temporary name
    ends with ``suffix``, by default the extension of ``path`` from its first dot
    (``final.weights.h5`` -> ``.weights.h5``), which such writers check. On error the
    temporary file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    if suffix is None:
        name = os.path.basename(path)
        suffix = name[name.index("."):] if "." in name else ""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


#: The key recording the non-finite numbers a JSON file held (see the module docstring).
NON_FINITE = "non_finite"
#: The key of the envelope around a top-level non-dict value that held non-finite numbers.
NON_FINITE_VALUE = "non_finite_value"
_VALUES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _reason(x: float) -> str:
    """``"nan"``, ``"inf"`` or ``"-inf"`` for a non-finite float."""
    return "nan" if x != x else ("inf" if x > 0 else "-inf")


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _json_key(key) -> str:
    """A dict key as ``json.dumps`` writes it (str, int, float, bool, None; NumPy
    scalars as their Python value)."""
    if isinstance(key, str):
        return key
    if isinstance(key, np.generic):
        key = key.item()
    if key is True or key is False or key is None:
        return json.dumps(key)
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return float.__repr__(key) if math.isfinite(key) else \
            {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[_reason(key)]
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _clean(obj, pointer: str, record: dict):
    """A copy of ``obj`` with every non-finite float ``None`` (recorded in ``record``
    under its JSON pointer), NumPy scalars and arrays as Python values, tuples as
    lists. Other objects are returned as they are (``json.dumps`` rejects what it
    cannot write)."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return float(obj)
        record[pointer] = _reason(obj)
        return None
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            key = _json_key(key)
            out[key] = _clean(value, f"{pointer}/{_escape(key)}", record)
        return out
    if isinstance(obj, (list, tuple)):
        out = []
        append = out.append
        for i, value in enumerate(obj):
            if type(value) is float:  # the common case (weights, metrics), inlined
                if value - value == 0.0:  # finite: inf - inf and NaN - NaN are NaN
                    append(value)
                else:
                    record[f"{pointer}/{i}"] = _reason(value)
                    append(None)
            else:
                append(_clean(value, f"{pointer}/{i}", record))
        return out
    if isinstance(obj, np.generic):
        return _clean(obj.item(), pointer, record)
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist(), pointer, record)
    return obj


def to_strict_json(obj):
    """``(value, record)``: ``obj`` as ``atomic_write_json`` writes it (non-finite
    numbers ``None``, the record added or the value wrapped; see the module docstring)
    and the record ``{pointer: "nan" | "inf" | "-inf"}``.

    Raises:
        ValueError: a top-level dict with a reserved key (``"non_finite"``,
            ``"non_finite_value"``).
    """
    record: dict[str, str] = {}
    value = _clean(obj, "", record)
    if isinstance(value, dict):
        reserved = sorted({NON_FINITE, NON_FINITE_VALUE} & set(value))
        if reserved:
            raise ValueError(f"the top-level keys {reserved} are reserved for the record of "
                             "non-finite numbers (see tf_lottery.files); rename them.")
        if record:
            value[NON_FINITE] = record
    elif record:
        value = {NON_FINITE: record, NON_FINITE_VALUE: value}
    return value, record


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Writes ``obj`` as indented, key-sorted, strictly valid JSON to ``path`` atomically.

    Non-finite floats (NaN, +inf, -inf, NumPy's too) are written as ``null`` and
    recorded under ``"non_finite"`` (``{"/rows/0/train_loss": "nan"}``; a top-level
    non-dict value holding any is wrapped as ``{"non_finite": ..., "non_finite_value":
    ...}``), so ``read_json`` returns ``obj`` as given; see the module docstring. NumPy
    scalars and arrays are written as numbers and lists, tuples as lists.

    Raises:
        ValueError: ``obj`` is a dict with a top-level key ``"non_finite"`` or
            ``"non_finite_value"`` (reserved), naming ``path``.
        TypeError: ``obj`` holds something JSON cannot hold.
    """
    try:
        value, _ = to_strict_json(obj)
    except ValueError as err:
        raise ValueError(f"Cannot write JSON file {os.fspath(path)!r}: {err}") from None
    text = json.dumps(value, indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(path, text + "\n")


def _restore(data):
    """Puts the numbers recorded under ``"non_finite"`` back (``ValueError`` when the
    record does not match the content)."""
    if not isinstance(data, dict) or NON_FINITE not in data:
        return data
    record = data.pop(NON_FINITE)
    if not isinstance(record, dict):
        raise ValueError(f"its {NON_FINITE!r} entry must map JSON pointers to "
                         f"{sorted(_VALUES)}; found {record!r}")
    if NON_FINITE_VALUE in data:
        if len(data) != 1:
            raise ValueError(f"an envelope with {NON_FINITE_VALUE!r} holds no other key; "
                             f"found {sorted(data)}")
        data = data[NON_FINITE_VALUE]
    for pointer, reason in record.items():
        if reason not in _VALUES:
            raise ValueError(f"{NON_FINITE!r} records {reason!r} at {pointer!r}; expected "
                             f"one of {sorted(_VALUES)}")
        data = _put(data, pointer, _VALUES[reason])
    return data


def _put(data, pointer: str, value):
    """``data`` with the ``null`` at JSON pointer ``pointer`` replaced by ``value``."""
    where = "the value itself" if pointer == "" else repr(pointer)
    if pointer == "":
        if data is not None:
            raise ValueError(f"{NON_FINITE!r} records {where} as non-finite, but it is "
                             f"{data!r}, not null")
        return value
    if not pointer.startswith("/"):
        raise ValueError(f"{NON_FINITE!r} holds {pointer!r}, not a JSON pointer")
    tokens = [_unescape(t) for t in pointer[1:].split("/")]
    parent = data
    for depth, token in enumerate(tokens):
        if isinstance(parent, dict) and token in parent:
            key = token
        elif isinstance(parent, list) and token.isdigit() and int(token) < len(parent) \
                and token == str(int(token)):
            key = int(token)
        else:
            raise ValueError(f"{NON_FINITE!r} records {where}, which the file does not hold")
        if depth == len(tokens) - 1:
            if parent[key] is not None:
                raise ValueError(f"{NON_FINITE!r} records {where} as non-finite, but it is "
                                 f"{parent[key]!r}, not null")
            parent[key] = value
        else:
            parent = parent[key]
    return data


def read_json(path: str | os.PathLike):
    """Reads a JSON file written by ``atomic_write_json``: the non-finite numbers recorded
    under ``"non_finite"`` are put back (``float("nan")``, ``float("inf")``,
    ``-float("inf")``) and the record (or the envelope of a non-dict value) dropped; see
    the module docstring. Older files with bare ``NaN``/``Infinity`` tokens read too.

    Raises:
        ValueError: naming the file, if it is not JSON or its ``"non_finite"`` record does
            not match its content.
        FileNotFoundError: if it does not exist.
    """
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"Corrupt JSON file {os.fspath(path)!r}: {err}") from err
    try:
        return _restore(data)
    except ValueError as err:
        raise ValueError(f"Corrupt JSON file {os.fspath(path)!r}: {err}.") from None


def write_csv(path: str | os.PathLike, columns, rows) -> None:
    """Writes ``rows`` (dicts) as CSV with a header of ``columns``, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Reads a CSV written by ``write_csv``; numeric cells become int or float."""

    def number(text):
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text

    with open(path, newline="", encoding="utf-8") as f:
        return [{k: number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def atomic_write_arrays(path: str | os.PathLike, arrays) -> None:
    """Writes ``{name: np.ndarray}`` (names may contain ``/``) to an ``.npz`` file,
    atomically (``np.savez``: the arrays keep their dtypes and shapes)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buffer.getvalue())


def read_arrays(path: str | os.PathLike) -> dict:
    """Reads what ``atomic_write_arrays`` wrote: ``{name: np.ndarray}``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable ``.npz``.
    """
    try:
        with np.load(os.fspath(path)) as npz:
            return {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"{os.fspath(path)!r} is not a readable .npz file "
                         f"({type(err).__name__}: {err}).") from err
