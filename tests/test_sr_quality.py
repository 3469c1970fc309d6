"""SR quality in place: the footprint of an SR cell on the full-resolution image, and the script.

The fast tests build a synthetic HR image, shrink it with the MATLAB-style bicubic, read LR crops
through the pipeline's own geometry (``read_crops``), super-resolve them with the bicubic upscaler
through the pipeline's ``super_resolve`` (margin trimmed) and check that :func:`hr_footprint`
points at the HR region the SR cell came from. The slow test runs the whole script on BCCD.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sr_quality import (
    crop_inside,
    cut_reference,
    hr_footprint,
    main,
    score_cell,
    shift_psnr,
)

from leukoscreen.model.imresize import imresize
from leukoscreen.model.inference import load_pretrained
from leukoscreen.pipeline.crops import CropGeometry, read_crops
from leukoscreen.pipeline.sr_task import super_resolve

SCALE = 4
GEOMETRY = CropGeometry(scale=SCALE, hr_size_px=32, margin_px=2)  # core 8 LR px, read 12
# Cell centres (LR px) with halves and near-halves, so the rounding of the centre matters.
ROWS = np.array([20.5, 25.2, 31.49, 14.0])
COLS = np.array([30.49, 18.7, 40.5, 50.5])


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray]:
    """(HR, LR): 240 x 280 textured RGB and its x4 MATLAB-bicubic shrink, both uint8."""
    rng = np.random.default_rng(3)
    noise = rng.uniform(0.0, 255.0, (240, 280, 3))
    hr = np.clip(gaussian_filter(noise, sigma=(2.5, 2.5, 0)) * 3 - 255, 0, 255)
    hr = np.round(hr).astype(np.uint8)
    lr = np.clip(np.round(imresize(hr.astype(np.float64), 1 / SCALE)), 0, 255).astype(np.uint8)
    assert lr.shape == (60, 70, 3)
    return hr, lr


def test_hr_footprint_mirrors_crop_rounding() -> None:
    hr_row0, hr_col0 = hr_footprint(ROWS, COLS, GEOMETRY)
    # floor(x + 0.5) - 4, times 4: rows 21, 25, 31, 14 -> 17, 21, 27, 10; cols 30, 19, 41, 51
    # -> 26, 15, 37, 47
    assert hr_row0.tolist() == [68, 84, 108, 40]
    assert hr_col0.tolist() == [104, 60, 148, 188]
    assert hr_row0.dtype == np.int64


def test_crop_inside_needs_the_context_margin() -> None:
    # read 12 px from floor(x + 0.5) - 6: row 14 -> 8..20 inside 60; col 50.5 -> 45..57 inside 70
    assert crop_inside(ROWS, COLS, GEOMETRY, (60, 70)).tolist() == [True, True, True, True]
    # a 56-column slide cuts the last crop (cols 45..57)
    assert crop_inside(ROWS, COLS, GEOMETRY, (60, 56)).tolist() == [True, True, True, False]
    edge = crop_inside(np.array([5.5, 6.0]), np.array([30.0, 30.0]), GEOMETRY, (60, 70))
    assert edge.tolist() == [True, True]  # 5.5 -> 6 - 6 = 0: touches row 0 but stays inside
    assert crop_inside(np.array([5.49]), np.array([30.0]), GEOMETRY, (60, 70)).tolist() == [False]


def test_cut_reference_refuses_outside() -> None:
    mosaic = np.zeros((40, 50, 3), np.uint8)
    assert cut_reference(mosaic, 8, 18, 32).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="outside the mosaic"):
        cut_reference(mosaic, 8, 18, 32, (1, 0))


def test_score_cell_identical_and_different() -> None:
    rng = np.random.default_rng(0)
    cell = rng.integers(0, 200, (32, 32, 3), dtype=np.uint8)
    p, s = score_cell(cell, cell, SCALE)
    assert p == float("inf") and s == pytest.approx(1.0)
    other = cell.copy()
    other[..., 0] += 10  # R + 10 everywhere: Y + 10 * 65.481 / 255 / 255 in [0, 1] units
    p, s = score_cell(cell, other, SCALE)
    assert p == pytest.approx(-20 * np.log10(10 * 65.481 / 255 / 255), abs=1e-3)  # 39.94 dB
    assert 0.9 < s < 1.0


def test_bicubic_sr_matches_its_footprint(
    synthetic: tuple[np.ndarray, np.ndarray], array_slide: type
) -> None:
    hr, lr = synthetic
    crops = read_crops(
        array_slide(lr), ROWS, COLS, size_px=GEOMETRY.core_px, margin_px=GEOMETRY.margin_px
    )
    assert crops.shape == (4, 12, 12, 3)
    upscaler = load_pretrained("bicubic", SCALE, device="cpu")
    sr, _, _ = super_resolve(upscaler, crops, GEOMETRY)
    assert sr.shape == (4, 32, 32, 3)
    hr_row0, hr_col0 = hr_footprint(ROWS, COLS, GEOMETRY)
    for i in range(len(ROWS)):
        grid = shift_psnr(hr, sr[i], int(hr_row0[i]), int(hr_col0[i]), SCALE, max_shift_px=2)
        assert grid.shape == (5, 5)
        zero = grid[2, 2]
        others = np.delete(grid.ravel(), 12)
        assert np.unravel_index(int(np.argmax(grid)), grid.shape) == (2, 2)
        assert zero > others.max() + 1.0, f"cell {i}: {grid.round(2)}"
        assert zero > 25.0


def test_off_by_one_lr_pixel_is_detected(
    synthetic: tuple[np.ndarray, np.ndarray], array_slide: type
) -> None:
    """Round-half-to-even (np.round) instead of floor(x + 0.5) moves a x.5 cell by one LR px."""
    hr, lr = synthetic
    rows, cols = np.array([20.5]), np.array([30.0])
    crops = read_crops(array_slide(lr), rows, cols, size_px=8, margin_px=2)
    sr, _, _ = super_resolve(load_pretrained("bicubic", SCALE, device="cpu"), crops, GEOMETRY)
    right = hr_footprint(rows, cols, GEOMETRY)
    wrong_row0 = (int(np.round(20.5)) - 4) * SCALE  # 64, the footprint of an LR row too high
    assert int(right[0][0]) == 68
    grid = shift_psnr(hr, sr[0], wrong_row0, int(right[1][0]), SCALE, max_shift_px=2)
    assert np.unravel_index(int(np.argmax(grid)), grid.shape)[0] == 4  # best at the +2 edge


def test_main_skips_without_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "sr.md"
    assert main(["--bccd", str(tmp_path / "absent"), "--doc", str(doc)]) == 0
    assert "BCCD data not found" in capsys.readouterr().err
    assert not doc.exists()


@pytest.mark.slow
def test_bicubic_in_place_on_bccd(shared_data: Path, tmp_path: Path) -> None:
    bccd = shared_data / "BCCD"
    if not bccd.is_dir():
        pytest.skip(f"{bccd} not found")
    doc = tmp_path / "sr.md"
    args = ["--bccd", str(bccd), "--scale", "8", "--arch", "bicubic", "--device", "cpu"]
    assert main([*args, "--cache", str(tmp_path / "cache"), "--doc", str(doc)]) == 0
    data = json.loads(doc.with_suffix(".json").read_text())
    (result,) = data["results"]
    assert result["arch"] == "bicubic" and result["scale"] == 8
    # 75 detections on the x8 test mosaic; one sits within a crop of the slide edge
    assert result["n_cells"] >= 70 and 0 < result["n_cells"] - result["n_scored"] <= 3
    assert result["psnr_db"] == pytest.approx(38.73, abs=0.25)
    assert result["ssim"] == pytest.approx(0.956, abs=0.005)
    (alignment,) = data["alignment"]
    assert alignment["ok"] and len(alignment["cell_ids"]) == 3
    text = doc.read_text()
    assert "python tools/sr_quality.py --bccd" in text
    assert "| x8 | bicubic |" in text
