"""Slide reading: every back end on synthetic files with known pixels, and every bad input."""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import pickle
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from leukoscreen.model.errors import MissingMppError, SlideReadError
from leukoscreen.pipeline.slide import Slide

RNG_PIXELS = np.random.default_rng(7).integers(0, 256, (300, 200, 3), dtype=np.uint8)


def _block_mean(rgb: np.ndarray, factor: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    out_h, out_w = -(-height // factor), -(-width // factor)
    padded = np.full((out_h * factor, out_w * factor, 3), 255, np.float32)
    padded[:height, :width] = rgb
    return (padded.reshape(out_h, factor, out_w, factor, 3).mean(axis=(1, 3)) + 0.5).astype(
        np.uint8
    )


def test_svs_metadata(svs_slide):
    with Slide.open(svs_slide.path) as slide:
        assert slide.vendor == "aperio"
        assert slide.mpp == pytest.approx(0.5)
        assert slide.dimensions == (3000, 2500)
        assert slide.level_count == 3
        assert slide.level_dimensions == list(svs_slide.level_shapes)
        assert slide.level_downsamples[:2] == [1.0, 4.0]
        assert slide.level_downsamples[2] == pytest.approx(16.0, rel=0.01)


def test_svs_read_region_matches_written_pixels(svs_slide):
    rgb = svs_slide.rgb
    with Slide.open(svs_slide.path) as slide:
        window = slide.read_region(250, 1000, 300, 270)
        assert window.dtype == np.uint8 and window.shape == (300, 270, 3)
        np.testing.assert_array_equal(window, rgb[250:550, 1000:1270])
        level1 = slide.read_region(400, 800, 50, 60, level=1)
        np.testing.assert_array_equal(level1, _block_mean(rgb, 4)[100:150, 200:260])


@pytest.mark.parametrize("fixture", ["svs_slide", "tiff_slide"])
def test_read_region_pads_outside_with_white(fixture, request):
    written = request.getfixturevalue(fixture)
    rgb = written.rgb
    with Slide.open(written.path) as slide:
        corner = slide.read_region(-10, -20, 30, 40)
        assert (corner[:10] == 255).all() and (corner[:, :20] == 255).all()
        np.testing.assert_array_equal(corner[10:, 20:], rgb[:20, :20])
        end = slide.read_region(2990, 2490, 20, 20)
        np.testing.assert_array_equal(end[:10, :10], rgb[2990:, 2490:])
        assert (end[10:] == 255).all() and (end[:, 10:] == 255).all()
        assert (slide.read_region(5000, 5000, 8, 8) == 255).all()
        assert slide.read_region(0, 0, 0, 5).shape == (0, 5, 3)


def test_generic_tiff_metadata(tiff_slide):
    with Slide.open(tiff_slide.path) as slide:
        assert slide.vendor == "generic-tiff"
        assert slide.mpp == pytest.approx(0.5)
        assert slide.dimensions == (3000, 2500)
        np.testing.assert_array_equal(slide.read_region(7, 9, 11, 13), tiff_slide.rgb[7:18, 9:22])


def test_mpp_argument_overrides_metadata(svs_slide):
    assert Slide.open(svs_slide.path, mpp=0.25).mpp == 0.25


def test_stripped_tiff_read_by_tifffile(tmp_path):
    path = tmp_path / "stripped.tif"
    tifffile.imwrite(
        path,
        RNG_PIXELS,
        rowsperstrip=16,
        compression="zlib",
        photometric="rgb",
        resolution=(25400 / 0.25, 25400 / 0.25),
        resolutionunit="INCH",
        metadata=None,
    )
    with Slide.open(path) as slide:
        assert slide.vendor == "tiff"
        assert slide.mpp == pytest.approx(0.25)
        assert slide.dimensions == (300, 200)
        window = slide.read_region(290, 190, 20, 20)
        np.testing.assert_array_equal(window[:10, :10], RNG_PIXELS[290:, 190:])
        assert (window[10:] == 255).all()


def test_ome_tiff_pyramid(tmp_path):
    path = tmp_path / "pyramid.ome.tif"
    half = RNG_PIXELS[::2, ::2]
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(
            RNG_PIXELS,
            tile=(64, 64),
            photometric="rgb",
            compression="zlib",
            subifds=1,
            metadata={"axes": "YXS", "PhysicalSizeX": 0.4, "PhysicalSizeY": 0.4},
        )
        tif.write(half, tile=(64, 64), photometric="rgb", compression="zlib", subfiletype=1)
    with Slide.open(path) as slide:
        assert slide.vendor == "ome-tiff"
        assert slide.mpp == pytest.approx(0.4)
        assert slide.level_dimensions == [(300, 200), (150, 100)]
        assert slide.level_downsamples == [1.0, 2.0]
        np.testing.assert_array_equal(slide.read_region(20, 30, 40, 50), RNG_PIXELS[20:60, 30:80])
        np.testing.assert_array_equal(
            slide.read_region(20, 30, 40, 50, level=1), half[10:50, 15:65]
        )


def test_ome_tiff_planar_channels_first(tmp_path):
    path = tmp_path / "planar.ome.tif"
    tifffile.imwrite(
        path,
        RNG_PIXELS.transpose(2, 0, 1),
        ome=True,
        photometric="rgb",
        planarconfig="separate",
        metadata={"axes": "CYX", "PhysicalSizeX": 500, "PhysicalSizeXUnit": "nm"},
    )
    with Slide.open(path) as slide:
        assert slide.mpp == pytest.approx(0.5)
        np.testing.assert_array_equal(slide.read_region(3, 4, 5, 6), RNG_PIXELS[3:8, 4:10])


@pytest.mark.parametrize(("suffix", "vendor"), [(".png", "png"), (".jpg", "jpeg")])
def test_plain_image_with_mpp(tmp_path, suffix, vendor):
    path = tmp_path / f"field{suffix}"
    iio.imwrite(path, RNG_PIXELS)
    with Slide.open(path, mpp=0.52) as slide:
        assert (slide.vendor, slide.mpp, slide.dimensions, slide.level_count) == (
            vendor,
            0.52,
            (300, 200),
            1,
        )
        window = slide.read_region(-1, 0, 3, 3)
        assert (window[0] == 255).all()
        if vendor == "png":
            np.testing.assert_array_equal(window[1:], RNG_PIXELS[:2, :3])


def test_rgba_png_is_composited_over_white(tmp_path):
    path = tmp_path / "alpha.png"
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (100, 50, 0)
    rgba[..., 3] = [[255, 0], [128, 255]]
    iio.imwrite(path, rgba)
    pixels = Slide.open(path, mpp=1.0).read_region(0, 0, 2, 2)
    np.testing.assert_array_equal(
        pixels, [[[100, 50, 0], [255, 255, 255]], [[177, 152, 127], [100, 50, 0]]]
    )


def test_alpha_compositing_touches_only_rows_that_are_not_opaque(tmp_path):
    # RGBA: rows 0 and 2 opaque (copied as they are), row 1 half transparent; grey + alpha too.
    rgba = np.zeros((3, 2, 4), np.uint8)
    rgba[..., :3] = [[[10, 20, 30]], [[100, 50, 0]], [[200, 201, 202]]]
    rgba[..., 3] = [[255, 255], [128, 255], [255, 255]]
    path = tmp_path / "rows.png"
    iio.imwrite(path, rgba)
    pixels = Slide.open(path, mpp=1.0).read_region(0, 0, 3, 2)
    np.testing.assert_array_equal(
        pixels,
        [[[10, 20, 30]] * 2, [[177, 152, 127], [100, 50, 0]], [[200, 201, 202]] * 2],
    )
    grey = np.array([[[40, 255], [40, 0]]], np.uint8)  # (1, 2, grey + alpha)
    path = tmp_path / "grey.png"
    iio.imwrite(path, grey)
    np.testing.assert_array_equal(
        Slide.open(path, mpp=1.0).read_region(0, 0, 1, 2), [[[40] * 3, [255] * 3]]
    )


def test_pickle_round_trip_in_another_process(svs_slide):
    slide = Slide.open(svs_slide.path, mpp=0.5)
    clone = pickle.loads(pickle.dumps(slide))
    assert (clone.path, clone.mpp, clone.vendor) == (slide.path, 0.5, "aperio")
    assert len(pickle.dumps(slide)) < 1000  # by path, never pixels or handles
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        window = pool.submit(slide.read_region, 1000, 1500, 64, 48).result(timeout=60)
        dims = pool.submit(getattr, slide, "level_dimensions").result(timeout=60)
    np.testing.assert_array_equal(window, svs_slide.rgb[1000:1064, 1500:1548])
    assert dims == slide.level_dimensions
    slide.close()
    np.testing.assert_array_equal(slide.read_region(0, 0, 2, 2), svs_slide.rgb[:2, :2])


def test_header_sha256(tiff_slide, tmp_path):
    data = tiff_slide.path.read_bytes()
    expected = hashlib.sha256(str(len(data)).encode() + data[: 1 << 20]).hexdigest()
    assert Slide.open(tiff_slide.path).header_sha256() == expected
    copy = tmp_path / "copy.tif"
    copy.write_bytes(data[:-4] + b"\0\0\0\1")  # a changed last tile: same first MiB and size
    assert Slide(copy, 0.5, "generic-tiff", None).header_sha256() == expected
    copy.write_bytes(data + b"\0")
    assert Slide(copy, 0.5, "generic-tiff", None).header_sha256() != expected


# ---------------------------------------------------------------- bad input


def _small_tiff(path: Path, **kwargs: object) -> Path:
    options: dict[str, object] = {
        "tile": (256, 256),
        "photometric": "rgb",
        "compression": "zlib",
        "resolution": (20000, 20000),
        "resolutionunit": "CENTIMETER",
        "metadata": None,
    }
    options.update(kwargs)
    tifffile.imwrite(
        path, np.random.default_rng(1).integers(0, 256, (512, 512, 3), np.uint8), **options
    )  # type: ignore[arg-type]
    return path


def _expect(err: type[Exception], path: Path, pattern: str, **kwargs: object) -> None:
    with pytest.raises(err) as info:
        Slide.open(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    assert re.search(pattern, message), message


def test_missing_path(tmp_path):
    _expect(SlideReadError, tmp_path / "nope.svs", r": no such file$")


def test_directory(tmp_path):
    _expect(SlideReadError, tmp_path, r"expected a slide file, found a directory")


def test_text_file(tmp_path):
    path = tmp_path / "notes.svs"
    path.write_text("not a slide\n")
    _expect(SlideReadError, path, r"expected a slide .*not a TIFF file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.tif"
    path.write_bytes(b"")
    _expect(SlideReadError, path, r"expected a slide")


@pytest.mark.parametrize("tiled", [True, False])
def test_truncated_tiff(tmp_path, tiled):
    path = _small_tiff(
        tmp_path / "cut.tif", **({} if tiled else {"tile": None, "rowsperstrip": 64})
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    _expect(SlideReadError, path, r"expected (a readable slide|decodable tiles)")


@pytest.mark.parametrize("tiled", [True, False])
def test_unsupported_compression(tmp_path, tiled):
    kwargs = {"compression": None} if tiled else {"compression": None, "tile": None}
    path = _small_tiff(tmp_path / "odd.tif", **kwargs)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["Compression"].overwrite(65000)
    _expect(SlideReadError, path, r"compression|decodable tiles.*65000")


def test_undecodable_tiles(tmp_path):
    path = _small_tiff(tmp_path / "garbled.tif", compression="jpeg")
    with tifffile.TiffFile(path) as tif:
        segments = list(zip(tif.pages[0].dataoffsets, tif.pages[0].databytecounts, strict=True))
    data = bytearray(path.read_bytes())
    for offset, count in segments:
        data[offset : offset + count] = b"\xab" * count
    path.write_bytes(bytes(data))
    _expect(SlideReadError, path, r"expected decodable tiles, found level 0 unreadable")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg"])
def test_plain_image_without_mpp(tmp_path, suffix):
    path = tmp_path / f"field{suffix}"
    iio.imwrite(path, RNG_PIXELS)
    with pytest.raises(MissingMppError) as info:
        Slide.open(path)
    assert str(info.value) == f"{path}: no microns-per-pixel in the slide metadata; pass --mpp"


def test_tiff_without_mpp(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, RNG_PIXELS, tile=(64, 64), photometric="rgb", metadata=None)
    _expect(MissingMppError, path, r"no microns-per-pixel in the slide metadata; pass --mpp$")
    assert Slide.open(path, mpp=0.3).mpp == 0.3


def test_corrupt_png(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    _expect(SlideReadError, path, r"expected a readable PNG image", mpp=1.0)


@pytest.mark.parametrize("mpp", [-1.0, float("nan"), float("inf")])
def test_invalid_mpp_argument(svs_slide, mpp):
    with pytest.raises(ValueError, match="mpp must be a positive number"):
        Slide.open(svs_slide.path, mpp=mpp)


def test_bad_read_arguments(svs_slide):
    slide = Slide.open(svs_slide.path)
    with pytest.raises(ValueError, match=r"level must be in \[0, 3\), got 3"):
        slide.read_region(0, 0, 1, 1, level=3)
    with pytest.raises(ValueError, match="height and width must be >= 0, got -1x1"):
        slide.read_region(0, 0, -1, 1)
