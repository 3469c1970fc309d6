"""Field sources (readers, defects, splits), mosaics, colour shifts; real-data detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.filters
import skimage.io
from build_example import write_svs
from detection_scores import (
    Counts,
    count_matches,
    score_fields,
    score_slide,
)
from mosaic import (
    COLOUR_SHIFTS,
    ColourShift,
    build_mosaic,
    shift_colours,
)

from leukoscreen.model.errors import DataError
from leukoscreen.model.fields import (
    Field,
    difference_hash,
    duplicate_groups,
    read_bccd,
    read_deepbionet,
    read_draaslan,
    source_mpp,
    split_fields,
)
from leukoscreen.pipeline.config import DetectConfig

VOC = """<annotation>{objects}</annotation>"""
OBJECT = (
    "<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
    "<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
)


def _voc_folder(root: Path, fields: dict[str, list[tuple[str, int, int, int, int]]]) -> Path:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    rng = np.random.default_rng(0)
    for stem, objects in fields.items():
        rgb = rng.integers(0, 256, (48, 64, 3)).astype(np.uint8)
        skimage.io.imsave(root / "JPEGImages" / f"{stem}.jpg", rgb, check_contrast=False)
        text = "".join(
            OBJECT.format(name=n, x0=x0, y0=y0, x1=x1, y1=y1) for n, x0, y0, x1, y1 in objects
        )
        (root / "Annotations" / f"{stem}.xml").write_text(VOC.format(objects=text))
    return root


def test_voc_reader_keeps_wbc_boxes_end_exclusive_and_drops_zero_area(tmp_path):
    root = _voc_folder(
        tmp_path / "BCCD",
        {
            "a": [("WBC", 10, 5, 29, 24), ("RBC", 0, 0, 9, 9), ("WBC", 3, 3, 3, 10)],
            "b": [("Platelets", 1, 1, 4, 4)],
        },
    )
    fields = read_bccd(root)
    assert [f.field_id for f in fields] == ["bccd-a", "bccd-b"]
    np.testing.assert_array_equal(fields[0].boxes, [[5, 10, 25, 30]])  # (row0, col0, row1, col1)
    assert fields[1].boxes.shape == (0, 4)
    assert fields[0].read_rgb().shape == (48, 64, 3)


def test_deepbionet_reader_drops_the_files_that_label_red_cells_as_wbc(tmp_path):
    root = _voc_folder(
        tmp_path / "DeepBioNet",
        {
            "001": [("WBC", 0, 0, 19, 19), ("W", 20, 20, 30, 30), ("dog", 1, 1, 5, 5)],
            "370": [("WBC", 0, 0, 9, 9)] * 5,
            "389": [("WBC", 0, 0, 9, 9)],
        },
    )
    fields = read_deepbionet(root)
    assert [f.field_id for f in fields] == ["deepbionet-001"]
    assert len(fields[0].boxes) == 1


def test_draaslan_reader_denormalises_and_drops_wbc_boxes_that_duplicate_a_red_cell(tmp_path):
    root = tmp_path / "draaslan"
    (root / "images").mkdir(parents=True)
    for n in (1, 2):
        path = root / "images" / f"image-{n}.png"
        skimage.io.imsave(path, np.zeros((256, 256, 4), np.uint8), check_contrast=False)
    (root / "annotations.csv").write_text(
        "image_id,image,xmin,ymin,xmax,ymax,label\n"
        "1,image-1.png,0.25,0.5,0.75,1.0,wbc\n"
        "1,image-1.png,0.0,0.0,0.1,0.1,rbc\n"
        "2,image-2.png,0.9,0.9,1.0,1.0,wbc\n"
        "2,image-2.png,0.9,0.9,1.0,1.0,rbc\n"
    )
    fields = read_draaslan(root)
    assert [f.field_id for f in fields] == ["draaslan-image-1", "draaslan-image-2"]
    np.testing.assert_allclose(fields[0].boxes, [[128, 64, 256, 192]])
    assert fields[1].boxes.shape == (0, 4)  # its wbc box is also an rbc box: a label defect
    assert fields[0].read_rgb().shape == (256, 256, 3)  # the alpha channel dropped
    split = split_fields(fields)
    assert split["train"] == [] and len(split["test"]) == 2  # never tuned on


def test_readers_name_the_folder_on_bad_input(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}: expected JPEGImages/ and Annotations/"):
        read_bccd(tmp_path)
    with pytest.raises(DataError, match=r"annotations\.csv: cannot read the draaslan annotations"):
        read_draaslan(tmp_path)


def test_source_mpp_makes_the_mean_box_12_um():
    boxes = np.array([[0, 0, 100, 100], [0, 0, 200, 200]], np.float64)
    field = Field("x-1", "bccd", Path("none"), boxes)
    assert source_mpp([field]) == pytest.approx(12.0 / 150.0)
    with pytest.raises(DataError, match="no leukocyte boxes"):
        source_mpp([Field("x-2", "bccd", Path("none"), np.zeros((0, 4)))])


def test_colour_shifted_copies_share_a_hash_group_and_other_scenes_do_not():
    rng = np.random.default_rng(1)
    scenes = [rng.integers(0, 256, (48, 64, 3)).astype(np.uint8) for _ in range(3)]
    scenes = [skimage.filters.gaussian(s, 3, channel_axis=2, preserve_range=True) for s in scenes]
    scenes = [np.clip(s, 0, 255).astype(np.uint8) for s in scenes]
    copies = [shift_colours(scenes[0], ColourShift("blue", tint=(0.7, 0.9, 1.0))),
              shift_colours(scenes[0], ColourShift("dark", brightness=0.8))]  # fmt: skip
    hashes = np.stack([difference_hash(x) for x in [*scenes, *copies]])
    assert hashes.shape == (5, 128) and hashes.dtype == bool
    np.testing.assert_array_equal(duplicate_groups(hashes), [0, 1, 2, 0, 0])


def test_deepbionet_split_keeps_duplicate_groups_on_one_side(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    fields, images = [], {}
    for i in range(40):
        noise = rng.integers(0, 256, (48, 64, 3)).astype(np.uint8)
        smooth = skimage.filters.gaussian(noise, 3, channel_axis=2, preserve_range=True)
        base = np.clip(smooth, 0, 255).astype(np.uint8)
        for k, tint in enumerate([(1.0, 1.0, 1.0), (0.7, 0.9, 1.0)]):
            fid = f"deepbionet-{i:03d}{k}"
            images[fid] = shift_colours(base, ColourShift("t", tint=tint))
            fields.append(Field(fid, "deepbionet", Path(fid), np.zeros((0, 4))))
    monkeypatch.setattr(Field, "read_rgb", lambda self: images[self.field_id])
    split = split_fields(fields)
    parts = {f.field_id: part for part, members in split.items() for f in members}
    assert len(parts) == 80
    for i in range(40):
        assert parts[f"deepbionet-{i:03d}0"] == parts[f"deepbionet-{i:03d}1"]
    assert [len(split[p]) for p in ("train", "val", "test")] == [56, 12, 12]


def test_mosaic_places_boxes_where_the_shrunk_fields_are(tmp_path):
    rng = np.random.default_rng(3)
    paths = []
    for i, shape in enumerate([(64, 96), (48, 64)]):
        path = tmp_path / f"f{i}.png"
        skimage.io.imsave(path, rng.integers(0, 256, (*shape, 3)).astype(np.uint8),
                          check_contrast=False)  # fmt: skip
        paths.append(path)
    fields = [
        Field("s-0", "bccd", paths[0], np.array([[8.0, 16.0, 40.0, 48.0]])),
        Field("s-1", "bccd", paths[1], np.array([[0.0, 0.0, 16.0, 32.0]])),
    ]
    m = build_mosaic(fields, source_mpp=0.1, mpp=0.4, gap_um=1.2, columns=2)
    assert m.mpp == 0.4 and m.rgb.dtype == np.uint8
    gap = 3  # ceil(1.2 / 0.4)
    assert m.rgb.shape == (2 * gap + 16, 3 * gap + 2 * 24, 3)  # cells of 16 x 24 px
    for box, origin, field in zip(m.boxes, m.origins, fields, strict=True):
        np.testing.assert_allclose(box, field.boxes[0] / 4 + np.tile(origin, 2))
    np.testing.assert_array_equal(np.sort(m.origins[:, 1]), [gap, 2 * gap + 24])
    with pytest.raises(ValueError, match="mpp must be >= source_mpp"):
        build_mosaic(fields, source_mpp=0.4, mpp=0.1)


def test_colour_shifts():
    rgb = np.array([[[200, 100, 50], [255, 255, 255]]], np.uint8)
    assert (shift_colours(rgb, COLOUR_SHIFTS[0]) == rgb).all()  # "none"
    stronger = shift_colours(rgb, ColourShift("s", stain=2.0))
    np.testing.assert_array_equal(stronger[0, 0], np.round(255 * (rgb[0, 0] / 255.0) ** 2))
    np.testing.assert_array_equal(stronger[0, 1], [255, 255, 255])  # white stays white
    tinted = shift_colours(rgb, ColourShift("t", tint=(1.0, 0.5, 0.5), brightness=0.8))
    np.testing.assert_array_equal(tinted[0, 1], [204, 102, 102])


def test_counts():
    c = Counts(10, 8, 7) + Counts(0, 2, 0)
    assert (c.recall, c.precision, c.f1) == (0.7, 0.7, 0.7)
    assert Counts(0, 0, 0).recall == 1.0


def test_count_matches_is_one_to_one():
    from leukoscreen.pipeline.detect import CellTable

    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float64)
    two_in_overlap = CellTable([6.0, 7.0], [6.0, 7.0], np.zeros((2, 4)), [1.0, 1.0], [1.0, 1.0])
    assert count_matches(two_in_overlap, boxes) == 2
    both_in_first_only = CellTable([1.0, 2.0], [1.0, 2.0], np.zeros((2, 4)), [1, 1], [1, 1])
    assert count_matches(both_in_first_only, boxes) == 1
    assert count_matches(CellTable.empty(), boxes) == 0


# ---------------------------------------------------------------- real data (slow)


def _source(shared_data: Path, folder: str) -> Path:
    root = shared_data / folder
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("scale", [8, 4])
def test_bccd_test_mosaic_through_the_tiled_path(shared_data, tmp_path, scale):
    """BCCD test mosaic as an .svs: figures of docs/detection.md (recall 1.000, precision 0.947)."""
    root = _source(shared_data, "BCCD")
    fields = read_bccd(root)
    test = split_fields(fields, root=root)["test"]
    mpp = source_mpp(fields)
    m = build_mosaic(test, source_mpp=mpp, mpp=mpp * scale)
    write_svs(tmp_path / "bccd.svs", m.rgb, m.mpp)
    counts = score_slide(tmp_path / "bccd.svs", m.boxes, DetectConfig())
    assert counts.boxes == 71
    assert counts.recall >= 0.97 and counts.precision >= 0.94, counts


@pytest.mark.slow
def test_deepbionet_test_fields_held_out_targets(shared_data):
    """DeepBioNet test fields at x8, each its own slide: recall >= 0.97, precision >= 0.95."""
    root = _source(shared_data, "DeepBioNet")
    fields = read_deepbionet(root)
    test = split_fields(fields)["test"]
    assert sum(len(f.boxes) for f in test) == 332
    mpp = source_mpp(fields)
    layout = [build_mosaic([f], source_mpp=mpp, mpp=8 * mpp, gap_um=0.0) for f in test]
    counts = score_fields(layout, DetectConfig())
    assert counts.recall >= 0.97 and counts.precision >= 0.95, counts
