"""Nucleus fragments into cells: the boxes of pixel groups, and splitting groups too wide for one.

Detection (:mod:`leukoscreen.pipeline.detect`) merges nucleus fragments closer than
``merge_distance_um`` into one cell, so the lobes of a neutrophil count once. A chain of
fragments can then run wider than any one nucleus: two touching cells, or one cell and a platelet
or a red cell's dark rim beside it. :func:`split_wide_groups` splits such a group into clusters no
wider than ``max_span_px``, nearest fragments first, so the lobes of one nucleus stay together and
only what does not fit with them goes (on its own: another cell, or a speck too small to keep).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def group_boxes(
    label: np.ndarray, n_labels: int, pix_row: np.ndarray, pix_col: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per group, the ``row0, col0, row1, col1`` (end exclusive) of its pixels; int64 each."""
    row0 = np.full(n_labels, np.iinfo(np.int64).max)
    col0 = np.full(n_labels, np.iinfo(np.int64).max)
    row1 = np.zeros(n_labels, np.int64)
    col1 = np.zeros(n_labels, np.int64)
    np.minimum.at(row0, label, pix_row)
    np.minimum.at(col0, label, pix_col)
    np.maximum.at(row1, label, pix_row + 1)
    np.maximum.at(col1, label, pix_col + 1)
    return row0, col0, row1, col1


def split_wide_groups(
    label: np.ndarray,
    n_labels: int,
    pix_row: np.ndarray,
    pix_col: np.ndarray,
    fragment: np.ndarray,
    *,
    max_span_px: float,
    max_area_px: float,
) -> tuple[np.ndarray, int]:
    """Split the groups wider than one nucleus can be into clusters of fragments that are not.

    Only groups small enough to be kept (at most ``max_area_px``) are split; a bigger group is a
    clump, or red cells taken for nuclei, and is dropped whole by the area limit. In a wide
    group the fragments (hysteresis regions) are merged nearest centres first while the merged
    box stays within ``max_span_px`` (rows and columns). Before, every fragment of a wide group
    stood alone: a neutrophil whose lobes chained to a speck lost all its lobes to the area
    limit.

    Args:
        label: (P,) group of each nucleus pixel, ``0 .. n_labels - 1``.
        n_labels: number of groups.
        pix_row, pix_col: (P,) pixel positions.
        fragment: (P,) hysteresis region of each pixel.
        max_span_px: widest a cluster may be.
        max_area_px: groups larger than this are left whole.

    Returns:
        The new (P,) labels, consecutive from 0, and their count.
    """
    row0, col0, row1, col1 = group_boxes(label, n_labels, pix_row, pix_col)
    area = np.bincount(label, minlength=n_labels)
    wide = (np.maximum(row1 - row0, col1 - col0) > max_span_px) & (area <= max_area_px)
    if not wide.any():
        return label, n_labels
    label = label.copy()
    next_label = n_labels
    for group in np.flatnonzero(wide):
        members = np.flatnonzero(label == group)
        _, part = np.unique(fragment[members], return_inverse=True)
        clusters = _cluster(part, pix_row[members], pix_col[members], max_span_px)
        new = np.where(clusters == 0, group, next_label + clusters - 1)
        next_label += int(clusters.max())
        label[members] = new[part]
    used = np.zeros(next_label, bool)
    used[label] = True
    compact = np.cumsum(used) - 1  # consecutive ids for the labels in use, no sort
    return compact[label], int(used.sum())


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The box ``(row0, col0, row1, col1)`` holding boxes ``a`` and ``b``."""
    return np.concatenate([np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])])


def _cluster(
    part: np.ndarray, rows: np.ndarray, cols: np.ndarray, max_span_px: float
) -> np.ndarray:
    """Cluster index of each fragment of one wide group, 0 for the cluster of pixel 0's.

    Agglomerative: the two clusters whose centres are nearest are merged, as long as the box
    holding both stays within ``max_span_px``; until no pair fits.
    """
    count = int(part.max()) + 1
    boxes = list(np.stack(group_boxes(part, count, rows, cols), axis=1))  # per cluster
    sizes = np.bincount(part, minlength=count).astype(np.float64)
    # Per cluster (sum of rows, sum of cols, pixels): merged clusters add theirs up.
    sums = list(
        np.stack([np.bincount(part, rows, count), np.bincount(part, cols, count), sizes], 1)
    )
    owner = np.arange(count)  # fragment -> cluster
    alive = list(range(count))
    while len(alive) > 1:
        best, best_distance = None, np.inf
        for i, a in enumerate(alive):
            for b in alive[i + 1 :]:
                box = _union(boxes[a], boxes[b])
                if max(box[2] - box[0], box[3] - box[1]) > max_span_px:
                    continue
                distance = float(np.hypot(*(sums[a][:2] / sums[a][2] - sums[b][:2] / sums[b][2])))
                if distance < best_distance:
                    best, best_distance = (a, b), distance
        if best is None:
            break
        a, b = best
        boxes[a], sums[a] = _union(boxes[a], boxes[b]), sums[a] + sums[b]
        owner[owner == b] = a
        alive.remove(b)
    _, index = np.unique(owner, return_inverse=True)
    return (index - index[part[0]]) % len(alive)


def hysteresis(
    contrast: np.ndarray, nucleus_threshold: float, seed_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """The connected regions above ``nucleus_threshold`` (int labels, (H, W)) and the nucleus
    mask (bool, (H, W)): the regions that hold a pixel above ``seed_threshold``."""
    # Hysteresis: connected regions above the nucleus threshold that hold a seed pixel (the
    # 4-connected regions of skimage.filters.apply_hysteresis_threshold, computed by a table).
    regions, n_regions = ndi.label(contrast > nucleus_threshold)
    seeded = np.zeros(n_regions + 1, bool)
    seeded[regions[contrast > seed_threshold]] = True
    seeded[0] = False
    return regions, seeded[regions]


def cell_boxes(
    nucleus_boxes: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    margin_px: int,
    shape: tuple[int, int],
) -> np.ndarray:
    """(N, 4) int64 whole-cell boxes: the nucleus boxes grown by ``margin_px``, inside ``shape``."""
    row0, col0, row1, col1 = nucleus_boxes
    lower = np.maximum(np.stack([row0, col0], axis=1) - margin_px, 0)
    upper = np.minimum(np.stack([row1, col1], axis=1) + margin_px, np.asarray(shape, np.int64))
    return np.concatenate([lower, upper], axis=1).astype(np.int64)
