"""Build the real-data example slides from BCCD fields (MIT licence, see LICENSE-BCCD.txt).

BCCD (Shenggan/BCCD_Dataset) holds 640 x 480 JPEG fields of Wright/Giemsa-stained blood smears at
about 0.065 um/px (its mean leukocyte box, ~185 px, taken as 12 um), with Pascal-VOC boxes. This
script emulates a low-magnification scan of a real smear:

1. **Mosaic** — the fields of one split (``ImageSets/Main/<split>.txt``, default ``test``), in list
   order, are laid out row-major on a grid of ``--columns`` columns with ``--gap-px`` pixels
   between fields and around the edge (default 64: 8 px = 4.2 um at x8, wider than the detector's
   ``merge_distance_um``, so nuclei cut by the edges of neighbouring fields are never merged into
   one cell). The gaps are filled with the *plasma colour*: the
   per-channel median, over all fields, of each field's brightest quarter of pixels (the cell-free
   background), so a gap reads as empty plasma, not as glass or as cells.
2. **Down-sampling** — the mosaic is shrunk x8 and x4 with the MATLAB-style antialiased bicubic
   (:func:`leukoscreen.model.imresize.imresize`), rounded and clipped to uint8. It runs in bands of
   rows with a margin wider than the kernel, which gives exactly the whole-image result.
3. **Files** (``--out``):

   * ``bccd_<split>_x<s>.svs``: a pyramidal Aperio-style TIFF (256 px lossless zlib tiles, levels /1
     and /4)
     with ``MPP = 0.065 * s`` in its description, as a scanner would write it;
   * ``bccd_<split>_x<s>.json``: the ground truth — every field's place and every leukocyte (WBC)
     box in level-0 pixels of that slide, ``[row0, col0, row1, col1)`` end exclusive; the two
     zero-area BCCD boxes are dropped;
   * ``bccd_<split>_x1.tif`` and ``.json``: the full-resolution mosaic (zlib tiles) and its boxes,
     the reference for the super-resolved cells.

The committed example is ``bccd_x8.svs`` + ``bccd_x8.json`` (the x8 test mosaic). Run::

    python tools/build_example.py --bccd ../shared/data/BCCD --out build/example
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tifffile
from mosaic import plasma_colour

from leukoscreen.model.errors import DataError
from leukoscreen.model.fields import voc_wbc_boxes
from leukoscreen.model.imresize import imresize

BCCD_MPP = 0.065  # um per BCCD pixel: mean WBC box (~185 px) taken as 12 um
FIELD_SHAPE = (480, 640)  # (height, width) of every BCCD field
TILE_PX = 256


@dataclass(frozen=True)
class Box:
    """One leukocyte box, level-0 px of a slide, end exclusive."""

    field: str
    row0: float
    col0: float
    row1: float
    col1: float


def read_split(bccd: Path, split: str) -> list[str]:
    """Field ids of a VOC split, in file order.

    Raises:
        DataError: the split list is missing or empty.
    """
    path = bccd / "ImageSets" / "Main" / f"{split}.txt"
    try:
        ids = path.read_text().split()
    except OSError as err:
        raise DataError(f"{path}: cannot read the BCCD split list ({err.strerror})") from err
    if not ids:
        raise DataError(f"{path}: expected field ids, found an empty list")
    return ids


def read_wbc_boxes(bccd: Path, field: str) -> list[tuple[int, int, int, int]]:
    """WBC boxes of one field: (row0, col0, row1, col1) field px, end exclusive, zero-area dropped
    (the reader of :mod:`leukoscreen.model.fields`)."""
    boxes = voc_wbc_boxes(bccd / "Annotations" / f"{field}.xml")
    return [(int(r0), int(c0), int(r1), int(c1)) for r0, c0, r1, c1 in boxes]


def make_mosaic(
    fields: list[np.ndarray], *, columns: int, gap_px: int, fill: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Lay fields on a grid.

    Returns:
        (H, W, 3) uint8 mosaic and the (row, col) origin of each field.
    """
    height, width = FIELD_SHAPE
    rows = math.ceil(len(fields) / columns)
    mosaic = np.empty(
        (rows * height + (rows + 1) * gap_px, columns * width + (columns + 1) * gap_px, 3), np.uint8
    )
    mosaic[:] = fill
    origins = []
    for i, rgb in enumerate(fields):
        if rgb.shape != (height, width, 3):
            raise DataError(f"field {i}: expected {height}x{width} RGB, found shape {rgb.shape}")
        r, c = divmod(i, columns)
        row0, col0 = gap_px + r * (height + gap_px), gap_px + c * (width + gap_px)
        mosaic[row0 : row0 + height, col0 : col0 + width] = rgb
        origins.append((row0, col0))
    return mosaic, origins


