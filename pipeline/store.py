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

The status attribute reads ``complete`` only after :func:`finalize`.
"""

from __future__ import annotations

import json
import math
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

FORMAT_VERSION = 1
ATTRS_KEY = "leukoscreen"  # all our attributes live under this one key of the root group

# Cell-table columns: dtype and the shape after the cell axis.
TABLE_COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "cell_id": ("int64", ()),
    "row": ("float64", ()),
    "col": ("float64", ()),
    "row_um": ("float64", ()),
    "col_um": ("float64", ()),
    "bbox": ("int64", (4,)),
    "area_um2": ("float64", ()),
    "score": ("float32", ()),
    "batch": ("int64", ()),
}
CONFIDENCE = "parsing_confidence"
"""The table column written with each batch by networks with a parsing map (``write_batch``)."""
_TABLE_CHUNK_ROWS = 1 << 18  # 2 MiB of float64 per chunk: the table stays a few files


@dataclass(frozen=True)
class StoreIdentity:
    """What makes two runs produce the same store; a resume must match all of the checked fields.

    Attributes:
        slide_path: the slide as given (recorded, not checked: a moved slide may be resumed).
        slide_size_px: (height, width) of level 0, pixels.
        slide_header_sha256: sha256 of the slide's header bytes (``Slide.header_sha256``).
        slide_vendor: format/vendor name reported by the reader (recorded, not checked).
        mpp: microns per level-0 pixel used for this run.
        scale: super-resolution factor.
        arch: network name (``gp``, ``np``, ...).
        checkpoint_sha256: sha256 of the weights used.
        has_prior: whether the network predicts parsing maps (``cells/parsing`` exists).
        hr_size_px: side of each super-resolved cell, HR pixels.
        margin_px: LR context pixels per side, trimmed after SR.
        batch_size: cells per SR batch and per chunk.
    """

    slide_path: str
    slide_size_px: tuple[int, int]
    slide_header_sha256: str
    slide_vendor: str
    mpp: float
    scale: int
    arch: str
    checkpoint_sha256: str
    has_prior: bool
    hr_size_px: int
    margin_px: int
    batch_size: int

    @property
    def lr_size_px(self) -> int:
        """Side of the stored LR crop: ``hr_size_px // scale + 2 * margin_px``."""
        return self.hr_size_px // self.scale + 2 * self.margin_px

    def to_attrs(self) -> dict[str, Any]:
        """The identity as the JSON ``slide``/``model``/``geometry`` attribute sections."""
        return {
            "slide": {
                "path": self.slide_path,
                "size_px": list(self.slide_size_px),
                "header_sha256": self.slide_header_sha256,
                "vendor": self.slide_vendor,
                "mpp": self.mpp,
            },
            "scale": self.scale,
            "model": {
                "arch": self.arch,
                "checkpoint_sha256": self.checkpoint_sha256,
                "has_prior": self.has_prior,
            },
            "geometry": {
                "hr_size_px": self.hr_size_px,
                "lr_core_px": self.hr_size_px // self.scale,
                "context_margin_px": self.margin_px,
                "lr_size_px": self.lr_size_px,
                "batch_size": self.batch_size,
                "crop_row0": "floor(row + 0.5) - lr_core_px // 2 - context_margin_px",
                "border": "pixels outside the slide are white (255, 255, 255)",
            },
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StoreIdentity:
        """Inverse of :meth:`to_attrs`."""
        slide, model, geometry = attrs["slide"], attrs["model"], attrs["geometry"]
        return cls(
            slide_path=str(slide["path"]),
            slide_size_px=(int(slide["size_px"][0]), int(slide["size_px"][1])),
            slide_header_sha256=str(slide["header_sha256"]),
            slide_vendor=str(slide["vendor"]),
            mpp=float(slide["mpp"]),
            scale=int(attrs["scale"]),
            arch=str(model["arch"]),
            checkpoint_sha256=str(model["checkpoint_sha256"]),
            has_prior=bool(model["has_prior"]),
            hr_size_px=int(geometry["hr_size_px"]),
            margin_px=int(geometry["context_margin_px"]),
            batch_size=int(geometry["batch_size"]),
        )


# Fields a resumed run must share with the store, with the words used in the refusal.
_CHECKED_FIELDS = {
    "slide_header_sha256": "slide header sha256",
    "slide_size_px": "slide size (rows, cols)",
    "mpp": "mpp",
    "scale": "scale",
    "arch": "model",
    "checkpoint_sha256": "checkpoint sha256",
    "hr_size_px": "hr_size_px",
    "margin_px": "context_margin_px",
    "batch_size": "batch size",
}


@dataclass(frozen=True)
class ResumeState:
    """How far an existing store got.

    Attributes:
        n_cells: cells in the table, or ``None`` when the run died before the table was written.
        done: (n_batches,) bool, the batches whose chunks are written; ``None`` with ``n_cells``.
        complete: the store was finalized.
    """

    n_cells: int | None
    done: np.ndarray | None
    complete: bool


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


def n_batches_for(n_cells: int, batch_size: int) -> int:
    """Number of batches of ``batch_size`` cells covering ``n_cells`` (the last may be short)."""
    return math.ceil(n_cells / batch_size)


def batch_bounds(batch_index: int, n_cells: int, batch_size: int) -> tuple[int, int]:
    """``(start, stop)`` cell indices of batch ``batch_index``."""
    start = batch_index * batch_size
    return start, min(start + batch_size, n_cells)


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


def create_store(
    path: Path,
    identity: StoreIdentity,
    *,
    config: Mapping[str, Any],
    overwrite: bool = False,
) -> None:
    """Create an empty store with status ``running`` (the cell arrays come with the table).

    Args:
        path: store directory (conventionally ``<slide stem>.leukoscreen.zarr``).
        identity: slide, model and geometry of this run.
        config: the resolved config tree as plain dicts (``config.to_dict``), saved in the attrs.
        overwrite: delete an existing leukoscreen store at ``path`` first.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
        OutputError: ``path`` cannot be created, or exists and is not a leukoscreen store.
    """
    path = Path(path)
    check_output_location(path, resume=False, overwrite=overwrite)
    if path.exists():
        shutil.rmtree(path)
    try:
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
        # One write: the group's zarr.json appears with its attributes, so a run killed at any
        # moment leaves either no store or one that --resume recognises.
        zarr.open_group(path, mode="w-", zarr_format=3, attributes={ATTRS_KEY: attrs})
    except OSError as err:
        raise OutputError(f"{path}: cannot create the output store ({err})") from err


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


def _update_attrs(path: Path, **changes: Any) -> dict[str, Any]:
    root = zarr.open_group(path, mode="r+")
    attrs = dict(root.attrs[ATTRS_KEY])  # type: ignore[arg-type]
    attrs.update(json.loads(json.dumps(changes)))
    root.attrs[ATTRS_KEY] = attrs
    return attrs


def open_for_resume(path: Path, identity: StoreIdentity) -> ResumeState:
    """Open an existing store to continue it, after checking it was made by the same run.

    Args:
        path: an existing store directory.
        identity: slide, model and geometry of the run that wants to continue it.

    Returns:
        How far the store got.

    Raises:
        OutputError: not a leukoscreen store, another format version, or made with another slide,
            scale, model or geometry (the message shows both values).
    """
    path = Path(path)
    attrs = read_attrs(path)
    if attrs.get("format_version") != FORMAT_VERSION:
        raise OutputError(
            f"{path}: store format version {attrs.get('format_version')!r}, this leukoscreen "
            f"writes {FORMAT_VERSION}; use --overwrite to start over"
        )
    stored = StoreIdentity.from_attrs(attrs)
    for name, words in _CHECKED_FIELDS.items():
        old, new = getattr(stored, name), getattr(identity, name)
        if old != new:
            raise OutputError(
                f"{path}: cannot resume: the store was made with {words} {old!r}, this run has "
                f"{new!r}; use --overwrite to start over"
            )
    if not attrs.get("table_written"):
        return ResumeState(n_cells=None, done=None, complete=False)
    n_cells = int(attrs["n_cells"])
    return ResumeState(
        n_cells=n_cells, done=read_done(path), complete=attrs.get("status") == "complete"
    )


def read_done(path: Path) -> np.ndarray:
    """(n_batches,) bool: which batches have all their chunks written."""
    done_array = zarr.open_array(Path(path) / "batches" / "done", mode="r")
    return np.asarray(done_array[:], dtype=bool)


def write_cell_table(
    path: Path,
    table: Mapping[str, np.ndarray],
    *,
    compression_level: int = 3,
    detection: Mapping[str, Any] | None = None,
) -> int:
    """Create the cell arrays sized to the table, write the table, and record the cell count.

    Safe to repeat: a run killed while this ran is redone on resume (``table_written`` is set
    last).

    Args:
        path: a store made by :func:`create_store`.
        table: every column of ``TABLE_COLUMNS``, each (N,) (``bbox`` (N, 4)); rows in cell-id
            order, ``cell_id == arange(N)`` and ``batch == cell_id // batch_size``.
        compression_level: zstd level of the cell arrays and table.
        detection: what the detector estimated on this slide (the stain), saved in the attrs
            under ``detection``.

    Returns:
        The number of batches.

    Raises:
        ValueError: a column is missing, has the wrong shape, or the ids are not ``arange(N)``.
    """
    path = Path(path)
    attrs = read_attrs(path)
    ident = StoreIdentity.from_attrs(attrs)
    n_cells = _check_table(table, ident.batch_size)
    n_batches = n_batches_for(n_cells, ident.batch_size)
    B, H, h = ident.batch_size, ident.hr_size_px, ident.lr_size_px
    zstd = ZstdCodec(level=compression_level)
    root = zarr.open_group(path, mode="r+")

    def create(
        name: str,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        dtype: str,
        dims: list[str],
        compressed: bool = True,
    ) -> zarr.Array:
        return root.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            compressors=zstd if compressed else None,
            fill_value=0,
            dimension_names=dims,
            overwrite=True,
        )

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
    create("batches/done", (n_batches,), (1,), "bool", ["batch"], compressed=False)
    extra = {"detection": json.loads(json.dumps(dict(detection)))} if detection else {}
    _update_attrs(path, n_cells=n_cells, n_batches=n_batches, table_written=True, **extra)
    return n_batches


