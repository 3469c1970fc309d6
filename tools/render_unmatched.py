"""Render the detections of a test mosaic that match no leukocyte box, from the full-resolution
fields, so that a person can say what each one is (a missed label, a red cell, debris).

The source's test fields are laid out as ``tools/evaluate_detection.py`` lays them (a mosaic
shrunk ``--scale`` times), written as a slide and detected through the tiled pipeline with the
default configuration; each detection left over by the one-to-one matching is cut from its
field at full resolution, with the field's own boxes drawn (any class), and labelled with the
field's id. Writes one PNG and prints one line per detection.

    python tools/render_unmatched.py --data ../shared/data --source bccd --scale 4 \
        --out docs/images/unmatched_bccd_x4.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import skimage.io
from build_example import write_svs
from detection_scores import matched_cells
from mosaic import build_mosaic
from skimage.draw import rectangle_perimeter

from leukoscreen.model.fields import Field, read_fields, source_mpp, split_fields
from leukoscreen.pipeline.config import DetectConfig
from leukoscreen.pipeline.detect import detect_slide
from leukoscreen.pipeline.slide import Slide

FOLDERS = {"bccd": "BCCD", "deepbionet": "DeepBioNet", "draaslan": "draaslan"}
SIDE_UM = 24.0  # side of each rendered crop, microns


def _crop(field: Field, centre: tuple[float, float], side: int) -> np.ndarray:
    rgb = field.read_rgb().copy()
    for box in field.boxes:  # the field's leukocyte boxes, in yellow
        r0, c0, r1, c1 = (int(v) for v in box)
        rr, cc = rectangle_perimeter((r0, c0), end=(r1 - 1, c1 - 1), shape=rgb.shape[:2])
        rgb[rr, cc] = (255, 220, 0)
    pad = side // 2
    padded = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), constant_values=255)
    row, col = round(centre[0]) + pad, round(centre[1]) + pad
    out = padded[row - pad : row - pad + side, col - pad : col - pad + side].copy()
    out[pad - 1 : pad + 2, pad - 6 : pad + 7] = (0, 200, 255)  # the detection's centre: a cross
    out[pad - 6 : pad + 7, pad - 1 : pad + 2] = (0, 200, 255)
    return out


def main() -> None:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the data sets")
    parser.add_argument("--source", choices=sorted(FOLDERS), default="bccd")
    parser.add_argument("--scale", type=int, default=4, help="shrink of the mosaic")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    root = args.data / FOLDERS[args.source]
    fields = read_fields(args.source, root)
    mpp0 = source_mpp(fields)
    test = split_fields(fields, root=root)["test"]
    mosaic = build_mosaic(test, source_mpp=mpp0, mpp=mpp0 * args.scale)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mosaic.svs"
        write_svs(path, mosaic.rgb, mosaic.mpp)
        with Slide.open(path) as slide:
            cells, _ = detect_slide(slide, DetectConfig())
    side = round(SIDE_UM / mpp0)
    shapes = [field.read_rgb().shape[:2] for field in test]  # each field read once
    extra = sorted(set(range(len(cells))) - set(matched_cells(cells, mosaic.boxes).tolist()))
    tiles = []
    for i in extra:
        row, col = float(cells.row[i]), float(cells.col[i])
        # The field whose extent holds the detection (origins in mosaic px, field order).
        for k, field in enumerate(test):
            height, width = (s / args.scale for s in shapes[k])
            r0, c0 = (float(v) for v in mosaic.origins[k])
            if r0 <= row < r0 + height and c0 <= col < c0 + width:
                centre = ((row - r0) * args.scale, (col - c0) * args.scale)  # field px
                wbc = len(field.boxes)
                print(f"{field.field_id}: detection at field px {centre[0]:.0f}, "
                      f"{centre[1]:.0f}; the field has {wbc} leukocyte box(es)")  # fmt: skip
                tiles.append(_crop(field, centre, side))
                break
        else:
            print(f"detection at mosaic px {row:.0f}, {col:.0f} lies in no field (the gaps)")
    if tiles:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        skimage.io.imsave(args.out, np.concatenate(tiles, axis=1), check_contrast=False)


if __name__ == "__main__":
    main()
