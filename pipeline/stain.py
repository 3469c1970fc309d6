"""The slide's own stain and background, estimated from its pixels, and the nucleus contrast.

Every smear has the same ingredients — bright plasma or glass, a sea of red cells, and a few
leukocytes whose nuclei are the densest and most differently coloured objects — but each lab's
stain recipe, lamp and camera gives them other colours (``../shared/data``: BCCD's pink red
cells on grey, DeepBioNet's blue, grey or olive red cells on blue to yellow plasma). So nothing
here is a colour constant; everything is measured on the slide:

1. **Background** ``I0``: the per-channel median of the brightest pixels (``background_quantile``
   of the brightness), i.e. plasma or glass. Optical density (Beer-Lambert) is taken against it,
   ``od = -log(I / I0)``, so a tinted lamp or filter and the exposure cancel out.
2. **Red-cell stain**: red cells are by far the most common stained object on any smear, so the
   median direction of the dense foreground's optical-density vectors (at least half its 90th
   percentile density, which leaves out a faintly coloured plasma) is the red-cell stain vector
   ``v_r`` (a robust, one-vector form of the Macenko et al. 2009 estimate, which takes the
   extreme angles instead; here the nuclei are too rare on a real smear — about 1 px in 1,000 —
   for extreme angles to find them), and the median density of that dense foreground is the
   red-cell density ``d_r``, the slide's unit of density.

   *A sample rich in leukocytes* breaks the "red cells are the most common dense stain" rule: on
   a slide made of single-cell images (a CellaVision-type source: every field a leukocyte, its
   nucleus three to seven times as dense as the red cells and a sixth of the stained pixels)
   the dense foreground is mostly nuclei, the vector above is the nuclei's, and they show no
   contrast. The sign is that few pixels (under :data:`LEUKOCYTE_RICH_SHARE`) would be nucleus.
   Then the estimate is made again from the *whole* stained foreground (at least half its median
   density), leaving out what the last estimate calls nucleus, until that set stops changing
   (:func:`_beneath_the_nuclei`). The result is kept (``StainEstimate.leukocyte_rich``) only
   where it turns the vector by at least :data:`MIN_TURN_DEG`, is less dense but at least
   :data:`RED_CELL_FLOOR` times the foreground's floor (paler is plasma or red-cell ghosts: on
   small BCCD fields at 1 um/px the look went to 0.18-0.26 OD and took overlapping red cells for
   nuclei), and calls at most :data:`MAX_NUCLEUS_SHARE` of the stain nucleus. On a smear the
   first estimate already finds its nuclei, platelets and red-cell overlaps (8-10 % of the
   stained pixels sampled from each test mosaic of ``../shared/data``; a median of 9 % on a BCCD
   field, 3 % on a DeepBioNet field, whose look is then refused), so it stays as it is. The look
   is taken on a slide's (or a field's) estimate, not on the squares of
   :mod:`leukoscreen.pipeline.renditions` (``second_look``).
3. **Nucleus contrast** of a pixel, in units of that slide's red cells: how far its optical
   density lies from the red-cell line, ``|od - (od . v_r) v_r| / d_r`` (another hue: a purple
   nucleus among pink red cells), and how much darker it is than a red cell along that line,
   ``max(od . v_r / d_r - 1, 0)`` (a nucleus of the red cells' hue but two to five times as dense,
   as on DeepBioNet's olive fields). The two are scaled by ``residual_scale`` and
   ``darkness_scale`` and combined as a Euclidean norm. Stain strength scales ``od`` and
   ``d_r`` alike, so the contrast does not change with it.

4. **Local tint** (:func:`flatten_tint`): where a region's plasma has another colour cast than
   the slide's background, the part of that cast off the red-cell hue is taken off its pixels
   before the contrast, unless most of the slide's plasma is cast (:func:`tinted_share`), when
   there is no one background to correct towards.

A slide without stained foreground (blank glass) gives a :class:`StainEstimate` with
``has_foreground`` false; detection then finds no cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi

MIN_FOREGROUND_PX = 200  # fewer stained pixels than this: no stain can be estimated
TINT_TOLERANCE_OD = 0.15  # plasma casts (off the red-cell hue) below this are left alone
MAX_TINTED_SHARE = 0.5  # more of the plasma cast than this: no one background to correct to
LEUKOCYTE_RICH_SHARE = 0.05  # fewer would-be nucleus pixels than this: look again
MAX_NUCLEUS_SHARE = 0.5  # ... and the second look refused where more of the stain would be nucleus
MIN_TURN_DEG = 5.0  # ... or where it turns the red-cell vector by less than this
RED_CELL_FLOOR = 2.0  # ... or where its red cells are less dense than this many foreground floors
SECOND_LOOK_ROUNDS = 8  # most rounds of the second look
CHECK_SCALES = (0.4, 2.0, 1.0)  # residual_scale, darkness_scale, threshold: DetectConfig's defaults


@dataclass(frozen=True)
class StainEstimate:
    """What the detector assumes about one slide's colours (saved in the store's attributes).

    Attributes:
        background_rgb: (R, G, B) of plasma/glass, 0-255: the ``I0`` of optical density.
        red_cell_od: (R, G, B) unit optical-density direction of the red cells.
        red_cell_density: median optical-density norm of the stained foreground (> 0).
        foreground_fraction: share of the sampled pixels that are stained foreground.
        n_pixels: pixels sampled.
        tinted_share: share of the sampled plasma whose colour cast off the red-cell hue is at
            least :data:`TINT_TOLERANCE_OD` (:func:`tinted_share`). Above
            :data:`MAX_TINTED_SHARE` the slide has no one background (a mosaic of several
            colour renditions) and :func:`flatten_tint` leaves it alone.
        renditions: on a slide with regions of another colour rendition
            (:func:`leukoscreen.pipeline.renditions.search_renditions`), one estimate per
            rendition, each made from the stain windows it explains best; cells are then found
            under each and confirmed with the stain of their own neighbourhood
            (:func:`leukoscreen.pipeline.renditions.confirm_locally`). Empty otherwise.
        leukocyte_rich: the first estimate lay on the nuclei of a sample rich in leukocytes and
            was made again beneath them (module docstring, step 2).
    """

    background_rgb: tuple[float, float, float]
    red_cell_od: tuple[float, float, float]
    red_cell_density: float
    foreground_fraction: float
    n_pixels: int
    tinted_share: float = 0.0
    renditions: tuple[StainEstimate, ...] = ()
    leukocyte_rich: bool = False

    @property
    def has_foreground(self) -> bool:
        """Whether any stained foreground was found (else detection finds nothing)."""
        return self.red_cell_density > 0

    def to_attrs(self) -> dict[str, Any]:
        """JSON-ready dict (rounded for readability)."""
        out = asdict(self)
        out["background_rgb"] = [round(v, 2) for v in self.background_rgb]
        out["red_cell_od"] = [round(v, 4) for v in self.red_cell_od]
        out["red_cell_density"] = round(self.red_cell_density, 4)
        out["foreground_fraction"] = round(self.foreground_fraction, 4)
        out["tinted_share"] = round(self.tinted_share, 4)
        out["renditions"] = [r.to_attrs() for r in self.renditions]
        return out

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> StainEstimate:
        """Inverse of :meth:`to_attrs`."""
        bg, od = attrs["background_rgb"], attrs["red_cell_od"]
        return cls(
            (float(bg[0]), float(bg[1]), float(bg[2])),
            (float(od[0]), float(od[1]), float(od[2])),
            float(attrs["red_cell_density"]),
            float(attrs["foreground_fraction"]),
            int(attrs["n_pixels"]),
            float(attrs.get("tinted_share", 0.0)),  # stores before the tint correction: 0
            tuple(cls.from_attrs(r) for r in attrs.get("renditions", ())),
            bool(attrs.get("leukocyte_rich", False)),  # stores before the second look: False
        )


def optical_density(rgb: np.ndarray, background_rgb: tuple[float, float, float]) -> np.ndarray:
    """``max(-log(I / I0), 0)`` per channel.

    Args:
        rgb: (..., 3) uint8.
        background_rgb: ``I0``, (R, G, B) 0-255.

    Returns:
        (..., 3) float32, 0 on the background, larger where more light is absorbed.
    """
    i0 = np.maximum(np.asarray(background_rgb, np.float32), 1.0)
    od = np.log(i0) - np.log(np.maximum(rgb.astype(np.float32), 1.0))
    return np.maximum(od, 0.0, out=od)


def estimate_stain(
    pixels: np.ndarray,
    *,
    background_quantile: float = 0.9,
    foreground_min_od: float = 0.15,
    max_pixels: int = 400_000,
    seed: int = 0,
    background_rgb: tuple[float, float, float] | None = None,
    second_look: bool = True,
) -> StainEstimate:
    """Estimate background, red-cell stain and density from a slide's pixels.

    Args:
        pixels: (..., 3) uint8 RGB sampled from the slide (any shape; a field, or windows).
        background_quantile: brightness quantile above which a pixel is background.
        background_rgb: a background measured otherwise (e.g. :func:`plasma_at` a cell); the
            quantile is then not used.
        foreground_min_od: optical-density norm above which a pixel is stained foreground.
        max_pixels: a seeded random subset of at most this many pixels is used.
        seed: seed of that subset.
        second_look: look again beneath the nuclei where the sample is rich in leukocytes
            (module docstring, step 2).

    Returns:
        The estimate; ``has_foreground`` is false with fewer than ``MIN_FOREGROUND_PX`` stained
        pixels.

    Raises:
        ValueError: ``pixels`` is not uint8 with 3 channels, or an option is out of range.
    """
    if pixels.dtype != np.uint8 or pixels.shape[-1:] != (3,):
        raise ValueError(f"pixels must be (..., 3) uint8, got {pixels.shape} {pixels.dtype}")
    if not 0 < background_quantile < 1:
        raise ValueError(f"background_quantile must be in (0, 1), got {background_quantile!r}")
    if not foreground_min_od > 0:
        raise ValueError(f"foreground_min_od must be > 0, got {foreground_min_od!r}")
    flat = pixels.reshape(-1, 3)
    if len(flat) > max_pixels:  # a seeded draw (with replacement: cheap on millions of pixels)
        flat = flat[np.random.default_rng(seed).integers(0, len(flat), max_pixels)]
    n = len(flat)
    none = StainEstimate((255.0, 255.0, 255.0), (0.0, 0.0, 0.0), 0.0, 0.0, n)
    if n == 0:
        return none
    background = background_rgb or bright_background(flat, quantile=background_quantile)
    od = optical_density(flat, background)  # (n, 3)
    norm = np.linalg.norm(od, axis=1)
    fg = norm > foreground_min_od
    n_fg = int(fg.sum())
    if n_fg < MIN_FOREGROUND_PX:
        return StainEstimate(background, (0.0, 0.0, 0.0), 0.0, n_fg / n, n)
    # Red cells: the foreground at least half as dense as its 90th percentile, so that a faintly
    # coloured plasma (where glass is the brightest part of the sample) is not taken for them.
    dense = norm >= max(foreground_min_od, 0.5 * float(np.quantile(norm[fg], 0.9)))
    first = _median_stain(od, norm, dense, StainEstimate(background, (0.0, 0.0, 0.0), 0.0,
                                                         n_fg / n, n))  # fmt: skip
    if not second_look:
        return first
    return _beneath_the_nuclei(flat, od, norm, fg, first, foreground_min_od)


def _median_stain(
    od: np.ndarray, norm: np.ndarray, chosen: np.ndarray, base: StainEstimate
) -> StainEstimate:
    """``base`` with the median direction and density of the ``chosen`` pixels as its red cells."""
    direction = np.median(od[chosen] / norm[chosen, None], axis=0)
    direction /= max(float(np.linalg.norm(direction)), 1e-12)
    return replace(
        base,
        red_cell_od=(float(direction[0]), float(direction[1]), float(direction[2])),
        red_cell_density=float(np.median(norm[chosen])),
    )


def _beneath_the_nuclei(
    flat: np.ndarray,
    od: np.ndarray,
    norm: np.ndarray,
    fg: np.ndarray,
    first: StainEstimate,
    min_od: float,
) -> StainEstimate:
    """The second look of a sample rich in leukocytes (module docstring, step 2).

    Args:
        flat: (n, 3) uint8 pixels; ``od``, ``norm``: their optical density and its norm.
        fg: (n,) the stained foreground.
        first: the estimate from the dense foreground.
        min_od: the foreground's optical-density floor.

    Returns:
        ``first``, or the estimate made beneath the nuclei with ``leukocyte_rich`` set.
    """
    residual_scale, darkness_scale, threshold = CHECK_SCALES

    def nuclear(stain: StainEstimate) -> np.ndarray:
        contrast = nucleus_contrast(flat[None], stain, residual_scale=residual_scale,
                                    darkness_scale=darkness_scale)[0]  # fmt: skip
        return contrast >= threshold

    if float(nuclear(first)[fg].mean()) >= LEUKOCYTE_RICH_SHARE:
        return first  # it finds nuclei: a smear's estimate
    keep, stain = fg, first
    for _ in range(SECOND_LOOK_ROUNDS):
        chosen = keep & (norm >= max(min_od, 0.5 * float(np.quantile(norm[keep], 0.5))))
        stain = _median_stain(od, norm, chosen, first)
        left = fg & ~nuclear(stain)
        if int(left.sum()) < MIN_FOREGROUND_PX or np.array_equal(left, keep):
            break
        keep = left
    share = 1.0 - float(left[fg].mean())
    if (
        angle_deg(stain.red_cell_od, first.red_cell_od) < MIN_TURN_DEG
        or not RED_CELL_FLOOR * min_od <= stain.red_cell_density < first.red_cell_density
        or not 2 * LEUKOCYTE_RICH_SHARE <= share <= MAX_NUCLEUS_SHARE
    ):
        return first
    return replace(stain, leukocyte_rich=True)


def bright_background(pixels: np.ndarray, *, quantile: float = 0.9) -> tuple[float, float, float]:
    """Per-channel median of the pixels at or above the ``quantile`` of brightness (R + G + B):
    :func:`estimate_stain`'s background. ``pixels``: (..., 3) uint8, at least one."""
    values = pixels.reshape(-1, 3).astype(np.float32)
    brightness = values.sum(axis=1)
    med = np.median(values[brightness >= np.quantile(brightness, quantile)], axis=0)
    return (float(med[0]), float(med[1]), float(med[2]))


