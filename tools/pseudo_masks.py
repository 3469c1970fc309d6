"""Pseudo-masks for the mask-less field sources (issue 16 part 2): an image folder to train on.

For each boxed leukocyte of a field source's **train** part (``crop_leukocytes``: 224 px at the
field's resolution, the fixed split, so test crops never enter), the shipped default network
parses its x``--scale`` LR version (the teacher), and the stain gives an independent nucleus
(``metrics.stain_nucleus_mask``; the shipped x8 weights' last fine-tuning used the current
version with ``--min-agreement 0.6``, the earlier pseudo-masks its first version, Otsu on the
haematoxylin channel of colour deconvolution). The pseudo-mask
keeps the teacher's cell region (its cytoplasm does not flood the plasma) and takes as nucleus
the stain nucleus inside that region; cytoplasm is the rest of the region. A cell is kept only
where both are confident: the teacher's mean pixel confidence over the cell >= ``--min-confidence``,
its nucleus agrees with the stain's (IoU >= ``--min-agreement``), the pseudo nucleus covers
>= 10 % of the central 64 px, and <= 5 % of the outer 16 px strip is cell.

Writes ``OUT/<source>_pseudo_x<scale>/<id>.png`` + ``<id>_mask.png`` (255 nucleus, 128
cytoplasm, 0 background: the segmentation_WBC convention, read by ``leukoscreen train --data``)
and ``OUT/<source>_pseudo_x<scale>.json`` (kept / seen and the thresholds)::

    python tools/pseudo_masks.py --data ../shared/data --sources BCCD DeepBioNet --scale 8 \\
        --max-cells 400 --out runs/pseudo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import skimage.io

from leukoscreen.model.data import fit_to_size
from leukoscreen.model.fields import crop_leukocytes
from leukoscreen.model.imresize import degrade
from leukoscreen.model.inference import load_upscaler
from leukoscreen.model.metrics import parsing_proxies, stain_nucleus_mask
from leukoscreen.pipeline.sr_task import cell_confidence

SIDE = 224


def pseudo_labels(
    teacher: np.ndarray, confidence: float, rgb: np.ndarray, args: argparse.Namespace
) -> np.ndarray | None:
    """The pseudo-mask of one crop (labels 0/1/2), or None when the crop is not confident."""
    cell = teacher > 0
    stain = stain_nucleus_mask(rgb)
    union = np.count_nonzero((teacher == 2) | stain)
    agreement = np.count_nonzero((teacher == 2) & stain) / union if union else 0.0
    if confidence < args.min_confidence or agreement < args.min_agreement:
        return None
    labels = np.where(cell, 1, 0).astype(np.uint8)
    labels[cell & stain] = 2
    proxies = parsing_proxies(labels, rgb)
    if proxies["nucleus_in_centre"] < 1.0 or proxies["outer_strip_cell"] > 0.05:
        return None
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding the sources")
    parser.add_argument("--sources", nargs="+", default=["BCCD", "DeepBioNet"])
    parser.add_argument("--scale", type=int, choices=(4, 8), default=8)
    parser.add_argument("--max-cells", type=int, default=400, help="train crops looked at")
    parser.add_argument("--min-confidence", type=float, default=0.75)
    parser.add_argument("--min-agreement", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/pseudo"))
    args = parser.parse_args()
    teacher = load_upscaler("default", args.scale, device="cpu", precision="auto")
    for name in args.sources:
        crops = [s for s in crop_leukocytes(name.lower(), args.data / name) if s.split == "train"]
        order = np.random.default_rng(args.seed).permutation(len(crops))[: args.max_cells]
        chosen = [crops[i] for i in sorted(order)]
        folder = args.out / f"{name.lower()}_pseudo_x{args.scale}"
        folder.mkdir(parents=True, exist_ok=True)
        kept = 0
        for start in range(0, len(chosen), 16):
            batch = chosen[start : start + 16]
            hr = np.stack([fit_to_size(s.rgb, SIDE)[0] for s in batch])
            lr = np.stack([degrade(h.astype(np.float64) / 255.0, args.scale)[0] for h in hr])
            lr = np.clip(np.rint(lr * 255.0), 0, 255).astype(np.uint8)
            _, parsing, pixel_conf = teacher.upscale_maps(lr)
            assert parsing is not None and pixel_conf is not None
            conf = cell_confidence(parsing, pixel_conf)
            for sample, rgb, labels, c in zip(batch, hr, parsing, conf, strict=True):
                mask = pseudo_labels(labels, float(c), rgb, args)
                if mask is None:
                    continue
                skimage.io.imsave(folder / f"{sample.image_id}.png", rgb, check_contrast=False)
                levels = np.array([0, 128, 255], np.uint8)[mask]
                skimage.io.imsave(folder / f"{sample.image_id}_mask.png", levels,
                                  check_contrast=False)  # fmt: skip
                kept += 1
        report = {"source": name, "scale": args.scale, "train_crops": len(crops),
                  "looked_at": len(chosen), "kept": kept, **{k: getattr(args, k) for k in
                  ("min_confidence", "min_agreement", "seed")}}  # fmt: skip
        (args.out / f"{name.lower()}_pseudo_x{args.scale}.json").write_text(
            json.dumps(report, indent=2) + "\n"
        )
        print(json.dumps(report))


if __name__ == "__main__":
    main()
