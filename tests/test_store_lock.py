"""One writer per store: the lock file, a live holder in another process, stale locks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from leukoscreen.model.errors import OutputError, StoreLockedError
from leukoscreen.pipeline.store_lock import (
    STALE_AFTER_S,
    LockHolder,
    WriterLock,
    is_stale,
    lock_path,
)


def _write_lock(store: Path, *, host: str, pid: int, age_s: float = 0.0) -> Path:
    path = lock_path(store)
    path.write_text(json.dumps({"host": host, "pid": pid, "started_at": 1.8e9}) + "\n")
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_file_sits_beside_the_store_and_names_the_holder(tmp_path: Path) -> None:
    store = tmp_path / "a.leukoscreen.zarr"
    with WriterLock.acquire(store) as lock:
        assert lock.path == tmp_path / "a.leukoscreen.zarr.lock"
        held = json.loads(lock.path.read_text())
        assert held["host"] == socket.gethostname() and held["pid"] == os.getpid()
        assert abs(held["started_at"] - time.time()) < 60
    assert not lock.path.exists()  # released


def test_a_second_writer_in_another_process_is_refused(tmp_path: Path, lock_held: Any) -> None:
    store = tmp_path / "a.leukoscreen.zarr"
    with lock_held(store) as holder:
        with pytest.raises(StoreLockedError) as info:
            WriterLock.acquire(store)
        message = str(info.value)
        assert message.startswith(f"{store}: another leukoscreen run is writing this store (pid ")
        assert f"pid {holder.pid} on host {socket.gethostname()}, since " in message
        assert message.endswith(f"or delete {lock_path(store)} if that run is gone")
        assert "\n" not in message
    with WriterLock.acquire(store):  # free again
        pass


def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over(tmp_path: Path) -> None:
    store = tmp_path / "a.leukoscreen.zarr"
    _write_lock(store, host=socket.gethostname(), pid=_dead_pid())
    with WriterLock.acquire(store) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not list(tmp_path.iterdir())  # no leftovers of the take-over


def test_a_lock_of_a_live_process_on_this_host_is_kept_however_old(tmp_path: Path) -> None:
    store = tmp_path / "a.leukoscreen.zarr"
    path = _write_lock(store, host=socket.gethostname(), pid=os.getppid(), age_s=2 * STALE_AFTER_S)
    with pytest.raises(StoreLockedError, match=f"pid {os.getppid()} on host "):
        WriterLock.acquire(store)
    assert json.loads(path.read_text())["pid"] == os.getppid()


def test_a_lock_from_another_host_is_taken_over_only_after_the_timeout(tmp_path: Path) -> None:
    store = tmp_path / "a.leukoscreen.zarr"
    _write_lock(store, host="node-elsewhere", pid=1, age_s=STALE_AFTER_S - 60)
    with pytest.raises(StoreLockedError, match=r"\(pid 1 on host node-elsewhere, since "):
        WriterLock.acquire(store)
    _write_lock(store, host="node-elsewhere", pid=1, age_s=STALE_AFTER_S + 60)
    with WriterLock.acquire(store) as lock:
        assert json.loads(lock.path.read_text())["host"] == socket.gethostname()


def test_is_stale() -> None:
    here = socket.gethostname()
    assert not is_stale(LockHolder(here, os.getpid(), 0.0), 1e9, stale_after_s=10)
    assert is_stale(LockHolder(here, _dead_pid(), 0.0), 0.0, stale_after_s=10)
    assert not is_stale(LockHolder("other", 1, 0.0), 9.0, stale_after_s=10)
    assert is_stale(LockHolder("other", 1, 0.0), 11.0, stale_after_s=10)
    assert not is_stale(None, 9.0, stale_after_s=10)  # being written: wait for it
    assert is_stale(None, 11.0, stale_after_s=10)  # never completed by a killed writer


def test_release_leaves_a_lock_that_another_run_took(tmp_path: Path) -> None:
    store = tmp_path / "a.leukoscreen.zarr"
    lock = WriterLock.acquire(store)
    _write_lock(store, host="node-elsewhere", pid=7)  # e.g. removed by hand and re-taken
    lock.release()
    assert json.loads(lock_path(store).read_text())["host"] == "node-elsewhere"


def test_a_lock_in_a_missing_folder_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"a\.leukoscreen\.zarr\.lock: cannot create the store's"):
        WriterLock.acquire(tmp_path / "missing" / "a.leukoscreen.zarr")


def test_a_run_killed_while_taking_the_lock_leaves_no_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock appears whole or not at all: a run dying between writing its holder line and
    publishing the lock leaves nothing that blocks the next run (an empty lock file, which the
    old create-then-write left, names no holder and blocked for STALE_AFTER_S)."""
    import leukoscreen.pipeline.store_lock as store_lock

    store = tmp_path / "a.leukoscreen.zarr"

    def die(*_args: object) -> None:
        raise KeyboardInterrupt  # stands for SIGKILL at that instant

    with monkeypatch.context() as patch:
        patch.setattr(store_lock.os, "link", die)
        with pytest.raises(KeyboardInterrupt):
            WriterLock.acquire(store)
    assert not lock_path(store).exists()
    assert list(tmp_path.iterdir()) == []  # the private file is gone too
    with WriterLock.acquire(store) as lock:  # the next run takes it at once
        assert json.loads(lock_path(store).read_text())["pid"] == lock.holder.pid
    assert not lock_path(store).exists()


def test_without_hard_links_the_lock_is_still_exclusive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import leukoscreen.pipeline.store_lock as store_lock

    def no_links(*_args: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(store_lock.os, "link", no_links)
    store = tmp_path / "a.leukoscreen.zarr"
    with WriterLock.acquire(store) as lock:
        assert json.loads(lock_path(store).read_text())["pid"] == lock.holder.pid
        with pytest.raises(StoreLockedError, match="another leukoscreen run"):
            WriterLock.acquire(store)
    assert list(tmp_path.iterdir()) == []