def _check_table(table: Mapping[str, np.ndarray], batch_size: int) -> int:
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
    ids = np.asarray(table["cell_id"])
    if not np.array_equal(ids, np.arange(n_cells)):
        raise ValueError("cell table cell_id must be arange(N) in row order")
    if not np.array_equal(np.asarray(table["batch"]), ids // batch_size):
        raise ValueError(f"cell table batch must be cell_id // {batch_size}")
    return n_cells


def write_batch(
    store_path: Path,
    batch_index: int,
    sr: np.ndarray,
    parsing: np.ndarray | None,
    lr: np.ndarray,
    confidence: np.ndarray | None = None,
) -> None:
    """Write one batch's chunks, then mark the batch done (the only writer of those chunks).

    Args:
        store_path: the store.
        batch_index: which batch; it owns cells ``[b * B, min((b + 1) * B, N))``.
        sr: (n, H, W, 3) uint8 super-resolved cells.
        parsing: (n, H, W) uint8 labels, or ``None`` for a network without prior.
        lr: (n, h, w, 3) uint8 LR crops as fed to the network.
        confidence: (n,) float32 parsing confidence of each cell (with ``parsing``).

    Raises:
        ValueError: shapes or dtypes that do not match the store, or a batch index out of range.
        OutputError: the store lacks a cell array (not made by :func:`write_cell_table`).
    """
    path = Path(store_path)
    root = zarr.open_group(path, mode="r+")
    sr_array = _array(root, "cells/sr", path)
    lr_array = _array(root, "cells/lr", path)
    n_cells = sr_array.shape[0]
    batch_size = sr_array.chunks[0]
    n_batches = n_batches_for(n_cells, batch_size)
    if not 0 <= batch_index < n_batches:
        raise ValueError(f"batch_index {batch_index} out of range [0, {n_batches})")
    start, stop = batch_bounds(batch_index, n_cells, batch_size)
    n = stop - start
    _check_block("sr", sr, (n, *sr_array.shape[1:]))
    _check_block("lr", lr, (n, *lr_array.shape[1:]))
    parsing_array = _array(root, "cells/parsing", path) if _has_parsing(root) else None
    if parsing_array is not None:
        if parsing is None:
            raise ValueError("the store has cells/parsing but the batch has no parsing maps")
        _check_block("parsing", parsing, (n, *parsing_array.shape[1:]))
    confidence_array = root.get(f"cells/table/{CONFIDENCE}")
    if isinstance(confidence_array, zarr.Array):  # stores before it had no such column
        if confidence is None or np.shape(confidence) != (n,):
            raise ValueError(f"the store has a {CONFIDENCE} column; the batch needs ({n},) values")
        confidence_array[start:stop] = np.asarray(confidence, dtype=np.float32)
    sr_array[start:stop] = sr
    if parsing_array is not None and parsing is not None:
        parsing_array[start:stop] = parsing
    lr_array[start:stop] = lr
    # Last: the batch is done only once its data is on disk.
    _array(root, "batches/done", path)[batch_index] = True


def _array(root: zarr.Group, name: str, path: Path) -> zarr.Array:
    node = root.get(name)
    if not isinstance(node, zarr.Array):
        raise OutputError(f"{path}: expected a Zarr array at {name!r}, found {node!r}")
    return node


def _has_parsing(root: zarr.Group) -> bool:
    return isinstance(root.get("cells/parsing"), zarr.Array)


def _check_block(name: str, block: np.ndarray, expected: tuple[int, ...]) -> None:
    if block.shape != expected or block.dtype != np.uint8:
        raise ValueError(
            f"{name} block has shape {block.shape} {block.dtype}, expected {expected} uint8"
        )


def finalize(path: Path, *, timings: Mapping[str, float]) -> None:
    """Mark the store complete, after checking that every batch is done.

    Args:
        path: the store.
        timings: seconds per stage (``detect_s``, ``sr_s``, ``total_s``, ...), saved in the attrs.

    Raises:
        OutputError: the table is not written or some batch is not done.
    """
    path = Path(path)
    attrs = read_attrs(path)
    if not attrs.get("table_written"):
        raise OutputError(f"{path}: cannot finalize: the cell table was never written")
    done = read_done(path)
    if not done.all():
        missing = np.flatnonzero(~done)
        raise OutputError(
            f"{path}: cannot finalize: {missing.size} of {done.size} batches not written "
            f"(first: {missing[:5].tolist()})"
        )
    _update_attrs(
        path,
        status="complete",
        timings=dict(timings),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
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
    has_parsing = _has_parsing(zarr.open_group(path, mode="r"))
    return StoredCells(
        sr=da.from_zarr(str(path), component="cells/sr"),
        parsing=da.from_zarr(str(path), component="cells/parsing") if has_parsing else None,
        lr=da.from_zarr(str(path), component="cells/lr"),
        table=read_table(path),
        attrs=attrs,
    )
