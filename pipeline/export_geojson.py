"""A store's cells as QuPath GeoJSON: one Feature per cell, outlines in level-0 slide pixels.

The format is the one QuPath itself reads and writes (``qupath.lib.io.PathObjectTypeAdapters``
and ``GsonTools.PathClassTypeAdapter`` of QuPath 0.4+, sources cited in ``docs/exports.md``):

* a ``FeatureCollection`` of ``Feature`` objects; ``id`` a UUID (QuPath keeps it as the object's
  id), here derived from the slide's header sha256 and the cell id, so re-exporting gives the
  same ids;
* ``geometry``: the cell outline as a ``Polygon`` (a ``MultiPolygon`` only when the slide border
  cuts a cell in two), coordinates ``[x, y]`` in level-0 pixels with QuPath's origin, the top-left
  corner of the top-left pixel: a table centre ``(row, col)`` (pixel centres at integers) is at
  ``x = col + 0.5, y = row + 0.5``;
* ``nucleusGeometry``, beside ``geometry`` (not inside ``properties``), with
  ``properties.objectType = "cell"``: QuPath then makes a cell object with a nucleus ROI. A store
  without parsing maps gives ``"detection"`` objects with the bbox rectangle;
* ``properties.classification = {"name": "Leukocyte", "color": [r, g, b]}`` (QuPath reads a
  class from ``name`` with ``color``) and ``properties.measurements``, a flat object of numbers
  (QuPath 0.4+; NaN is left out, JSON has none).

Outlines come from :mod:`leukoscreen.pipeline.cell_shapes` (the cell's component of the parsing
map, traced and simplified in HR pixels) mapped by :func:`~leukoscreen.pipeline.crops.sr_to_slide`.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from leukoscreen.pipeline.cell_shapes import NUCLEUS, iter_regions, outline_rings
from leukoscreen.pipeline.crops import CropGeometry, sr_to_slide
from leukoscreen.pipeline.store import StoredCells
from leukoscreen.pipeline.store_layout import CONFIDENCE, StoreIdentity

LEUKOCYTE_CLASS = {"name": "Leukocyte", "color": [142, 68, 173]}
SIMPLIFY_TOLERANCE_PX = 0.5
"""Largest distance of a simplified outline from the traced one, level-0 pixels."""
TABLE_MEASUREMENTS = ("cell_id", "row_um", "col_um", "area_um2", "score", CONFIDENCE)
"""Table columns copied into each feature's measurements (those the store has)."""


def write_geojson(cells: StoredCells, path: Path) -> int:
    """Write the cells of an opened store as a QuPath GeoJSON FeatureCollection.

    Features are written one at a time; the parsing maps are read one SR batch at a time.

    Args:
        cells: the store (:func:`~leukoscreen.pipeline.store.open_cells`).
        path: the ``.geojson`` file to write (the caller renames it into place).

    Returns:
        The number of features written (one per cell).
    """
    with open(path, "w", encoding="utf-8") as out:
        out.write('{"type": "FeatureCollection", "features": [\n')
        n = 0
        for feature in iter_features(cells):
            out.write(",\n" if n else "")
            out.write(json.dumps(feature, separators=(",", ":")))
            n += 1
        out.write("\n]}\n")
    return n


def iter_features(cells: StoredCells) -> Iterator[dict[str, Any]]:
    """One GeoJSON Feature (a plain dict) per cell, in cell-id order."""
    ident = StoreIdentity.from_attrs(cells.attrs)
    geometry = CropGeometry(ident.scale, ident.hr_size_px, ident.margin_px)
    table = cells.table
    regions = iter_regions(
        cells.parsing,
        table["row"],
        table["col"],
        geometry=geometry,
        slide_size_px=ident.slide_size_px,
    )
    for i, region in enumerate(regions):
        columns = {name: table[name][i] for name in table}
        yield cell_feature(columns, region, geometry=geometry, identity=ident)


