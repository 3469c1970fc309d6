"""Crop geometry and reading: literal arrays with known answers, and the synthetic .svs."""

from __future__ import annotations

import numpy as np
import pytest

from leukoscreen.pipeline.crops import (
    CropGeometry,
    crop_origins,
    read_crops,
    sr_to_slide,
)
from leukoscreen.pipeline.slide import Slide


def coordinate_image(height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 with pixel (r, c) = (r, c, 7): every pixel says where it is."""
    rr, cc = np.mgrid[0:height, 0:width]
    return np.stack([rr, cc, np.full_like(rr, 7)], axis=-1).astype(np.uint8)


def test_geometry_sizes_at_paper_settings() -> None:
    x8 = CropGeometry(scale=8, hr_size_px=224, margin_px=4)
    assert (x8.core_px, x8.read_px, x8.trim_px) == (28, 36, 32)
    x4 = CropGeometry(scale=4, hr_size_px=224, margin_px=4)
    assert (x4.core_px, x4.read_px, x4.trim_px) == (56, 64, 16)


@pytest.mark.parametrize(
    ("scale", "hr_size_px", "margin_px"), [(8, 100, 4), (8, 4, 0), (4, 224, -1), (0, 224, 4)]
)
def test_geometry_rejects_bad_sizes(scale: int, hr_size_px: int, margin_px: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        CropGeometry(scale=scale, hr_size_px=hr_size_px, margin_px=margin_px)


def test_crop_origins_round_half_up_and_centre_the_cell() -> None:
    rows = np.array([10.0, 10.4, 10.5, 0.2])
    cols = np.array([20.0, 20.49, 19.6, 3.0])
    row0, col0 = crop_origins(rows, cols, size_px=8, margin_px=2)
    # half = 8 // 2 + 2 = 6; floor(x + 0.5) rounds half up
    np.testing.assert_array_equal(row0, [4, 4, 5, -6])
    np.testing.assert_array_equal(col0, [14, 14, 14, -3])
    assert row0.dtype == np.int64


def test_crop_origins_rejects_mismatched_columns() -> None:
    with pytest.raises(ValueError, match="equal-length"):
        crop_origins(np.zeros(3), np.zeros(2), size_px=8)


def test_read_crops_cuts_the_window_around_each_centre(array_slide: type) -> None:
    rgb = coordinate_image(50, 60)
    crops = read_crops(array_slide(rgb), np.array([20.0, 30.3]), np.array([25.0, 40.7]),
                       size_px=6, margin_px=1)  # fmt: skip
    assert crops.shape == (2, 8, 8, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[0], rgb[16:24, 21:29])
    np.testing.assert_array_equal(crops[1], rgb[26:34, 37:45])
    # the rounded centre sits at index margin + size // 2 = 4
    np.testing.assert_array_equal(crops[1, 4, 4], [30, 41, 7])


def test_read_crops_pads_border_cells_white(array_slide: type) -> None:
    rgb = coordinate_image(50, 60)
    crops = read_crops(array_slide(rgb), np.array([1.0, 48.0]), np.array([2.0, 58.0]),
                       size_px=6, margin_px=1)  # fmt: skip
    # first crop starts at (-3, -2): 3 white rows on top, 2 white columns on the left
    assert (crops[0, :3] == 255).all() and (crops[0, :, :2] == 255).all()
    np.testing.assert_array_equal(crops[0, 3:, 2:], rgb[0:5, 0:6])
    # second crop starts at (44, 54): rows 50.., cols 60.. are outside
    np.testing.assert_array_equal(crops[1, :6, :6], rgb[44:50, 54:60])
    assert (crops[1, 6:] == 255).all() and (crops[1, :, 6:] == 255).all()


def test_read_crops_of_no_cells_is_empty(array_slide: type) -> None:
    crops = read_crops(array_slide(coordinate_image(10, 10)), np.zeros(0), np.zeros(0),
                       size_px=4, margin_px=2)  # fmt: skip
    assert crops.shape == (0, 8, 8, 3)


def test_read_crops_checks_the_reader_output() -> None:
    class Broken:
        def read_region(self, row: int, col: int, height: int, width: int, *, level: int = 0):
            return np.zeros((height, width), np.uint8)

    with pytest.raises(ValueError, match=r"expected \(4, 4, 3\) uint8"):
        read_crops(Broken(), np.array([5.0]), np.array([5.0]), size_px=4)


def test_read_crops_from_svs_equals_the_drawn_pixels(svs_slide) -> None:
    rows = np.array([c.row for c in svs_slide.cells])
    cols = np.array([c.col for c in svs_slide.cells])
    geometry = CropGeometry(scale=8, hr_size_px=224, margin_px=4)
    with Slide.open(svs_slide.path) as slide:
        crops = read_crops(slide, rows, cols, size_px=geometry.core_px, margin_px=4)
    assert crops.shape == (len(rows), 36, 36, 3)
    padded = np.pad(svs_slide.rgb, ((40, 40), (40, 40), (0, 0)), constant_values=255)
    row0, col0 = crop_origins(rows, cols, size_px=28, margin_px=4)
    for crop, r, c in zip(crops, row0 + 40, col0 + 40, strict=True):
        np.testing.assert_array_equal(crop, padded[r : r + 36, c : c + 36])
    # the cell at row 2985 of 3000 reaches past the bottom edge: those rows are white
    border = int(np.argmax(rows))
    assert (crops[border, -3:] == 255).all()


def test_sr_to_slide_puts_each_hr_block_on_its_core_pixel() -> None:
    # x4, 16 HR px = a 4 px core; cell at (10.2, 20.7): core from floor(10.7) - 2 = 8 and
    # floor(21.2) - 2 = 19, the same first core pixel as the LR crop read with its margin.
    geometry = CropGeometry(scale=4, hr_size_px=16, margin_px=1)
    read_row0, read_col0 = crop_origins(np.array([10.2]), np.array([20.7]), size_px=4, margin_px=1)
    assert (read_row0[0] + 1, read_col0[0] + 1) == (8, 19)
    points = np.array([[1.5, 1.5], [0.0, 0.0], [15.5, -0.5], [13.5, 5.5]])
    slide = sr_to_slide(points, row=10.2, col=20.7, geometry=geometry)
    # HR pixels 0..3 form slide pixel 8 (centre of the block -> 8.0); HR edges fall on slide
    # edges: HR 15.5 (the image's last edge) is slide 11.5, the core's last edge.
    np.testing.assert_allclose(slide, [[8.0, 19.0], [7.625, 18.625], [11.5, 18.5], [11.0, 20.0]])
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        sr_to_slide(np.zeros(3), row=1.0, col=1.0, geometry=geometry)
