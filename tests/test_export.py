"""``leukoscreen export``: QuPath GeoJSON, Parquet and OME-Zarr of a store.

The cell-shape functions are tested on literal arrays with known answers; the exports on a real
store, made once for the module by running the shipped network on the bundled 75-cell example
slide (10-40 s on CPU), and read back with shapely, pyarrow and ome-zarr-py's Reader.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from leukoscreen.model.errors import OutputError
from leukoscreen.pipeline import export_omezarr
from leukoscreen.pipeline.cell_shapes import (
    CYTOPLASM,
    NUCLEUS,
    cell_region,
    centre_in_sr,
    footprint,
    inside_slide,
    outline_rings,
    rings_are_simple,
)
from leukoscreen.pipeline.cli import app, main
from leukoscreen.pipeline.crops import CropGeometry
from leukoscreen.pipeline.export import ExportFormat, default_export_path, export_store
from leukoscreen.pipeline.export_geojson import LEUKOCYTE_CLASS, bbox_polygon, cell_feature
from leukoscreen.pipeline.slide import Slide
from leukoscreen.pipeline.store import open_cells
from leukoscreen.pipeline.store_layout import StoreIdentity

shapely = pytest.importorskip("shapely")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
from shapely.geometry import Point, shape  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "pipeline" / "example" / "bccd_x8.svs"
N_EXAMPLE_CELLS = 75
GEOMETRY = CropGeometry(scale=4, hr_size_px=32, margin_px=1)  # an 8 px core


def _identity(size_px: tuple[int, int] = (100, 120)) -> StoreIdentity:
    return StoreIdentity(
        slide_path="/data/smear.svs", slide_size_px=size_px, slide_header_sha256="ab" * 32,
        slide_vendor="aperio", mpp=0.5, scale=GEOMETRY.scale, arch="gp",
        checkpoint_sha256="cd" * 32, has_prior=True, hr_size_px=GEOMETRY.hr_size_px,
        margin_px=GEOMETRY.margin_px, batch_size=16,
    )  # fmt: skip


def _columns(row: float, col: float, cell_id: int = 3) -> dict[str, Any]:
    return {
        "cell_id": np.int64(cell_id), "row": row, "col": col, "row_um": row / 2, "col_um": col / 2,
        "bbox": np.array([int(row) - 3, int(col) - 4, int(row) + 4, int(col) + 5]),
        "area_um2": 12.5, "score": np.float32(0.75), "batch": 0,
        "parsing_confidence": np.float32(np.nan),
    }  # fmt: skip


def _disc(radius: float, centre: tuple[float, float], size: int = 32) -> np.ndarray:
    rr, cc = np.mgrid[0:size, 0:size]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


# ---------------------------------------------------------------------------------------------
# cell shapes on literal arrays


def test_centre_in_sr_inverts_the_crop_mapping() -> None:
    # Cell (20.3, 40.8): core from floor(20.8) - 4 = 16 and floor(41.3) - 4 = 37.
    row_sr, col_sr = centre_in_sr(20.3, 40.8, GEOMETRY)
    assert (row_sr, col_sr) == pytest.approx(
        ((20.3 - 16 + 0.5) * 4 - 0.5, (40.8 - 37 + 0.5) * 4 - 0.5)
    )


def test_cell_region_keeps_the_component_at_the_centre_and_fills_its_holes() -> None:
    parsing = np.zeros((10, 10), np.uint8)
    parsing[1:8, 1:8] = CYTOPLASM
    parsing[3:6, 3:6] = NUCLEUS
    parsing[4, 1] = 0  # a dent stays a dent
    parsing[2, 6] = 0  # a hole is filled as cytoplasm
    parsing[9, 9] = CYTOPLASM  # a speck of another component
    region = cell_region(parsing, centre_rc=(4.0, 4.0))
    expected = parsing.copy()
    expected[2, 6] = CYTOPLASM
    expected[9, 9] = 0
    np.testing.assert_array_equal(region, expected)


def test_cell_region_takes_the_nearest_component_when_the_centre_is_background() -> None:
    parsing = np.zeros((10, 12), np.uint8)
    parsing[0:3, 0:3] = CYTOPLASM  # far from the centre
    parsing[4:9, 7:11] = NUCLEUS  # nearest
    region = cell_region(parsing, centre_rc=(5.0, 5.0))
    assert region[0:3, 0:3].max() == 0
    assert (region[4:9, 7:11] == NUCLEUS).all()
    assert cell_region(np.zeros((4, 4), np.uint8), centre_rc=(2, 2)).max() == 0


def test_footprint_counts_a_slide_pixel_when_half_its_hr_pixels_are_cell() -> None:
    region = np.array(
        [[1, 1, 0, 0], [1, 2, 0, 1], [2, 2, 0, 0], [2, 1, 0, 0]], dtype=np.uint8
    )  # four 2 x 2 blocks: 3 cell (1 nucleus), 1 cell, 4 cell (3 nucleus), 0
    np.testing.assert_array_equal(footprint(region, 2), [[CYTOPLASM, 0], [NUCLEUS, 0]])
    region[0, 1] = 2  # 2 nucleus of 3 cell pixels
    assert footprint(region, 2)[0, 0] == NUCLEUS
    with pytest.raises(ValueError, match="multiple of scale"):
        footprint(np.zeros((5, 4), np.uint8), 2)


def test_inside_slide_clears_the_padding_of_a_border_crop() -> None:
    # Cell at (1.0, 117.0) of a 100 x 120 slide: core rows -3..4, cols 113..120.
    inside = inside_slide(1.0, 117.0, geometry=GEOMETRY, slide_size_px=(100, 120))
    assert inside.shape == (32, 32)
    assert not inside[:12].any() and inside[12:].any()  # HR rows 0..11 = slide rows -3..-1
    assert inside[12:, :28].all() and not inside[:, 28:].any()  # slide column 120 is outside


def test_outline_rings_trace_simple_rings_around_each_component() -> None:
    mask = _disc(6, (10, 10), size=24) | _disc(3, (19, 19), size=24)
    mask[10, 10] = False  # a hole: filled
    rings = outline_rings(mask, tolerance_px=1.0)
    assert len(rings) == 2 and len(rings[0]) > len(rings[1])
    assert rings_are_simple(rings)
    for ring, radius, centre in zip(rings, (6, 3), ((10, 10), (19, 19)), strict=True):
        polygon = shapely.Polygon(ring[:, ::-1])
        assert polygon.is_valid
        # Simplified edges stay within the tolerance (1 px) of the traced boundary.
        pixels = _disc(radius, centre, 24).sum()
        assert abs(polygon.area - pixels) <= 2 * np.pi * radius * 1.0
    (largest,) = outline_rings(mask, tolerance_px=1.0, min_area_px=40)  # the speck is dropped
    np.testing.assert_array_equal(largest, rings[0])
    assert outline_rings(np.zeros((4, 4), bool), tolerance_px=1.0) == []
    single = outline_rings(np.pad([[True]], 1), tolerance_px=5.0)  # a single pixel: a diamond
    assert len(single) == 1 and len(single[0]) == 5


@pytest.mark.parametrize(
    ("rings", "simple"),
    [
        ([[[0, 0], [0, 2], [2, 2], [2, 0], [0, 0]]], True),
        ([[[0, 0], [2, 2], [0, 2], [2, 0], [0, 0]]], False),  # bow tie
        ([[[0, 0], [0, 4], [4, 4], [2, 4], [0, 0]]], False),  # turns straight back
        ([[[0, 0], [0, 2], [0, 2], [2, 0], [0, 0]]], False),  # repeated vertex
        ([[[0, 0], [0, 2], [0, 4], [0, 0]]], False),  # no area
        ([[[0, 0], [0, 2], [2, 0]]], False),  # not closed
        (
            [[[0, 0], [0, 2], [2, 2], [2, 0], [0, 0]], [[2, 2], [2, 4], [4, 4], [4, 2], [2, 2]]],
            False,
        ),
        (
            [[[0, 0], [0, 2], [2, 2], [2, 0], [0, 0]], [[3, 3], [3, 4], [4, 4], [4, 3], [3, 3]]],
            True,
        ),
    ],
)
def test_rings_are_simple_is_stricter_than_shapely(
    rings: list[list[list[float]]], simple: bool
) -> None:
    # Stricter: rings that touch at a point are valid for shapely, not here.
    assert rings_are_simple([np.array(r, dtype=float) for r in rings]) is simple
    if simple:
        assert shapely.MultiPolygon([shapely.Polygon(r) for r in rings]).is_valid


# ---------------------------------------------------------------------------------------------
# OME-Zarr pieces on literal arrays


def test_level_shapes_halve_until_a_thumbnail() -> None:
    assert export_omezarr.level_shapes(552, 800) == [(552, 800), (276, 400), (138, 200)]
    assert export_omezarr.level_shapes(100, 30) == [(100, 30)]
    assert export_omezarr.level_shapes(1025, 3) == [(1025, 3), (513, 2), (257, 1), (129, 1)]


def test_mean_2x2_rounds_half_up_and_pairs_an_odd_edge_with_itself() -> None:
    block = np.array([[[0, 1, 10], [1, 1, 20], [255, 255, 7]]], dtype=np.uint8)  # (1, 3, 3)
    np.testing.assert_array_equal(
        export_omezarr._mean_2x2(block), [[[1, 15], [255, 7]]]
    )  # (0+1+1+1)/4 = 0.75 -> 1; (10+20+10+20)/4 = 15


def test_draw_labels_clips_to_the_window_and_lower_ids_win() -> None:
    maps = [
        np.array([[1, 2], [2, 0]], np.uint8),
        np.ones((3, 3), np.uint8),
        np.ones((1, 1), np.uint8),
    ]
    # Cell 0 hangs over the window's top edge (its second row shows), cell 1 lies under it,
    # cell 2 is outside the window.
    prints = export_omezarr.Footprints.of(np.array([-1, 0, 9]), np.array([0, 0, 9]), maps)
    cells = export_omezarr.draw_labels(prints, 0, 0, (4, 5), by_class=False)
    assert cells.dtype == np.uint32
    expected = np.zeros((4, 5), np.uint32)
    expected[:3, :3] = 2  # cell 1
    expected[0, 0] = 1  # cell 0 wins where its map is cell; where it is 0, cell 1 shows
    np.testing.assert_array_equal(cells, expected)
    classes = export_omezarr.draw_labels(prints, 0, 0, (4, 5), by_class=True)
    assert classes.dtype == np.uint8
    np.testing.assert_array_equal(classes, np.where(expected == 1, NUCLEUS, expected > 0))
    shifted = export_omezarr.draw_labels(prints, 2, 2, (8, 8), by_class=False)
    assert shifted[0, 0] == 2 and shifted[7, 7] == 3 and shifted.sum() == 2 + 3
    empty = export_omezarr.Footprints.of(np.zeros(0), np.zeros(0), [])
    assert not export_omezarr.draw_labels(empty, 0, 0, (2, 2), by_class=False).any()


# ---------------------------------------------------------------------------------------------
# one feature from a constructed cell


def test_cell_feature_maps_a_disc_onto_the_slide() -> None:
    # x4 with a 32 px core: a disc of radius 40 HR px (10 slide px) at the cell centre
    # (60.3, 40.8), a nucleus of radius 24 HR px inside it: the polygon is the disc around
    # (x, y) = (41.3, 60.8).
    geometry = CropGeometry(scale=4, hr_size_px=128, margin_px=1)
    identity = replace(_identity(), hr_size_px=128)
    row, col = 60.3, 40.8
    centre = centre_in_sr(row, col, geometry)
    region = _disc(40, centre, size=128).astype(np.uint8)
    region[_disc(24, centre, size=128)] = NUCLEUS
    feature = cell_feature(_columns(row, col), region, geometry=geometry, identity=identity)

    cell, nucleus = shape(feature["geometry"]), shape(feature["nucleusGeometry"])
    assert cell.is_valid and nucleus.is_valid and cell.contains(nucleus)
    assert cell.centroid.distance(Point(col + 0.5, row + 0.5)) < 0.15
    # Douglas-Peucker keeps vertices on the traced boundary: convex outlines shrink a little.
    assert cell.area == pytest.approx(np.pi * 10**2, rel=0.05)
    assert nucleus.area == pytest.approx(np.pi * 6**2, rel=0.1)
    ring = feature["geometry"]["coordinates"][0]
    # RFC 7946 winding: counter-clockwise in (x, y) numbers (clockwise on screen, y down).
    assert ring[0] == ring[-1] and shapely.LinearRing(ring).is_ccw
    props = feature["properties"]
    assert props["objectType"] == "cell" and props["classification"] == LEUKOCYTE_CLASS
    measurements = props["measurements"]
    assert "parsing_confidence" not in measurements  # NaN is left out
    assert measurements["cell_id"] == 3.0 and measurements["score"] == 0.75
    assert measurements["cell_area_um2"] == pytest.approx(region.astype(bool).sum() / 64)
    assert measurements["nucleus_area_um2"] == pytest.approx((region == NUCLEUS).sum() / 64)
    assert uuid.UUID(feature["id"]).version == 5


def test_cell_feature_of_a_border_cell_stays_on_the_slide() -> None:
    # The network's map covers the whole crop; the slide ends at row 0 and column 120.
    row, col = 1.0, 117.0
    region = np.ones((32, 32), np.uint8)
    region[~inside_slide(row, col, geometry=GEOMETRY, slide_size_px=(100, 120))] = 0
    feature = cell_feature(_columns(row, col), region, geometry=GEOMETRY, identity=_identity())
    bounds = shape(feature["geometry"]).bounds
    # Core columns 113..119 and rows 0..4 (pixel edges 113..120, 0..5), within the 0.5 px
    # simplification tolerance, never past the slide's edges.
    assert bounds == pytest.approx((113.0, 0.0, 120.0, 5.0), abs=0.5)
    assert bounds[1] >= 0.0 and bounds[2] <= 120.0


def test_cell_feature_without_parsing_map_is_a_detection_with_its_bbox() -> None:
    feature = cell_feature(_columns(20.3, 40.8), None, geometry=GEOMETRY, identity=_identity())
    assert feature["properties"]["objectType"] == "detection"
    assert "nucleusGeometry" not in feature
    assert shape(feature["geometry"]).bounds == (36.0, 17.0, 45.0, 24.0)
    clipped = bbox_polygon(np.array([-5, 110, 3, 130]), (100, 120))
    assert shape(clipped).bounds == (110.0, 0.0, 120.0, 3.0)


# ---------------------------------------------------------------------------------------------
# the example store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "ex.leukoscreen.zarr"
    assert main(["run", str(EXAMPLE), "--scale", "8", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def geojson(store: Path) -> dict[str, Any]:
    summary = export_store(store, to=ExportFormat.GEOJSON)
    assert summary.path == store.with_name("ex.geojson") and summary.n_cells == N_EXAMPLE_CELLS
    result: dict[str, Any] = json.loads(summary.path.read_text(encoding="utf-8"))
    return result


@pytest.fixture(scope="module")
def ome_zarr(store: Path) -> Path:
    assert main(["export", str(store), "--to", "ome-zarr"]) == 0
    return store.with_name("ex.ome.zarr")


def test_default_paths_lie_beside_the_store(tmp_path: Path) -> None:
    store = tmp_path / "smear.leukoscreen.zarr"
    assert default_export_path(store, ExportFormat.GEOJSON) == tmp_path / "smear.geojson"
    assert default_export_path(store, ExportFormat.PARQUET) == tmp_path / "smear.cells.parquet"
    assert (
        default_export_path(tmp_path / "b.zarr", ExportFormat.OME_ZARR) == tmp_path / "b.ome.zarr"
    )


def test_geojson_has_one_valid_cell_object_per_cell(store: Path, geojson: dict[str, Any]) -> None:
    table = open_cells(store).table
    height, width = 552, 800
    assert geojson["type"] == "FeatureCollection"
    features = geojson["features"]
    assert len(features) == N_EXAMPLE_CELLS
    assert len({f["id"] for f in features}) == N_EXAMPLE_CELLS
    for i, feature in enumerate(features):
        props = feature["properties"]
        assert props["objectType"] == "cell"
        assert props["classification"] == {"name": "Leukocyte", "color": [142, 68, 173]}
        assert props["measurements"]["cell_id"] == i
        assert set(props["measurements"]) == {
            "cell_id", "row_um", "col_um", "area_um2", "score", "parsing_confidence",
            "cell_area_um2", "nucleus_area_um2",
        }  # fmt: skip
        cell, nucleus = shape(feature["geometry"]), shape(feature["nucleusGeometry"])
        for polygon in (cell, nucleus):
            assert polygon.is_valid, shapely.is_valid_reason(polygon)
            x0, y0, x1, y1 = polygon.bounds
            assert min(x0, y0) >= 0 and x1 <= width and y1 <= height
        assert feature["geometry"]["type"] == "Polygon"  # no example cell is cut by the border
        for ring in feature["geometry"]["coordinates"]:
            assert len(ring) >= 4 and ring[0] == ring[-1]
        assert len(feature["geometry"]["coordinates"][0]) <= 80  # simplified
        centre = Point(table["col"][i] + 0.5, table["row"][i] + 0.5)
        assert cell.distance(centre) < 1.0
        assert nucleus.difference(cell).area < 0.05 * nucleus.area
        area_px = props["measurements"]["cell_area_um2"] / 0.52**2
        assert cell.area == pytest.approx(area_px, rel=0.1)


def test_parquet_rows_are_the_store_table_and_concatenate(store: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.leukoscreen.zarr"
    shutil.copytree(store, other)
    paths = []
    for source in (store, other):
        assert main(["export", str(source), "--to", "parquet", "--overwrite"]) == 0
        paths.append(default_export_path(source, ExportFormat.PARQUET))
    table = pq.read_table(paths[0])
    cells = open_cells(store).table
    assert table.num_rows == N_EXAMPLE_CELLS
    assert table.column_names[:3] == ["slide", "store", "cell_id"]
    for name, values in cells.items():
        if name == "bbox":
            for j, part in enumerate(("bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1")):
                np.testing.assert_array_equal(table[part].to_numpy(), values[:, j])
        else:
            np.testing.assert_array_equal(table[name].to_numpy(), values)
            assert table[name].type == pa.from_numpy_dtype(values.dtype)
    assert set(table["slide"].to_pylist()) == {"bccd_x8.svs"}
    provenance = json.loads(table.schema.metadata[b"leukoscreen"])
    assert (provenance["scale"], provenance["mpp"]) == (8, 0.52)

    both = pa.concat_tables([pq.read_table(p) for p in paths])
    assert both.num_rows == 2 * N_EXAMPLE_CELLS
    assert both["slide"].to_pylist() == ["bccd_x8.svs"] * (2 * N_EXAMPLE_CELLS)
    assert set(both["store"].to_pylist()) == {str(store.resolve()), str(other.resolve())}


def test_ome_zarr_reads_back_as_the_slide_with_its_cells(store: Path, ome_zarr: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from skimage.measure import regionprops

    nodes = {node.metadata.get("name"): node for node in Reader(parse_url(str(ome_zarr)))()}
    image = nodes["bccd_x8.svs"]
    with Slide.open(EXAMPLE) as slide:
        expected = slide.read_region(0, 0, 552, 800).transpose(2, 0, 1)
    levels = [np.asarray(level) for level in image.data]
    assert [level.shape for level in levels] == [(3, 552, 800), (3, 276, 400), (3, 138, 200)]
    np.testing.assert_array_equal(levels[0], expected)
    np.testing.assert_array_equal(levels[1], export_omezarr._mean_2x2(levels[0]))
    assert image.metadata["coordinateTransformations"][0] == [
        {"type": "scale", "scale": [1.0, 0.52, 0.52]}
    ]

    table = open_cells(store).table
    cells = [np.asarray(level) for level in nodes["cells"].data]
    assert [c.shape for c in cells] == [(1, 552, 800), (1, 276, 400), (1, 138, 200)]
    labels = cells[0][0]
    np.testing.assert_array_equal(np.unique(labels), np.arange(N_EXAMPLE_CELLS + 1))
    for region in regionprops(labels):
        i = region.label - 1
        distance = np.hypot(
            region.centroid[0] - table["row"][i], region.centroid[1] - table["col"][i]
        )
        assert distance < 4.0, f"cell {i}: label centroid {distance:.1f} px from its centre"
    parsing = np.asarray(nodes["parsing"].data[0])[0]
    assert set(np.unique(parsing)) == {0, CYTOPLASM, NUCLEUS}
    np.testing.assert_array_equal(parsing > 0, labels > 0)
    colours = zarr.open_group(ome_zarr / "labels" / "parsing", mode="r").attrs["ome"][
        "image-label"
    ]["colors"]
    assert [c["label-value"] for c in colours] == [1, 2]


def test_ome_zarr_is_valid_ngff_0_5(ome_zarr: Path) -> None:
    v05 = pytest.importorskip("ome_zarr_models.v05.image")
    image = v05.Image.from_zarr(zarr.open_group(ome_zarr, mode="r"))
    assert image.labels is not None
    assert json.loads((ome_zarr / "zarr.json").read_text())["attributes"]["ome"]["version"] == "0.5"
    assert zarr.open_array(ome_zarr / "0", mode="r").metadata.dimension_names == ("c", "y", "x")


def test_ome_zarr_in_small_windows_is_the_same(
    store: Path, ome_zarr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows of 128 px and chunks of 64 px: many seams, and no read larger than a window.
    monkeypatch.setattr(export_omezarr, "TILE_PX", 128)
    monkeypatch.setattr(export_omezarr, "CHUNK_PX", 64)
    reads: list[tuple[int, int]] = []
    original = Slide.read_region

    def spy(self: Slide, row: int, col: int, height: int, width: int, **kw: Any) -> np.ndarray:
        reads.append((height, width))
        return original(self, row, col, height, width, **kw)

    monkeypatch.setattr(Slide, "read_region", spy)
    out = tmp_path / "small.ome.zarr"
    export_store(store, to=ExportFormat.OME_ZARR, out=out)
    assert max(h * w for h, w in reads) <= 128 * 128 and len(reads) == 5 * 7
    for key in ("0", "1", "2", "labels/cells/0", "labels/cells/2", "labels/parsing/1"):
        small = zarr.open_array(out / key, mode="r")
        default = zarr.open_array(ome_zarr / key, mode="r")
        assert small.chunks[1:] == (64, 64)
        np.testing.assert_array_equal(small[...], default[...])


def test_store_without_parsing_maps_exports_bboxes(store: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.leukoscreen.zarr"
    shutil.copytree(store, plain)
    shutil.rmtree(plain / "cells" / "parsing")
    shutil.rmtree(plain / "cells" / "table" / "parsing_confidence")
    table = open_cells(plain).table

    features = json.loads(export_store(plain, to=ExportFormat.GEOJSON).path.read_text())["features"]
    assert len(features) == N_EXAMPLE_CELLS
    row0, col0, row1, col1 = table["bbox"][0]
    assert features[0]["properties"]["objectType"] == "detection"
    assert shape(features[0]["geometry"]).bounds == (col0, row0, col1, row1)

    out = export_store(plain, to=ExportFormat.OME_ZARR).path
    assert sorted(zarr.open_group(out / "labels", mode="r").attrs["ome"]["labels"]) == ["cells"]
    labels = zarr.open_array(out / "labels" / "cells" / "0", mode="r")[0]
    assert (labels[row0:row1, col0:col1] > 0).all()
    np.testing.assert_array_equal(np.unique(labels), np.arange(N_EXAMPLE_CELLS + 1))


# ---------------------------------------------------------------------------------------------
# the command: help, errors, overwrite, no partial output


def test_help_names_the_formats() -> None:
    result = CliRunner().invoke(app, ["export", "--help"])
    assert result.exit_code == 0
    for word in ("geojson", "parquet", "ome-zarr", "--out", "--overwrite", "--slide"):
        assert word in result.output


def _error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_bad_input_is_one_line_naming_the_file(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_store = tmp_path / "empty.zarr"
    not_a_store.mkdir()
    assert f"{not_a_store}: not a leukoscreen store" in _error(
        capsys, ["export", str(not_a_store), "--to", "geojson"]
    )
    running = tmp_path / "running.leukoscreen.zarr"
    shutil.copytree(store, running)
    root = zarr.open_group(running, mode="r+")
    root.attrs["leukoscreen"] = {**root.attrs["leukoscreen"], "status": "running"}
    assert f"{running}: store status is 'running'" in _error(
        capsys, ["export", str(running), "--to", "parquet"]
    )
    assert "'csv' is not one of" in _error(capsys, ["export", str(store), "--to", "csv"])
    assert "--slide is only used with --to ome-zarr" in _error(
        capsys, ["export", str(store), "--to", "geojson", "--slide", str(EXAMPLE)]
    )


def test_existing_output_needs_overwrite(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cells.geojson"
    out.write_text("old")
    assert f"{out}: already exists; pass --overwrite" in _error(
        capsys, ["export", str(store), "--to", "geojson", "--out", str(out)]
    )
    assert out.read_text() == "old"
    assert main(["export", str(store), "--to", "geojson", "--out", str(out), "--overwrite"]) == 0
    assert len(json.loads(out.read_text())["features"]) == N_EXAMPLE_CELLS

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert f"{folder}: exists but is not an OME-Zarr folder" in _error(
        capsys, ["export", str(store), "--to", "ome-zarr", "--out", str(folder), "--overwrite"]
    )
    assert (folder / "keep.txt").read_text() == "mine"
    assert f"{folder}: exists but is not a file" in _error(
        capsys, ["export", str(store), "--to", "parquet", "--out", str(folder), "--overwrite"]
    )
    missing = tmp_path / "nowhere" / "x.geojson"
    assert f"{missing}: output folder" in _error(
        capsys, ["export", str(store), "--to", "geojson", "--out", str(missing)]
    )


def test_overwrite_replaces_an_ome_zarr(store: Path, ome_zarr: Path, tmp_path: Path) -> None:
    out = tmp_path / "again.ome.zarr"
    shutil.copytree(ome_zarr, out)
    (out / "stale.txt").write_text("from before")
    assert main(["export", str(store), "--to", "ome-zarr", "--out", str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / "labels" / "cells" / "0").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.ome.zarr"]


def test_moved_or_wrong_slide_is_refused_and_slide_finds_it(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moved = tmp_path / "moved.leukoscreen.zarr"
    shutil.copytree(store, moved)
    root = zarr.open_group(moved, mode="r+")
    attrs = dict(root.attrs["leukoscreen"])
    attrs["slide"] = {**attrs["slide"], "path": str(tmp_path / "gone.svs")}
    root.attrs["leukoscreen"] = attrs
    err = _error(capsys, ["export", str(moved), "--to", "ome-zarr"])
    assert f"{tmp_path / 'gone.svs'}: the slide of {moved} is not there" in err
    assert "--slide" in err
    other = tmp_path / "other.svs"
    other.write_bytes(b"not the slide")
    assert f"{other}: not the slide of {moved}" in _error(
        capsys, ["export", str(moved), "--to", "ome-zarr", "--slide", str(other)]
    )
    copy = tmp_path / "copy.svs"
    shutil.copy(EXAMPLE, copy)
    assert main(["export", str(moved), "--to", "ome-zarr", "--slide", str(copy)]) == 0
    assert (tmp_path / "moved.ome.zarr" / "labels" / "cells").is_dir()


def test_a_failed_export_leaves_nothing_behind(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leukoscreen.pipeline import export_geojson

    def half_written(cells: object, path: Path) -> int:
        path.write_text('{"type": "FeatureCollection", "features": [')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_geojson, "write_geojson", half_written)
    out = tmp_path / "cells.geojson"
    with pytest.raises(OutputError, match=r"cells.geojson: cannot write the export \(No space"):
        export_store(store, to=ExportFormat.GEOJSON, out=out)
    assert list(tmp_path.iterdir()) == []