def shrink(image: np.ndarray, factor: int, *, band_rows: int = 64) -> np.ndarray:
    """MATLAB-style bicubic shrink by an integer ``factor``, in bands of output rows.

    Each band is resized from its input rows plus a margin of ``4 * factor`` rows on both sides
    (wider than the antialiased kernel, 4 * factor taps), starting on a multiple of ``factor``;
    the margin rows are then dropped, so the result equals ``imresize(image, 1 / factor)``.

    Args:
        image: (H, W, 3) uint8 with H and W multiples of ``factor``.
        factor: shrink factor (4 or 8).
        band_rows: output rows per band.

    Returns:
        (H / factor, W / factor, 3) uint8, rounded and clipped.
    """
    height, width = image.shape[:2]
    if height % factor or width % factor:
        raise ValueError(f"image size must be a multiple of {factor}, got {height}x{width}")
    out = np.empty((height // factor, width // factor, 3), np.uint8)
    margin = 4 * factor  # input rows
    for top in range(0, height // factor, band_rows):
        bottom = min(top + band_rows, height // factor)
        in0, in1 = max(top * factor - margin, 0), min(bottom * factor + margin, height)
        small = imresize(image[in0:in1].astype(np.float64), 1.0 / factor)
        skip = (top * factor - in0) // factor
        out[top:bottom] = np.clip(np.round(small[skip : skip + bottom - top]), 0, 255)
    return out


def write_svs(path: Path, rgb: np.ndarray, mpp: float) -> None:
    """Write an Aperio-style pyramidal .svs (zlib tiles, levels /1 and /4) that OpenSlide opens.

    Lossless tiles: the slide is the input whose super-resolved cells are compared with the
    full-resolution mosaic, so JPEG artefacts would bias that comparison.
    """
    height, width = rgb.shape[:2]
    head = (
        f"Aperio Image Library v10.0.0\n{width}x{height} [0,0 {width}x{height}] "
        f"({TILE_PX}x{TILE_PX}) "
    )
    level1 = shrink_block(rgb, 4)
    with tifffile.TiffWriter(path) as tif:
        for level, text in (
            (rgb, f"RAW|AppMag = {20 / (mpp / 0.5):.3g}|MPP = {mpp}"),
            (level1, f"-> {level1.shape[1]}x{level1.shape[0]} RAW"),
        ):
            tif.write(
                level,
                tile=(TILE_PX, TILE_PX),
                compression="zlib",
                compressionargs={"level": 9},
                photometric="rgb",
                description=head + text,
                metadata=None,
            )


def shrink_block(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Block-mean reduction for the pyramid's lower level (edges padded with the edge pixels)."""
    height, width = rgb.shape[:2]
    pad_h, pad_w = -height % factor, -width % factor
    padded = np.pad(rgb.astype(np.float32), ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    blocks = padded.reshape(padded.shape[0] // factor, factor, -1, factor, 3).mean(axis=(1, 3))
    return (blocks + 0.5).astype(np.uint8)


def build(
    bccd: Path,
    out: Path,
    *,
    split: str = "test",
    scales: tuple[int, ...] = (8, 4),
    columns: int = 9,
    gap_px: int = 64,
    full_resolution: bool = True,
) -> dict[int, Path]:
    """Build the mosaic slides of one BCCD split.

    Args:
        bccd: the BCCD folder (``JPEGImages``, ``Annotations``, ``ImageSets``).
        out: output folder (created).
        split: VOC split whose fields are used; ``test`` for the example and the figures.
        scales: down-sampling factors; a slide per factor.
        columns: fields per mosaic row.
        gap_px: full-resolution pixels between fields and around the edge (a multiple of 8).
        full_resolution: also write the x1 mosaic TIFF and its boxes.

    Returns:
        The written slide path per scale (1 for the full-resolution TIFF).

    Raises:
        DataError: the split list or a field is missing or unreadable.
    """
    import imageio.v3 as iio

    if gap_px % 8:
        raise ValueError(f"gap_px must be a multiple of 8 so every scale aligns, got {gap_px}")
    ids = read_split(bccd, split)
    fields = []
    for field in ids:
        path = bccd / "JPEGImages" / f"{field}.jpg"
        try:
            fields.append(np.asarray(iio.imread(path))[:, :, :3])
        except OSError as err:
            raise DataError(f"{path}: cannot read the BCCD field ({err})") from err
    fill = plasma_colour(fields)
    mosaic, origins = make_mosaic(fields, columns=columns, gap_px=gap_px, fill=fill)
    boxes = [
        (field, row0 + r0, col0 + c0, row0 + r1, col0 + c1)
        for field, (row0, col0) in zip(ids, origins, strict=True)
        for r0, c0, r1, c1 in read_wbc_boxes(bccd, field)
    ]
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for scale in (1, *scales) if full_resolution else scales:
        mpp = BCCD_MPP * scale
        stem = out / f"bccd_{split}_x{scale}"
        if scale == 1:
            path = stem.with_suffix(".tif")
            px_per_cm = 1e4 / mpp
            tifffile.imwrite(
                path,
                mosaic,
                tile=(TILE_PX, TILE_PX),
                compression="zlib",
                photometric="rgb",
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
        else:
            path = stem.with_suffix(".svs")
            write_svs(path, shrink(mosaic, scale), mpp)
        truth = {
            "source": "BCCD (github.com/Shenggan/BCCD_Dataset, MIT licence), fields of split "
            f"{split!r}; built by tools/build_example.py",
            "split": split,
            "scale": scale,
            "mpp": mpp,
            "shape": [mosaic.shape[0] // scale, mosaic.shape[1] // scale],
            "plasma_rgb": fill.tolist(),
            "fields": [
                {"id": f, "row0": r / scale, "col0": c / scale}
                for f, (r, c) in zip(ids, origins, strict=True)
            ],
            "wbc_boxes": [
                asdict(Box(f, r0 / scale, c0 / scale, r1 / scale, c1 / scale))
                for f, r0, c0, r1, c1 in boxes
            ],
        }
        stem.with_suffix(".json").write_text(json.dumps(truth, indent=1) + "\n")
        written[scale] = path
    return written


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: ``python tools/build_example.py --bccd DIR --out DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bccd", type=Path, required=True, help="the BCCD folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--split", default="test", help="VOC split to tile (default: test)")
    parser.add_argument("--scales", type=int, nargs="+", default=[8, 4], help="shrink factors")
    parser.add_argument("--columns", type=int, default=9, help="fields per mosaic row")
    parser.add_argument("--gap-px", type=int, default=64, help="gap between fields, full-res px")
    parser.add_argument("--no-full-resolution", action="store_true", help="skip the x1 mosaic TIFF")
    args = parser.parse_args(argv)
    written = build(
        args.bccd,
        args.out,
        split=args.split,
        scales=tuple(args.scales),
        columns=args.columns,
        gap_px=args.gap_px,
        full_resolution=not args.no_full_resolution,
    )
    for scale, path in sorted(written.items()):
        print(f"x{scale}: {path}")


if __name__ == "__main__":
    main()
