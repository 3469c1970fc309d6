"""Cell shapes from parsing maps: one cell's region, its outline as simple polygons, its footprint.

A parsing map (``cells/parsing``, HR pixels: 0 background, 1 cytoplasm, 2 nucleus) shows the cell
at its centre but often also parts of its neighbours and specks of noise. :func:`cell_region`
keeps the one cell: the 4-connected component of cytoplasm ∪ nucleus that holds the cell's
centre, or the nearest one, with its holes filled. From it :func:`outline_rings` traces closed
polygon rings (``skimage.measure.find_contours``, simplified by Douglas–Peucker and checked to
stay simple), and :func:`footprint` reduces it to the slide's pixel grid (a slide pixel belongs to
the cell when at least half of its ``scale x scale`` HR pixels do).

Everything here is a pure function over numpy arrays, in the SR image's own pixel coordinates;
:func:`leukoscreen.pipeline.crops.sr_to_slide` maps them onto the slide.
"""

from __future__ import annotations

from collections.abc import Iterator

import dask.array as da
import numpy as np
from scipy import ndimage as ndi
from skimage.measure import approximate_polygon, find_contours

from leukoscreen.pipeline.crops import CropGeometry, crop_origins

CYTOPLASM = 1
NUCLEUS = 2
_FOUR_CONNECTED = ndi.generate_binary_structure(2, 1)


def centre_in_sr(row: float, col: float, geometry: CropGeometry) -> tuple[float, float]:
    """The cell centre ``(row, col)`` (level-0 px) in its SR image's pixel coordinates: the
    inverse of :func:`~leukoscreen.pipeline.crops.sr_to_slide`."""
    row0, col0 = crop_origins(np.array([row]), np.array([col]), size_px=geometry.core_px)
    scale = geometry.scale
    return (row - row0[0] + 0.5) * scale - 0.5, (col - col0[0] + 0.5) * scale - 0.5


def inside_slide(
    row: float, col: float, *, geometry: CropGeometry, slide_size_px: tuple[int, int]
) -> np.ndarray:
    """(H, W) bool: which pixels of the cell's SR image lie on the slide (the rest is the white
    padding of border crops). HR pixel ``i`` lies in slide row ``core_row0 + i // scale``."""
    row0, col0 = crop_origins(np.array([row]), np.array([col]), size_px=geometry.core_px)
    index = np.arange(geometry.hr_size_px) // geometry.scale
    rows_ok = (row0[0] + index >= 0) & (row0[0] + index < slide_size_px[0])
    cols_ok = (col0[0] + index >= 0) & (col0[0] + index < slide_size_px[1])
    return rows_ok[:, None] & cols_ok[None, :]


def cell_region(parsing: np.ndarray, *, centre_rc: tuple[float, float]) -> np.ndarray:
    """The one cell of a parsing map.

    Args:
        parsing: (H, W) uint8, 0 background, 1 cytoplasm, 2 nucleus.
        centre_rc: the cell's centre in the map's pixel coordinates (:func:`centre_in_sr`).

    Returns:
        (H, W) uint8: 1 cytoplasm, 2 nucleus inside the 4-connected component of cytoplasm ∪
        nucleus that holds the centre (or, when the centre is background, the component with the
        pixel nearest to it), its holes filled as cytoplasm; 0 elsewhere. All 0 when the map
        labels no pixel.
    """
    if parsing.ndim != 2:
        raise ValueError(f"parsing must be a (H, W) map, got shape {parsing.shape}")
    labels, n = ndi.label(parsing > 0, structure=_FOUR_CONNECTED)
    region = np.zeros(parsing.shape, dtype=np.uint8)
    if n == 0:
        return region
    rows, cols = np.nonzero(labels)
    nearest = np.argmin((rows - centre_rc[0]) ** 2 + (cols - centre_rc[1]) ** 2)
    cell = ndi.binary_fill_holes(labels == labels[rows[nearest], cols[nearest]])
    region[cell] = CYTOPLASM
    region[cell & (parsing == NUCLEUS)] = NUCLEUS
    return region


