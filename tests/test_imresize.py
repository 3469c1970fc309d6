"""MATLAB-compatible imresize and YCbCr: values derived by hand from the kernel definition.

Keys' cubic with a = -0.5 at the quarter points used below (exact binary fractions):

    k(0.25) = 111/128, k(0.75) = 29/128, k(1.25) = -9/128, k(1.75) = -3/128, k(x>=2) = 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from leukoscreen.model.imresize import (
    contributions,
    cubic,
    imresize,
    resize_matrix,
    rgb2y,
    rgb2ycbcr,
    ycbcr2rgb,
)

K = {0.25: 111 / 128, 0.75: 29 / 128, 1.25: -9 / 128, 1.75: -3 / 128}


def _symmetric(row: list[float], index: int) -> float:
    """``row`` at a 1-based ``index`` with MATLAB's symmetric padding (..., 2, 1 | 1, 2, ...)."""
    n = len(row)
    aux = list(range(1, n + 1)) + list(range(n, 0, -1))
    return row[aux[(index - 1) % (2 * n)] - 1]


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (0.0, 1.0),
        (0.5, 0.5625),  # 1.5/8 - 2.5/4 + 1
        (1.0, 0.0),  # 1.5 - 2.5 + 1
        (1.5, -0.0625),  # -0.5*3.375 + 2.5*2.25 - 6 + 2
        (2.0, 0.0),
        (2.5, 0.0),  # outside the support
        (-0.5, 0.5625),  # even
        (-1.5, -0.0625),
        (0.25, 111 / 128),
        (1.75, -3 / 128),
    ],
)
def test_cubic_kernel_values(x: float, expected: float) -> None:
    assert cubic(np.array([x]))[0] == pytest.approx(expected, abs=1e-15)


def test_halving_a_row_by_hand() -> None:
    # Shrinking by 1/2 stretches the kernel to width 8: output pixel x maps to u = 2x - 0.5, so
    # u = 1.5 and 3.5; the taps j = u - 3.5 ... u + 3.5 sit at distances 0.5, 1.5, 2.5, 3.5 from u,
    # i.e. k(0.25), k(0.75), k(1.25), k(1.75) of the stretched kernel, summing to 2 (normalised).
    row = [1.0, 2.0, 3.0, 4.0]
    weights = [K[1.75], K[1.25], K[0.75], K[0.25], K[0.25], K[0.75], K[1.25], K[1.75]]
    total = sum(weights)
    assert total == 2.0
    expected = []
    for u in (1.5, 3.5):
        taps = range(int(u - 3.5), int(u + 3.5) + 1)
        expected.append(sum(w * _symmetric(row, j) for w, j in zip(weights, taps, strict=True)))
    expected = [v / total for v in expected]
    assert expected == [1.4609375, 3.5390625]  # 374/256 and 906/256
    out = imresize(np.array([row]), 0.5)
    assert out.shape == (1, 2)
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=1e-12)


def test_doubling_a_row_by_hand() -> None:
    # Enlarging by 2: u = x/2 + 1/4. Odd x = 2m-1 -> u = m - 1/4, taps m-2..m+1 at distances
    # 1.75, 0.75, -0.25, -1.25; even x = 2m -> u = m + 1/4, taps m-1..m+2 at 1.25, 0.25, -0.75,
    # -1.75. Each set of four weights already sums to 1.
    row = [1.0, 2.0, 3.0, 4.0]
    odd = [K[1.75], K[0.75], K[0.25], K[1.25]]
    even = [K[1.25], K[0.25], K[0.75], K[1.75]]
    assert sum(odd) == sum(even) == 1.0
    expected = []
    for x in range(1, 9):
        m = (x + 1) // 2
        weights, first = (odd, m - 2) if x % 2 else (even, m - 1)
        taps = range(first, first + 4)
        expected.append(sum(w * _symmetric(row, j) for w, j in zip(weights, taps, strict=True)))
    matlab = [0.90625, 1.1796875, 1.7265625, 2.25, 2.75, 3.2734375, 3.8203125, 4.09375]
    assert expected == matlab
    out = imresize(np.array([row]), 2.0)
    assert out.shape == (2, 8)
    np.testing.assert_allclose(out, [matlab, matlab], rtol=0, atol=1e-12)


