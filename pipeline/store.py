"""The per-slide output store: Zarr v3 arrays of super-resolved cells, parsing maps, LR crops and
the cell table, with provenance and a completion status.

Layout (``docs/store-format.md`` documents every key)::

    <slide>.leukoscreen.zarr/           group; attrs["leukoscreen"] = provenance + status
      cells/sr        (N, H, W, 3) uint8   chunks (B, H, W, 3)   super-resolved RGB
      cells/parsing   (N, H, W)    uint8   chunks (B, H, W)      0 background 1 cytoplasm 2 nucleus
                                                                 (absent for networks without prior)
      cells/lr        (N, h, w, 3) uint8   chunks (B, h, w, 3)   the LR crop the network saw
      cells/table/<column>  (N,) or (N, 4)                       one 1-D array per column
      batches/done    (n_batches,) bool    chunks (1,)           batch b's chunks are written

Concurrency rule (zarr-python #3682: concurrent partial writes to one chunk lose data): batch
``b`` holds cells ``[b * B, (b + 1) * B)`` and *owns* chunk ``b`` of every cell array and chunk
``b`` of ``batches/done``; nothing else writes them. The driver alone writes the table and the
attributes. A batch counts as done only after its data chunks are written, so a run killed at any
moment and resumed rewrites exactly the unfinished batches (LocalStore writes each chunk file
atomically, through a temporary file and a rename).

The status attribute reads ``complete`` only after :meth:`CellStore.finalize`. One run writes a
store at a time: :meth:`CellStore.create` and :meth:`CellStore.resume` are called under the
store's writer lock (:mod:`leukoscreen.pipeline.store_lock`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from leukoscreen.model import __version__
from leukoscreen.model.errors import OutputError, OutputExistsError
from leukoscreen.pipeline.store_layout import (
    CONFIDENCE,
    TABLE_COLUMNS,
    StoreIdentity,
    first_difference,
    n_batches_for,
    number_cells,
)

FORMAT_VERSION = 1
ATTRS_KEY = "leukoscreen"  # all our attributes live under this one key of the root group

_TABLE_CHUNK_ROWS = 1 << 18  # 2 MiB of float64 per chunk: the table stays a few files


@dataclass(frozen=True)
class StoredCells:
    """A store opened for reading, lazily.

    Attributes:
        sr: (N, H, W, 3) uint8 dask array, chunks (B, H, W, 3).
        parsing: (N, H, W) uint8 dask array (0 background, 1 cytoplasm, 2 nucleus), or ``None``
            when the network had no prior.
        lr: (N, h, w, 3) uint8 dask array, the crops the network saw (margin included).
        table: column name -> (N,) or (N, 4) numpy array (see ``TABLE_COLUMNS``).
        attrs: the ``leukoscreen`` attributes (provenance, status, timings).
    """

    sr: da.Array
    parsing: da.Array | None
    lr: da.Array
    table: dict[str, np.ndarray]
    attrs: dict[str, Any]

    def __len__(self) -> int:
        return int(self.sr.shape[0])


def is_store(path: Path) -> bool:
    """True when ``path`` is a directory holding a leukoscreen Zarr store (any status)."""
    meta = Path(path) / "zarr.json"
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and ATTRS_KEY in data.get("attributes", {})


def check_output_location(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an output location before any work is done; writes nothing that stays.

    Args:
        path: the store directory to create or continue.
        resume: continue an existing store.
        overwrite: delete an existing store and start over.

    Raises:
        OutputExistsError: ``path`` exists and neither ``resume`` nor ``overwrite`` is set.
        OutputError: ``path`` exists but is not a leukoscreen store (it is never deleted), or its
            folder does not exist or cannot be written.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not (resume or overwrite):
            raise OutputExistsError(
                f"{path}: output store already exists; pass --resume to continue it or "
                "--overwrite to start over"
            )
        empty_dir = path.is_dir() and not any(path.iterdir())
        if not empty_dir and not is_store(path):
            raise OutputError(
                f"{path}: exists but is not a leukoscreen store (no zarr.json with "
                f"{ATTRS_KEY!r} attributes); refusing to resume or overwrite it"
            )
        return
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: output folder {parent} does not exist or is not a folder")
    try:  # os.access is wrong for root and for read-only mounts: try a real write instead
        probe = tempfile.mkdtemp(prefix=".leukoscreen-probe-", dir=parent)
    except OSError as err:
        raise OutputError(
            f"{path}: cannot write into output folder {parent} ({err.strerror or err})"
        ) from err
    Path(probe).rmdir()


def read_attrs(path: Path) -> dict[str, Any]:
    """The ``leukoscreen`` attributes of a store.

    Raises:
        OutputError: ``path`` is not a readable leukoscreen store.
    """
    path = Path(path)
    if not is_store(path):
        raise OutputError(f"{path}: not a leukoscreen store (no zarr.json with {ATTRS_KEY!r})")
    root = zarr.open_group(path, mode="r")
    return dict(root.attrs[ATTRS_KEY])  # type: ignore[arg-type]


class CellStore:
    """One slide's store, for the run that writes it: it owns the layout.

    It knows its identity (slide, model, geometry, batch size) and, once the table is written,
    its cell count; it numbers the cells and assigns their batches itself. Made by
    :meth:`create`, or :meth:`open` for an existing store (a resumed run, an SR task on a worker).
    """

    def __init__(self, path: Path, attrs: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.identity = StoreIdentity.from_attrs(attrs)
        self._attrs = dict(attrs)

    @classmethod
    def create(
        cls,
        path: Path,
        identity: StoreIdentity,
        *,
        config: Mapping[str, Any],
        overwrite: bool = False,
    ) -> CellStore:
        """Create an empty store with status ``running`` (the cell arrays come with the table).

        Args:
            path: store directory (conventionally ``<slide stem>.leukoscreen.zarr``).
            identity: slide, model and geometry of this run.
            config: the resolved config tree as plain dicts (``config.to_dict``), saved in the
                attrs.
            overwrite: delete an existing leukoscreen store at ``path`` first.

        Raises:
            OutputExistsError: ``path`` exists and ``overwrite`` is false.
            OutputError: ``path`` cannot be created, or exists and is not a leukoscreen store.
        """
        path = Path(path)
        check_output_location(path, resume=False, overwrite=overwrite)
        if path.exists():
            shutil.rmtree(path)
        attrs = {
            "format_version": FORMAT_VERSION,
            "leukoscreen_version": __version__,
            "status": "running",
            **identity.to_attrs(),
            "config": json.loads(json.dumps(dict(config))),
            "n_cells": None,
            "n_batches": None,
            "table_written": False,
            "timings": {},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        try:
            # One write: the group's zarr.json appears with its attributes, so a run killed at
            # any moment leaves either no store or one that --resume recognises.
            zarr.open_group(path, mode="w-", zarr_format=3, attributes={ATTRS_KEY: attrs})
        except OSError as err:
            raise OutputError(f"{path}: cannot create the output store ({err})") from err
        return cls(path, attrs)

    @classmethod
    def open(cls, path: Path) -> CellStore:
        """An existing store of this format version, any status.

        Raises:
            OutputError: not a leukoscreen store, or another format version.
        """
        attrs = read_attrs(path)
        if attrs.get("format_version") != FORMAT_VERSION:
            raise OutputError(
                f"{path}: store format version {attrs.get('format_version')!r}, this leukoscreen "
                f"writes {FORMAT_VERSION}; use --overwrite to start over"
            )
        return cls(Path(path), attrs)

    def check_same_run(self, identity: StoreIdentity) -> None:
        """Refuse to continue a store made by another run (slide, scale, model, geometry).

        Raises:
            OutputError: the first field that differs, with both values.
        """
        difference = first_difference(self.identity, identity)
        if difference is not None:
            words, old, new = difference
            raise OutputError(
                f"{self.path}: cannot resume: the store was made with {words} {old!r}, this "
                f"run has {new!r}; use --overwrite to start over"
            )

    @property
    def batch_size(self) -> int:
        """Cells per batch and per chunk of the cell arrays."""
        return self.identity.batch_size

    @property
    def table_written(self) -> bool:
        """Whether the cell table and the (empty) cell arrays exist."""
        return bool(self._attrs.get("table_written"))

    @property
    def n_cells(self) -> int:
        """Cells in the table.

        Raises:
            OutputError: the table is not written yet.
        """
        if not self.table_written:
            raise OutputError(f"{self.path}: the store has no cell table yet")
        return int(self._attrs["n_cells"])

    @property
    def n_batches(self) -> int:
        """SR batches covering the cells (the last may be short)."""
        return n_batches_for(self.n_cells, self.batch_size)

    @property
    def complete(self) -> bool:
        """Whether the store was finalized."""
        return self._attrs.get("status") == "complete"

    def batch_bounds(self, batch: int) -> tuple[int, int]:
        """``(start, stop)`` cell indices of ``batch``.

        Raises:
            ValueError: a batch index out of range.
        """
        if not 0 <= batch < self.n_batches:
            raise ValueError(f"batch_index {batch} out of range [0, {self.n_batches})")
        start = batch * self.batch_size
        return start, min(start + self.batch_size, self.n_cells)

    def done(self) -> np.ndarray:
        """(n_batches,) bool: which batches have all their chunks written."""
        done_array = zarr.open_array(self.path / "batches" / "done", mode="r")
        return np.asarray(done_array[:], dtype=bool)

    def write_table(
        self,
        columns: Mapping[str, np.ndarray],
        *,
        compression_level: int = 3,
        detection: Mapping[str, Any] | None = None,
    ) -> None:
        """Create the cell arrays sized to the table, write the table, and record the cell count.

        The cells are numbered in the order given (``cell_id = arange(N)``) and put in batches
        (``batch = cell_id // batch_size``). Safe to repeat: a run killed while this ran is
        redone on resume (``table_written`` is set last).

        Args:
            columns: every column of ``TABLE_COLUMNS`` but ``cell_id`` and ``batch``, each (N,)
                (``bbox`` (N, 4)), rows in cell-id order.
            compression_level: zstd level of the cell arrays and table.
            detection: what the detector estimated on this slide (the stain), saved in the attrs
                under ``detection``.

        Raises:
            ValueError: a column is missing or has the wrong shape.
        """
        table = number_cells(columns, self.batch_size)
        n_cells = _check_table(table)
        ident, zstd = self.identity, ZstdCodec(level=compression_level)
        B, H, h = ident.batch_size, ident.hr_size_px, ident.lr_size_px
        root = zarr.open_group(self.path, mode="r+")

        def create(
            name: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str, dims: list[str]
        ) -> zarr.Array:
            return root.create_array(
                name, shape=shape, chunks=chunks, dtype=dtype, dimension_names=dims,
                compressors=None if name == "batches/done" else zstd, fill_value=0, overwrite=True,
            )  # fmt: skip

        create("cells/sr", (n_cells, H, H, 3), (B, H, H, 3), "uint8", ["cell", "row", "col", "rgb"])
        if ident.has_prior:
            create("cells/parsing", (n_cells, H, H), (B, H, H), "uint8", ["cell", "row", "col"])
            create(f"cells/table/{CONFIDENCE}", (n_cells,), (B,), "float32", ["cell"])
        create("cells/lr", (n_cells, h, h, 3), (B, h, h, 3), "uint8", ["cell", "row", "col", "rgb"])
        rows = max(1, min(n_cells, _TABLE_CHUNK_ROWS))
        for name, (dtype, tail) in TABLE_COLUMNS.items():
            dims = ["cell"] + (["bbox"] if tail else [])
            column = create(f"cells/table/{name}", (n_cells, *tail), (rows, *tail), dtype, dims)
            if n_cells:
                column[...] = np.asarray(table[name], dtype=dtype)
        # All False (the fill value) until each batch sets its own one-element chunk.
        create("batches/done", (n_batches_for(n_cells, B),), (1,), "bool", ["batch"])
        extra = {"detection": json.loads(json.dumps(dict(detection)))} if detection else {}
        self._update_attrs(
            n_cells=n_cells, n_batches=n_batches_for(n_cells, B), table_written=True, **extra
        )

    def write_batch(
        self,
        batch: int,
        sr: np.ndarray,
        parsing: np.ndarray | None,
        lr: np.ndarray,
        confidence: np.ndarray | None = None,
    ) -> None:
        """Write one batch's chunks (the only writer of those chunks); :meth:`mark_done` follows.

        Args:
            batch: which batch; it owns cells ``[b * B, min((b + 1) * B, N))``.
            sr: (n, H, W, 3) uint8 super-resolved cells.
            parsing: (n, H, W) uint8 labels, or ``None`` for a network without prior.
            lr: (n, h, w, 3) uint8 LR crops as fed to the network.
            confidence: (n,) float32 parsing confidence of each cell (with ``parsing``).

        Raises:
            ValueError: shapes or dtypes that do not match the store, or a batch index out of
                range.
            OutputError: the store lacks a cell array (the table was never written).
        """
        start, stop = self.batch_bounds(batch)
        n, H, h = stop - start, self.identity.hr_size_px, self.identity.lr_size_px
        root = zarr.open_group(self.path, mode="r+")
        _check_block("sr", sr, (n, H, H, 3))
        _check_block("lr", lr, (n, h, h, 3))
        if self.identity.has_prior:
            if parsing is None:
                raise ValueError("the store has cells/parsing but the batch has no parsing maps")
            _check_block("parsing", parsing, (n, H, H))
        confidence_array = root.get(f"cells/table/{CONFIDENCE}")
        if isinstance(confidence_array, zarr.Array):  # stores before it had no such column
            if confidence is None or np.shape(confidence) != (n,):
                raise ValueError(
                    f"the store has a {CONFIDENCE} column; the batch needs ({n},) values"
                )
            confidence_array[start:stop] = np.asarray(confidence, dtype=np.float32)
        self._array(root, "cells/sr")[start:stop] = sr
        if self.identity.has_prior and parsing is not None:
            self._array(root, "cells/parsing")[start:stop] = parsing
        self._array(root, "cells/lr")[start:stop] = lr

    def mark_done(self, batch: int) -> None:
        """Record that ``batch``'s chunks are on disk (after :meth:`write_batch`)."""
        root = zarr.open_group(self.path, mode="r+")
        self._array(root, "batches/done")[batch] = True

    def finalize(self, *, timings: Mapping[str, float]) -> None:
        """Mark the store complete, after checking that every batch is done.

        Args:
            timings: seconds per stage (``detect_s``, ``sr_s``, ``total_s``, ...), saved in the
                attrs.

        Raises:
            OutputError: the table is not written or some batch is not done.
        """
        if not self.table_written:
            raise OutputError(f"{self.path}: cannot finalize: the cell table was never written")
        done = self.done()
        if not done.all():
            missing = np.flatnonzero(~done)
            raise OutputError(
                f"{self.path}: cannot finalize: {missing.size} of {done.size} batches not written "
                f"(first: {missing[:5].tolist()})"
            )
        self._update_attrs(
            status="complete",
            timings=dict(timings),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )

    def _update_attrs(self, **changes: Any) -> None:
        root = zarr.open_group(self.path, mode="r+")
        attrs = dict(root.attrs[ATTRS_KEY])  # type: ignore[arg-type]
        attrs.update(json.loads(json.dumps(changes)))
        root.attrs[ATTRS_KEY] = attrs
        self._attrs = attrs

    def _array(self, root: zarr.Group, name: str) -> zarr.Array:
        node = root.get(name)
        if not isinstance(node, zarr.Array):
            raise OutputError(f"{self.path}: expected a Zarr array at {name!r}, found {node!r}")
        return node


def _check_table(table: Mapping[str, np.ndarray]) -> int:
    missing = [name for name in TABLE_COLUMNS if name not in table]
    if missing:
        raise ValueError(f"cell table lacks columns {missing}")
    n_cells = len(table["cell_id"])
    for name, (_, tail) in TABLE_COLUMNS.items():
        shape = np.shape(table[name])
        if shape != (n_cells, *tail):
            raise ValueError(
                f"cell table column {name!r} has shape {shape}, expected {(n_cells, *tail)}"
            )
    return n_cells


def _check_block(name: str, block: np.ndarray, expected: tuple[int, ...]) -> None:
    if block.shape != expected or block.dtype != np.uint8:
        raise ValueError(
            f"{name} block has shape {block.shape} {block.dtype}, expected {expected} uint8"
        )


def read_table(path: Path) -> dict[str, np.ndarray]:
    """The cell table as a dict of numpy columns (``TABLE_COLUMNS``, and ``parsing_confidence``
    for a network with a parsing map, filled batch by batch), in cell-id order."""
    root = zarr.open_group(Path(path), mode="r")
    names = list(TABLE_COLUMNS)
    if isinstance(root.get(f"cells/table/{CONFIDENCE}"), zarr.Array):
        names.append(CONFIDENCE)
    return {
        name: np.asarray(root[f"cells/table/{name}"][...])  # type: ignore[index]
        for name in names
    }


def open_cells(path: Path, *, allow_incomplete: bool = False) -> StoredCells:
    """Open a store for downstream use: lazy dask arrays plus the (small) cell table.

    Nothing but the table and the attributes is read; pixels load when the dask arrays are
    computed, chunk by chunk.

    Args:
        path: a store written by ``leukoscreen run``.
        allow_incomplete: also open a store whose status is not ``complete`` (unwritten cells
            read as zeros).

    Raises:
        OutputError: not a leukoscreen store, or not complete and ``allow_incomplete`` is false.
    """
    path = Path(path)
    attrs = read_attrs(path)
    if attrs.get("status") != "complete" and not allow_incomplete:
        raise OutputError(
            f"{path}: store status is {attrs.get('status')!r}, expected 'complete' (the run was "
            "interrupted; rerun it with --resume)"
        )
    if not attrs.get("table_written"):
        raise OutputError(f"{path}: the store has no cell table yet")
    has_parsing = isinstance(zarr.open_group(path, mode="r").get("cells/parsing"), zarr.Array)
    return StoredCells(
        sr=da.from_zarr(str(path), component="cells/sr"),
        parsing=da.from_zarr(str(path), component="cells/parsing") if has_parsing else None,
        lr=da.from_zarr(str(path), component="cells/lr"),
        table=read_table(path),
        attrs=attrs,
    )
