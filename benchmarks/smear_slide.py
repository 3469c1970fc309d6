"""The realistic smear of ``smear_benchmark.py``: real BCCD fields tiled over a whole slide.

``SmearPlan.make`` cuts the bundled example slide (``pipeline/example/bccd_x8.svs`` and its
``bccd_x8.json``: 72 BCCD test fields of 60 x 80 px at 0.52 um/px, with their leukocyte boxes)
into the fields that have a leukocyte box (a field without one may hide an unlabelled leukocyte)
and makes, for each, an *empty* twin: every leukocyte box (grown by a margin) is painted over,
pixel by pixel, from the next fields that have no leukocyte near that place, so the twin holds
only red cells, platelets and plasma. A grid of field slots covers the
slide; ``cells`` slots, spread evenly at random, get a full field (cycling through the 72), the
others an empty twin; the right ``GLASS_FRACTION`` of the slide is bare glass. ``build_smear``
writes it tile by tile, never holding a level.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from pipeline_benchmark import block_mean

from leukoscreen.pipeline.slide import Slide

TILE_PX = 512
GLASS_FRACTION = 0.08
GLASS_RGB = (246, 246, 244)
BOX_MARGIN_PX = 3  # painted over around each leukocyte box
DONOR_MARGIN_PX = 10  # a donor's own leukocytes stay this far from the patch it gives


def _box_mask(boxes: list[tuple[float, ...]], shape: tuple[int, int], margin: int) -> np.ndarray:
    """(h, w) bool: the boxes ``(row0, col0, row1, col1)`` grown by ``margin`` px."""
    mask = np.zeros(shape, bool)
    for r0, c0, r1, c1 in boxes:
        rows = slice(max(0, int(r0) - margin), int(np.ceil(r1)) + margin)
        mask[rows, max(0, int(c0) - margin) : int(np.ceil(c1)) + margin] = True
    return mask


@dataclass
class SmearPlan:
    """What goes where on the smear.

    Attributes:
        height, width: level-0 px.
        mpp: um per level-0 px (the example's).
        fields: (2 * F, fh, fw, 3) uint8, the F full fields then their F empty twins.
        slots: (rows, cols) int32 index into ``fields`` of each grid slot.
        truth: (M, 4) float64 leukocyte boxes ``[row0, col0, row1, col1)`` in level-0 px.
        glass_col: first column of bare glass.
    """

    height: int
    width: int
    mpp: float
    fields: np.ndarray
    slots: np.ndarray
    truth: np.ndarray
    glass_col: int

    def fields_at(self, ds: int) -> np.ndarray:
        """The fields at downsample ``ds`` (block means), computed once."""
        cache = self.__dict__.setdefault("_levels", {1: self.fields})
        if ds not in cache:
            cache[ds] = block_mean(self.fields, ds)
        return cache[ds]

    @classmethod
    def make(cls, example: Path, height: int, width: int, cells: int, seed: int = 0) -> SmearPlan:
        """Plan a ``height`` x ``width`` smear with ``cells`` leukocyte fields."""
        meta = json.loads(example.with_suffix(".json").read_text())
        with Slide.open(example) as slide:
            base = slide.read_region(0, 0, *slide.dimensions)
            mpp = float(slide.mpp)
        fh, fw = 480 // meta["scale"], 640 // meta["scale"]  # a BCCD field, 480 x 640 px
        full, boxes = [], []
        for field in meta["fields"]:
            r0, c0 = int(field["row0"]), int(field["col0"])
            own = [(b["row0"] - r0, b["col0"] - c0, b["row1"] - r0, b["col1"] - c0)
                   for b in meta["wbc_boxes"] if b["field"] == field["id"]]  # fmt: skip
            if own:  # a field without a box may hide an unlabelled leukocyte (BCCD's defects)
                full.append(base[r0 : r0 + fh, c0 : c0 + fw])
                boxes.append(own)
        masks = np.stack([_box_mask(own, (fh, fw), BOX_MARGIN_PX) for own in boxes])
        wide = np.stack([_box_mask(own, (fh, fw), DONOR_MARGIN_PX) for own in boxes])
        empty = []
        for k, field in enumerate(full):
            twin, todo = field.copy(), masks[k].copy()
            for d in range(1, len(full)):  # each pixel from the next field clean there
                take = todo & ~wide[(k + d) % len(full)]
                twin[take] = full[(k + d) % len(full)][take]
                todo &= ~take
            empty.append(twin)
        rows, cols = -(-height // fh), -(-width // fw)
        glass_col = int(width * (1 - GLASS_FRACTION))
        smear_cols = glass_col // fw - 1  # whole slots left of the glass
        rng = np.random.default_rng(seed)
        n_full = len(full)
        slots = (n_full + rng.integers(0, n_full, (rows, cols))).astype(np.int32)
        chosen = rng.choice(rows * smear_cols, size=min(cells, rows * smear_cols), replace=False)
        truth = []
        for n, flat in enumerate(np.sort(chosen)):
            r, c = divmod(int(flat), smear_cols)
            slots[r, c] = n % n_full
            truth += [(r * fh + b[0], c * fw + b[1], r * fh + b[2], c * fw + b[3])
                      for b in boxes[n % n_full]]  # fmt: skip
        fields = np.stack(full + empty)
        return cls(height, width, mpp, fields, slots, np.array(truth, np.float64), glass_col)

    def render(self, row0: int, col0: int, height: int, width: int, ds: int) -> np.ndarray:
        """(height, width, 3) uint8 of the level of downsample ``ds`` (1 or 4), its own px."""
        fields = self.fields_at(ds)
        fh, fw = fields.shape[1:3]
        rr = np.minimum(np.arange(row0, row0 + height), self.slots.shape[0] * fh - 1)
        cc = np.minimum(np.arange(col0, col0 + width), self.slots.shape[1] * fw - 1)
        index = self.slots[(rr // fh)[:, None], (cc // fw)[None, :]]
        out = fields[index, (rr % fh)[:, None], (cc % fw)[None, :]]
        glass = self.glass_col // ds - col0
        if glass < width:
            out[:, max(glass, 0) :] = GLASS_RGB
        return out


def build_smear(path: Path, plan: SmearPlan) -> str:
    """Write the smear as a tiled pyramidal Aperio-style TIFF (levels /1, /4, /16).

    Returns:
        the compression used: ``jpeg`` (quality 90) with imagecodecs, else ``zlib``.
    """
    try:
        import imagecodecs  # noqa: F401

        compression, args = "jpeg", {"level": 90}
    except ImportError:  # tifffile's own zlib; OpenSlide reads both
        compression, args = "zlib", {"level": 1}
    height, width = plan.height, plan.width
    size = f"{width}x{height}"
    head = f"Aperio Image Library v10.0.0\n{size} [0,0 {size}] ({TILE_PX}x{TILE_PX}) "
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for ds in (1, 4, 16):
            h, w = -(-height // ds), -(-width // ds)

            def tiles(ds: int = ds, h: int = h, w: int = w) -> Iterator[np.ndarray]:
                for r in range(0, h, TILE_PX):
                    for c in range(0, w, TILE_PX):
                        if ds == 16:  # from level /4, block means of 4
                            tile = plan.render(r * 4, c * 4, TILE_PX * 4, TILE_PX * 4, 4)
                            yield block_mean(tile, 4)
                        else:
                            yield plan.render(r, c, TILE_PX, TILE_PX, ds)

            text = (f"{compression.upper()}|AppMag = 20|MPP = {plan.mpp}" if ds == 1
                    else f"-> {w}x{h} {compression.upper()}|")  # fmt: skip
            tif.write(tiles(), shape=(h, w, 3), dtype=np.uint8, tile=(TILE_PX, TILE_PX),
                      compression=compression, compressionargs=args, photometric="rgb",
                      description=head + text, metadata=None, maxworkers=os.cpu_count(),
                      subfiletype=0 if ds == 1 else 1)  # fmt: skip
    return compression


def match_cells(found: np.ndarray, truth: np.ndarray, tolerance_px: float = 4.0) -> dict:
    """Recall (boxes with a found centre inside, grown by ``tolerance_px``) and precision
    (found centres inside some grown box)."""
    if len(truth) == 0 or len(found) == 0:
        return {"recall": 0.0, "precision": 0.0}
    inside = (
        (found[:, None, 0] >= truth[None, :, 0] - tolerance_px)
        & (found[:, None, 0] < truth[None, :, 2] + tolerance_px)
        & (found[:, None, 1] >= truth[None, :, 1] - tolerance_px)
        & (found[:, None, 1] < truth[None, :, 3] + tolerance_px)
    )
    return {"recall": round(float(inside.any(axis=0).mean()), 4),
            "precision": round(float(inside.any(axis=1).mean()), 4)}  # fmt: skip
