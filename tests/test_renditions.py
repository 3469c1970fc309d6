"""Slides of several colour renditions (``leukoscreen.pipeline.renditions``).

The synthetic slide: eight fields side by side, the first four in a BCCD-like rendition (pink
red cells on warm grey plasma), the last four in a DeepBioNet-like one (olive-grey red cells on
blue plasma, another lamp and stain), two nuclei in every field.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from build_example import write_svs
from skimage.draw import disk

from leukoscreen.pipeline.cell_table import CellTable
from leukoscreen.pipeline.config import DetectConfig
from leukoscreen.pipeline.detect import (
    detect_leukocytes,
    detect_slide,
    estimate_slide_stain,
    plan_tiles,
    stain_windows,
)
from leukoscreen.pipeline.renditions import (
    confirm_locally,
    misfit,
    search_renditions,
    window_stain,
)
from leukoscreen.pipeline.slide import Slide
from leukoscreen.pipeline.stain import (
    StainEstimate,
    angle_deg,
    estimate_stain,
    nucleus_contrast,
    plasma_at,
)

MPP = 0.5
PINK = {"background": (232.0, 224.0, 206.0), "red": (0.30, 0.72, 0.62), "density": 0.45}
BLUE = {"background": (182.0, 227.0, 235.0), "red": (0.78, 0.55, 0.30), "density": 0.70}
NUCLEUS_OD = np.array([0.62, 0.78, 0.05])  # purple, in both renditions
CENTRES = [(60, 60), (140, 170)]
OPTIONS = {"residual_scale": 0.4, "darkness_scale": 2.0, "threshold": 1.0}


def _unit(v: tuple[float, ...] | np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def _field(rendition: dict, seed: int) -> np.ndarray:
    """A 200 x 240 px field at 0.5 um/px: ~180 red cells and the two nuclei of ``CENTRES``."""
    rng = np.random.default_rng(seed)
    shape = (200, 240)
    od = np.zeros((*shape, 3))
    red = _unit(rendition["red"])
    for _ in range(180):
        row, col = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        rr, cc = disk((row, col), 7.5, shape=shape)
        od[rr, cc] = red * rendition["density"] * rng.uniform(0.9, 1.1)
        rr, cc = disk((row, col), 3.0, shape=shape)
        od[rr, cc] = red * rendition["density"] * 0.6
    for row, col in CENTRES:
        rr, cc = disk((row, col), 11.0, shape=shape)
        od[rr, cc] = red * 0.15
        rr, cc = disk((row, col), 8.0, shape=shape)
        od[rr, cc] = _unit(NUCLEUS_OD) * 1.2
    rgb = np.asarray(rendition["background"]) * np.exp(-od) + rng.normal(0, 1.5, (*shape, 3))
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _slide(renditions: list[dict]) -> np.ndarray:
    return np.concatenate([_field(r, seed) for seed, r in enumerate(renditions, 1)], axis=1)


def _windows(rgb: np.ndarray, side: int = 40) -> list[np.ndarray]:
    return [
        rgb[r : r + side, c : c + side]
        for r in range(0, rgb.shape[0] - side + 1, side)
        for c in range(0, rgb.shape[1] - side + 1, side)
    ]


def _expected_centres(n_fields: int) -> np.ndarray:
    return np.array([(r, c + 240 * f) for f in range(n_fields) for r, c in CENTRES], float)


def test_a_slide_of_one_rendition_keeps_its_one_estimate():
    rgb = _slide([PINK] * 8)
    windows = _windows(rgb)
    stain = estimate_stain(np.concatenate([w.reshape(-1, 3) for w in windows]))
    assert search_renditions(windows, stain, **OPTIONS).stain is stain
    assert stain.renditions == ()
    assert search_renditions(windows, stain, **OPTIONS) == (stain, 0, False)


def test_two_renditions_are_found_with_their_own_colours():
    rgb = _slide([PINK] * 4 + [BLUE] * 4)
    windows = _windows(rgb)
    stain = estimate_stain(np.concatenate([w.reshape(-1, 3) for w in windows]))
    # The one estimate explains neither half: a share of the windows would be mostly "nucleus".
    shares = np.array([misfit(w, stain, **OPTIONS) for w in windows])
    assert (shares > 0.15).mean() > 0.2
    found = search_renditions(windows, stain, **OPTIONS).stain
    assert len(found.renditions) == 2
    by_blue = sorted(found.renditions, key=lambda r: r.background_rgb[2] - r.background_rgb[0])
    for estimate, truth in zip(by_blue, (PINK, BLUE), strict=True):
        np.testing.assert_allclose(estimate.background_rgb, truth["background"], atol=6.0)
        assert angle_deg(estimate.red_cell_od, tuple(truth["red"])) < 5.0
    # Round trip through the store's attributes, renditions included.
    again = StainEstimate.from_attrs(found.to_attrs())
    assert len(again.renditions) == 2 and again.renditions[1].n_pixels > 0


def _matched(cells, expected: np.ndarray) -> tuple[int, np.ndarray]:
    """How many expected centres have a cell within 1.5 px, and the cells that match none."""
    dist = np.hypot(cells.row[:, None] - expected[None, :, 0],
                    cells.col[:, None] - expected[None, :, 1])  # fmt: skip
    return int((dist.min(axis=0) < 1.5).sum()), np.flatnonzero(dist.min(axis=1) >= 1.5)


def test_each_pixel_is_judged_by_its_own_rendition():
    """One estimate for both halves loses 5 of the 16 nuclei (the blue half's red cells swallow
    them) and invents 4 cells at the seam; with renditions, exactly the 16, even at the seam
    where the two renditions touch with no plasma between them (each rendition's proposals
    there are checked against the stain of their own neighbourhood)."""
    rgb = _slide([PINK] * 4 + [BLUE] * 4)
    windows = _windows(rgb)
    stain = estimate_stain(np.concatenate([w.reshape(-1, 3) for w in windows]))
    expected = _expected_centres(8)
    hits, extra = _matched(detect_leukocytes(rgb, mpp=MPP, stain=stain), expected)
    assert (hits, len(extra)) == (11, 4)
    split = search_renditions(windows, stain, **OPTIONS).stain
    found = detect_leukocytes(rgb, mpp=MPP, stain=split)
    assert len(found) == 16
    assert _matched(found, expected)[0] == 16


def test_the_tiled_slide_path_finds_the_renditions(tmp_path: Path):
    """Through a real .svs, OpenSlide and tiles smaller than the slide: the slide's windows
    give two renditions (saved in the estimate) and the tiles the same 16 cells; with
    ``max_renditions = 1``, the slide's one estimate."""
    path = tmp_path / "two_renditions.svs"
    write_svs(path, _slide([PINK] * 4 + [BLUE] * 4), MPP)
    cfg = DetectConfig(tile_size_px=256, halo_px=48)
    with Slide.open(path) as slide:
        cells, stain = detect_slide(slide, cfg)
        single = detect_slide(slide, replace(cfg, max_renditions=1))[1]
        again = estimate_slide_stain(
            slide, [], sample_windows=cfg.stain_sample_windows, window_px=cfg.stain_window_px
        )
    assert len(stain.renditions) == 2 and single.renditions == ()
    assert not again.has_foreground  # no tiles, nothing sampled
    assert len(cells) == 16
    assert _matched(cells, _expected_centres(8))[0] == 16


