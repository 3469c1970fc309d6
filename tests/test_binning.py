"""Detection at a working pixel size: block means on the slide's grid, and cells mapped back."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from leukoscreen.pipeline.binning import bin_blocks, block_factor, cells_in_full_pixels
from leukoscreen.pipeline.cell_table import CellTable
from leukoscreen.pipeline.detect import detect_leukocytes
from leukoscreen.pipeline.stain import estimate_stain

PINK = (236, 205, 208)
RED_CELL = (214, 128, 138)
PURPLE = (92, 44, 134)


@pytest.mark.parametrize(
    ("mpp", "working_mpp", "factor"),
    [(0.52, 1.05, 2), (0.25, 1.05, 4), (0.35, 1.05, 3), (0.7, 1.05, 1), (1.03, 1.05, 1),
     (0.2625, 1.05, 4), (0.25, 0.0, 1), (2.0, 1.05, 1), (0.0646, 1.05, 16), (0.03, 1.05, 16)],
)  # fmt: skip
def test_block_factor_keeps_the_working_pixel_at_or_under_the_limit(mpp, working_mpp, factor):
    assert block_factor(mpp, working_mpp) == factor


@pytest.mark.parametrize(("mpp", "working_mpp"), [(0.5, -1.0), (0.5, float("nan")), (0.0, 1.05)])
def test_block_factor_refuses_bad_sizes(mpp, working_mpp):
    with pytest.raises(ValueError, match="need mpp > 0 and a working_mpp >= 0"):
        block_factor(mpp, working_mpp)


def test_block_means_lie_on_the_slide_grid():
    rgb = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    # The window starts at slide pixel (3, 4): blocks of 2 start at slide rows 4, 6 and
    # columns 4, 6, 8, i.e. at window (1, 0); the last row and column are partial blocks.
    small, first = bin_blocks(rgb, 2, origin=(3, 4))
    assert first == (1, 0) and small.shape == (2, 3, 3)
    expected = rgb[1:5, 0:6].astype(np.float64).reshape(2, 2, 3, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(small, np.floor(expected + 0.5).astype(np.uint8))
    assert small[0, 0, 0] == (21 + 24 + 42 + 45 + 2) // 4  # rows 1-2, cols 0-1, red
    same, first = bin_blocks(rgb, 1)
    assert first == (0, 0) and np.array_equal(same, rgb)
    with pytest.raises(ValueError, match="factor must be 1 to 16"):
        bin_blocks(rgb, 17)


def test_cells_are_mapped_back_to_the_window_pixels():
    cells = CellTable(np.array([0.0, 3.5]), np.array([1.0, 0.0]),
                      np.array([[0, 0, 2, 3], [2, 0, 5, 1]]), np.array([30.0, 40.0]),
                      np.array([0.5, 0.9]))  # fmt: skip
    full = cells_in_full_pixels(cells, 4, (1, 2), (20, 12))
    np.testing.assert_allclose(full.row, [1.0 + 1.5, 1.0 + 15.5])  # block 0 covers rows 1-4
    np.testing.assert_allclose(full.col, [2.0 + 5.5, 2.0 + 1.5])
    np.testing.assert_array_equal(full.bbox, [[1, 2, 9, 12], [9, 2, 20, 6]])  # clipped to 20 x 12
    np.testing.assert_array_equal(full.area_um2, cells.area_um2)
    np.testing.assert_array_equal(full.score, cells.score)


def test_a_fine_scan_gives_the_same_cells_on_block_means():
    # Three nuclei (two round, one of two lobes) among red cells at 0.25 um/px: on 4 x 4 block
    # means (1.0 um/px) the same three cells, centres within a pixel, areas within 15 %.
    shape = (400, 480)
    rgb = np.empty((*shape, 3), np.uint8)
    rgb[:] = PINK
    for row in range(20, 400, 40):
        for col in range(20, 480, 40):
            rr, cc = disk((row, col), 14, shape=shape)
            rgb[rr, cc] = RED_CELL
    nuclei = [((100, 140), 22), ((300, 260), 20), ((180, 380), 14), ((196, 404), 14)]
    for (row, col), radius in nuclei:
        rr, cc = disk((row, col), radius, shape=shape)
        rgb[rr, cc] = PURPLE
    stain = estimate_stain(rgb)
    full = detect_leukocytes(rgb, mpp=0.25, stain=stain)
    binned = detect_leukocytes(rgb, mpp=0.25, stain=stain, working_mpp=1.05, origin=(2, 3))
    assert len(full) == len(binned) == 3
    np.testing.assert_allclose(binned.row, full.row, atol=1.0)
    np.testing.assert_allclose(binned.col, full.col, atol=1.0)
    np.testing.assert_allclose(binned.area_um2, full.area_um2, rtol=0.15)
    assert np.abs(binned.bbox - full.bbox).max() <= 4  # one block