def test_rows_and_columns_are_resized_alike() -> None:
    row = np.array([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(imresize(row.T, 0.5)[:, 0], imresize(row, 0.5)[0], atol=1e-12)


def test_contribution_weights_sum_to_one_and_indices_stay_inside() -> None:
    for in_length, scale in [(7, 0.5), (10, 1 / 3), (5, 2.0), (9, 0.25), (3, 4.0)]:
        out_length = math.ceil(in_length * scale)
        weights, indices = contributions(in_length, out_length, scale)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
        assert indices.min() >= 0
        assert indices.max() < in_length


@pytest.mark.parametrize(
    ("shape", "scale", "expected"),
    [
        ((7, 9), 0.5, (4, 5)),
        ((7, 10), 1 / 3, (3, 4)),
        ((9, 11), 0.25, (3, 3)),
        ((5, 3), 2.0, (10, 6)),
        ((3, 5, 3), 4.0, (12, 20, 3)),
        ((224, 224), 1 / 8, (28, 28)),
        ((120, 120), 1 / 8, (15, 15)),
    ],
)
def test_output_size_is_ceil_of_scaled_input(
    shape: tuple[int, ...], scale: float, expected: tuple[int, ...]
) -> None:
    out = imresize(np.zeros(shape), scale)
    assert out.shape == expected
    assert out.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [0.5, 0.25, 1 / 3, 0.125, 2.0, 4.0, 8.0])
def test_constant_image_stays_constant(dtype: type, scale: float) -> None:
    image = np.full((17, 12, 3), 0.3, dtype=dtype)
    out = imresize(image, scale)
    np.testing.assert_allclose(out, float(dtype(0.3)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [2, 4])
def test_smooth_ramp_survives_down_then_up(scale: int) -> None:
    rows, cols = np.mgrid[0:64, 0:48].astype(np.float64)
    ramp = (0.6 * rows + 0.4 * cols) / 64.0
    back = imresize(imresize(ramp, 1 / scale), float(scale))
    assert back.shape == ramp.shape
    border = 2 * scale
    inner = (slice(border, -border), slice(border, -border))
    np.testing.assert_allclose(back[inner], ramp[inner], rtol=0, atol=1e-3)


def test_channels_are_resized_independently() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((9, 7, 3))
    out = imresize(image, 0.5)
    for c in range(3):
        np.testing.assert_allclose(out[..., c], imresize(image[..., c], 0.5), atol=1e-12)


def test_input_is_not_modified_and_not_rounded() -> None:
    image = np.array([[0.1, 0.9], [0.4, 0.6]], dtype=np.float32)
    before = image.copy()
    out = imresize(image, 2.0)
    np.testing.assert_array_equal(image, before)
    assert not np.allclose(out, np.round(out * 255) / 255)


@pytest.mark.parametrize(
    ("image", "scale", "shown"),
    [
        (np.zeros((4, 4), dtype=np.uint8), 0.5, "uint8"),
        (np.zeros((4, 4), dtype=np.int64), 0.5, "int64"),
        (np.zeros(4), 0.5, "(4,)"),
        (np.zeros((2, 2, 2, 2)), 0.5, "(2, 2, 2, 2)"),
        (np.zeros((4, 4)), 0.0, "0.0"),
        (np.zeros((4, 4)), -2.0, "-2.0"),
    ],
    ids=["uint8", "int64", "1d", "4d", "zero-scale", "negative-scale"],
)
def test_imresize_bad_input(image: np.ndarray, scale: float, shown: str) -> None:
    with pytest.raises(ValueError, match="got") as info:
        imresize(image, scale)
    assert shown in str(info.value)


def test_rgb2ycbcr_white_and_black() -> None:
    np.testing.assert_allclose(rgb2ycbcr(np.ones(3)), np.array([235, 128, 128]) / 255, atol=1e-12)
    np.testing.assert_allclose(rgb2ycbcr(np.zeros(3)), np.array([16, 128, 128]) / 255, atol=1e-12)
    # pure red: Y = 16 + 65.481, Cb = 128 - 37.797, Cr = 128 + 112 (MATLAB's BT.601 matrix)
    np.testing.assert_allclose(
        rgb2ycbcr(np.array([1.0, 0.0, 0.0])),
        np.array([16 + 65.481, 128 - 37.797, 128 + 112.0]) / 255,
        atol=1e-12,
    )


def test_rgb2y_is_the_first_channel() -> None:
    rgb = np.random.default_rng(1).random((5, 4, 3))
    np.testing.assert_allclose(rgb2y(rgb), rgb2ycbcr(rgb)[..., 0], atol=0)
    assert rgb2y(rgb).shape == (5, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ycbcr_round_trip(dtype: type) -> None:
    rgb = np.random.default_rng(2).random((6, 5, 3)).astype(dtype)
    np.testing.assert_allclose(ycbcr2rgb(rgb2ycbcr(rgb)), rgb, atol=1e-6)
    ycc = np.array([235, 128, 128]) / 255
    np.testing.assert_allclose(ycbcr2rgb(ycc), [1.0, 1.0, 1.0], atol=1e-12)


@pytest.mark.parametrize("convert", [rgb2ycbcr, ycbcr2rgb, rgb2y])
def test_colour_conversion_needs_three_channels(convert: object) -> None:
    with pytest.raises(ValueError, match=r"3 channels, got shape \(4, 4\)"):
        convert(np.zeros((4, 4)))  # type: ignore[operator]


@pytest.mark.parametrize(("length", "scale"), [(32, 0.25), (120, 0.125), (15, 8.0), (7, 4.0)])
def test_resize_matrix_is_imresize_along_one_axis(length: int, scale: float) -> None:
    matrix = resize_matrix(length, scale)
    assert matrix.shape == (math.ceil(length * scale - 1e-9), length)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    both = resize_matrix(5, scale)
    square = np.random.default_rng(1).random((length, 5))
    np.testing.assert_allclose(matrix @ square @ both.T, imresize(square, scale), atol=1e-12)
