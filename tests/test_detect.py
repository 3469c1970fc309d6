"""Detection: the pure function on literal arrays and the synthetic smear; tiles and Dask agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from leukoscreen.pipeline.config import DetectConfig
from leukoscreen.pipeline.detect import (
    CellTable,
    Tile,
    detect_leukocytes,
    detect_options,
    detect_slide,
    detect_tile,
    plan_detection,
    plan_tiles,
    stain_windows,
)
from leukoscreen.pipeline.slide import Slide
from leukoscreen.pipeline.stain import estimate_stain

PINK = (236, 205, 208)
RED_CELL = (214, 128, 138)
PURPLE = (92, 44, 134)


def _field(shape: tuple[int, int], discs: list[tuple[float, float, float, tuple[int, ...]]]):
    """A literal field: pink background and discs (row, col, radius_px, colour)."""
    rgb = np.empty((*shape, 3), np.uint8)
    rgb[:] = PINK
    for row, col, radius, colour in discs:
        rr, cc = disk((row, col), radius, shape=shape)
        rgb[rr, cc] = colour
    return rgb


def _red_cell_stain():
    """The stain of a slide with these colours, estimated from a field of red cells only."""
    discs = [(r, c, 6.5, RED_CELL) for r in range(8, 64, 16) for c in range(8, 64, 16)]
    return estimate_stain(_field((64, 64), discs))


STAIN = _red_cell_stain()


def _assert_found(table: CellTable, centres: list[tuple[float, float]], tol_px: float) -> None:
    """Exactly one detection per centre, within tol_px, and nothing else."""
    assert len(table) == len(centres), (table.row, table.col)
    found = np.stack([table.row, table.col], axis=1)
    for centre in centres:
        distance = np.hypot(*(found - np.asarray(centre)).T)
        assert distance.min() <= tol_px, (centre, found[distance.argmin()])


# ---------------------------------------------------------------- the pure function


def test_empty_field_has_no_cells():
    rgb = _field((64, 64), [(20, 20, 8, RED_CELL), (45, 40, 8, RED_CELL)])
    table = detect_leukocytes(rgb, mpp=0.5, stain=STAIN)
    assert len(table) == 0 and table.bbox.shape == (0, 4)
    assert len(detect_leukocytes(np.zeros((0, 5, 3), np.uint8), mpp=0.5)) == 0


def test_one_round_nucleus():
    rgb = _field((64, 80), [(30, 41, 12, (212, 190, 222)), (30, 41, 7, PURPLE)])
    table = detect_leukocytes(rgb, mpp=0.5, stain=STAIN, cell_margin_um=3.0)
    _assert_found(table, [(30, 41)], tol_px=0.01)
    nucleus_um2 = np.pi * 7**2 * 0.25
    assert nucleus_um2 <= table.area_um2[0] <= 1.6 * nucleus_um2
    row0, col0, row1, col1 = table.bbox[0]
    assert (row0, col0) == (30 - 7 - 6 - 1, 41 - 7 - 6 - 1) or row0 <= 23  # nucleus box + 6 px
    assert row1 - row0 == col1 - col0 and row1 > 30 + 7 + 6
    assert 0.0 < table.score[0] <= 1.0


def test_platelet_and_debris_are_dropped_by_area_in_um2():
    platelet = (20, 20, 2, PURPLE)  # 2 px radius at 0.5 um/px: ~3 um2
    clump = (60, 60, 25, PURPLE)  # ~490 um2
    rgb = _field((100, 100), [platelet, clump])
    assert len(detect_leukocytes(rgb, mpp=0.5, stain=STAIN)) == 0
    assert (
        len(detect_leukocytes(rgb, mpp=0.5, stain=STAIN, min_area_um2=1.0, max_area_um2=1000.0))
        == 2
    )


def test_lobes_of_one_nucleus_are_one_cell_and_far_nuclei_two():
    lobes = [(30, 22, 4, PURPLE), (30, 31, 4, PURPLE), (38, 26, 4, PURPLE)]  # 1-2 px gaps
    far = [(30, 80, 6, PURPLE)]  # 25 um away
    rgb = _field((64, 110), lobes + far)
    table = detect_leukocytes(rgb, mpp=0.5, stain=STAIN)
    assert len(table) == 2
    lobed = int(np.argmin(table.col))
    assert table.col[lobed] == pytest.approx(26.4, abs=1.0)
    assert table.col[1 - lobed] == pytest.approx(80, abs=0.1)
    split = detect_leukocytes(
        rgb, mpp=0.5, stain=STAIN, merge_distance_um=0.0, smoothing_um=0.0, min_area_um2=5.0
    )
    assert len(split) == 4


@pytest.mark.parametrize("mpp", [0.26, 0.52, 1.0])
def test_sizes_follow_mpp(mpp):
    """A 7 um lymphocyte nucleus and a 14 um monocyte nucleus are found at every pixel size."""
    scale = 1.0 / mpp
    rgb = _field(
        (int(60 * scale), int(60 * scale)),
        [
            (15 * scale, 15 * scale, 3.5 * scale, PURPLE),
            (40 * scale, 40 * scale, 7 * scale, PURPLE),
        ],
    )
    table = detect_leukocytes(rgb, mpp=mpp, stain=STAIN)
    _assert_found(table, [(15 * scale, 15 * scale), (40 * scale, 40 * scale)], tol_px=0.5)
    assert table.area_um2 == pytest.approx([np.pi * 3.5**2, np.pi * 7**2], rel=0.4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rgb": np.zeros((4, 4), np.uint8)}, r"rgb must be \(H, W, 3\) uint8, got \(4, 4\)"),
        ({"rgb": np.zeros((4, 4, 3), np.float32)}, r"uint8, got \(4, 4, 3\) float32"),
        ({"mpp": 0.0}, "mpp must be > 0, got 0.0"),
        ({"min_area_um2": 50.0, "max_area_um2": 10.0}, "min_area_um2 <= max_area_um2"),
        ({"nucleus_threshold": 1.6, "seed_threshold": 1.4}, "nucleus_threshold <= seed_thr"),
        ({"nucleus_threshold": 0.0}, "need 0 < nucleus_threshold"),
    ],
)
def test_bad_arguments(kwargs, message):
    call = {"rgb": np.zeros((4, 4, 3), np.uint8), "mpp": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        detect_leukocytes(**call)


def test_cell_table_operations():
    a = CellTable([5.0, 1.0], [0.0, 2.0], [[0, 0, 9, 9], [0, 0, 3, 3]], [10.0, 20.0], [0.5, 1.0])
    b = CellTable([1.0], [1.0], [[1, 1, 2, 2]], [30.0], [0.25])
    both = CellTable.concat([a, b, CellTable.empty()])
    assert len(both) == 3 and both.bbox.dtype == np.int64 and both.score.dtype == np.float32
    ordered = both.sorted()
    np.testing.assert_array_equal(ordered.row, [1.0, 1.0, 5.0])
    np.testing.assert_array_equal(ordered.col, [1.0, 2.0, 0.0])
    np.testing.assert_array_equal(ordered.area_um2, [30.0, 20.0, 10.0])
    np.testing.assert_array_equal(both.take([2]).bbox, [[1, 1, 2, 2]])
    np.testing.assert_array_equal(both.take(np.array([True, False, False])).row, [5.0])
    moved = b.shifted(10, 100)
    assert (moved.row[0], moved.col[0]) == (11.0, 101.0)
    np.testing.assert_array_equal(moved.bbox, [[11, 101, 12, 102]])
    assert len(CellTable.concat([])) == 0
    with pytest.raises(ValueError, match=r"CellTable.bbox: expected shape \(2, 4\)"):
        CellTable([1.0, 2.0], [1.0, 2.0], [[0, 0, 1, 1]], [1.0, 1.0], [1.0, 1.0])


# ---------------------------------------------------------------- the synthetic smear


def test_finds_exactly_the_drawn_leukocytes(smear):
    rgb, cells = smear
    table = detect_leukocytes(rgb, mpp=0.5)
    _assert_found(table, [(c.row, c.col) for c in cells], tol_px=1.0)
    true_area = np.array([c.area_um2 for c in sorted(cells, key=lambda c: (c.row, c.col))])
    assert (table.area_um2 >= true_area).all() and (table.area_um2 <= 2.0 * true_area).all()
    assert (np.diff(table.row) >= 0).all()  # (row, col) order


def test_plan_tiles_partitions_and_skips_glass(svs_slide):
    slide = Slide.open(svs_slide.path)
    tiles = plan_tiles(slide, tile_size_px=256, halo_px=32, foreground_level_mpp=8.0)
    glass_only = [t for t in tiles if t.halo[1] >= 2200 + 64]
    assert len(tiles) == 12 * 10 - 12 and not glass_only  # the last tile column is glass
    assert [t.index for t in tiles] == list(range(len(tiles)))
    covered = np.zeros(slide.dimensions, np.int32)
    for t in tiles:
        covered[t.core[0] : t.core[2], t.core[1] : t.core[3]] += 1
        assert t.halo == (
            max(t.core[0] - 32, 0),
            max(t.core[1] - 32, 0),
            min(t.core[2] + 32, 3000),
            min(t.core[3] + 32, 2500),
        )
    assert covered.max() == 1 and covered[:, :2304].min() == 1


def test_plan_tiles_never_reads_level0_whole(tiff_slide, monkeypatch):
    """A one-level slide: the foreground is read in strips, each a small part of level 0."""
    slide = Slide.open(tiff_slide.path)
    reads: list[tuple[int, int, int]] = []
    original = Slide.read_region

    def spy(self, row, col, height, width, *, level=0):
        reads.append((level, height, width))
        return original(self, row, col, height, width, level=level)

    monkeypatch.setattr(Slide, "read_region", spy)
    tiles = plan_tiles(slide, tile_size_px=500, halo_px=64, foreground_level_mpp=8.0)
    assert max(h * w for _, h, w in reads) <= 256 * 2500
    assert len(tiles) == 6 * 5  # no tile is glass only at this size (2000..2500 mixes)
    assert sum(h for _, h, _ in reads) == 3000


@pytest.mark.parametrize("tile_size_px", [333, 500, 1024])
def test_tiles_equal_the_pure_function(svs_slide, tile_size_px):
    slide = Slide.open(svs_slide.path)
    cfg = DetectConfig(tile_size_px=tile_size_px, halo_px=64)
    tiles, stain = plan_detection(slide, cfg)
    expected = detect_leukocytes(svs_slide.rgb, mpp=0.5, stain=stain, **detect_options(cfg))
    found = CellTable.concat([detect_tile(slide, t, cfg, stain) for t in tiles]).sorted()
    assert len(found) == len(expected) == 12
    np.testing.assert_allclose(found.row, expected.row, atol=1e-9)
    np.testing.assert_allclose(found.col, expected.col, atol=1e-9)
    np.testing.assert_array_equal(found.bbox, expected.bbox)
    np.testing.assert_array_equal(found.area_um2, expected.area_um2)
    np.testing.assert_allclose(found.score, expected.score, rtol=1e-5)


@pytest.mark.parametrize("working_mpp", [0.0, 1.05])
def test_detect_tile_keeps_only_core_cells(svs_slide, working_mpp):
    slide = Slide.open(svs_slide.path)
    cfg = DetectConfig(working_mpp=working_mpp)
    stain = plan_detection(slide, cfg)[1]
    # A core ending one row above the cell centred at (512, 700): its halo sees the cell whole.
    above = detect_tile(slide, Tile(0, (400, 600, 512, 800), (336, 536, 576, 864)), cfg, stain)
    below = detect_tile(slide, Tile(1, (512, 600, 700, 800), (448, 536, 764, 864)), cfg, stain)
    if working_mpp == 0:  # the scan's own pixels: the centroid is the cell's centre
        assert len(above) == 0
        _assert_found(below, [(512.0, 700.0)], tol_px=0.5)
    else:  # 2 x 2 block means at 0.5 um/px: the centre moves by a fraction of a pixel, and the
        # two tiles, whose blocks lie on the slide's one grid, agree on which one holds it
        assert len(above) + len(below) == 1
        _assert_found(CellTable.concat([above, below]), [(512.0, 700.0)], tol_px=0.5)


def test_tiled_detection_equals_the_pure_function(svs_slide):
    # Tiles of an awkward size (777 px cores, 64 px halo) find exactly the cells of the whole
    # image (run.py submits the same tiles as Dask tasks; test_run compares its table).
    cfg = DetectConfig(tile_size_px=777, halo_px=64)
    with Slide.open(svs_slide.path) as slide:
        found, stain = detect_slide(slide, cfg)
    expected = detect_leukocytes(svs_slide.rgb, mpp=0.5, stain=stain, **detect_options(cfg))
    np.testing.assert_allclose(found.row, expected.row, atol=1e-9)
    np.testing.assert_allclose(found.col, expected.col, atol=1e-9)
    np.testing.assert_array_equal(found.bbox, expected.bbox)


# ---------------------------------------------------------------- the BCCD example and real data


def test_banded_shrink_equals_whole_image_imresize():
    from build_example import shrink

    from leukoscreen.model.imresize import imresize

    image = np.random.default_rng(3).integers(0, 256, (160, 96, 3)).astype(np.uint8)
    for factor in (4, 8):
        whole = np.clip(np.round(imresize(image.astype(np.float64), 1 / factor)), 0, 255)
        np.testing.assert_array_equal(shrink(image, factor, band_rows=3), whole)


def test_committed_example_slide():
    import json
    from importlib.resources import files

    folder = files("leukoscreen.pipeline.example")
    path = Path(str(folder / "bccd_x8.svs"))
    truth = json.loads((folder / "bccd_x8.json").read_text())
    with Slide.open(path) as slide:
        assert (slide.vendor, slide.mpp, slide.level_count) == ("aperio", 0.52, 2)
        assert list(slide.dimensions) == truth["shape"]
    assert truth["scale"] == 8 and len(truth["wbc_boxes"]) == 71 and len(truth["fields"]) == 72
    assert path.stat().st_size < 3 * 2**20
    assert "MIT License" in (folder / "LICENSE-BCCD.txt").read_text()


def test_stain_windows_spread_over_small_and_large_plans():
    one = [Tile(0, (0, 0, 1370, 1280), (0, 0, 1370, 1280))]
    windows = stain_windows(one, sample_windows=16, window_px=512)
    assert len(windows) == 16 and all(w[2:] == (512, 512) for w in windows)
    assert {w[0] for w in windows} == {0, 286, 572, 858}  # flush with both edges: 858 + 512
    assert {w[1] for w in windows} == {0, 256, 512, 768}
    many = [Tile(i, (0, 2048 * i, 2048, 2048 * (i + 1)), (0, 0, 1, 1)) for i in range(40)]
    windows = stain_windows(many, sample_windows=16, window_px=512)
    assert len(windows) == 16 and windows[0] == (768, 768, 512, 512)  # tile centres
    assert windows[-1][1] == 39 * 2048 + 768  # the last tile is sampled too
    small = [Tile(0, (0, 0, 100, 300), (0, 0, 100, 300))]
    assert stain_windows(small, sample_windows=1, window_px=512) == [(0, 0, 100, 300)]
    assert stain_windows([], sample_windows=16, window_px=512) == []
    with pytest.raises(ValueError, match="need sample_windows, window_px >= 1, got 0, 512"):
        stain_windows(one, sample_windows=0, window_px=512)


def test_detect_slide_equals_the_tiles(svs_slide):
    with Slide.open(svs_slide.path) as slide:
        cells, stain = detect_slide(slide, DetectConfig(tile_size_px=700))
        tiles, same = plan_detection(slide, DetectConfig(tile_size_px=700))
        by_tile = CellTable.concat(
            [detect_tile(slide, t, DetectConfig(tile_size_px=700), same) for t in tiles]
        ).sorted()
    assert stain == same and len(cells) == 12
    np.testing.assert_array_equal(cells.row, by_tile.row)
    _assert_found(cells, [(c.row, c.col) for c in svs_slide.cells], tol_px=1.0)


def test_a_speck_chained_to_a_lobed_nucleus_does_not_split_its_lobes() -> None:
    """Three lobes (each under min_area_um2, together above it) chained through the merge
    distance to a speck, the chain wider than max_span_um: the lobes stay one cell, the speck
    goes (before, every fragment of a wide group stood alone and the cell was lost)."""
    lobes = [(42, 34, 4, PURPLE), (42, 46, 4, PURPLE), (55, 40, 4, PURPLE)]  # 3-4 px apart
    speck = [(29, 33, 2, PURPLE)]  # 6 px above a lobe: within the merge distance
    rgb = _field((80, 80), lobes + speck)
    options = {"mpp": 0.5, "stain": STAIN, "min_area_um2": 20.0, "max_span_um": 16.0}
    one_lobe = detect_leukocytes(_field((80, 80), lobes[:1]), **{**options, "min_area_um2": 1.0})
    assert one_lobe.area_um2[0] < 20.0  # one lobe alone would be dropped
    chain = detect_leukocytes(rgb, **{**options, "min_area_um2": 1.0, "max_span_um": 0.0})
    row0, _, row1, _ = chain.bbox[0]
    assert len(chain) == 1 and (row1 - row0) - 2 * 6 > 32  # one group, wider than 16 um
    table = detect_leukocytes(rgb, **options)
    _assert_found(table, [(46.3, 40.0)], tol_px=0.5)
    assert table.area_um2[0] == pytest.approx(3 * one_lobe.area_um2[0])


def test_two_touching_nuclei_wider_than_one_are_two_cells() -> None:
    touching = [(40, 30, 8, PURPLE), (40, 48, 8, PURPLE)]  # 2 px apart, 34 px = 17 um wide
    rgb = _field((80, 80), touching)
    table = detect_leukocytes(rgb, mpp=0.5, stain=STAIN, max_span_um=16.0)
    _assert_found(table, [(40, 30), (40, 48)], tol_px=1.0)
    merged = detect_leukocytes(rgb, mpp=0.5, stain=STAIN, max_span_um=0.0)
    _assert_found(merged, [(40, 39)], tol_px=1.0)
