"""Detection at a working pixel size: the scan's pixels averaged in f x f blocks, and back.

A leukocyte nucleus is found as well at about 1 um/px as at 0.25 um/px (``docs/detection.md``,
pixel-size table), while the per-pixel work of detection grows with the square of the
resolution. So a fine scan is detected on its pixels averaged in blocks of ``f`` x ``f``
(:func:`block_factor`: the largest ``f`` that keeps the working pixel at or under
``detect.working_mpp``), and the cells are mapped back to the scan's own pixels
(:func:`cells_in_full_pixels`). The blocks lie on the slide's own grid (``origin``), so two
overlapping windows of one slide see the same blocks.
"""

from __future__ import annotations

import math

import numpy as np

from leukoscreen.pipeline.cell_table import CellTable

MAX_FACTOR = 16  # block sums of 16 x 16 uint8 pixels fit uint16


def block_factor(mpp: float, working_mpp: float) -> int:
    """Side of the pixel blocks (1: the scan's own pixels) for a scan at ``mpp`` um/px.

    The largest integer ``f`` with ``f * mpp <= working_mpp``, at least 1 and at most
    :data:`MAX_FACTOR` (a finer scan is detected on a finer working pixel); ``working_mpp`` 0
    keeps the scan's pixels.
    """
    if not (math.isfinite(working_mpp) and working_mpp >= 0 and mpp > 0):
        raise ValueError(f"need mpp > 0 and a working_mpp >= 0, got {mpp}, {working_mpp}")
    if working_mpp == 0:
        return 1
    return min(max(math.floor(working_mpp / mpp + 1e-9), 1), MAX_FACTOR)


def bin_blocks(
    rgb: np.ndarray, factor: int, origin: tuple[int, int] = (0, 0)
) -> tuple[np.ndarray, tuple[int, int]]:
    """Mean of every whole ``factor`` x ``factor`` block of the slide's grid inside ``rgb``.

    Args:
        rgb: (H, W, 3) uint8, whose first pixel is slide pixel ``origin``.
        factor: block side, 1 to 16 (uint16 sums).
        origin: slide (row, col) of ``rgb[0, 0]``; blocks start at slide multiples of
            ``factor``, so partial blocks at the window's edges are left out.

    Returns:
        (H', W', 3) uint8 block means (rounded) and the (row, col) in ``rgb`` of the first
        block's first pixel.
    """
    if not 1 <= factor <= MAX_FACTOR:
        raise ValueError(f"factor must be 1 to {MAX_FACTOR}, got {factor}")
    if factor == 1:
        return rgb, (0, 0)
    first = ((-origin[0]) % factor, (-origin[1]) % factor)
    rows = max(rgb.shape[0] - first[0], 0) // factor
    cols = max(rgb.shape[1] - first[1], 0) // factor
    window = rgb[first[0] : first[0] + rows * factor, first[1] : first[1] + cols * factor]
    total = np.zeros((rows, cols, rgb.shape[2]), np.uint16)
    for i in range(factor):  # strided adds: faster than a reshaped sum over two axes
        for j in range(factor):
            total += window[i::factor, j::factor]
    total += (factor * factor) // 2
    total //= factor * factor
    return total.astype(np.uint8), first


def cells_in_full_pixels(
    cells: CellTable, factor: int, first: tuple[int, int], shape: tuple[int, int]
) -> CellTable:
    """``cells`` found on :func:`bin_blocks` output, in the pixels of the (H, W) = ``shape``
    window it came from: a block's centre is the centre of its ``factor`` x ``factor`` pixels,
    boxes cover whole blocks (clipped to the window)."""
    if len(cells) == 0:
        return cells
    offset = np.array([first[0], first[1], first[0], first[1]], np.int64)
    boxes = cells.bbox * factor + offset
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, shape[0])
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, shape[1])
    return CellTable(
        (cells.row + 0.5) * factor - 0.5 + first[0],
        (cells.col + 0.5) * factor - 0.5 + first[1],
        boxes,
        cells.area_um2,
        cells.score,
    )