def cell_feature(
    columns: Mapping[str, Any],
    region: np.ndarray | None,
    *,
    geometry: CropGeometry,
    identity: StoreIdentity,
) -> dict[str, Any]:
    """One cell's Feature.

    Args:
        columns: the cell's row of the table (``cell_id``, ``row``, ``col``, ``bbox``, ...).
        region: the cell's (H, W) region from ``cell_shapes.iter_regions`` (0 background,
            1 cytoplasm, 2 nucleus), or ``None`` without parsing map: the bbox is drawn.
        geometry: the store's crop geometry.
        identity: the store's identity (slide size, mpp, header sha256).
    """
    row, col = float(columns["row"]), float(columns["col"])
    hr_px_um2 = (identity.mpp / geometry.scale) ** 2
    measurements = {name: columns[name] for name in TABLE_MEASUREMENTS if name in columns}
    cell_shape = nucleus_shape = None
    if region is not None:
        measurements["cell_area_um2"] = np.count_nonzero(region) * hr_px_um2
        measurements["nucleus_area_um2"] = np.count_nonzero(region == NUCLEUS) * hr_px_um2
        tolerance = SIMPLIFY_TOLERANCE_PX * geometry.scale
        cell_rings = outline_rings(region > 0, tolerance_px=tolerance)
        nucleus_rings = outline_rings(
            region == NUCLEUS, tolerance_px=tolerance, min_area_px=geometry.scale**2
        )
        cell_shape = _shape(cell_rings, row=row, col=col, geometry=geometry)
        nucleus_shape = _shape(nucleus_rings, row=row, col=col, geometry=geometry)
    feature: dict[str, Any] = {
        "type": "Feature",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"leukoscreen:{identity.slide_header_sha256}:"
                                                 f"{int(columns['cell_id'])}")),
        "geometry": cell_shape or bbox_polygon(columns["bbox"], identity.slide_size_px),
    }  # fmt: skip
    if nucleus_shape is not None:
        feature["nucleusGeometry"] = nucleus_shape
    feature["properties"] = {
        "objectType": "detection" if region is None else "cell",
        "name": f"cell {int(columns['cell_id'])}",
        "classification": LEUKOCYTE_CLASS,
        "measurements": {
            name: float(value) for name, value in measurements.items() if math.isfinite(value)
        },
    }
    return feature


def _shape(
    rings_sr: list[np.ndarray], *, row: float, col: float, geometry: CropGeometry
) -> dict[str, Any] | None:
    """GeoJSON Polygon / MultiPolygon of rings in SR pixels, in QuPath's level-0 coordinates;
    ``None`` for no ring."""
    if not rings_sr:
        return None
    polygons = []
    for ring in rings_sr:
        slide_rc = sr_to_slide(ring, row=row, col=col, geometry=geometry) + 0.5  # pixel edges
        polygons.append([_counter_clockwise(slide_rc[:, ::-1]).tolist()])  # (x, y) = (col, row)
    if len(polygons) == 1:
        return {"type": "Polygon", "coordinates": polygons[0]}
    return {"type": "MultiPolygon", "coordinates": polygons}


def bbox_polygon(bbox: np.ndarray, slide_size_px: tuple[int, int]) -> dict[str, Any]:
    """The rectangle of a table bbox ``(row0, col0, row1, col1)`` (level-0 px, end exclusive),
    clipped to the slide and at least one pixel wide, as a GeoJSON Polygon in QuPath's
    coordinates (pixel ``i`` spans ``[i, i + 1)``)."""
    height, width = slide_size_px
    row0, col0, row1, col1 = (int(v) for v in bbox)
    row0, col0 = min(max(row0, 0), height - 1), min(max(col0, 0), width - 1)
    row1, col1 = max(min(row1, height), row0 + 1), max(min(col1, width), col0 + 1)
    ring = np.array([[col0, row0], [col1, row0], [col1, row1], [col0, row1], [col0, row0]], float)
    return {"type": "Polygon", "coordinates": [_counter_clockwise(ring).tolist()]}


def _counter_clockwise(ring_xy: np.ndarray) -> np.ndarray:
    """The ring with positive shoelace area in (x, y) numbers, the exterior winding of RFC 7946
    §3.1.6 (on screen, with y pointing down, it turns clockwise)."""
    x, y = ring_xy[:, 0], ring_xy[:, 1]
    area2 = float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
    return ring_xy if area2 > 0 else ring_xy[::-1]
