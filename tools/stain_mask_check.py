"""How well the stain-derived nucleus (``metrics.stain_nucleus_mask``) agrees with the experts.

The parsing proxies of issue 16 compare a network's nucleus with a nucleus taken from the stain
alone. This scores that stain nucleus, and the first version it replaced (Otsu on the
haematoxylin channel of ``skimage.color.rgb2hed``), against the expert nuclei of segmentation_WBC:
mean IoU per data set and part (train + validation, on which the method was chosen; test)::

    python tools/stain_mask_check.py --data ../shared/data/segmentation_WBC
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu

from leukoscreen.model.data import fit_to_size, read_segmentation_wbc, size_for, split_ids
from leukoscreen.model.metrics import central_components, stain_nucleus_mask


def haematoxylin_otsu(rgb: np.ndarray) -> np.ndarray:
    """The first version: Otsu on rgb2hed's haematoxylin, then the central components."""
    haematoxylin = rgb2hed(rgb)[..., 0]
    if np.ptp(haematoxylin) == 0:
        return np.zeros(rgb.shape[:2], dtype=bool)
    return central_components(haematoxylin > threshold_otsu(haematoxylin))


METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "haematoxylin_otsu (first version)": haematoxylin_otsu,
    "stain_nucleus_mask (current)": stain_nucleus_mask,
}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the segmentation_WBC folder")
    args = parser.parse_args()
    samples = read_segmentation_wbc(args.data)
    part_of = {i: part for part, ids in split_ids(samples, seed=0).items() for i in ids}
    scores: dict[tuple[str, str, str], list[float]] = {}
    for sample in samples:
        assert sample.labels is not None
        size = size_for(sample.source, sample.rgb.shape[0])
        rgb, _ = fit_to_size(sample.rgb, size)
        expert = fit_to_size(sample.labels, size)[0] == 2
        part = "test" if part_of[sample.image_id] == "test" else "train+val"
        for name, method in METHODS.items():
            scores.setdefault((name, sample.source, part), []).append(iou(method(rgb), expert))
    for (name, source, part), values in sorted(scores.items()):
        print(f"{name:36s} {source} {part:9s} n={len(values):3d} IoU {np.mean(values):.3f}")


if __name__ == "__main__":
    main()
