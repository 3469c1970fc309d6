"""Stain estimation and nucleus contrast: known stains recovered, thresholds follow the slide."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from mosaic import ColourShift, shift_colours
from skimage.draw import disk

from leukoscreen.pipeline.detect import detect_leukocytes
from leukoscreen.pipeline.stain import (
    StainEstimate,
    angle_deg,
    estimate_stain,
    flatten_tint,
    nucleus_contrast,
    optical_density,
    tinted_share,
)

MPP = 0.5
RED_OD = np.array([0.30, 0.72, 0.62])  # a pinkish red-cell stain (unit after normalising)
NUCLEUS_OD = np.array([0.62, 0.78, 0.05])  # a purple nucleus
RED_DENSITY = 0.45
NUCLEUS_DENSITY = 1.2


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _render(background: tuple[float, float, float], od: np.ndarray) -> np.ndarray:
    """Beer-Lambert: the RGB of a stain layer of optical density ``od`` on ``background``."""
    return np.asarray(background) * np.exp(-od)


def _paint_leukocyte(od: np.ndarray, centre: tuple[int, int]) -> None:
    """An 8 um nucleus of density ``NUCLEUS_DENSITY`` along ``NUCLEUS_OD`` in a pale cytoplasm
    (11 px radius), painted into ``od`` (H, W, 3) at 0.5 um/px."""
    rr, cc = disk(centre, 11.0, shape=od.shape[:2])
    od[rr, cc] = _unit(RED_OD) * 0.15  # a pale cytoplasm
    rr, cc = disk(centre, 8.0, shape=od.shape[:2])
    od[rr, cc] = _unit(NUCLEUS_OD) * NUCLEUS_DENSITY


def synthesise_field(
    background: tuple[float, float, float] = (232.0, 224.0, 206.0),
    *,
    nuclei: list[tuple[int, int]] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A 200 x 240 px field at 0.5 um/px: tinted plasma, ~180 red cells, optional nuclei.

    Red cells are 7.5 um discs of density ``RED_DENSITY`` along ``RED_OD`` (paler centre);
    each nucleus is an 8 um disc of density ``NUCLEUS_DENSITY`` along ``NUCLEUS_OD``.
    """
    rng = np.random.default_rng(seed)
    shape = (200, 240)
    od = np.zeros((*shape, 3))
    red = _unit(RED_OD)
    for _ in range(180):
        row, col = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        rr, cc = disk((row, col), 7.5, shape=shape)
        od[rr, cc] = red * RED_DENSITY * rng.uniform(0.9, 1.1)
        rr, cc = disk((row, col), 3.0, shape=shape)
        od[rr, cc] = red * RED_DENSITY * 0.6
    for centre in nuclei or []:
        _paint_leukocyte(od, centre)
    rgb = _render(background, od) + rng.normal(0, 1.5, (*shape, 3))
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def test_estimate_recovers_background_and_red_cell_stain():
    background = (232.0, 224.0, 206.0)
    est = estimate_stain(synthesise_field(background, nuclei=[(60, 60), (140, 170)]))
    # Bound: the red-cell direction within 3 degrees, the background within 3 grey levels, the
    # red-cell density within 15 % (the pale centres pull the median down a little).
    assert angle_deg(est.red_cell_od, tuple(_unit(RED_OD))) < 3.0, est
    np.testing.assert_allclose(est.background_rgb, background, atol=3.0)
    assert est.red_cell_density == pytest.approx(RED_DENSITY, rel=0.15)
    assert 0.3 < est.foreground_fraction < 0.9 and est.has_foreground


def test_contrast_is_low_on_red_cells_and_plasma_high_on_nuclei():
    rgb = synthesise_field(nuclei=[(100, 120)])
    est = estimate_stain(rgb)
    contrast = nucleus_contrast(rgb, est, residual_scale=0.5, darkness_scale=1.5)
    assert contrast.shape == rgb.shape[:2] and contrast.dtype == np.float32
    assert contrast[100, 120] > 2.0  # the nucleus centre
    plain = synthesise_field()  # the same red cells, no nucleus
    assert np.quantile(nucleus_contrast(plain, est, residual_scale=0.5, darkness_scale=1.5),
                       0.99) < 0.8  # fmt: skip


def test_field_with_red_cells_only_has_no_leukocytes():
    assert len(detect_leukocytes(synthesise_field(), mpp=MPP)) == 0


def test_blank_glass_has_no_foreground_and_no_cells():
    glass = np.full((120, 160, 3), 244, np.uint8)
    est = estimate_stain(glass)
    assert not est.has_foreground and est.red_cell_density == 0.0
    assert len(detect_leukocytes(glass, mpp=MPP)) == 0
    with pytest.raises(ValueError, match="needs a stain estimate with foreground"):
        nucleus_contrast(glass, est, residual_scale=0.5, darkness_scale=1.5)


