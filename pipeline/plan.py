"""What one ``leukoscreen run`` or batch shares before any work: the run plan, the slide checks
and the per-slide summary.

:func:`plan_run` builds the crop geometry and the model spec once from a validated config;
:func:`open_slide` opens a slide and checks its pixel size against the model's;
:class:`RunSummary` is what one slide's run reports. Nothing here starts a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukoscreen.model.config import REFERENCE_SCALE
from leukoscreen.model.errors import UsageError
from leukoscreen.pipeline.cell_table import CellTable
from leukoscreen.pipeline.config import Config
from leukoscreen.pipeline.crops import CropGeometry
from leukoscreen.pipeline.slide import Slide
from leukoscreen.pipeline.sr_task import ModelSpec, describe_model

STORE_SUFFIX = ".leukoscreen.zarr"


def store_stem(store: Path) -> str:
    """A store's name without ``.leukoscreen.zarr`` (or ``.zarr``): the stem its exports and
    review page are named by."""
    name = Path(store).name
    for suffix in (STORE_SUFFIX, ".zarr"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class RunPlan:
    """What every slide of one invocation shares, built once by :func:`plan_run`.

    Attributes:
        config: the validated config, ``output.resume``/``overwrite`` applied.
        geometry: the crop geometry of ``config.inference``.
        spec: the model the SR tasks load.
    """

    config: Config
    geometry: CropGeometry
    spec: ModelSpec


def plan_run(config: Config) -> RunPlan:
    """Build the crop geometry and the model spec of a validated config.

    Raises:
        UsageError: both ``output.resume`` and ``output.overwrite``.
        CheckpointError: the configured checkpoint file does not exist.
    """
    if config.output.resume and config.output.overwrite:
        raise UsageError("--resume and --overwrite: choose one")
    inference = config.inference
    geometry = CropGeometry(
        scale=inference.scale,
        hr_size_px=inference.hr_size_px,
        margin_px=inference.context_margin_px,
    )
    return RunPlan(config, geometry, ModelSpec.from_config(inference))


@dataclass(frozen=True)
class RunSummary:
    """What one slide's run did.

    Attributes:
        slide: the slide file.
        store: the store written.
        n_cells: cells found (and now in the store).
        n_batches: SR batches of the store.
        batches_skipped: batches already done by an earlier, interrupted run.
        cells_super_resolved: cells super-resolved by this invocation.
        detect_s: wall seconds of detection (0 when the table came from the store).
        sr_s: wall seconds of the SR stage.
        total_s: wall seconds of the whole run, cluster start excluded.
        model_s: seconds spent inside the network, summed over tasks.
        read_s: seconds spent reading crops from the slide, summed over tasks.
        write_s: seconds spent writing batches to the store, summed over tasks.
    """

    slide: Path
    store: Path
    n_cells: int
    n_batches: int
    batches_skipped: int
    cells_super_resolved: int
    detect_s: float
    sr_s: float
    total_s: float
    model_s: float
    read_s: float = 0.0
    write_s: float = 0.0

    def describe(self) -> str:
        """One line for the terminal."""
        if self.n_cells == 0:
            return (
                f"{self.slide}: no leukocytes found; wrote a complete store with zero cells: "
                f"{self.store}"
            )
        resumed = f", {self.batches_skipped} done before" if self.batches_skipped else ""
        return (
            f"{self.slide}: {self.n_cells} cells in {self.n_batches} batches{resumed} -> "
            f"{self.store} ({self.total_s:.1f} s, {self.cells_per_s:.1f} cells/s)"
        )

    @property
    def cells_per_s(self) -> float:
        """End-to-end throughput of this invocation (cells super-resolved per wall second)."""
        return self.cells_super_resolved / self.total_s if self.total_s > 0 else 0.0


def default_output(slide_path: Path, directory: Path | None = None) -> Path:
    """``<directory or cwd>/<slide stem>.leukoscreen.zarr``."""
    return (directory or Path.cwd()) / f"{Path(slide_path).stem}{STORE_SUFFIX}"


def expected_mpp(config: Config) -> float:
    """Microns per LR pixel the model expects at ``config.inference.scale``."""
    return config.slide.expected_mpp * config.inference.scale / REFERENCE_SCALE


def check_mpp(path: Path, mpp: float, config: Config) -> None:
    """Refuse a pixel size so far from the model's that the super-resolution makes no sense.

    Raises:
        UsageError: ``mpp`` differs from :func:`expected_mpp` by more than the tolerance ratio.
    """
    expected = expected_mpp(config)
    ratio = mpp / expected
    tolerance = config.slide.mpp_tolerance
    if ratio > tolerance or ratio < 1 / tolerance:
        raise UsageError(
            f"{path}: pixel size {mpp:g} um/px is {ratio:.3g}x the {expected:g} um/px the "
            f"x{config.inference.scale} model expects (accepted: within {tolerance:g}x); check "
            "the slide's mpp (--mpp) or choose the other --scale"
        )


def open_slide(path: Path, config: Config) -> Slide:
    """Open a slide with the configured mpp and check its pixel size against the model's.

    Raises:
        SlideReadError: not a readable slide.
        MissingMppError: no pixel size in the metadata and none configured.
        UsageError: a pixel size far from the model's expectation.
    """
    slide = Slide.open(path, mpp=config.slide.mpp or None)
    try:
        check_mpp(Path(path), slide.mpp, config)
    except BaseException:
        slide.close()
        raise
    return slide


def table_columns(cells: CellTable, *, mpp: float) -> dict[str, np.ndarray]:
    """Order cells by (row, col): the store's table in cell-id order (the store numbers them).

    Args:
        cells: the detections, any order.
        mpp: microns per level-0 pixel (for the ``_um`` columns).

    Returns:
        The ``store.TABLE_COLUMNS`` columns but ``cell_id`` and ``batch``.
    """
    ordered = cells.take(cells.sort_key())
    return {
        "row": ordered.row,
        "col": ordered.col,
        "row_um": ordered.row * mpp,
        "col_um": ordered.col * mpp,
        "bbox": ordered.bbox,
        "area_um2": ordered.area_um2,
        "score": ordered.score,
    }


def check_distinct_outputs(
    slides: Sequence[Path], outs: Sequence[Path], *, kind: str, inputs: str = "slides"
) -> None:
    """Refuse two slides (or other ``inputs``, e.g. stores) whose outputs (stores, tables, review
    pages) would be one path.

    Raises:
        UsageError: naming the second input, the shared path and the first input.
    """
    first: dict[Path, Path] = {}
    for slide_path, out_path in zip(slides, outs, strict=True):
        if out_path in first:
            raise UsageError(
                f"{slide_path}: its {kind} {out_path} would also hold {first[out_path]}; "
                f"expected {inputs} with different file names"
            )
        first[out_path] = Path(slide_path)


def checkpoint_sha256(plan: RunPlan) -> str:
    """sha256 of the weights the plan's network loads (loaded once into this process's cache).

    Raises:
        CheckpointError: no weights for the plan's arch and scale, or a bad checkpoint.
    """
    return str(describe_model(plan.spec)["checkpoint_sha256"])
