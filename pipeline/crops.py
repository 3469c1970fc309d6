"""Crop geometry: where each cell's low-resolution crop lies on the slide, and reading it.

A cell of centre ``(row, col)`` (level-0 pixels, float) gets a square LR *core* of
``core_px = hr_size_px // scale`` pixels, which the network turns into the ``hr_size_px`` square
super-resolved cell (paper §2: HR 224 px, so 28 LR px at x8 and 56 at x4). Around the core,
``margin_px`` LR pixels of context are read on each side and trimmed again in SR
(``margin_px * scale`` HR pixels per side; ``Upscaler.upscale_maps(..., trim=margin_px)``, where
GP-SFT runs its LR stages on the margin and its HR stages only on the core plus 2 LR px), so the
network's zero padding never touches the cell.

Geometry, in level-0 pixel indices (pixel ``i`` covers ``[i, i + 1)``, its centre is ``i``, as in
scikit-image's ``regionprops`` centroids)::

    core_row0 = floor(row + 0.5) - core_px // 2      # the centre pixel sits at index core_px // 2
    read_row0 = core_row0 - margin_px                # what is read: core_px + 2 * margin_px rows

and the same for columns. Border cells: a crop that reaches past the slide edge is padded with
white (255, 255, 255), the colour of empty glass, because :meth:`Slide.read_region` returns white
outside the slide. The crop is never shifted inwards, so the cell stays at the crop centre.

These functions do no scheduling; :mod:`leukoscreen.pipeline.run` maps them over batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class RegionReader(Protocol):
    """What :func:`read_crops` needs of a slide (``leukoscreen.pipeline.slide.Slide`` has it)."""

    def read_region(
        self, row: int, col: int, height: int, width: int, *, level: int = 0
    ) -> np.ndarray:
        """RGB uint8 pixels ``(height, width, 3)`` from level-0 ``(row, col)``; white outside."""
        ...


@dataclass(frozen=True)
class CropGeometry:
    """Sizes of one cell's crops before and after super-resolution.

    Attributes:
        scale: super-resolution factor (4 or 8).
        hr_size_px: side of the super-resolved cell, HR pixels (a multiple of ``scale``).
        margin_px: LR context pixels on each side of the core, trimmed after SR.
    """

    scale: int
    hr_size_px: int
    margin_px: int

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale!r}")
        if self.hr_size_px < self.scale or self.hr_size_px % self.scale:
            raise ValueError(
                f"hr_size_px must be a positive multiple of scale {self.scale}, "
                f"got {self.hr_size_px!r}"
            )
        if self.margin_px < 0:
            raise ValueError(f"margin_px must be >= 0, got {self.margin_px!r}")

    @property
    def core_px(self) -> int:
        """Side of the LR core, LR (level-0) pixels: ``hr_size_px // scale``."""
        return self.hr_size_px // self.scale

    @property
    def read_px(self) -> int:
        """Side of the LR crop read from the slide and fed to the network: core + 2 margins."""
        return self.core_px + 2 * self.margin_px

    @property
    def trim_px(self) -> int:
        """HR pixels trimmed from each side of the network output: ``margin_px * scale``."""
        return self.margin_px * self.scale


def crop_origins(
    rows: np.ndarray, cols: np.ndarray, *, size_px: int, margin_px: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners of the crops to read around cell centres.

    Args:
        rows: (N,) float cell-centre rows, level-0 pixels.
        cols: (N,) float cell-centre columns, level-0 pixels.
        size_px: side of the core crop centred on the cell, pixels.
        margin_px: context pixels added on each side of the core.

    Returns:
        ``(row0, col0)``, each (N,) int64: the first row and column read, level-0 pixels (may be
        negative at the slide border). The cell's rounded centre is at index
        ``margin_px + size_px // 2`` of the crop.
    """
    rows = np.asarray(rows, dtype=np.float64)
    cols = np.asarray(cols, dtype=np.float64)
    if rows.shape != cols.shape or rows.ndim != 1:
        raise ValueError(
            f"rows and cols must be equal-length 1-D arrays, got {rows.shape} and {cols.shape}"
        )
    half = size_px // 2 + margin_px
    row0 = np.floor(rows + 0.5).astype(np.int64) - half
    col0 = np.floor(cols + 0.5).astype(np.int64) - half
    return row0, col0


def read_crops(
    slide: RegionReader,
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    size_px: int,
    margin_px: int = 0,
) -> np.ndarray:
    """Read one square crop around each cell centre from level 0.

    Args:
        slide: anything with ``read_region(row, col, height, width)`` (a ``Slide``).
        rows: (N,) float cell-centre rows, level-0 pixels.
        cols: (N,) float cell-centre columns, level-0 pixels.
        size_px: side of the core crop, pixels (``CropGeometry.core_px``).
        margin_px: context pixels on each side (``CropGeometry.margin_px``).

    Returns:
        (N, size_px + 2 * margin_px, size_px + 2 * margin_px, 3) uint8 RGB; parts outside the slide
        are white (255).
    """
    if size_px < 1:
        raise ValueError(f"size_px must be >= 1, got {size_px!r}")
    row0, col0 = crop_origins(rows, cols, size_px=size_px, margin_px=margin_px)
    side = size_px + 2 * margin_px
    crops = np.empty((len(row0), side, side, 3), dtype=np.uint8)  # (N, h, w, 3)
    for i, (r, c) in enumerate(zip(row0.tolist(), col0.tolist(), strict=True)):
        region = slide.read_region(r, c, side, side)
        if region.shape != (side, side, 3) or region.dtype != np.uint8:
            raise ValueError(
                f"read_region({r}, {c}, {side}, {side}) returned {region.shape} {region.dtype}, "
                f"expected ({side}, {side}, 3) uint8"
            )
        crops[i] = region
    return crops


def sr_to_slide(
    points_rc: np.ndarray, *, row: float, col: float, geometry: CropGeometry
) -> np.ndarray:
    """Map positions in one cell's super-resolved image to level-0 slide positions.

    The cell's SR image is its LR core (``core_px`` slide pixels from ``core_row0``, see the
    module docstring) at ``scale`` HR pixels per slide pixel, margin already trimmed. HR pixel
    ``i`` therefore covers slide rows ``[core_row0 + i / scale, core_row0 + (i + 1) / scale)``;
    with pixel centres at integer positions on both sides (``docs/store-format.md``)::

        slide_row = core_row0 + (i + 0.5) / scale - 0.5

    Args:
        points_rc: (K, 2) float (row, col) positions in the SR image, HR pixels (pixel centres at
            integers, e.g. from ``skimage.measure.find_contours``).
        row: the cell's centre row in the cell table, level-0 pixels.
        col: the cell's centre column, level-0 pixels.
        geometry: the store's crop geometry (``scale``, ``hr_size_px``).

    Returns:
        (K, 2) float64 (row, col) level-0 positions, pixel centres at integers.
    """
    points = np.asarray(points_rc, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points_rc must have shape (K, 2), got {points.shape}")
    row0, col0 = crop_origins(np.array([row]), np.array([col]), size_px=geometry.core_px)
    origin = np.array([row0[0], col0[0]], dtype=np.float64)
    return origin + (points + 0.5) / geometry.scale - 0.5
