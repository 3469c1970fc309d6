"""Why a parsing map misses the nucleus in the centre: the stain-derived nucleus as a ceiling.

Lab script (not installed). For one source's test crops at one scale it prints the parsing
proxies of a network (``metrics.parsing_proxies``), the share of crops whose stain-derived
nucleus (``metrics.stain_nucleus_mask``) itself covers >= 10 % of the central 64 x 64 px, and
writes the crops the network misses beside their maps to a PNG. From the project root:

    python tools/parsing_misses.py --data ../shared/data/BCCD --scale 8 --weights gpsft \\
        --out parsing_misses_bccd_x8.png

With ``--centre detected`` each crop is centred as the pipeline centres it: on the cell that
``detect_leukocytes`` finds inside the box in the field shrunk by the scale (the low-power
scan), instead of on the box, and reaching past the field's edge into plasma as on a slide
(a crop clipped inside the field is not centred on a cell at its edge); where no detection
lies in the box, on the box (counted).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from mosaic import plasma_colour, shrink_field
from skimage.io import imsave

from leukoscreen.model.checkpoint import load_init
from leukoscreen.model.data import SRDataset, fit_to_size
from leukoscreen.model.evaluate import predict
from leukoscreen.model.fields import read_fields, source_mpp
from leukoscreen.model.metrics import PROXY_KEYS, parsing_proxies, stain_nucleus_mask
from leukoscreen.model.sources import read_sources, split_samples
from leukoscreen.pipeline.config import DetectConfig
from leukoscreen.pipeline.detect import detect_leukocytes, detect_options

FOLDER_SOURCES = {"BCCD": "bccd", "DeepBioNet": "deepbionet", "draaslan": "draaslan"}


def detected_centres(rgb: np.ndarray, mpp: float, scale: int) -> np.ndarray:
    """(N, 2) HR (row, col) centres of the cells found in a field shrunk by ``scale`` (the
    pipeline's detection settings)."""
    low = shrink_field(rgb, scale)
    cells = detect_leukocytes(low, mpp=mpp * scale, **detect_options(DetectConfig()))
    return (np.stack([cells.row, cells.col], axis=1) + 0.5) * scale - 0.5


def on_plasma(rgb: np.ndarray, pad: int) -> np.ndarray:
    """The field with ``pad`` px of its plasma colour around it: what a crop past its edge meets
    on a slide (the colour the mosaics of tools/mosaic.py put between fields)."""
    canvas = np.empty((rgb.shape[0] + 2 * pad, rgb.shape[1] + 2 * pad, 3), np.uint8)
    canvas[:] = plasma_colour([rgb])
    canvas[pad:-pad, pad:-pad] = rgb
    return canvas


def recentred(samples: list, data: Path, scale: int, side_px: int = 224) -> tuple[list, int]:
    """The samples re-cropped around the detected cell in their box, and how many had none."""
    fields = {f.field_id: f for f in read_fields(FOLDER_SOURCES[data.name], data)}
    mpp = source_mpp(list(fields.values()))
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # field -> (padded image, centres)
    out, fallback = [], 0
    for sample in samples:
        field_id, k = sample.image_id.rsplit("-", 1)
        field = fields[field_id]
        if field_id not in seen:
            rgb = field.read_rgb()
            seen[field_id] = (on_plasma(rgb, side_px), detected_centres(rgb, mpp, scale))
        canvas, found = seen[field_id]
        r0, c0, r1, c1 = field.boxes[int(k)]
        inside = (found[:, 0] >= r0) & (found[:, 0] < r1) & (found[:, 1] >= c0) & (found[:, 1] < c1)
        centre = np.array([(r0 + r1) / 2, (c0 + c1) / 2])
        if inside.any():
            candidates = found[inside]
            centre = candidates[np.argmin(np.hypot(*(candidates - centre).T))]
        else:
            fallback += 1
        top = int(np.round(centre[0] - side_px / 2)) + side_px
        left = int(np.round(centre[1] - side_px / 2)) + side_px
        crop = np.ascontiguousarray(canvas[top : top + side_px, left : left + side_px])
        out.append(replace(sample, rgb=crop))
    return out, fallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="one source's folder")
    parser.add_argument("--scale", type=int, choices=(4, 8), required=True)
    parser.add_argument("--weights", default="default", help="network name or weights file")
    parser.add_argument("--out", type=Path, default=None, help="PNG of the missed crops")
    parser.add_argument("--limit", type=int, default=80, help="test crops used (first N)")
    parser.add_argument(
        "--centre", choices=("box", "detected"), default="box",
        help="centre each crop on its box, or on the detected cell in it (as the pipeline)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    chosen = split_samples(read_sources([args.data]), 0)["test"][: args.limit]
    if args.centre == "detected":
        chosen, fallback = recentred(chosen, args.data, args.scale)
        print(f"centred on the detected cell: {len(chosen) - fallback} of {len(chosen)}")
    dataset = SRDataset(chosen, scale=args.scale)
    model = load_init(args.weights, args.scale).model.eval()
    _, labels = predict(model, dataset, device=torch.device("cpu"), precision="bf16", batch_size=8)
    scores, stain_centre, missed = [], [], []
    for index, sample in enumerate(chosen):
        rows, cols = (int(v) for v in dataset[index]["valid"])
        rgb = fit_to_size(sample.rgb, dataset.sizes[index])[0][:rows, :cols]
        predicted = labels[index][:rows, :cols]
        proxies = parsing_proxies(predicted, rgb)
        scores.append([proxies[key] for key in PROXY_KEYS])
        stain = stain_nucleus_mask(rgb)
        top, left = (rows - 64) // 2, (cols - 64) // 2
        stain_centre.append(stain[top : top + 64, left : left + 64].mean() >= 0.10)
        if proxies["nucleus_in_centre"] == 0:
            shown = np.repeat((predicted * 120).astype(np.uint8)[..., None], 3, axis=2)
            missed.append(np.concatenate([rgb, shown], axis=1))
    means = dict(zip(PROXY_KEYS, np.mean(scores, axis=0).round(3), strict=True))
    print(f"{args.data.name} x{args.scale}: {len(chosen)} crops, {means}")
    print(f"stain-derived nucleus in the centre: {np.mean(stain_centre):.3f}")
    if args.out is not None and missed:
        same_size = [m for m in missed if m.shape == missed[0].shape]
        imsave(args.out, np.concatenate(same_size[:8], axis=0))
        print(f"{len(missed)} missed crops, the first {min(len(same_size), 8)} in {args.out}")


if __name__ == "__main__":
    main()
