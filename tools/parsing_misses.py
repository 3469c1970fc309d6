"""Why a parsing map misses the nucleus in the centre: the stain-derived nucleus as a ceiling.

Lab script (not installed). For one source's test crops at one scale it prints the parsing
proxies of a network (``metrics.parsing_proxies``), the share of crops whose stain-derived
nucleus (``metrics.stain_nucleus_mask``) itself covers >= 10 % of the central 64 x 64 px, and
writes the crops the network misses beside their maps to a PNG. From the project root:

    python tools/parsing_misses.py --data ../shared/data/BCCD --scale 8 --weights gpsft \\
        --out parsing_misses_bccd_x8.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from skimage.io import imsave

from leukoscreen.model.checkpoint import load_init
from leukoscreen.model.data import SRDataset, fit_to_size
from leukoscreen.model.evaluate import predict
from leukoscreen.model.metrics import PROXY_KEYS, parsing_proxies, stain_nucleus_mask
from leukoscreen.model.train import read_sources, split_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="one source's folder")
    parser.add_argument("--scale", type=int, choices=(4, 8), required=True)
    parser.add_argument("--weights", default="default", help="network name or weights file")
    parser.add_argument("--out", type=Path, default=None, help="PNG of the missed crops")
    parser.add_argument("--limit", type=int, default=80, help="test crops used (first N)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    chosen = split_samples(read_sources([args.data]), 0)["test"][: args.limit]
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
