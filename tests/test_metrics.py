"""PSNR, SSIM and parsing scores on literal arrays with answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
from skimage.metrics import structural_similarity

from leukoscreen.model.metrics import (
    parsing_proxies,
    parsing_scores,
    psnr,
    ssim,
    stain_nucleus_mask,
    texture_ratio,
)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_psnr_of_a_constant_offset(dtype: type) -> None:
    reference = np.zeros((8, 8), dtype=dtype)
    # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB (up to float32 rounding of 0.1)
    assert psnr(reference, reference + dtype(0.1)) == pytest.approx(20.0, abs=1e-5)
    # 0.5 is exact in binary: MSE 0.25 -> 20 log10(2)
    assert psnr(reference, reference + dtype(0.5)) == pytest.approx(20 * math.log10(2), abs=1e-9)


def test_psnr_of_identical_images_is_inf() -> None:
    image = np.random.default_rng(0).random((6, 6))
    assert psnr(image, image.copy()) == math.inf


def test_psnr_shaves_the_border() -> None:
    reference = np.zeros((16, 16))
    test = reference.copy()
    test[0, :] = 1.0  # errors only in the outer rows/columns
    test[:, -2] = 1.0
    assert psnr(reference, test, shave_px=2) == math.inf
    assert psnr(reference, test, shave_px=1) < math.inf
    test[8, 8] = 0.5  # one interior error: MSE = 0.25 / (8 * 8) after shaving 4
    assert psnr(reference, test, shave_px=4) == pytest.approx(10 * math.log10(256), abs=1e-9)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_metrics_reject_bad_shapes(metric: object) -> None:
    with pytest.raises(ValueError, match=r"\(4, 4\) and \(4, 5\)"):
        metric(np.zeros((4, 4)), np.zeros((4, 5)))  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"\(4, 4, 3\)"):
        metric(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"too small to shave 2 px"):
        metric(np.zeros((4, 4)), np.zeros((4, 4)), shave_px=2)  # type: ignore[operator]


def test_ssim_of_identical_images_is_one() -> None:
    image = np.random.default_rng(1).random((16, 16))
    assert ssim(image, image.copy()) == pytest.approx(1.0, abs=1e-6)


def test_ssim_of_two_constant_images_is_the_luminance_term() -> None:
    # No variance: SSIM = (2 a b + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 1)^2
    a, b, c1 = 0.5, 0.25, 1e-4
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(np.full((16, 16), a), np.full((16, 16), b)) == pytest.approx(expected, abs=1e-6)


def test_ssim_matches_scikit_image_with_wang_options() -> None:
    rng = np.random.default_rng(2)
    reference = rng.random((16, 20)).astype(np.float32)
    test = np.clip(reference + 0.1 * rng.standard_normal((16, 20)), 0, 1).astype(np.float32)
    expected = structural_similarity(
        reference,
        test,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        K1=0.01,
        K2=0.03,
    )
    assert ssim(reference, test) == pytest.approx(expected, abs=1e-7)
    assert 0 < ssim(reference, test) < 1
    # the sample-covariance default of skimage gives another number: the options matter
    assert structural_similarity(reference, test, data_range=1.0) != pytest.approx(expected)


def test_ssim_shaves_the_border() -> None:
    rng = np.random.default_rng(3)
    reference = rng.random((24, 24))
    test = reference.copy()
    test[:2] = 0.0
    assert ssim(reference, test, shave_px=2) == pytest.approx(1.0, abs=1e-6)
    assert ssim(reference, test) < 0.999  # skimage itself drops 5 px, so the effect is small


def test_parsing_scores_by_hand() -> None:
    reference = np.array([[0, 1, 1], [1, 2, 2], [0, 2, 2]], dtype=np.uint8)
    predicted = np.array([[0, 1, 0], [1, 1, 2], [0, 2, 2]], dtype=np.uint8)
    scores = parsing_scores(reference, predicted)
    # cytoplasm: reference {(0,1), (0,2), (1,0)}, predicted {(0,1), (1,0), (1,1)}: 2 shared of 4
    assert scores["iou_cytoplasm"] == pytest.approx(2 / 4)
    assert scores["dice_cytoplasm"] == pytest.approx(2 * 2 / (3 + 3))
    # nucleus: reference 4 pixels, predicted 3 of them
    assert scores["iou_nucleus"] == pytest.approx(3 / 4)
    assert scores["dice_nucleus"] == pytest.approx(2 * 3 / (4 + 3))
    assert scores["miou"] == pytest.approx((2 / 4 + 3 / 4) / 2)
    assert scores["mdice"] == pytest.approx((4 / 6 + 6 / 7) / 2)
    assert set(scores) == {
        "iou_cytoplasm",
        "iou_nucleus",
        "dice_cytoplasm",
        "dice_nucleus",
        "miou",
        "mdice",
    }


def test_parsing_scores_perfect_and_absent_classes() -> None:
    labels = np.array([[0, 2], [2, 0]], dtype=np.uint8)  # no cytoplasm in either map
    scores = parsing_scores(labels, labels.copy())
    assert scores["iou_cytoplasm"] == 1.0
    assert scores["miou"] == 1.0
    assert scores["mdice"] == 1.0
    disjoint = parsing_scores(labels, np.ones_like(labels))
    assert disjoint["iou_nucleus"] == 0.0
    assert disjoint["iou_cytoplasm"] == 0.0


def test_parsing_scores_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"\(3, 3\) vs \(3, 4\)"):
        parsing_scores(np.zeros((3, 3)), np.zeros((3, 4)))


def _stained_cell(side: int = 128, radius: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A smear's crop: a purple nucleus disc in the centre with a pale ring of cytoplasm, pink
    red cells around it on pale plasma, one of them deep-stained (as dense as the nucleus in
    total, but transparent to red light) and reaching the central square."""
    rows, cols = np.mgrid[:side, :side]
    distance = np.hypot(rows - side / 2 + 0.5, cols - side / 2 + 0.5)
    rgb = np.empty((side, side, 3), np.uint8)
    rgb[:] = (235, 200, 210)  # plasma
    for row, col in [(14, 14), (14, 64), (14, 114), (64, 14), (114, 14), (114, 64), (114, 114)]:
        rgb[np.hypot(rows - row, cols - col) < 12] = (215, 110, 125)  # red cells
    rgb[np.hypot(rows - 64, cols - 108) < 12] = (200, 40, 70)  # the deep-stained red cell
    rgb[distance < 1.8 * radius] = (215, 190, 220)  # cytoplasm
    rgb[distance < radius] = (90, 50, 140)  # nucleus
    labels = np.zeros((side, side), np.uint8)
    labels[distance < 1.8 * radius] = 1
    labels[distance < radius] = 2
    return rgb, labels


