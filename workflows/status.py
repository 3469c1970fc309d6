"""The batch status table: one row per slide, rewritten atomically at every state change.

``DIR/batch-status.csv`` (and ``DIR/batch-status.parquet`` when pyarrow is installed) holds one
row per slide a batch in ``DIR`` has seen, in :data:`COLUMNS` order. Several batch processes may
share ``DIR`` (array-job shards, a second nightly run): every update takes an ``flock`` on
``DIR/.batch-status.lock``, reads the table as it is on disk, changes only its own row and writes
the whole table to a temporary file that is renamed over the old one. A killed batch therefore
leaves either the old table or the new one, never a torn file, and no process undoes another's
rows.

States: ``pending`` (planned), ``running`` (a process holds the slide's claim), ``done`` (store
complete, written by this batch), ``skipped`` (complete from an earlier batch, or a duplicate of
another slide), ``failed`` (``error_class`` and ``message`` say why).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

STATUS_CSV = "batch-status.csv"
STATUS_PARQUET = "batch-status.parquet"
LOCK_NAME = ".batch-status.lock"

STATES = ("pending", "running", "done", "skipped", "failed")
COLUMNS = (
    "slide",
    "state",
    "attempts",
    "error_class",
    "message",
    "cells",
    "seconds",
    "store",
    "scale",
    "slide_sha256",
    "config_sha256",
    "model_sha256",
    "host",
    "worker",
    "started_at",
    "ended_at",
)
_INT_COLUMNS = {"attempts", "cells", "scale"}
_FLOAT_COLUMNS = {"seconds"}

Row = dict[str, Any]


class StatusTable:
    """The status table of one output folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.csv_path = self.folder / STATUS_CSV
        self.parquet_path = self.folder / STATUS_PARQUET

    def read(self) -> dict[str, Row]:
        """The rows on disk, by slide path (empty when there is no table yet)."""
        try:
            text = self.csv_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        rows = {}
        for raw in csv.DictReader(io.StringIO(text)):
            row = {c: _parse(c, raw.get(c, "")) for c in COLUMNS}
            rows[str(row["slide"])] = row
        return rows

    @staticmethod
    def _new_row(slide: str) -> Row:
        return {c: None for c in COLUMNS} | {"slide": slide, "attempts": 0}

    def update(self, slide: str, **fields: Any) -> Row:
        """Set fields of one slide's row (created when missing) and rewrite the table.

        Returns:
            The row as written.
        """
        unknown = set(fields) - set(COLUMNS)
        if unknown:
            raise KeyError(f"unknown status columns {sorted(unknown)}")
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"state: expected one of {STATES}, found {fields['state']!r}")
        with self._locked():
            rows = self.read()
            row = rows.get(slide) or self._new_row(slide)
            row.update(fields)
            rows[slide] = row
            self._write(rows)
        return row

    def update_many(self, changes: Mapping[str, Mapping[str, Any]], *, keep_running: bool) -> None:
        """Set fields of several rows in one rewrite.

        Args:
            changes: slide -> fields.
            keep_running: leave rows that read ``running`` as they are (another process may be
                working on them), unless the change marks the slide ``skipped``: its store is
                complete (or it is a duplicate), so the claim is stale, e.g. a batch killed
                between completing the store and writing ``done``.
        """
        with self._locked():
            rows = self.read()
            for slide, fields in changes.items():
                row = rows.get(slide) or self._new_row(slide)
                if (
                    keep_running
                    and row.get("state") == "running"
                    and fields.get("state") != "skipped"
                ):
                    continue
                row.update(fields)
                rows[slide] = row
            self._write(rows)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / LOCK_NAME).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, rows: Mapping[str, Row]) -> None:
        ordered = [rows[k] for k in sorted(rows)]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in ordered:
            writer.writerow({c: _format(row.get(c)) for c in COLUMNS})
        atomic_write(self.csv_path, buffer.getvalue().encode("utf-8"))
        _write_parquet(self.parquet_path, ordered)


def _parse(column: str, text: str) -> Any:
    if text == "":
        return 0 if column == "attempts" else None
    if column in _INT_COLUMNS:
        return int(text)
    if column in _FLOAT_COLUMNS:
        return float(text)
    return text


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it and rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_parquet(path: Path, rows: list[Row]) -> None:
    """The same table as Parquet, when pyarrow is installed (typed columns)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    types = {c: pa.int64() if c in _INT_COLUMNS else pa.float64() if c in _FLOAT_COLUMNS
             else pa.string() for c in COLUMNS}  # fmt: skip
    table = pa.table({c: pa.array([r.get(c) for r in rows], type=types[c]) for c in COLUMNS})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    atomic_write(path, sink.getvalue())