@pytest.mark.parametrize(
    "shift",
    [
        ColourShift("tint yellow", tint=(1.0, 0.93, 0.72)),
        ColourShift("tint blue", tint=(0.75, 0.9, 1.0)),
        ColourShift("stain -30%", stain=0.7),
        ColourShift("stain +30%", stain=1.3),
        ColourShift("brightness -20%", brightness=0.8),
    ],
    ids=lambda s: s.name,
)
def test_thresholds_follow_the_slide(shift):
    """The same smear under another lamp, filter, stain strength or exposure: the same cells."""
    centres = [(60, 60), (140, 170), (50, 190)]
    rgb = synthesise_field(nuclei=centres)
    base = detect_leukocytes(rgb, mpp=MPP)
    assert len(base) == 3
    shifted = shift_colours(rgb, shift)
    est = estimate_stain(shifted)
    found = detect_leukocytes(shifted, mpp=MPP, stain=est)
    assert len(found) == 3, shift
    np.testing.assert_allclose(found.row, base.row, atol=1.0)
    np.testing.assert_allclose(found.col, base.col, atol=1.0)
    if shift.stain != 1.0:  # the slide's density unit follows the stain strength
        ratio = est.red_cell_density / estimate_stain(rgb).red_cell_density
        assert ratio == pytest.approx(shift.stain, rel=0.08)
    else:  # a filter or the exposure leaves the red-cell direction where it was
        assert angle_deg(est.red_cell_od, estimate_stain(rgb).red_cell_od) < 2.0


def test_a_constant_stain_would_miss_what_the_estimate_finds():
    """Fixed BCCD-like stain on a blue-lit field misses nuclei that the slide's estimate finds."""
    rgb = shift_colours(synthesise_field(nuclei=[(60, 60), (140, 170)]), ColourShift(
        "blue", tint=(0.6, 0.85, 1.0)))  # fmt: skip
    bccd_like = StainEstimate((206.0, 208.0, 205.0), (0.36, 0.71, 0.6), 0.35, 0.5, 1)
    # tint_block_um=0: no adaptation at all (the local tint correction would rescue even this)
    assert len(detect_leukocytes(rgb, mpp=MPP, stain=bccd_like, tint_block_um=0.0)) != 2
    assert len(detect_leukocytes(rgb, mpp=MPP)) == 2