def test_a_small_rendition_is_found_by_a_closer_look(tmp_path: Path):
    """One blue field of eight: 32 stain windows give it too few windows to be a rendition
    (one estimate: 14 of the 16 nuclei and 4 invented cells), but more than one window the
    slide's estimate does not explain, so the stain is estimated again from
    ``rendition_sample_windows``: two renditions and exactly the 16 cells (on the scan's own
    pixels, and on the 2 x 2 block means detection uses by default at this pixel size)."""
    path = tmp_path / "one_blue_field.svs"
    write_svs(path, _slide([PINK] * 7 + [BLUE]), MPP)
    cfg = DetectConfig(tile_size_px=256, halo_px=48, stain_sample_windows=32, working_mpp=0.0)
    expected = _expected_centres(8)
    with Slide.open(path) as slide:
        first = replace(cfg, rendition_sample_windows=0)
        cells, stain = detect_slide(slide, first)
        assert stain.renditions == ()
        assert (_matched(cells, expected)[0], len(cells)) == (14, 18)
        windows = stain_windows(
            plan_tiles(slide, tile_size_px=256, halo_px=48, foreground_level_mpp=8.0),
            sample_windows=32, window_px=64,
        )  # fmt: skip
        images = [slide.read_region(*window) for window in windows]
        search = search_renditions(images, stain, **OPTIONS)
        assert search.stain is stain and 2 <= search.unexplained < 8 and search.look_closer
        for working_mpp in (0.0, DetectConfig.working_mpp):
            closer = replace(cfg, rendition_sample_windows=256, working_mpp=working_mpp)
            cells, stain = detect_slide(slide, closer)
            assert len(stain.renditions) == 2
            assert (_matched(cells, expected)[0], len(cells)) == (16, 16)