def test_stain_nucleus_mask_finds_the_dark_centre_only() -> None:
    rgb, labels = _stained_cell()
    rgb[5:25, 5:25] = (90, 50, 140)  # a neighbour's nucleus in the corner: not this cell's
    mask = stain_nucleus_mask(rgb)
    nucleus = labels == 2
    # the smoothing (sigma 2 px) and the threshold between the classes shave about 1 px off
    # the disc's edge: IoU 0.92 on a radius of 20 px
    assert np.count_nonzero(mask & nucleus) / np.count_nonzero(mask | nucleus) > 0.9
    assert not mask[5:25, 5:25].any()
    assert not mask[labels == 0].any()  # neither the deep-stained red cell nor the others


def test_parsing_proxies_of_a_good_and_a_flooding_map() -> None:
    rgb, labels = _stained_cell()
    good = parsing_proxies(labels, rgb)
    assert good["outer_strip_cell"] == 0.0 and good["nucleus_in_centre"] == 1.0
    assert good["nucleus_iou_stain"] > 0.9
    flooded = np.ones_like(labels)  # everything cytoplasm: no nucleus, cell to the border
    bad = parsing_proxies(flooded, rgb)
    assert bad == {"outer_strip_cell": 1.0, "nucleus_in_centre": 0.0, "nucleus_iou_stain": 0.0}


def test_texture_ratio_is_one_for_the_reference_below_for_blur_above_for_noise() -> None:
    rng = np.random.default_rng(0)
    hr = scipy.ndimage.gaussian_filter(rng.random((64, 64)), 1.0)
    region = np.zeros((64, 64), dtype=bool)
    region[16:48, 16:48] = True
    assert texture_ratio(hr, hr, region) == 1.0
    assert texture_ratio(hr, scipy.ndimage.gaussian_filter(hr, 1.5), region) < 0.3
    assert texture_ratio(hr, hr + rng.normal(0, 0.05, hr.shape), region) > 2
    # only the region counts: noise outside it changes nothing
    outside = hr.copy()
    outside[:8] += rng.normal(0, 0.5, (8, 64))
    assert texture_ratio(hr, outside, region) == 1.0
    # by hand: energy = mean of the squared row and column differences inside the region
    ramp = np.tile(np.arange(4.0), (4, 1))  # column differences 1, row differences 0
    assert texture_ratio(ramp, 2 * ramp, np.ones((4, 4), bool)) == pytest.approx(4.0)
    assert np.isnan(texture_ratio(hr, hr, np.zeros((64, 64), bool)))
