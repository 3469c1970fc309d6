"""One writer per store: a lock file beside the store, created atomically by the run that writes it.

``<store>.lock`` (e.g. ``smear.leukoscreen.zarr.lock``) holds one JSON line: the holder's host,
pid and start time. It is written to a private file first and then hard-linked to its name
(``link`` fails when the name exists), so of two runs that start together exactly one gets it,
and a run killed at any point never leaves an empty lock (one that names no holder could only be
taken over after :data:`STALE_AFTER_S`). ``leukoscreen run`` takes it for a new store,
``--resume`` and ``--overwrite`` alike, before anything is read or deleted, and removes it when
the run ends (also on an error). A second writer is refused with :class:`StoreLockedError`
naming the holder.

A lock outlives its run only when the process is killed. Such a lock is taken over:

- from this host, when its pid no longer runs (checked with ``kill(pid, 0)``);
- from another host, whose processes we cannot see, when the lock file has not been touched for
  :data:`STALE_AFTER_S` seconds: the holder touches it every :data:`HEARTBEAT_S` seconds while it
  runs, so only a dead run's lock grows that old.

The lock sits beside the store rather than in it so that ``--overwrite`` can hold it while it
deletes and re-creates the store folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from leukoscreen.model.errors import OutputError, StoreLockedError

LOCK_SUFFIX = ".lock"
HEARTBEAT_S = 60.0
"""How often the holder touches its lock file."""
STALE_AFTER_S = 900.0
"""A lock from another host untouched for this long (15 heartbeats) belongs to a dead run."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock.

    Attributes:
        host: ``socket.gethostname()`` of the holder.
        pid: its process id.
        started_at: when it took the lock, seconds since the epoch.
    """

    host: str
    pid: int
    started_at: float

    def describe(self) -> str:
        """``pid 123 on host node1, since 2026-11-27T21:00:00+0000``."""
        since = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started_at))
        return f"pid {self.pid} on host {self.host}, since {since}"

    def to_json(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "started_at": self.started_at})

    @classmethod
    def from_json(cls, text: str) -> LockHolder | None:
        """The holder a lock file names, or ``None`` for a file still being written or damaged."""
        try:
            data = json.loads(text)
            return cls(str(data["host"]), int(data["pid"]), float(data["started_at"]))
        except (ValueError, KeyError, TypeError):
            return None


def lock_path(store: Path) -> Path:
    """``<store>.lock``, beside the store."""
    store = Path(store)
    return store.with_name(store.name + LOCK_SUFFIX)


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_stale(holder: LockHolder | None, age_s: float, *, stale_after_s: float) -> bool:
    """Whether a lock belongs to a run that no longer runs.

    Args:
        holder: what the lock file says (``None``: unreadable).
        age_s: seconds since the lock file was last touched.
        stale_after_s: the age at which a lock whose process cannot be checked is taken over.
    """
    if holder is not None and holder.host == socket.gethostname():
        return not _pid_runs(holder.pid)
    return age_s > stale_after_s  # another host, or a file never completed by a killed writer


class WriterLock:
    """The writer lock of one store, held from :meth:`acquire` to :meth:`release`.

    Use it as a context manager; while held, a daemon thread touches the lock file every
    :data:`HEARTBEAT_S` seconds.
    """

    def __init__(self, path: Path, holder: LockHolder) -> None:
        self.path = path
        self.holder = holder
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="leukoscreen-lock", daemon=True)
        self._heartbeat.start()

    @classmethod
    def acquire(cls, store: Path, *, stale_after_s: float = STALE_AFTER_S) -> WriterLock:
        """Take the writer lock of ``store``, taking over a stale one.

        Raises:
            StoreLockedError: a live run holds it (the message names it).
            OutputError: the lock file cannot be created (a missing or read-only folder).
        """
        path = lock_path(store)
        me = LockHolder(socket.gethostname(), os.getpid(), time.time())
        for _ in range(3):  # a stale lock removed by us, or by another run at the same moment
            if _create(path, me):
                return cls(path, me)
            holder, age_s = _read(path)
            if holder is None and age_s is None:
                continue  # removed since: try again
            if not is_stale(holder, age_s or 0.0, stale_after_s=stale_after_s):
                who = holder.describe() if holder is not None else "a run starting now"
                raise StoreLockedError(
                    f"{store}: another leukoscreen run is writing this store ({who}); wait for "
                    f"it to end, or delete {path} if that run is gone"
                )
            _remove_if_unchanged(path, holder)
        raise StoreLockedError(f"{store}: cannot take the writer lock {path}; try again")

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file (only while it is still ours)."""
        self._stop.set()
        self._heartbeat.join()
        holder, _ = _read(self.path)
        if holder == self.holder:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)


def _create(path: Path, holder: LockHolder) -> bool:
    """Create the lock file holding ``holder`` in one step; False when it exists.

    The content goes into a private file that is then hard-linked to ``path``: the lock appears
    whole or not at all. Where the file system has no hard links, ``O_CREAT | O_EXCL`` and a
    write are the fallback.
    """
    private = path.with_name(f"{path.name}.{uuid.uuid4().hex}.new")
    try:
        private.write_text(holder.to_json() + "\n", encoding="utf-8")
        try:
            os.link(private, path)
        except FileExistsError:
            return False
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return _create_in_place(path, holder)
    except OSError as err:
        raise OutputError(
            f"{path}: cannot create the store's writer lock ({err.strerror or err})"
        ) from err
    finally:
        with contextlib.suppress(OSError):
            private.unlink()
    return True


def _create_in_place(path: Path, holder: LockHolder) -> bool:
    """``O_CREAT | O_EXCL`` and a write: :func:`_create` without hard links."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(holder.to_json() + "\n")
    return True


def _read(path: Path) -> tuple[LockHolder | None, float | None]:
    """The holder a lock file names and its age in seconds; ``(None, None)`` when it is gone."""
    try:
        age_s = time.time() - path.stat().st_mtime
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    return LockHolder.from_json(text), age_s


def _remove_if_unchanged(path: Path, stale: LockHolder | None) -> None:
    """Remove a stale lock, unless another run replaced it meanwhile.

    The lock is first renamed to a name only this process uses (atomic: of two runs taking it
    over, one gets it); if what was renamed is not the stale lock that was judged, it is put back
    with ``link``, which never replaces a lock created since.
    """
    private = path.with_name(f"{path.name}.{uuid.uuid4().hex}")
    try:
        os.rename(path, private)
    except FileNotFoundError:
        return
    holder, _ = _read(private)
    if holder != stale:
        try:
            os.link(private, path)
        except OSError as err:
            if err.errno != errno.EEXIST:
                raise
    private.unlink()
