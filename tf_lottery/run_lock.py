"""One process per replicate: the lock file of a replicate in training.

Independent processes may train different replicates (or different experiments) in one
run root at the same time. Two processes started on the *same* replicate would both
write its levels, so the first to start holds ``<replicate>/lock.json`` (host, process
id, start time) and the second stops at once with ``ReplicateLocked``, naming the holder.

Stale-lock rule: a lock whose holder is gone is taken over. On the holder's own host that
is known at once (its process id is no longer alive); from another host (a shared
filesystem) it is known by the heartbeat: the holder touches the file every
``HEARTBEAT_SECONDS``, and a lock untouched for ``STALE_SECONDS`` is stale. Creating the
lock is atomic (``O_CREAT | O_EXCL``); taking over a stale one replaces it atomically and
checks, after a moment, that it is still the taker's.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid

from tf_lottery import files

__all__ = ["ReplicateLocked", "replicate_lock", "HEARTBEAT_SECONDS", "STALE_SECONDS"]

#: How often (seconds) the holder touches its lock file.
HEARTBEAT_SECONDS = 30.0
#: A lock untouched for this long (seconds) is stale, whatever its host.
STALE_SECONDS = 600.0


class ReplicateLocked(RuntimeError):
    """Another live process is training this replicate.

    Attributes:
        path: the lock file.
        holder: its contents: ``host``, ``pid``, ``started`` (ISO time).
    """

    def __init__(self, path: str, holder: dict):
        super().__init__(
            f"this replicate is already being trained by process {holder.get('pid')} on "
            f"host {holder.get('host')!r} (since {holder.get('started')}; lock file "
            f"{path}). Wait for it to finish, or run another replicate (`replicate`). A "
            f"lock whose process is gone is taken over (at once on the same host, after "
            f"{STALE_SECONDS / 60:.0f} minutes without its heartbeat from another host).")
        self.path, self.holder = path, holder


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written, or damaged: judged by its age alone


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(path: str, holder: dict) -> bool:
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return True
    if age >= STALE_SECONDS:
        return True
    if holder.get("host") == socket.gethostname():
        return not _alive(holder.get("pid"))
    return False


def _heartbeat(path: str, token: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        holder = _read(path)
        if not holder or holder.get("token") != token:
            return
        with contextlib.suppress(OSError):
            os.utime(path)


@contextlib.contextmanager
def replicate_lock(path: str | os.PathLike):
    """Holds the lock file ``path`` (``paths.ReplicateDir.lock``) for the ``with`` block.

    Raises:
        ReplicateLocked: another live process holds it (nothing is written).
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    token = uuid.uuid4().hex
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": token}
    text = json.dumps(me, indent=1)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        holder = _read(path) or {}
        if not _is_stale(path, holder):
            raise ReplicateLocked(path, holder) from None
        files.atomic_write_text(path, text)  # take over the stale lock
        time.sleep(0.05)
        holder = _read(path) or {}
        if holder.get("token") != token:  # another process took it over at once
            raise ReplicateLocked(path, holder) from None
    else:
        with os.fdopen(fd, "w") as f:
            f.write(text)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, token, stop), daemon=True,
                            name="replicate-lock-heartbeat")
    beat.start()
    try:
        yield
    finally:
        stop.set()
        if (_read(path) or {}).get("token") == token:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