def _one_field_tinted(tint: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Eight fields side by side, the last under another lamp (``tint`` per channel), two nuclei
    in each: the untinted image and the one with the tinted field."""
    centres = [(60, 60), (140, 170)]
    fields = [synthesise_field(nuclei=centres, seed=seed) for seed in range(1, 9)]
    whole = np.concatenate(fields, axis=1)
    shifted = whole.copy()
    shifted[:, -240:] = np.clip(np.round(fields[-1] * np.asarray(tint)), 0, 255).astype(np.uint8)
    return whole, shifted


def test_flatten_tint_leaves_an_evenly_lit_slide_untouched():
    rgb = synthesise_field(nuclei=[(60, 60)])
    assert flatten_tint(rgb, estimate_stain(rgb), block_px=40) is rgb


def test_flatten_tint_takes_a_local_colour_cast_off():
    """The tinted field's plasma comes back to the slide's background (off the red-cell hue),
    the other fields are unchanged, and the border between them stays sharp."""
    whole, shifted = _one_field_tinted((0.6, 0.8, 1.0))  # a blue cast on one field
    est = estimate_stain(shifted)
    flat = flatten_tint(shifted, est, block_px=40)
    assert flat is not shifted and flat.dtype == np.uint8 and flat.shape == shifted.shape
    np.testing.assert_array_equal(flat[:, :1670], shifted[:, :1670])

    def off_hue(rgb: np.ndarray) -> np.ndarray:
        od = optical_density(rgb, est.background_rgb).reshape(-1, 3)
        unit = np.asarray(est.red_cell_od)
        return np.linalg.norm(od - (od @ unit)[:, None] * unit, axis=1)

    part = whole[:, 1690:]
    plasma = (part.sum(axis=2) > 0.95 * part.sum(axis=2).max()).ravel()
    # Plasma off-hue density: 0.3 or more under the cast, back below 0.06 once flattened.
    assert np.median(off_hue(shifted[:, 1690:])[plasma]) > 0.3
    assert np.median(off_hue(flat[:, 1690:])[plasma]) < 0.06


def test_a_tinted_field_beside_untinted_ones_keeps_its_cells():
    """One stain estimate for all fields: without the local correction the tinted field's red
    cells reach the nucleus threshold and swallow its nuclei; with it, the same 16 cells."""
    whole, shifted = _one_field_tinted((0.6, 0.8, 1.0))
    expected = detect_leukocytes(whole, mpp=MPP)
    assert len(expected) == 16
    assert len(detect_leukocytes(shifted, mpp=MPP, tint_block_um=0.0)) == 14
    found = detect_leukocytes(shifted, mpp=MPP)
    assert len(found) == 16
    by_col, expected_by_col = np.argsort(found.col), np.argsort(expected.col)
    np.testing.assert_allclose(found.row[by_col], expected.row[expected_by_col], atol=1.5)
    np.testing.assert_allclose(found.col[by_col], expected.col[expected_by_col], atol=1.5)


def test_tinted_share_and_a_mostly_cast_slide_left_alone():
    """One field in eight is cast: about an eighth of the plasma samples count as tinted. A
    slide whose plasma is mostly cast has no one background, and is not corrected at all."""
    whole, shifted = _one_field_tinted((0.6, 0.8, 1.0))
    est = estimate_stain(shifted)
    assert tinted_share([whole], estimate_stain(whole), block_px=40) == 0.0
    share = tinted_share([shifted], est, block_px=40)
    assert 0.08 < share < 0.2, share
    # Windows of the same slide give the same kind of figure.
    windows = [shifted[:, i : i + 120] for i in range(0, 1920, 120)]
    assert abs(tinted_share(windows, est, block_px=40) - share) < 0.05
    mostly_cast = replace(est, tinted_share=0.6)
    assert flatten_tint(shifted, mostly_cast, block_px=40) is shifted
    assert StainEstimate.from_attrs(mostly_cast.to_attrs()).tinted_share == 0.6


def test_optical_density_against_the_background():
    od = optical_density(np.array([[[200, 100, 50]]], np.uint8), (200.0, 200.0, 200.0))
    np.testing.assert_allclose(od[0, 0], [0.0, np.log(2.0), np.log(4.0)], rtol=1e-6)
    brighter = optical_density(np.array([[[255, 255, 255]]], np.uint8), (200.0, 200.0, 200.0))
    np.testing.assert_array_equal(brighter, 0.0)  # never negative


def test_attrs_round_trip():
    est = estimate_stain(synthesise_field())
    again = StainEstimate.from_attrs(est.to_attrs())
    assert angle_deg(again.red_cell_od, est.red_cell_od) < 0.01
    assert again.n_pixels == est.n_pixels == 200 * 240


def test_sample_is_capped_and_seeded():
    rgb = synthesise_field()
    a = estimate_stain(rgb, max_pixels=5000, seed=1)
    b = estimate_stain(rgb, max_pixels=5000, seed=1)
    assert a == b and a.n_pixels == 5000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pixels": np.zeros((4, 4), np.uint8)}, r"\(\.\.\., 3\) uint8, got \(4, 4\)"),
        ({"pixels": np.zeros((4, 3), np.float32)}, r"uint8, got \(4, 3\) float32"),
        ({"background_quantile": 1.0}, r"background_quantile must be in \(0, 1\), got 1.0"),
        ({"foreground_min_od": 0.0}, "foreground_min_od must be > 0, got 0.0"),
    ],
)
def test_bad_arguments(kwargs, message):
    call = {"pixels": np.zeros((4, 3), np.uint8), **kwargs}
    with pytest.raises(ValueError, match=message):
        estimate_stain(**call)


def synthesise_cell_images(side: int = 4, *, seed: int = 0) -> tuple[np.ndarray, list]:
    """A slide made of single-cell images: ``side`` x ``side`` tiles of 40 px (20 um), each a
    leukocyte (the nucleus and pale cytoplasm of :func:`synthesise_field`) with a red cell in
    each corner. Nuclei are about a fifth of the stained pixels, against about 1 in 1,000 on a
    smear. Returns the field and the nucleus centres."""
    rng = np.random.default_rng(seed)
    shape = (40 * side, 40 * side)
    od = np.zeros((*shape, 3))
    red = _unit(RED_OD)
    centres = []
    for tile_row in range(side):
        for tile_col in range(side):
            top, left = 40 * tile_row, 40 * tile_col
            for dr, dc in ((6, 6), (6, 34), (34, 6), (34, 34)):
                rr, cc = disk((top + dr, left + dc), 6.5, shape=shape)
                od[rr, cc] = red * RED_DENSITY * rng.uniform(0.9, 1.1)
            centre = (top + 20, left + 20)
            _paint_leukocyte(od, centre)
            centres.append(centre)
    rgb = _render((232.0, 224.0, 206.0), od) + rng.normal(0, 1.5, (*shape, 3))
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8), centres


def test_a_slide_of_single_cell_images_gets_its_red_cells_from_beneath_the_nuclei():
    rgb, centres = synthesise_cell_images()
    # The dense foreground is the nuclei here: its median direction is the nucleus stain, under
    # which no nucleus shows any contrast (what the detector did on CellaVision-type images).
    od = optical_density(rgb.reshape(-1, 3), (232.0, 224.0, 206.0))
    norm = np.linalg.norm(od, axis=1)
    dense = norm >= 0.5 * np.quantile(norm[norm > 0.15], 0.9)
    assert angle_deg(tuple(np.median(od[dense] / norm[dense, None], axis=0)),
                     tuple(NUCLEUS_OD)) < 3.0  # fmt: skip
    est = estimate_stain(rgb)
    # Bound: the red-cell direction within 3 degrees and its density within 15 %, as on a smear.
    assert est.leukocyte_rich
    assert angle_deg(est.red_cell_od, tuple(_unit(RED_OD))) < 3.0, est
    assert est.red_cell_density == pytest.approx(RED_DENSITY, rel=0.15)
    found = detect_leukocytes(rgb, mpp=MPP)
    assert len(found) == len(centres) == 16
    expected = np.array(sorted(centres), np.float64)
    got = np.stack([found.row, found.col], axis=1)
    got = got[np.lexsort((got[:, 1].round(-1), got[:, 0].round(-1)))]  # by tile
    np.testing.assert_allclose(got, expected, atol=1.5)
    on_the_nuclei = replace(est, red_cell_od=tuple(_unit(NUCLEUS_OD)), red_cell_density=1.2)
    assert len(detect_leukocytes(rgb, mpp=MPP, stain=on_the_nuclei)) == 0


def test_a_smear_keeps_its_first_estimate():
    """Red cells by far the most common stain: the second look is not taken, and the estimate
    is the dense foreground's median, as it always was."""
    rgb = synthesise_field(nuclei=[(60, 60), (140, 170)])
    est = estimate_stain(rgb)
    assert not est.leukocyte_rich
    od = optical_density(rgb.reshape(-1, 3), est.background_rgb)
    norm = np.linalg.norm(od, axis=1)
    dense = norm >= max(0.15, 0.5 * np.quantile(norm[norm > 0.15], 0.9))
    direction = np.median(od[dense] / norm[dense, None], axis=0)
    np.testing.assert_allclose(est.red_cell_od, direction / np.linalg.norm(direction), atol=1e-6)
    assert est.red_cell_density == pytest.approx(float(np.median(norm[dense])), rel=1e-6)


def test_leukocyte_rich_is_saved_and_read_back():
    est = estimate_stain(synthesise_cell_images()[0])
    assert est.to_attrs()["leukocyte_rich"] is True
    assert StainEstimate.from_attrs(est.to_attrs()).leukocyte_rich
    older = {k: v for k, v in est.to_attrs().items() if k != "leukocyte_rich"}
    assert StainEstimate.from_attrs(older).leukocyte_rich is False  # a store made before it


def test_the_second_look_never_takes_a_pale_plasma_for_the_red_cells():
    """Glass at one edge, a yellow plasma (0.2 OD) over the rest and red cells on it, no
    leukocyte: the first estimate calls almost nothing nucleus, and the stained foreground's
    lower half is plasma. Red cells paler than twice the foreground floor (0.3 OD) are refused,
    so the estimate stays on the red cells instead of flagging every one of them."""
    rng = np.random.default_rng(3)
    shape = (200, 240)
    od = np.zeros((*shape, 3))
    od[:, 40:] = _unit(np.array([0.05, 0.25, 0.97])) * 0.2  # the plasma; columns < 40: glass
    for _ in range(60):
        row, col = rng.uniform(0, shape[0]), rng.uniform(50, shape[1])
        rr, cc = disk((row, col), 7.5, shape=shape)
        od[rr, cc] = _unit(RED_OD) * RED_DENSITY * rng.uniform(0.9, 1.1)
    rgb = np.clip(np.round(_render((240.0, 240.0, 240.0), od) + rng.normal(0, 1.0, (*shape, 3))),
                  0, 255).astype(np.uint8)  # fmt: skip
    est = estimate_stain(rgb)
    assert not est.leukocyte_rich
    assert angle_deg(est.red_cell_od, tuple(_unit(RED_OD))) < 8.0, est
    assert est.red_cell_density > 0.3
    assert len(detect_leukocytes(rgb, mpp=MPP)) == 0


def test_the_second_look_judges_nuclei_by_the_detectors_defaults():
    from leukoscreen.pipeline.config import DetectConfig
    from leukoscreen.pipeline.stain import CHECK_SCALES

    cfg = DetectConfig()
    assert (cfg.residual_scale, cfg.darkness_scale, cfg.nucleus_threshold) == CHECK_SCALES
