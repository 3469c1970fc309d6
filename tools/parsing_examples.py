"""Rendered examples of a network's parsing map on one source's test cells (issue 16).

Lab script (not installed). For a few seeded test crops of one source, centred as the pipeline
centres them (``parsing_misses.recentred``, field sources) or as stored (segmentation_WBC), one
row per cell: the LR crop the network reads (MATLAB-style bicubic down-sampling, shown
enlarged), the HR crop with the network's parsing map outlined (nucleus green, cell yellow),
and the HR crop with the stain-derived nucleus (``metrics.stain_nucleus_mask``) outlined in
magenta. From the project root::

    python tools/parsing_examples.py --data ../shared/data/draaslan --scale 8 \\
        --out docs/images/parsing_draaslan_x8.png

Only BCCD and draaslan (MIT) may be rendered into the repository; DeepBioNet and
segmentation_WBC images must not be copied into the project (``../shared/data/README.md``), so
render those to a file outside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from mosaic import shrink_field
from parsing_misses import FOLDER_SOURCES, recentred
from scipy import ndimage as ndi
from skimage.io import imsave

from leukoscreen.model.checkpoint import load_init
from leukoscreen.model.data import SRDataset, fit_to_size
from leukoscreen.model.evaluate import predict
from leukoscreen.model.metrics import stain_nucleus_mask
from leukoscreen.model.sources import read_sources, split_samples

NUCLEUS_RGB, CELL_RGB, STAIN_RGB = (0, 220, 0), (255, 220, 0), (230, 0, 230)


def outlined(rgb: np.ndarray, masks: list[tuple[np.ndarray, tuple[int, int, int]]]) -> np.ndarray:
    """``rgb`` with the 2 px inner edge of each mask painted in its colour."""
    out = rgb.copy()
    for mask, colour in masks:
        out[mask & ~ndi.binary_erosion(mask, iterations=2)] = colour
    return out


def enlarged_lr(rgb: np.ndarray, scale: int) -> np.ndarray:
    """The LR view of ``rgb`` (bicubic, 1 / ``scale``), shown at HR size by pixel repetition."""
    big = np.kron(shrink_field(rgb, scale), np.ones((scale, scale, 1), np.uint8))
    return big[: rgb.shape[0], : rgb.shape[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="one source's folder")
    parser.add_argument("--scale", type=int, choices=(4, 8), required=True)
    parser.add_argument("--weights", default="default", help="network name or weights file")
    parser.add_argument("--cells", type=int, default=4, help="rows to render")
    parser.add_argument("--seed", type=int, default=0, help="which test cells (seeded draw)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    torch.set_num_threads(1)
    test = split_samples(read_sources([args.data]), 0)["test"]
    picked = np.random.default_rng(args.seed).choice(len(test), args.cells, replace=False)
    chosen = [test[int(i)] for i in sorted(picked)]
    if args.data.name in FOLDER_SOURCES:
        chosen, _ = recentred(chosen, args.data, args.scale)
    dataset = SRDataset(chosen, scale=args.scale)
    model = load_init(args.weights, args.scale).model.eval()
    _, labels = predict(model, dataset, device=torch.device("cpu"), precision="bf16", batch_size=8)
    rows = []
    for index, sample in enumerate(chosen):
        rows_px, cols_px = (int(v) for v in dataset[index]["valid"])
        side = dataset.sizes[index]
        rgb = np.zeros((side, side, 3), np.uint8)
        rgb[:rows_px, :cols_px] = fit_to_size(sample.rgb, side)[0][:rows_px, :cols_px]
        predicted = np.zeros((side, side), np.uint8)
        label = labels[index]
        assert label is not None, "the network has no parsing map"
        predicted[:rows_px, :cols_px] = label[:rows_px, :cols_px]
        network = outlined(rgb, [(predicted > 0, CELL_RGB), (predicted == 2, NUCLEUS_RGB)])
        stain = outlined(rgb, [(stain_nucleus_mask(rgb), STAIN_RGB)])
        rows.append(np.concatenate([enlarged_lr(rgb, args.scale), network, stain], axis=1))
    same = [row for row in rows if row.shape == rows[0].shape]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    imsave(args.out, np.concatenate(same, axis=0), check_contrast=False)
    print(f"{len(same)} cells of {args.data.name} x{args.scale} -> {args.out}")


if __name__ == "__main__":
    main()