def test_the_closer_look_is_the_denser_sample_itself(tmp_path: Path):
    """On 2 x 2 block means (0.5 um/px), the second look at the one-blue-field slide gives
    exactly the estimate of a first look with that many windows: renditions, tint shares and
    all (the tint block stays in the slide's pixels through the recursion)."""
    path = tmp_path / "one_blue_field.svs"
    write_svs(path, _slide([PINK] * 7 + [BLUE]), MPP)
    cfg = DetectConfig(tile_size_px=256, halo_px=48, stain_sample_windows=32,
                       rendition_sample_windows=256)  # fmt: skip
    options = {"window_px": 128, "tint_block_px": round(cfg.tint_block_um / MPP)}
    with Slide.open(path) as slide:
        tiles = plan_tiles(slide, tile_size_px=256, halo_px=48, foreground_level_mpp=8.0)
        closer = estimate_slide_stain(slide, tiles, sample_windows=32, cfg=cfg, **options)
        dense = estimate_slide_stain(
            slide, tiles, sample_windows=256, cfg=replace(cfg, rendition_sample_windows=0),
            **options,
        )  # fmt: skip
    assert len(closer.renditions) == 2 and closer.tinted_share > 0
    assert closer == dense


def test_windows_a_leukocyte_fills_make_no_rendition():
    """Windows of 8 um (smaller than a nucleus) that a nucleus fills are not explained by the
    slide's estimate; the estimate made of them explains the red cells too (it is merely more
    permissive), so it is refused: with the rule, one estimate; without it, a spurious second
    rendition that would hide nuclei."""
    windows = _windows(_slide([PINK] * 8), side=16)
    stain = estimate_stain(np.concatenate([w.reshape(-1, 3) for w in windows]))
    assert sum(misfit(w, stain, **OPTIONS) > 0.15 for w in windows) >= 8
    assert search_renditions(windows, stain, **OPTIONS).stain is stain
    # enough windows to be tried as a rendition, and refused: no second, denser look either
    assert not search_renditions(windows, stain, **OPTIONS).look_closer
    permissive = search_renditions(windows, stain, exclusive_share=0.0, **OPTIONS).stain
    assert len(permissive.renditions) == 2


def test_confirm_locally_keeps_the_local_cell_once_and_drops_the_unconfirmed():
    """Two proposals of one nucleus (from two renditions, 2 px apart) give one cell, at the
    centre the local detection measures; a proposal where the local detection finds nothing
    (a red-cell clump under a foreign rendition) is dropped."""
    rgb = _field(PINK, seed=3)
    (r1, c1), (r2, c2) = CENTRES
    proposals = [
        CellTable(np.array([r1 + 2.0, 100.0]), np.array([c1 - 1.0, 200.0]),
                  np.array([[r1 - 8, c1 - 8, r1 + 8, c1 + 8], [95, 195, 105, 205]]),
                  np.array([50.0, 50.0]), np.array([0.5, 0.5])),
        CellTable(np.array([float(r1), float(r2)]), np.array([c1 + 1.0, float(c2)]),
                  np.array([[r1 - 8, c1 - 8, r1 + 8, c1 + 8], [r2 - 8, c2 - 8, r2 + 8, c2 + 8]]),
                  np.array([50.0, 50.0]), np.array([0.5, 0.5])),
    ]  # fmt: skip
    calls = []

    def detect(window: np.ndarray, at: tuple[int, int], centre: tuple[float, float]) -> CellTable:
        calls.append(at)
        proposed = (at[0] + centre[0], at[1] + centre[1])  # the proposal, in the slide's pixels
        assert any(np.hypot(*np.subtract(proposed, (r, c))) < 3 for r, c in [*CENTRES, (100, 200)])
        return detect_leukocytes(window, mpp=MPP)

    kept = confirm_locally(rgb, proposals, detect, window_px=120, match_px=8.0)
    assert len(kept) == 2
    np.testing.assert_allclose(np.sort(kept.row), [r1, r2], atol=1.0)
    np.testing.assert_allclose(kept.col[np.argsort(kept.row)], [c1, c2], atol=1.0)
    assert len(calls) == 3  # the duplicate of a confirmed cell is not detected again


