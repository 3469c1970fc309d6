"""``leukoscreen detect``: detection alone, its cell table written to CSV or Parquet.

The table has the columns of the store's ``cells/table`` (``docs/store-format.md``) with the
``bbox`` split into ``bbox_row0, bbox_col0, bbox_row1, bbox_col1``; it is made by the same
functions as the store's (:func:`~leukoscreen.pipeline.detect.detect_slide` with the slide's
stain estimate, :func:`~leukoscreen.pipeline.plan.table_columns`), so for the same slide and
config the rows are the store's rows. Files are written to a temporary name and renamed, so an
interrupted run never leaves a partial table under the final name.
"""

from __future__ import annotations

import contextlib
import csv
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukoscreen.model.errors import OutputError, UsageError
from leukoscreen.pipeline.config import Config
from leukoscreen.pipeline.detect import detect_slide
from leukoscreen.pipeline.plan import check_distinct_outputs, table_columns
from leukoscreen.pipeline.slide import Slide
from leukoscreen.pipeline.stain import StainEstimate
from leukoscreen.pipeline.store_layout import number_cells

TABLE_SUFFIXES = (".csv", ".parquet")
BBOX_COLUMNS = ("bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1")


@dataclass(frozen=True)
class DetectSummary:
    """What ``leukoscreen detect`` did for one slide."""

    slide: Path
    table: Path
    n_cells: int
    stain: StainEstimate
    seconds: float

    def describe(self) -> str:
        """One line for the terminal."""
        warning = "" if self.stain.has_foreground else " (no stained foreground: blank slide?)"
        if self.stain.leukocyte_rich:
            warning = " (rich in leukocytes: red cells estimated beneath the nuclei)"
        return (
            f"{self.slide}: {self.n_cells} leukocytes{warning} -> {self.table} "
            f"({self.seconds:.1f} s)"
        )


def flat_columns(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The store's table columns with ``bbox`` (N, 4) split into four (N,) columns."""
    out: dict[str, np.ndarray] = {}
    for name, values in columns.items():
        if name == "bbox":
            for i, bbox_name in enumerate(BBOX_COLUMNS):
                out[bbox_name] = np.asarray(values).reshape(-1, 4)[:, i]
        else:
            out[name] = np.asarray(values)
    return out


def write_table(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Write flat columns to ``path`` (``.csv`` or ``.parquet``), atomically.

    Raises:
        UsageError: another suffix, or Parquet without pyarrow.
        OutputError: the file cannot be written.
    """
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise UsageError(f"{path}: expected a .csv or .parquet table file, found {suffix!r}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            with tmp.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(list(columns))
                writer.writerows(zip(*(v.tolist() for v in columns.values()), strict=True))
        else:
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError as err:
                raise UsageError(
                    f"{path}: writing Parquet needs pyarrow (pip install pyarrow); or use .csv"
                ) from err
            pq.write_table(pa.table({k: pa.array(v) for k, v in columns.items()}), tmp)
        tmp.replace(path)
    except OSError as err:
        raise OutputError(f"{path}: cannot write the cell table ({err.strerror or err})") from err
    finally:
        tmp.unlink(missing_ok=True)


def table_paths(slides: Sequence[Path], out: Path | None) -> list[Path]:
    """Where each slide's table goes (see ``leukoscreen detect --help``).

    Raises:
        UsageError: no slides, two slides with one table name, an ``--out`` file for several,
            or a file suffix other than ``.csv`` / ``.parquet``.
    """
    if not slides:
        raise UsageError("leukoscreen detect: expected at least one slide")
    if out is not None and out.suffix:
        if len(slides) > 1:
            raise UsageError(f"{out}: with several slides, --out is a folder (no suffix)")
        if out.suffix.lower() not in TABLE_SUFFIXES:
            raise UsageError(f"{out}: expected a .csv or .parquet table file")
        return [out]
    folder = out if out is not None else Path.cwd()
    paths = [folder / f"{Path(s).stem}.cells.csv" for s in slides]
    check_distinct_outputs(slides, paths, kind="table")
    return paths


def detect_slides(
    slides: Sequence[Path], config: Config, *, out: Path | None = None, progress: bool = True
) -> list[DetectSummary]:
    """Detect leukocytes on each slide and write its cell table; every slide is opened first.

    Raises:
        SlideReadError, MissingMppError: a slide cannot be read or has no pixel size.
        UsageError, OutputError: bad output paths.
    """
    paths = table_paths(slides, out)
    summaries = []
    with contextlib.ExitStack() as stack:
        opened = [  # fail fast on bad input, before any work
            stack.enter_context(Slide.open(Path(p), mpp=config.slide.mpp or None)) for p in slides
        ]
        for slide_path, slide, table_path in zip(slides, opened, paths, strict=True):
            start = time.perf_counter()
            cells, stain = detect_slide(slide, config.detect, progress=progress)
            columns = number_cells(table_columns(cells, mpp=slide.mpp), config.inference.batch_size)
            write_table(table_path, flat_columns(columns))
            seconds = time.perf_counter() - start
            summaries.append(
                DetectSummary(Path(slide_path), table_path, len(cells), stain, seconds)
            )
    return summaries
