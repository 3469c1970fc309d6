"""What a store holds besides pixels: its identity and its cell-table columns.

A store records its :class:`StoreIdentity` (the slide, the model and the crop geometry) in its
attributes (``docs/store-format.md``); a resumed run must match it on :data:`CHECKED_FIELDS`. The
cell table has the columns of :data:`TABLE_COLUMNS`; :func:`number_cells` derives ``cell_id`` and
``batch``, for the store and for ``leukoscreen detect``'s table alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# Cell-table columns: dtype and the shape after the cell axis. The store derives cell_id and batch.
TABLE_COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "cell_id": ("int64", ()),
    "row": ("float64", ()),
    "col": ("float64", ()),
    "row_um": ("float64", ()),
    "col_um": ("float64", ()),
    "bbox": ("int64", (4,)),
    "area_um2": ("float64", ()),
    "score": ("float32", ()),
    "batch": ("int64", ()),
}
CONFIDENCE = "parsing_confidence"
"""The table column written with each batch by networks with a parsing map (``write_batch``)."""


def n_batches_for(n_cells: int, batch_size: int) -> int:
    """Number of batches of ``batch_size`` cells covering ``n_cells`` (the last may be short)."""
    return math.ceil(n_cells / batch_size)


def number_cells(columns: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """The table in :data:`TABLE_COLUMNS` order, cells numbered in the order given.

    Args:
        columns: the columns of :data:`TABLE_COLUMNS` but ``cell_id`` and ``batch``, rows in
            cell-id order (sorted by (row, col)).
        batch_size: cells per SR batch.

    Returns:
        The columns given, with ``cell_id = arange(N)`` and ``batch = cell_id // batch_size``
        (a missing column stays missing, for the caller's check to name).
    """
    ids = np.arange(len(columns["row"]), dtype=np.int64)
    derived = {"cell_id": ids, "batch": ids // batch_size}
    merged = {**columns, **derived}
    return {name: merged[name] for name in TABLE_COLUMNS if name in merged}


@dataclass(frozen=True)
class StoreIdentity:
    """What makes two runs produce the same store; a resume must match all of the checked fields.

    Attributes:
        slide_path: the slide as given (recorded, not checked: a moved slide may be resumed).
        slide_size_px: (height, width) of level 0, pixels.
        slide_header_sha256: sha256 of the slide's header bytes (``Slide.header_sha256``).
        slide_vendor: format/vendor name reported by the reader (recorded, not checked).
        mpp: microns per level-0 pixel used for this run.
        scale: super-resolution factor.
        arch: network name (``gp``, ``np``, ...).
        checkpoint_sha256: sha256 of the weights used.
        has_prior: whether the network predicts parsing maps (``cells/parsing`` exists).
        hr_size_px: side of each super-resolved cell, HR pixels.
        margin_px: LR context pixels per side, trimmed after SR.
        batch_size: cells per SR batch and per chunk.
    """

    slide_path: str
    slide_size_px: tuple[int, int]
    slide_header_sha256: str
    slide_vendor: str
    mpp: float
    scale: int
    arch: str
    checkpoint_sha256: str
    has_prior: bool
    hr_size_px: int
    margin_px: int
    batch_size: int

    @property
    def lr_size_px(self) -> int:
        """Side of the stored LR crop: ``hr_size_px // scale + 2 * margin_px``."""
        return self.hr_size_px // self.scale + 2 * self.margin_px

    def to_attrs(self) -> dict[str, Any]:
        """The identity as the JSON ``slide``/``model``/``geometry`` attribute sections."""
        return {
            "slide": {
                "path": self.slide_path,
                "size_px": list(self.slide_size_px),
                "header_sha256": self.slide_header_sha256,
                "vendor": self.slide_vendor,
                "mpp": self.mpp,
            },
            "scale": self.scale,
            "model": {
                "arch": self.arch,
                "checkpoint_sha256": self.checkpoint_sha256,
                "has_prior": self.has_prior,
            },
            "geometry": {
                "hr_size_px": self.hr_size_px,
                "lr_core_px": self.hr_size_px // self.scale,
                "context_margin_px": self.margin_px,
                "lr_size_px": self.lr_size_px,
                "batch_size": self.batch_size,
                "crop_row0": "floor(row + 0.5) - lr_core_px // 2 - context_margin_px",
                "border": "pixels outside the slide are white (255, 255, 255)",
            },
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StoreIdentity:
        """Inverse of :meth:`to_attrs`."""
        slide, model, geometry = attrs["slide"], attrs["model"], attrs["geometry"]
        return cls(
            slide_path=str(slide["path"]),
            slide_size_px=(int(slide["size_px"][0]), int(slide["size_px"][1])),
            slide_header_sha256=str(slide["header_sha256"]),
            slide_vendor=str(slide["vendor"]),
            mpp=float(slide["mpp"]),
            scale=int(attrs["scale"]),
            arch=str(model["arch"]),
            checkpoint_sha256=str(model["checkpoint_sha256"]),
            has_prior=bool(model["has_prior"]),
            hr_size_px=int(geometry["hr_size_px"]),
            margin_px=int(geometry["context_margin_px"]),
            batch_size=int(geometry["batch_size"]),
        )


# Fields a resumed run must share with the store, with the words used in the refusal.
CHECKED_FIELDS = {
    "slide_header_sha256": "slide header sha256",
    "slide_size_px": "slide size (rows, cols)",
    "mpp": "mpp",
    "scale": "scale",
    "arch": "model",
    "checkpoint_sha256": "checkpoint sha256",
    "hr_size_px": "hr_size_px",
    "margin_px": "context_margin_px",
    "batch_size": "batch size",
}


def first_difference(stored: StoreIdentity, run: StoreIdentity) -> tuple[str, Any, Any] | None:
    """The first of :data:`CHECKED_FIELDS` where a run differs from a store, as
    ``(words, stored value, run value)``; ``None`` when the run may continue the store."""
    for name, words in CHECKED_FIELDS.items():
        old, new = getattr(stored, name), getattr(run, name)
        if old != new:
            return words, old, new
    return None