# A field's edge on a slide of several renditions (DeepBioNet's olive fields beside pale ones):
# the olive plasma's cast is close to the red-cell hue, so no tint correction takes it off.
OLIVE = {"background": (155.0, 176.0, 120.0), "red": (0.54, 0.76, 0.34), "density": 0.8}
PALE = {"background": (238.0, 248.0, 217.0), "red": (0.55, 0.45, 0.70), "density": 0.8}


def _edge_window() -> tuple[np.ndarray, np.ndarray]:
    """120 x 180 px around the olive field's second nucleus (at (60, 50)); the pale field
    fills the window's right 60 columns. Also the olive red cells' mask (nuclei left out)."""
    rgb = np.concatenate([_field(OLIVE, 1), _field(PALE, 2)], axis=1)
    rr, cc = disk(CENTRES[1], 8.0, shape=rgb.shape[:2])  # olive fields' nuclei are dense
    rgb[rr, cc] = np.round(np.asarray(OLIVE["background"]) * np.exp(-2.4 * _unit(NUCLEUS_OD)))
    window = rgb[80:200, 120:300]
    rows, cols = np.mgrid[:120, :180]
    olive_red = (cols < 120) & (window.sum(axis=2) < 0.8 * sum(OLIVE["background"]))
    for r, c in CENTRES:
        olive_red &= np.hypot(rows - (r - 80), cols - (c - 120)) > 14
    return window, olive_red


def test_plasma_at_a_cell_is_the_plasma_of_its_own_side():
    window, _ = _edge_window()
    np.testing.assert_allclose(
        plasma_at(window, (60, 50), block_px=60), OLIVE["background"], atol=8
    )
    np.testing.assert_allclose(
        plasma_at(window, (60, 160), block_px=60), PALE["background"], atol=8
    )


def test_the_window_stain_judges_a_cell_against_its_own_plasma():
    """Against the window's brightest pixels (the pale field) the olive red cells pass the
    nucleus threshold; against the plasma at the proposal they are red cells again, and the
    olive field's nucleus is still found where it is."""
    window, olive_red = _edge_window()
    plain = estimate_stain(window)
    np.testing.assert_allclose(plain.background_rgb, PALE["background"], atol=8)
    local = window_stain(window, (60.0, 50.0), tint_block_px=40)
    np.testing.assert_allclose(local.background_rgb, OLIVE["background"], atol=8)
    assert angle_deg(local.red_cell_od, tuple(_unit(OLIVE["red"]))) < 3.0
    contrast = {
        name: nucleus_contrast(window, stain, residual_scale=0.4, darkness_scale=2.0)[olive_red]
        for name, stain in (("plain", plain), ("local", local))
    }
    assert contrast["plain"].max() > 1.0 > 0.5 > contrast["local"].max()
    cells = detect_leukocytes(window, mpp=MPP, stain=local)
    assert np.hypot(cells.row - 60, cells.col - 50).min() < 2.0


def test_the_window_stain_keeps_the_windows_background_where_no_plasma_is_near():
    """A cell inside a wide clump: the closing finds no plasma around it, so the window's own
    brightest pixels stay the background."""
    rng = np.random.default_rng(5)
    clump = np.asarray(OLIVE["background"]) * np.exp(-0.8 * _unit(OLIVE["red"]))
    window = np.empty((120, 120, 3))
    window[:, :100] = clump
    window[:, 100:] = PALE["background"]
    window = np.clip(np.round(window + rng.normal(0, 1.5, window.shape)), 0, 255).astype(np.uint8)
    assert window_stain(window, (60.0, 20.0), tint_block_px=40) == estimate_stain(window)


def test_the_window_stain_of_an_empty_window_has_no_foreground():
    stain = window_stain(np.zeros((0, 5, 3), np.uint8), (0.0, 0.0), tint_block_px=40)
    assert not stain.has_foreground