def plasma_at(
    rgb: np.ndarray, centre: tuple[float, float], *, block_px: int
) -> tuple[float, float, float]:
    """The plasma colour around ``centre``: each channel's grey closing of ``block_px`` there.

    The closing fills every dark object smaller than the block (a leukocyte, red cells) with the
    brightest plasma of the blocks around it and keeps a sharp border between two plasmas, so
    a cell near the edge of a field of another colour gets the plasma of its own side.

    Args:
        rgb: (H, W, 3) uint8.
        centre: (row, col) in pixels of ``rgb``.
        block_px: side of the closing, pixels: wider than a leukocyte.
    """
    height, width = rgb.shape[:2]
    row = min(max(round(centre[0]), 0), height - 1)
    col = min(max(round(centre[1]), 0), width - 1)
    reach = block_px + 1  # the closing at the centre depends on no pixel farther than this
    r0, c0 = max(row - reach, 0), max(col - reach, 0)
    part = rgb[r0 : row + reach + 1, c0 : col + reach + 1]
    size = (block_px, block_px)
    values = [ndi.grey_closing(part[..., c], size=size, mode="nearest")[row - r0, col - c0]
              for c in range(3)]  # fmt: skip
    return (float(values[0]), float(values[1]), float(values[2]))


def flatten_tint(
    rgb: np.ndarray,
    stain: StainEstimate,
    *,
    block_px: int,
    tolerance_od: float = TINT_TOLERANCE_OD,
    max_od: float = 0.5,
    origin: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Undo a local tint of the plasma: take each region's colour cast off its pixels.

    One background per slide assumes one lamp and one stain bath. Where a region's plasma has
    another colour than the slide's (uneven staining or illumination, or fields of several
    sessions side by side), its optical density carries that tint everywhere: red cells take
    another hue and reach the nucleus threshold. Here each pixel's own background is a grey
    closing (per channel, a ``block_px`` square, on a grid of about 4 samples per block side):
    it fills every dark object smaller than the block (red cells, a leukocyte) with the plasma
    around it and keeps a sharp border between two tints. The part of that background's density
    that is **off the red-cell hue** is removed from the pixels. The part along the red-cell hue
    stays: where the closing meets only red cells (a clump wider than the block), its background
    is pale red-cell stain, not a tint, and must not be bleached. Backgrounds darker than half
    the slide's are left alone, and so is a slide whose plasma is mostly cast
    (``stain.tinted_share`` above :data:`MAX_TINTED_SHARE`): its one background is then just
    one of several renditions, and correcting the others towards it does more harm than good
    (``docs/detection.md``).

    Args:
        rgb: (H, W, 3) uint8.
        stain: the slide's estimate (with foreground).
        block_px: side of the closing, pixels: wider than a leukocyte.
        tolerance_od: tints below this optical density are left alone (``rgb`` itself is
            returned when there is no other).
        max_od: tints are clipped to this optical density per channel.
        origin: slide position (row, col) of ``rgb``'s first pixel: the sample grid is the
            slide's, so a tile gives the same pixels as the whole slide.

    Returns:
        ``rgb`` itself when nothing is tinted beyond ``tolerance_od``, else a corrected copy.
    """
    if stain.tinted_share > MAX_TINTED_SHARE or rgb.size == 0:
        return rgb
    grid = _tint_map(rgb, stain, block_px=block_px, max_od=max_od, origin=origin)
    if grid is None:
        return rgb
    offset, plasma, (stride, first_row, first_col) = grid
    tinted = plasma & (np.abs(offset).max(axis=0) >= tolerance_od)
    if not tinted.any():  # evenly lit: exactly unchanged
        return rgb
    gain = np.where(tinted[None], np.exp(offset), 1.0).transpose(1, 2, 0).astype(np.float32)
    # I * exp(od offset) removes the offset from -log(I / I0). Each pixel takes the gain of its
    # nearest sample; only the rows near a tinted sample change.
    height, width = rgb.shape[:2]
    rows = np.clip(np.round((np.arange(height) - first_row) / stride).astype(np.intp), 0,
                   gain.shape[0] - 1)  # fmt: skip
    cols = np.clip(np.round((np.arange(width) - first_col) / stride).astype(np.intp), 0,
                   gain.shape[1] - 1)  # fmt: skip
    changed = np.flatnonzero(np.asarray(tinted.any(axis=1))[rows])
    band = slice(int(changed[0]), int(changed[-1]) + 1)
    out = rgb.copy()
    part = rgb[band].astype(np.float32) * gain[rows[band][:, None], cols[None, :]]
    out[band] = np.clip(part + 0.5, 0, 255).astype(np.uint8)
    return out


def tinted_share(
    images: Sequence[np.ndarray],
    stain: StainEstimate,
    *,
    block_px: int,
    tolerance_od: float = TINT_TOLERANCE_OD,
) -> float:
    """Share of the plasma samples of ``images`` (a slide's stain windows, or a field) whose
    cast off the red-cell hue reaches ``tolerance_od`` (on :func:`flatten_tint`'s grid)."""
    if not stain.has_foreground:
        return 0.0
    cast = plasma_total = 0
    for rgb in images:
        grid = _tint_map(rgb, stain, block_px=block_px, max_od=1.0, origin=(0, 0))
        if grid is None:
            continue
        offset, plasma, _ = grid
        cast += int(np.count_nonzero(plasma & (np.abs(offset).max(axis=0) >= tolerance_od)))
        plasma_total += int(np.count_nonzero(plasma))
    return cast / plasma_total if plasma_total else 0.0


def _tint_map(
    rgb: np.ndarray,
    stain: StainEstimate,
    *,
    block_px: int,
    max_od: float,
    origin: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]] | None:
    """Each grid sample's plasma cast off the red-cell hue: ``(offset (3, h, w) OD, plasma
    (h, w) bool, (stride, first_row, first_col))``, or None for an empty grid."""
    stride = max(round(block_px / 4), 1)  # about 4 samples per block side
    size = max(round(block_px / stride), 1)
    first_row, first_col = -origin[0] % stride, -origin[1] % stride  # on the slide's grid
    sample = rgb[first_row::stride, first_col::stride]
    if sample.size == 0:
        return None
    background = np.maximum(np.asarray(stain.background_rgb, np.float32), 1.0)
    hue = np.asarray(stain.red_cell_od, np.float32)
    # Per channel (h, w) planes: reductions over a last axis of 3 are slow in numpy.
    local = [ndi.grey_closing(sample[..., c], size=(size, size), mode="nearest") for c in range(3)]
    log_level = np.log(np.maximum(np.arange(256, dtype=np.float32), 1.0))
    offset = np.stack([np.log(background[c]) - log_level[local[c]] for c in range(3)])  # OD
    along = np.tensordot(hue, offset, axes=1)  # (h, w)
    offset -= along[None] * hue[:, None, None]  # off the red-cell hue only
    np.clip(offset, -max_od, max_od, out=offset)
    total = local[0].astype(np.uint16) + local[1] + local[2]
    plasma = total >= 0.5 * float(background.sum())  # darker: not plasma, leave alone
    return offset, plasma, (stride, first_row, first_col)


def nucleus_contrast(
    rgb: np.ndarray,
    stain: StainEstimate,
    *,
    residual_scale: float,
    darkness_scale: float,
) -> np.ndarray:
    """Per-pixel nucleus contrast against the slide's red cells (see the module docstring).

    Args:
        rgb: (H, W, 3) uint8.
        stain: the slide's estimate (must have foreground).
        residual_scale: off-red-cell-hue density, in red-cell densities, that counts as 1.
        darkness_scale: excess density along the red-cell hue, in red-cell densities, that
            counts as 1.

    Returns:
        (H, W) float32 >= 0: about 0 on plasma and red cells, above 1 in nuclei.
    """
    if not stain.has_foreground:
        raise ValueError("nucleus_contrast needs a stain estimate with foreground")
    if not (residual_scale > 0 and darkness_scale > 0):
        raise ValueError(
            f"residual_scale and darkness_scale must be > 0, got {residual_scale}, {darkness_scale}"
        )
    # Per-channel lookup tables over the 256 levels: along = sum_c v_c od_c and
    # |od|^2 = sum_c od_c^2, so |off-hue part|^2 = |od|^2 - along^2 (Pythagoras), without a
    # (H, W, 3) float array: four table look-ups per pixel (see _look_up).
    levels = np.arange(256, dtype=np.uint8)[:, None].repeat(3, axis=1)  # (256, 3)
    od_lut = optical_density(levels, stain.background_rgb)  # (256, 3)
    unit = np.float32(1.0 / stain.red_cell_density)
    along_lut = od_lut * (np.asarray(stain.red_cell_od, np.float32) * unit)  # in red-cell units
    square_lut = od_lut * od_lut * (unit * unit)
    along, square = _look_up(along_lut, square_lut, rgb=rgb)  # (H, W) each
    square -= along * along  # the off-hue part, squared
    np.maximum(square, 0.0, out=square)
    square *= np.float32(1.0 / residual_scale**2)
    along -= 1.0  # darker than a red cell, along its hue
    np.maximum(along, 0.0, out=along)
    along *= np.float32(1.0 / darkness_scale)
    square += along * along
    return np.sqrt(square, out=square)


def _look_up(*luts: np.ndarray, rgb: np.ndarray) -> list[np.ndarray]:
    """``sum_c lut[rgb[..., c], c]`` per table: (256, 3) float32 tables, (H, W, 3) uint8 -> (H, W).

    Red and green go through one 65,536-entry table (256 KiB, cache-resident) indexed by
    ``256 r + g``: two gathers per pixel instead of three. The index is built once for all the
    tables.
    """
    index = rgb[..., 0].astype(np.uint16) << 8
    index |= rgb[..., 1]
    blue = rgb[..., 2]
    totals = []
    for lut in luts:
        red_green = (lut[:, 0][:, None] + lut[:, 1][None, :]).ravel()  # (65536,)
        total = red_green[index]
        total += np.ascontiguousarray(lut[:, 2])[blue]
        totals.append(total)
    return totals


def angle_deg(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """Angle between two optical-density directions, degrees."""
    va, vb = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = float(np.linalg.norm(va) * np.linalg.norm(vb))
    cos = float(va @ vb) / max(norms, 1e-12)
    return math.degrees(math.acos(min(max(cos, -1.0), 1.0)))
