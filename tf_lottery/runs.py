"""Run directories and artifacts: atomic writes, paths, JSON/CSV helpers, resume state.

Every file this module writes goes to a temporary file in the same directory first and
is then renamed over the target (``os.replace``, atomic on POSIX), so a crash leaves
either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "read_json",
    "write_csv",
    "read_csv",
    "resolve_replicate",
]


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yields a temporary path next to ``path``; renames it onto ``path`` on success.

    For writers that want a file name (e.g. ``model.save_weights``). ``suffix`` keeps
    the extension such writers check (``".weights.h5"``). On error the temporary file
    is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
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


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Writes ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike):
    """Reads JSON from ``path``; raises ``ValueError`` naming the file if it is corrupt."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"Corrupt JSON file {os.fspath(path)!r}: {err}") from err


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


def resolve_replicate(run_dir, replicate: int | None = None) -> tuple[str, str, int]:
    """Finds a replicate of a run: ``(root, replicate_dir, r)`` as absolute paths.

    Args:
        run_dir: ``<run_root>/<name>_<hash>`` (the directory holding ``hparams.json``)
            or one of its ``replicate_<r>`` directories.
        replicate: ``r`` when ``run_dir`` is the ``<name>_<hash>`` directory (default
            0); if given with a ``replicate_<r>`` directory it must agree with it.

    Raises:
        ValueError: naming ``run_dir`` (--run_dir) or ``replicate`` (--replicate) when
            the directory is not a run, ``replicate`` is not an integer >= 0 or
            disagrees with ``run_dir``, or the replicate has no directory.
    """
    if not isinstance(run_dir, (str, os.PathLike)) or not os.path.isdir(run_dir):
        raise ValueError(f"`run_dir` (--run_dir) must be an existing run directory; "
                         f"received {run_dir!r}.")
    path = os.path.abspath(os.fspath(run_dir))
    base = os.path.basename(path)
    if os.path.exists(os.path.join(path, "hparams.json")):
        root = path
        replicate = 0 if replicate is None else replicate
        if isinstance(replicate, bool) or not isinstance(replicate, int) or replicate < 0:
            raise ValueError(f"`replicate` (--replicate) must be an integer >= 0; received "
                             f"{replicate!r}.")
        replicate_dir = os.path.join(root, f"replicate_{replicate}")
    elif base.startswith("replicate_") and base[10:].isdigit() and os.path.exists(
            os.path.join(os.path.dirname(path), "hparams.json")):
        root, replicate_dir = os.path.dirname(path), path
        if replicate is not None and replicate != int(base[10:]):
            raise ValueError(f"`replicate` (--replicate) {replicate} disagrees with `run_dir` "
                             f"{path!r}; drop one of them.")
        replicate = int(base[10:])
    else:
        raise ValueError(
            f"`run_dir` (--run_dir) {path!r} is not a run directory: neither it nor its parent "
            "holds hparams.json. Pass <run_root>/<name>_<hash> or its replicate_<r> directory."
        )
    if not os.path.isdir(replicate_dir):
        found = sorted(e for e in os.listdir(root) if e.startswith("replicate_"))
        raise ValueError(f"`replicate` (--replicate) {replicate} has no directory in {root}; "
                         f"found {found}.")
    return root, replicate_dir, replicate