def footprint(region: np.ndarray, scale: int) -> np.ndarray:
    """The region on the slide's pixel grid.

    Args:
        region: (H, W) uint8 from :func:`cell_region`; H and W multiples of ``scale``.
        scale: HR pixels per slide pixel.

    Returns:
        (H // scale, W // scale) uint8: a slide pixel is cell when at least half of its
        ``scale x scale`` HR pixels are, and then nucleus (2) when at least as many of them are
        nucleus as cytoplasm, else cytoplasm (1); 0 outside.
    """
    height, width = region.shape
    if height % scale or width % scale:
        raise ValueError(f"region shape {region.shape} is not a multiple of scale {scale}")
    blocks = region.reshape(height // scale, scale, width // scale, scale)
    cell = (blocks > 0).sum(axis=(1, 3))
    nucleus = (blocks == NUCLEUS).sum(axis=(1, 3))
    out = np.zeros(cell.shape, dtype=np.uint8)
    is_cell = 2 * cell >= scale * scale
    out[is_cell] = CYTOPLASM
    out[is_cell & (2 * nucleus >= cell)] = NUCLEUS
    return out


def outline_rings(
    mask: np.ndarray, *, tolerance_px: float, min_area_px: float = 0.0
) -> list[np.ndarray]:
    """Closed polygon rings around the 4-connected components of a mask, holes filled.

    The traced rings (marching squares at level 0.5 on the mask padded with background) are
    simple and do not touch each other; each is then simplified (Douglas–Peucker) with the
    largest of ``tolerance_px``, ``/2``, ``/4`` and ``0`` that keeps every ring at least 3
    distinct vertices and all of them simple and apart (:func:`rings_are_simple`).

    Args:
        mask: (H, W) bool.
        tolerance_px: largest distance a simplified edge may lie from the traced one, pixels.
        min_area_px: components of fewer pixels are dropped (specks of the parsing map).

    Returns:
        Rings of (K, 2) float64 (row, col) vertices in the mask's pixel coordinates (pixel
        centres at integers), first vertex repeated last; largest component first. Empty when
        the mask is empty.
    """
    filled = ndi.binary_fill_holes(mask)
    labels, n = ndi.label(filled, structure=_FOUR_CONNECTED)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = [int(i) + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_area_px]
    traced = []
    for label_value in order:
        # One contour per component: a filled 4-connected blob has a single boundary.
        padded = np.pad(labels == label_value, 1)
        (contour,) = find_contours(padded.astype(np.uint8), 0.5)
        traced.append(contour - 1.0)
    for tolerance in (tolerance_px, tolerance_px / 2, tolerance_px / 4):
        simplified = [approximate_polygon(ring, tolerance) for ring in traced]
        if all(len(ring) >= 4 for ring in simplified) and rings_are_simple(simplified):
            return simplified
    return traced


def rings_are_simple(rings: list[np.ndarray]) -> bool:
    """Whether closed rings form a valid (multi)polygon's exteriors: each ring has at least 3
    distinct vertices, no repeated consecutive vertex and non-zero area, and no two edges meet
    except consecutive edges of one ring at their shared vertex (no crossing, touching or
    turning straight back, within a ring or between rings).

    Args:
        rings: (K, 2) float vertex arrays, each with its first vertex repeated last.
    """
    starts, ends, ring_ids, positions, counts = [], [], [], [], []
    for ring_id, ring in enumerate(rings):
        ring = np.asarray(ring, dtype=np.float64)
        if len(ring) < 4 or not np.array_equal(ring[0], ring[-1]) or _area(ring) == 0.0:
            return False
        edges = np.diff(ring, axis=0)  # (n, 2)
        following = np.roll(edges, -1, axis=0)
        cross = edges[:, 0] * following[:, 1] - edges[:, 1] * following[:, 0]
        backwards = (cross == 0) & (np.einsum("ij,ij->i", edges, following) < 0)
        if np.any(np.all(edges == 0, axis=1)) or np.any(backwards):
            return False
        n = len(edges)
        starts.append(ring[:-1])
        ends.append(ring[1:])
        ring_ids.append(np.full(n, ring_id))
        positions.append(np.arange(n))
        counts.append(np.full(n, n))
    if not starts:
        return True
    ring_of, position, count = (np.concatenate(a) for a in (ring_ids, positions, counts))
    step = (position[None, :] - position[:, None]) % count[:, None]
    same_ring = ring_of[:, None] == ring_of[None, :]
    neighbours = same_ring & ((step == 0) | (step == 1) | (step == count[:, None] - 1))
    meets = _segments_meet(np.concatenate(starts), np.concatenate(ends))
    return not np.any(meets & ~neighbours)


def _area(ring: np.ndarray) -> float:
    """Signed shoelace area of a closed ring (first vertex repeated last)."""
    y, x = ring[:, 0], ring[:, 1]
    return float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])) / 2.0


def _segments_meet(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(S, S) bool: whether segments ``p[i]-q[i]`` and ``p[j]-q[j]`` share any point (touching
    and collinear overlap included)."""

    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        value = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (
            c[..., 0] - a[..., 0]
        )
        return np.sign(value)

    def on_segment(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        """c within the bounding box of a-b (used where a, b, c are collinear)."""
        low, high = np.minimum(a, b), np.maximum(a, b)
        return np.all((c >= low) & (c <= high), axis=-1)

    a, b = p[:, None, :], q[:, None, :]  # segment i
    c, d = p[None, :, :], q[None, :, :]  # segment j
    o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
    proper = (o1 * o2 < 0) & (o3 * o4 < 0)
    touching = (
        ((o1 == 0) & on_segment(a, b, c))
        | ((o2 == 0) & on_segment(a, b, d))
        | ((o3 == 0) & on_segment(c, d, a))
        | ((o4 == 0) & on_segment(c, d, b))
    )
    return np.asarray(proper | touching)


def iter_regions(
    parsing: da.Array | None,
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    geometry: CropGeometry,
    slide_size_px: tuple[int, int],
) -> Iterator[np.ndarray | None]:
    """Each cell's :func:`cell_region`, its pixels off the slide cleared, in cell-id order.

    Args:
        parsing: (N, H, W) uint8 parsing maps (``StoredCells.parsing``), read one chunk (one SR
            batch) at a time; ``None`` for a network without parsing map.
        rows: (N,) cell-centre rows, level-0 px.
        cols: (N,) cell-centre columns, level-0 px.
        geometry: the store's crop geometry.
        slide_size_px: level-0 (height, width).

    Yields:
        (H, W) uint8 regions (0 background, 1 cytoplasm, 2 nucleus), or ``None`` per cell when
        ``parsing`` is ``None``.
    """
    if parsing is None:
        yield from (None for _ in range(len(rows)))
        return
    start = 0
    for size in parsing.chunks[0]:
        maps = np.asarray(parsing[start : start + size].compute(scheduler="synchronous"))
        for offset, parsing_map in enumerate(maps):
            row, col = float(rows[start + offset]), float(cols[start + offset])
            region = cell_region(parsing_map, centre_rc=centre_in_sr(row, col, geometry))
            region[~inside_slide(row, col, geometry=geometry, slide_size_px=slide_size_px)] = 0
            yield region
        start += size
