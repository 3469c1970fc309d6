"""The detector's output: one row per cell, as numpy columns, in a deterministic order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CellTable:
    """Detected cells, one row each, as numpy columns.

    Attributes:
        row: (N,) float64 centre row, level-0 pixels (centroid of the nucleus).
        col: (N,) float64 centre column, level-0 pixels.
        bbox: (N, 4) int64 ``(row0, col0, row1, col1)`` of the whole-cell estimate, level-0
            pixels, end exclusive: the nucleus box grown by ``cell_margin_um``.
        area_um2: (N,) float64 nucleus area, square microns.
        score: (N,) float32 in [0, 1], how strongly and evenly the nucleus is stained.
    """

    row: np.ndarray
    col: np.ndarray
    bbox: np.ndarray
    area_um2: np.ndarray
    score: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.row)
        columns: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {
            "row": (np.asarray(self.row, np.float64), (n,)),
            "col": (np.asarray(self.col, np.float64), (n,)),
            "bbox": (np.asarray(self.bbox, np.int64).reshape(-1, 4), (n, 4)),
            "area_um2": (np.asarray(self.area_um2, np.float64), (n,)),
            "score": (np.asarray(self.score, np.float32), (n,)),
        }
        for name, (value, shape) in columns.items():
            if value.shape != shape:
                raise ValueError(f"CellTable.{name}: expected shape {shape}, got {value.shape}")
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.row)

    @classmethod
    def empty(cls) -> CellTable:
        """A table with no cells."""
        return cls(np.zeros(0), np.zeros(0), np.zeros((0, 4)), np.zeros(0), np.zeros(0))

    @classmethod
    def concat(cls, tables: Sequence[CellTable]) -> CellTable:
        """The rows of ``tables`` one after another (no sorting)."""
        if not tables:
            return cls.empty()
        return cls(
            np.concatenate([t.row for t in tables]),
            np.concatenate([t.col for t in tables]),
            np.concatenate([t.bbox for t in tables]),
            np.concatenate([t.area_um2 for t in tables]),
            np.concatenate([t.score for t in tables]),
        )

    def take(self, index: np.ndarray | Sequence[int]) -> CellTable:
        """The rows at ``index`` (integer positions or a boolean mask), in that order."""
        index = np.asarray(index)
        return CellTable(
            self.row[index], self.col[index], self.bbox[index], self.area_um2[index],
            self.score[index],
        )  # fmt: skip

    def sort_key(self) -> np.ndarray:
        """Positions that order the rows by (row, col): the deterministic cell order."""
        return np.lexsort((self.col, self.row))

    def sorted(self) -> CellTable:
        """The table ordered by (row, col)."""
        return self.take(self.sort_key())

    def shifted(self, row_px: int, col_px: int) -> CellTable:
        """The table with every coordinate moved by (row_px, col_px)."""
        offset = np.array([row_px, col_px, row_px, col_px], np.int64)
        return CellTable(
            self.row + row_px, self.col + col_px, self.bbox + offset, self.area_um2, self.score
        )
