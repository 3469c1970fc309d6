"""Low-magnification mosaics from any field source, and the colour shifts they are tested under.

A mosaic emulates a low-power scan of one smear: every field of a split is shrunk to the target
pixel size with the MATLAB-style antialiased bicubic (:func:`leukoscreen.model.imresize.imresize`),
field by field, and laid row-major on a grid with ``gap_um`` of plasma between fields (wider than
the detector's ``merge_distance_um``, so nuclei of neighbouring fields are never merged). Each
field's grid cell and half the gap around it are filled with that field's own plasma colour (the
per-channel median of its brightest quarter of pixels), and the fields are laid out in order of
their plasma hue, so a source with fields of many colours drifts in colour across the mosaic
instead of jumping at every field. Shrinking field by field (rather than the whole mosaic at once)
allows any factor, integer or not, with bounded memory; at a field's edge it differs from the
whole-mosaic shrink only within the kernel's reach.

Colour shifts (:func:`shift_colours`) emulate another lab's stain, lamp and camera on the same
mosaic: a background tint (per-channel transmission), stain strength (optical density scaled),
and brightness (exposure).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from leukoscreen.model.fields import Field
from leukoscreen.model.imresize import imresize


@dataclass(frozen=True)
class Mosaic:
    """A built mosaic.

    Attributes:
        rgb: (H, W, 3) uint8 at ``mpp``.
        mpp: microns per pixel.
        boxes: (M, 4) float64 leukocyte boxes ``(row0, col0, row1, col1)``, mosaic px.
        field_ids: (M,) the field of each box.
        origins: (F, 2) int64 top-left (row, col) of each field, mosaic px, in the order of the
            fields given (the layout orders them by plasma colour).
    """

    rgb: np.ndarray
    mpp: float
    boxes: np.ndarray
    field_ids: list[str]
    origins: np.ndarray


def plasma_colour(fields: Sequence[np.ndarray]) -> np.ndarray:
    """Per-channel median of the brightest quarter of every field's pixels: (3,) uint8."""
    samples = []
    for rgb in fields:
        pixels = rgb.reshape(-1, 3)
        brightness = pixels.astype(np.int32).sum(axis=1)
        samples.append(pixels[brightness >= np.percentile(brightness, 75)])
    return np.median(np.concatenate(samples), axis=0).round().astype(np.uint8)


def shrink_field(rgb: np.ndarray, factor: float) -> np.ndarray:
    """MATLAB-style antialiased bicubic shrink of one field by ``factor``, rounded to uint8."""
    if factor == 1:
        return rgb.copy()
    small = imresize(rgb.astype(np.float64), 1.0 / factor)
    return np.clip(np.round(small), 0, 255).astype(np.uint8)


def build_mosaic(
    fields: Sequence[Field],
    *,
    source_mpp: float,
    mpp: float,
    columns: int = 0,
    gap_um: float = 4.0,
) -> Mosaic:
    """Shrink the fields of one source to ``mpp`` and lay them on a grid.

    Args:
        fields: the fields (one source, any sizes).
        source_mpp: microns per pixel of the fields (:func:`leukoscreen.model.fields.source_mpp`).
        mpp: microns per pixel of the mosaic (>= ``source_mpp``).
        columns: fields per row; ``0`` for a roughly square mosaic.
        gap_um: plasma between fields and around the edge, microns.

    Returns:
        The mosaic with its boxes in mosaic pixels.
    """
    if not fields:
        raise ValueError("build_mosaic needs at least one field")
    if mpp < source_mpp:
        raise ValueError(f"mpp must be >= source_mpp (a shrink), got {mpp} < {source_mpp}")
    factor = mpp / source_mpp
    images = [f.read_rgb() for f in fields]
    small = [shrink_field(rgb, factor) for rgb in images]
    fills = [plasma_colour([rgb]) for rgb in images]
    # Order by plasma colour so the colour drifts across the mosaic like a stain gradient on a
    # real slide instead of jumping at every field (DeepBioNet mixes blue to yellow fields).
    order = sorted(range(len(fields)), key=lambda i: _hue(fills[i]))
    cell_h = max(s.shape[0] for s in small)
    cell_w = max(s.shape[1] for s in small)
    gap = max(math.ceil(gap_um / mpp), 1)
    columns = columns or max(1, round(math.sqrt(len(small) * cell_h / cell_w)))
    rows = math.ceil(len(small) / columns)
    rgb = np.empty((rows * (cell_h + gap) + gap, columns * (cell_w + gap) + gap, 3), np.uint8)
    rgb[:] = plasma_colour(images)
    origins, boxes, ids = [], [], []
    for place, i in enumerate(order):
        f, s = fields[i], small[i]
        r, c = divmod(place, columns)
        row0, col0 = gap + r * (cell_h + gap), gap + c * (cell_w + gap)
        # The field's own plasma fills its grid cell and half the gap around it.
        half = gap // 2
        rgb[row0 - half : row0 + cell_h + half, col0 - half : col0 + cell_w + half] = fills[i]
        rgb[row0 : row0 + s.shape[0], col0 : col0 + s.shape[1]] = s
        origins.append((i, row0, col0))
        # Field px -> mosaic px: the shrunk field spans s.shape of the original's extent.
        ratio = np.array([s.shape[0] / images[i].shape[0], s.shape[1] / images[i].shape[1]] * 2)
        offset = np.array([row0, col0, row0, col0], np.float64)
        for box in f.boxes:
            boxes.append(box * ratio + offset)
            ids.append(f.field_id)
    return Mosaic(
        rgb,
        mpp,
        np.array(boxes, np.float64).reshape(-1, 4),
        ids,
        np.array([o[1:] for o in sorted(origins)], np.int64).reshape(-1, 2),
    )


def _hue(rgb: np.ndarray) -> float:
    """Hue angle of an RGB colour, radians (for ordering fields by plasma colour)."""
    r, g, b = (float(v) for v in rgb)
    return math.atan2(math.sqrt(3.0) * (g - b), 2.0 * r - g - b)


@dataclass(frozen=True)
class ColourShift:
    """One colour perturbation of a whole mosaic.

    Attributes:
        name: short label for tables.
        tint: (R, G, B) transmission of a coloured filter in the light path (1 = none).
        stain: factor on every pixel's optical density (stain strength; 1 = none).
        brightness: factor on the intensities (exposure; 1 = none), clipped to 255.
    """

    name: str
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    stain: float = 1.0
    brightness: float = 1.0


COLOUR_SHIFTS = (
    ColourShift("none"),
    ColourShift("tint yellow", tint=(1.0, 0.93, 0.72)),
    ColourShift("tint blue", tint=(0.75, 0.9, 1.0)),
    ColourShift("stain -30%", stain=0.7),
    ColourShift("stain +30%", stain=1.3),
    ColourShift("brightness -20%", brightness=0.8),
    ColourShift("brightness +20%", brightness=1.2),
)


def shift_colours(rgb: np.ndarray, shift: ColourShift) -> np.ndarray:
    """Apply ``shift`` to a (H, W, 3) uint8 image: stain in optical density, then tint, then gain.

    Stain strength scales the optical density ``-log(I / 255)`` (Beer-Lambert: more dye, more
    absorbance); the tint multiplies each channel (a filter's transmission); brightness scales the
    intensities. The result is rounded and clipped to uint8.
    """
    image = np.maximum(rgb.astype(np.float64), 1.0) / 255.0
    if shift.stain != 1.0:
        image = np.exp(np.log(image) * shift.stain)
    image = image * np.asarray(shift.tint, np.float64) * shift.brightness
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
