"""A slide and its cells as OME-Zarr (NGFF 0.5, Zarr v3): the image pyramid and label images.

Layout (``docs/exports.md``)::

    <stem>.ome.zarr/            image group: ome.multiscales (axes c, y, x; micrometres), ome.omero
      0/ 1/ ... n/              (3, h_k, w_k) uint8 RGB, level k = 2**k box mean of level 0
      labels/                   ome.labels = ["cells", "parsing"]
        cells/  0/ ... n/       (1, h_k, w_k) uint32: cell_id + 1 over each cell's region, 0 outside
        parsing/ 0/ ... n/      (1, h_k, w_k) uint8: 1 cytoplasm, 2 nucleus (with parsing maps only)

Level 0 is read from the slide one ``TILE_PX`` window at a time and each level k + 1 is made from
level k one window at a time, so memory holds one window of level 0 (3 MiB of RGB; the slide
reader's RGBA-to-RGB conversion briefly needs some 20 times that) and each cell's footprint
(``core_px ** 2`` bytes, 784 at x8), whatever the slide size; windows are multiples of
``CHUNK_PX`` so that every write fills whole chunks. Labels
are drawn window by window from each cell's footprint (``cell_shapes.footprint``: the slide
pixels of which at least half the HR pixels are the cell), or its bbox without parsing maps;
where footprints overlap the lower cell id keeps the pixel. Label levels take the top-left pixel
of each 2 x 2 block (a label must never be averaged).

The metadata is ome-zarr-py's (``write_multiscales_metadata``, ``write_label_metadata`` with
``FormatV05``); the arrays are written here with zarr-python, with ``dimension_names``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from ome_zarr.format import FormatV05
from ome_zarr.writer import add_metadata, write_label_metadata, write_multiscales_metadata

from leukoscreen.pipeline.cell_shapes import footprint, iter_regions
from leukoscreen.pipeline.crops import CropGeometry, crop_origins
from leukoscreen.pipeline.slide import Slide
from leukoscreen.pipeline.store import StoredCells
from leukoscreen.pipeline.store_layout import StoreIdentity

TILE_PX = 1024  # level-0 window per read and write: 1024 * 1024 * 3 bytes = 3 MiB of RGB
CHUNK_PX = 512
TOP_LEVEL_MAX_PX = 256  # halve until the whole slide fits a 256 px thumbnail
AXES = [
    {"name": "c", "type": "channel"},
    {"name": "y", "type": "space", "unit": "micrometer"},
    {"name": "x", "type": "space", "unit": "micrometer"},
]
OMERO = {
    "rdefs": {"model": "color"},
    "channels": [
        {"label": name, "color": color, "active": True,
         "window": {"min": 0, "max": 255, "start": 0, "end": 255}}
        for name, color in (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))
    ],
}  # fmt: skip
PARSING_COLOURS = [
    {"label-value": 1, "rgba": [212, 190, 222, 255]},
    {"label-value": 2, "rgba": [92, 44, 134, 255]},
]
PARSING_PROPERTIES = [
    {"label-value": 1, "class": "cytoplasm"},
    {"label-value": 2, "class": "nucleus"},
]


@dataclass(frozen=True)
class Footprints:
    """Every cell's footprint on the slide's pixel grid, for drawing label windows.

    Attributes:
        row0: (N,) int64 first slide row of each footprint (may be negative at the border).
        col0: (N,) int64 first slide column.
        maps: N arrays (h_i, w_i) uint8: 0 outside, 1 cytoplasm, 2 nucleus (all 1 for a bbox).
        sizes: (N, 2) int64 ``(h_i, w_i)`` of the maps.
    """

    row0: np.ndarray
    col0: np.ndarray
    maps: list[np.ndarray]
    sizes: np.ndarray

    @classmethod
    def of(cls, row0: np.ndarray, col0: np.ndarray, maps: list[np.ndarray]) -> Footprints:
        """Footprints with their sizes, for maps placed at ``(row0[i], col0[i])``."""
        sizes = np.array([m.shape for m in maps], dtype=np.int64).reshape(-1, 2)
        return cls(np.asarray(row0, np.int64), np.asarray(col0, np.int64), maps, sizes)


def level_shapes(height: int, width: int) -> list[tuple[int, int]]:
    """(height, width) of each pyramid level: level 0, then halved (rounded up) until the
    larger side is at most ``TOP_LEVEL_MAX_PX``."""
    shapes = [(height, width)]
    while max(shapes[-1]) > TOP_LEVEL_MAX_PX:
        h, w = shapes[-1]
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


def write_ome_zarr(cells: StoredCells, slide: Slide, path: Path) -> int:
    """Write the slide as a multiscale image with the cells as label images.

    Args:
        cells: the store (:func:`~leukoscreen.pipeline.store.open_cells`).
        slide: the store's slide, opened (its level 0 is read window by window).
        path: the ``.ome.zarr`` directory to create (the caller renames it into place).

    Returns:
        The number of pyramid levels written.
    """
    ident = StoreIdentity.from_attrs(cells.attrs)
    shapes = level_shapes(*ident.slide_size_px)
    fmt = FormatV05()
    root = zarr.open_group(path, mode="w-", zarr_format=3)
    image = _create_levels(root, shapes, channels=3, dtype="uint8")
    for r0, c0, window in _level0_windows(shapes[0]):
        pixels = slide.read_region(r0, c0, *window)  # (h, w, 3)
        image[0][:, r0 : r0 + window[0], c0 : c0 + window[1]] = pixels.transpose(2, 0, 1)
    _fill_pyramid(image, _mean_2x2)
    datasets = _datasets(len(shapes), ident.mpp)
    name = Path(ident.slide_path).name
    write_multiscales_metadata(
        root, datasets, fmt=fmt, axes=AXES, name=name, metadata={"omero": OMERO}
    )

    labels = root.create_group("labels")
    prints = collect_footprints(cells, ident)
    label_sets = {"cells": "uint32"} | ({"parsing": "uint8"} if cells.parsing is not None else {})
    for label_name, dtype in label_sets.items():
        levels = _create_levels(labels.create_group(label_name), shapes, channels=1, dtype=dtype)
        for r0, c0, window in _level0_windows(shapes[0]):
            drawn = draw_labels(prints, r0, c0, window, by_class=label_name == "parsing")
            levels[0][0, r0 : r0 + window[0], c0 : c0 + window[1]] = drawn
        _fill_pyramid(levels, _top_left_2x2)
        group = labels[label_name]
        write_multiscales_metadata(group, datasets, fmt=fmt, axes=AXES, name=label_name)
        extra = (
            {"colors": PARSING_COLOURS, "properties": PARSING_PROPERTIES}
            if label_name == "parsing"
            else {}
        )
        write_label_metadata(labels, label_name, fmt=fmt, source={"image": "../../"}, **extra)
    # NGFF 0.5 wants "version" in the labels group too; ome-zarr-py 0.18 writes only the list.
    add_metadata(labels, {"version": fmt.version}, fmt=fmt)
    return len(shapes)


def collect_footprints(cells: StoredCells, ident: StoreIdentity) -> Footprints:
    """Each cell's footprint: its parsing-map region reduced to slide pixels and placed at its
    LR core, or its bbox (all cytoplasm) when the store has no parsing maps."""
    geometry = CropGeometry(ident.scale, ident.hr_size_px, ident.margin_px)
    rows, cols, bbox = cells.table["row"], cells.table["col"], cells.table["bbox"]
    regions = iter_regions(
        cells.parsing, rows, cols, geometry=geometry, slide_size_px=ident.slide_size_px
    )
    maps = []
    for (top, left, bottom, right), region in zip(bbox.tolist(), regions, strict=True):
        if region is None:
            maps.append(np.ones((max(bottom - top, 1), max(right - left, 1)), dtype=np.uint8))
        else:
            maps.append(footprint(region, geometry.scale))
    if cells.parsing is None:
        return Footprints.of(bbox[:, 0], bbox[:, 1], maps)
    core_row0, core_col0 = crop_origins(rows, cols, size_px=geometry.core_px)
    return Footprints.of(core_row0, core_col0, maps)


def draw_labels(
    prints: Footprints, row0: int, col0: int, window: tuple[int, int], *, by_class: bool
) -> np.ndarray:
    """One window of a label image.

    Args:
        prints: every cell's footprint.
        row0: first slide row of the window.
        col0: first slide column of the window.
        window: (height, width) of the window.
        by_class: draw the parsing class (1 cytoplasm, 2 nucleus) instead of ``cell_id + 1``.

    Returns:
        (height, width) uint32 (cell ids) or uint8 (classes); where footprints overlap, the
        lower cell id wins.
    """
    height, width = window
    out = np.zeros(window, dtype=np.uint8 if by_class else np.uint32)
    hits = np.flatnonzero(
        (prints.row0 < row0 + height)
        & (prints.row0 + prints.sizes[:, 0] > row0)
        & (prints.col0 < col0 + width)
        & (prints.col0 + prints.sizes[:, 1] > col0)
    )
    for i in hits[::-1]:  # highest id first, so that lower ids overwrite it
        r, c, cell_map = int(prints.row0[i]) - row0, int(prints.col0[i]) - col0, prints.maps[i]
        top, left = max(r, 0), max(c, 0)
        bottom, right = min(r + cell_map.shape[0], height), min(c + cell_map.shape[1], width)
        part = cell_map[top - r : bottom - r, left - c : right - c]
        target = out[top:bottom, left:right]
        target[part > 0] = part[part > 0] if by_class else i + 1
    return out


def _create_levels(
    group: zarr.Group, shapes: list[tuple[int, int]], *, channels: int, dtype: str
) -> list[zarr.Array]:
    return [
        group.create_array(
            str(k), shape=(channels, h, w), chunks=(channels, CHUNK_PX, CHUNK_PX), dtype=dtype,
            fill_value=0, dimension_names=["c", "y", "x"],
        )
        for k, (h, w) in enumerate(shapes)
    ]  # fmt: skip


def _datasets(n_levels: int, mpp: float) -> list[dict[str, object]]:
    return [
        {
            "path": str(k),
            "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, mpp * 2**k, mpp * 2**k]}
            ],
        }
        for k in range(n_levels)
    ]


def _level0_windows(shape: tuple[int, int]) -> Iterator[tuple[int, int, tuple[int, int]]]:
    """``(row0, col0, (height, width))`` of the level-0 windows, row by row."""
    height, width = shape
    for r0 in range(0, height, TILE_PX):
        for c0 in range(0, width, TILE_PX):
            yield r0, c0, (min(TILE_PX, height - r0), min(TILE_PX, width - c0))


def _fill_pyramid(levels: list[zarr.Array], reduce: Callable[[np.ndarray], np.ndarray]) -> None:
    """Make each level k + 1 from level k, one output window of ``TILE_PX // 2`` at a time (its
    source is one ``TILE_PX`` window of level k)."""
    step = TILE_PX // 2
    for source, target in itertools.pairwise(levels):
        _, height, width = target.shape
        for r0 in range(0, height, step):
            for c0 in range(0, width, step):
                block = source[:, 2 * r0 : 2 * (r0 + step), 2 * c0 : 2 * (c0 + step)]
                target[:, r0 : r0 + step, c0 : c0 + step] = reduce(np.asarray(block))


def _mean_2x2(block: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (C, ceil(h / 2), ceil(w / 2)): mean of each 2 x 2 block, rounded half up;
    an odd last row or column is paired with itself."""
    channels, height, width = block.shape
    padded = np.pad(block, ((0, 0), (0, height % 2), (0, width % 2)), mode="edge")
    quads = padded.reshape(channels, padded.shape[1] // 2, 2, padded.shape[2] // 2, 2)
    total = quads.sum(axis=(2, 4), dtype=np.uint16)
    return ((total + 2) // 4).astype(block.dtype)


def _top_left_2x2(block: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (C, ceil(h / 2), ceil(w / 2)): the top-left value of each 2 x 2 block."""
    return block[:, ::2, ::2]
