"""Scoring leukocyte detection against boxed fields: the measures behind ``docs/detection.md``.

A detection matches a leukocyte box when its centre lies inside the box, one detection per box at
most (a maximum bipartite matching); recall = matched / boxes, precision = matched / detections.
Two layouts of a source's fields are scored (``tools/mosaic.py``):

* **field slides**: every field, shrunk to the pixel size, is a slide of its own, so the stain is
  estimated on that field alone (:func:`score_fields`, the pure function of the pipeline);
* **mosaic slide**: all fields in one mosaic written as a pyramidal ``.svs`` and run through the
  pipeline's tiled path with one estimate for the whole slide (:func:`score_slide`).

The program that tunes, runs every table and writes the page is ``tools/evaluate_detection.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mosaic import Mosaic
from scipy.optimize import linear_sum_assignment

from leukoscreen.pipeline.config import DetectConfig
from leukoscreen.pipeline.detect import CellTable, detect_leukocytes, detect_options, detect_slide
from leukoscreen.pipeline.slide import Slide


@dataclass(frozen=True)
class Counts:
    """Detection counts of one scored set (summed over its slides)."""

    boxes: int
    detections: int
    matched: int

    @property
    def recall(self) -> float:
        return self.matched / self.boxes if self.boxes else 1.0

    @property
    def precision(self) -> float:
        return self.matched / self.detections if self.detections else 1.0

    @property
    def f1(self) -> float:
        total = self.boxes + self.detections
        return 2.0 * self.matched / total if total else 1.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.boxes + other.boxes,
            self.detections + other.detections,
            self.matched + other.matched,
        )


NO_COUNTS = Counts(0, 0, 0)


def count_matches(cells: CellTable, boxes: np.ndarray) -> int:
    """Largest one-to-one matching of cell centres to the boxes that contain them.

    Args:
        cells: detections, level-0 px.
        boxes: (M, 4) ``(row0, col0, row1, col1)`` level-0 px, end exclusive.

    Returns:
        The number of matched pairs.
    """
    return len(matched_cells(cells, boxes))


def matched_cells(cells: CellTable, boxes: np.ndarray) -> np.ndarray:
    """Indices (sorted) of the cells in :func:`count_matches`' matching."""
    if len(cells) == 0 or len(boxes) == 0:
        return np.zeros(0, np.intp)
    row, col = cells.row[:, None], cells.col[:, None]  # (N, 1)
    inside = (
        (row >= boxes[None, :, 0])
        & (row < boxes[None, :, 2])
        & (col >= boxes[None, :, 1])
        & (col < boxes[None, :, 3])
    )  # (N, M)
    cost = np.where(inside, 0.0, 1.0)
    rows, cols = linear_sum_assignment(cost)  # minimum cost = most pairs inside
    return np.sort(rows[cost[rows, cols] == 0.0])


def counts_of(cells: CellTable, boxes: np.ndarray) -> Counts:
    """The :class:`Counts` of one slide's detections against its boxes."""
    return Counts(len(boxes), len(cells), count_matches(cells, boxes))


def score_fields(fields: Sequence[Mosaic], cfg: DetectConfig) -> Counts:
    """Every field a slide of its own: the stain estimated on the field, summed counts."""
    total = NO_COUNTS
    for field in fields:
        cells = detect_leukocytes(field.rgb, mpp=field.mpp, **detect_options(cfg))
        total = total + counts_of(cells, field.boxes)
    return total


def score_slide(path: Path, boxes: np.ndarray, cfg: DetectConfig) -> Counts:
    """One slide file through the pipeline's tiled detection (plan, stain estimate, tiles)."""
    with Slide.open(path) as slide:
        cells, _ = detect_slide(slide, cfg)
    return counts_of(cells, boxes)
