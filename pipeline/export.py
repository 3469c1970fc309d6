"""``leukoscreen export``: a finished store's cells for other tools.

Three formats (``docs/exports.md``):

* ``geojson``: QuPath GeoJSON, one cell object per leukocyte with its outline and nucleus
  (:mod:`leukoscreen.pipeline.export_geojson`);
* ``parquet``: the cell table, one row per cell, with ``slide`` and ``store`` columns so that
  many slides' files concatenate into one table (written here);
* ``ome-zarr``: the slide as an NGFF 0.5 multiscale image with ``labels/cells`` and
  ``labels/parsing`` (:mod:`leukoscreen.pipeline.export_omezarr`).

The default output lies beside the store (``<stem>.geojson``, ``<stem>.cells.parquet``,
``<stem>.ome.zarr`` for ``<stem>.leukoscreen.zarr``). Every export is written under a temporary
name in the output's folder and renamed into place when complete, so an interrupted export
leaves no partial file under the final name; an existing output is replaced only with
``overwrite`` (and only when it is a file of the same kind, or an OME-Zarr folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leukoscreen.model.errors import (
    LeukoscreenError,
    OutputError,
    OutputExistsError,
    SlideReadError,
    UsageError,
)
from leukoscreen.pipeline.store_layout import StoreIdentity

if TYPE_CHECKING:  # the writers import numpy, zarr, scikit-image: only when a command runs
    from leukoscreen.pipeline.slide import Slide
    from leukoscreen.pipeline.store import StoredCells


class ExportFormat(StrEnum):
    """What ``leukoscreen export --to`` writes."""

    GEOJSON = "geojson"
    PARQUET = "parquet"
    OME_ZARR = "ome-zarr"


SUFFIXES = {
    ExportFormat.GEOJSON: ".geojson",
    ExportFormat.PARQUET: ".cells.parquet",
    ExportFormat.OME_ZARR: ".ome.zarr",
}


@dataclass(frozen=True)
class ExportSummary:
    """What one export wrote."""

    store: Path
    path: Path
    to: ExportFormat
    n_cells: int
    seconds: float

    def describe(self) -> str:
        """One line for the terminal."""
        return f"{self.store}: {self.n_cells} cells -> {self.path} ({self.seconds:.1f} s)"


def default_export_path(store: Path, to: ExportFormat) -> Path:
    """``<folder of store>/<stem><suffix>``, the stem being the store's name without
    ``.leukoscreen.zarr`` (or ``.zarr``)."""
    from leukoscreen.pipeline.plan import store_stem

    return Path(store).parent / f"{store_stem(store)}{SUFFIXES[to]}"


def export_store(
    store: Path,
    *,
    to: ExportFormat,
    out: Path | None = None,
    overwrite: bool = False,
    slide: Path | None = None,
) -> ExportSummary:
    """Export a complete store.

    Args:
        store: a store written by ``leukoscreen run`` (status complete).
        to: the format.
        out: the file (GeoJSON, Parquet) or folder (OME-Zarr) to write; default beside the store
            (:func:`default_export_path`).
        overwrite: replace an existing output.
        slide: the slide file for ``ome-zarr`` when it is no longer where the store says
            (``slide.path`` of its attributes); it must have the same header sha256.

    Raises:
        OutputError: ``store`` is not a complete leukoscreen store, or ``out`` cannot be
            written or is not of a kind that may be replaced.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        SlideReadError: (``ome-zarr``) the slide is missing, unreadable or not the store's.
        UsageError: ``slide`` given for another format, or a missing optional dependency.
    """
    from leukoscreen.pipeline.export_geojson import write_geojson
    from leukoscreen.pipeline.store import open_cells

    started = time.perf_counter()
    store, to = Path(store), ExportFormat(to)
    if slide is not None and to is not ExportFormat.OME_ZARR:
        raise UsageError(f"{slide}: --slide is only used with --to {ExportFormat.OME_ZARR}")
    cells = open_cells(store)
    path = Path(out) if out is not None else default_export_path(store, to)
    check_export_target(path, to=to, overwrite=overwrite)
    if to is ExportFormat.OME_ZARR:
        write_ome_zarr = _ome_zarr_writer(path)
        with (
            open_store_slide(cells, store=store, slide=slide) as opened,
            _staged(path, directory=True) as tmp,
        ):
            write_ome_zarr(cells, opened, tmp)
    else:
        with _staged(path, directory=False) as tmp:
            if to is ExportFormat.GEOJSON:
                write_geojson(cells, tmp)
            else:
                write_parquet(cells, tmp, store=store)
    return ExportSummary(store, path, to, len(cells), time.perf_counter() - started)


def check_export_target(path: Path, *, to: ExportFormat, overwrite: bool) -> None:
    """Refuse an output before any work is done.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
        OutputError: ``path`` exists but is not what this export would replace (a folder for a
            file format, a file or a folder that is no OME-Zarr for ``ome-zarr``), or its folder
            does not exist.
    """
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{path}: already exists; pass --overwrite to replace it")
        if to is ExportFormat.OME_ZARR:
            if not _is_ome_zarr(path):
                raise OutputError(
                    f"{path}: exists but is not an OME-Zarr folder (no zarr.json with 'ome' "
                    "attributes); refusing to replace it"
                )
        elif not path.is_file():
            raise OutputError(f"{path}: exists but is not a file; refusing to replace it")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: output folder {path.parent} does not exist or is not a folder")


def write_parquet(cells: StoredCells, path: Path, *, store: Path) -> int:
    """Write the cell table as Parquet: ``slide`` (the slide's file name) and ``store`` (the
    store's absolute path), then every table column in store order with ``bbox`` split into
    ``bbox_row0, bbox_col0, bbox_row1, bbox_col1`` (as ``leukoscreen detect`` writes it). The
    schema metadata ``leukoscreen`` holds the slide path, mpp, scale and model as JSON.

    Returns:
        The number of rows (cells).
    """
    from leukoscreen.pipeline.tables import flat_columns

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise UsageError(
            f"{path}: --to parquet needs pyarrow (pip install 'leukoscreen[export]')"
        ) from err
    ident = StoreIdentity.from_attrs(cells.attrs)
    n = len(cells)
    columns: dict[str, Any] = {
        "slide": pa.array([Path(ident.slide_path).name] * n, type=pa.string()),
        "store": pa.array([str(Path(store).resolve())] * n, type=pa.string()),
    }
    columns.update({name: pa.array(v) for name, v in flat_columns(cells.table).items()})
    provenance = {
        "slide_path": ident.slide_path, "mpp": ident.mpp, "scale": ident.scale,
        "arch": ident.arch, "leukoscreen_version": cells.attrs.get("leukoscreen_version"),
    }  # fmt: skip
    table = pa.table(columns).replace_schema_metadata({"leukoscreen": json.dumps(provenance)})
    pq.write_table(table, path)
    return n


def open_store_slide(cells: StoredCells, *, store: Path, slide: Path | None = None) -> Slide:
    """The store's slide (or ``slide``), opened with the store's mpp, after checking it is the
    store's: same header sha256 and level-0 size.

    Raises:
        SlideReadError: the slide is missing, unreadable, or not the store's.
    """
    from leukoscreen.pipeline.slide import Slide, header_sha256

    ident = StoreIdentity.from_attrs(cells.attrs)
    slide_path = Path(slide) if slide is not None else Path(ident.slide_path)
    if not slide_path.is_file():
        raise SlideReadError(
            f"{slide_path}: the slide of {store} is not there (moved?); pass --slide with its "
            "new path"
        )
    if header_sha256(slide_path) != ident.slide_header_sha256:
        raise SlideReadError(
            f"{slide_path}: not the slide of {store} (its header sha256 differs from the "
            f"store's {ident.slide_header_sha256[:12]}...)"
        )
    opened = Slide.open(slide_path, mpp=ident.mpp)
    if opened.dimensions != ident.slide_size_px:
        opened.close()
        raise SlideReadError(
            f"{slide_path}: level 0 is {opened.dimensions}, the store's slide was "
            f"{ident.slide_size_px}"
        )
    return opened


def _ome_zarr_writer(path: Path) -> Callable[[StoredCells, Slide, Path], int]:
    """``export_omezarr.write_ome_zarr``, which needs the optional ome-zarr package."""
    try:
        from leukoscreen.pipeline.export_omezarr import write_ome_zarr
    except ImportError as err:
        raise UsageError(
            f"{path}: --to ome-zarr needs ome-zarr (pip install 'leukoscreen[export]')"
        ) from err
    return write_ome_zarr


@contextlib.contextmanager
def _staged(path: Path, *, directory: bool) -> Iterator[Path]:
    """A temporary path beside ``path`` to write into; renamed over ``path`` when the block
    ends without error, deleted when it fails."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if directory and path.exists():
            # A folder cannot be renamed over another: move the old one aside first.
            old = tmp.with_name(tmp.name + "-old")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.replace(path)
    except LeukoscreenError:
        raise
    except OSError as err:
        raise OutputError(f"{path}: cannot write the export ({err.strerror or err})") from err
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _is_ome_zarr(path: Path) -> bool:
    try:
        meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "ome" in meta.get("attributes", {})
