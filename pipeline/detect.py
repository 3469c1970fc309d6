"""Finding leukocytes at the scan's own (low) resolution, adapted to each slide's stain.

The pure stage is :func:`detect_leukocytes`: an RGB array (and the slide's
:class:`~leukoscreen.pipeline.stain.StainEstimate`) in, a :class:`CellTable` out, no I/O and no
global config. Below it, the tiling: :func:`plan_tiles` cuts level 0 into cores with a halo and
skips empty glass from a low pyramid level; :func:`estimate_slide_stain` samples windows of the
planned tiles and estimates the slide's stain once; :func:`detect_tile` reads one halo window,
detects with that estimate, and keeps the cells whose centre lies in the core, so every cell is
found exactly once; :func:`detect_slide` runs the tiles in this process, and
:mod:`leukoscreen.pipeline.run` submits them as Dask tasks.

How a leukocyte is found (Romanowsky-type stains: Wright, Giemsa, May-Grünwald, any lab):

1. The slide's background, red-cell stain vector and red-cell density are estimated from its own
   pixels (:mod:`leukoscreen.pipeline.stain`); no colour is a constant of the code.
2. Each pixel's *nucleus contrast* is its distance from the red-cell line in optical density, in
   units of the slide's red-cell density (:func:`~leukoscreen.pipeline.stain.nucleus_contrast`):
   nuclei are another hue than the red cells, or much denser, or both. It is smoothed lightly
   (``smoothing_um``) and thresholded with hysteresis: pixels above ``seed_threshold`` start a
   nucleus, connected pixels above ``nucleus_threshold`` grow it. The thresholds are in the
   slide's own units, so they follow its stain strength and exposure.
3. Fragments closer than ``merge_distance_um`` (along rows, columns or diagonals: a square
   dilation) are one cell (the 2-5 lobes of a neutrophil nucleus, a notched monocyte nucleus),
   unless the merged group is wider than ``max_span_um`` (two touching cells).
4. Size limits in square microns (``min_area_um2``, ``max_area_um2``) drop platelets and debris,
   so every threshold follows the pixel size: leukocytes of 7-20 um are all kept.

Coordinates are (row, col) level-0 pixels; a cell's centre is the centroid of its nucleus pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

from leukoscreen.pipeline.binning import bin_blocks, block_factor, cells_in_full_pixels
from leukoscreen.pipeline.cell_table import CellTable
from leukoscreen.pipeline.config import DetectConfig
from leukoscreen.pipeline.nuclei import cell_boxes, group_boxes, hysteresis, split_wide_groups
from leukoscreen.pipeline.renditions import confirm_locally, search_renditions, window_stain
from leukoscreen.pipeline.stain import (
    StainEstimate,
    estimate_stain,
    flatten_tint,
    nucleus_contrast,
    tinted_share,
)

if TYPE_CHECKING:
    from leukoscreen.pipeline.slide import Slide

GLASS_MAX_OD = 0.08  # mean optical density below which a low-resolution pixel is empty glass
GLASS_MAX_CHROMA = 0.08  # ... and (max - min) / max of its RGB below which it is colourless
VERIFY_MATCH_UM = 4.0  # a proposal and its local detection are one cell within this, microns
STRICTER = 1.5  # on a slide of several renditions, proposals also at thresholds this much higher


def detect_leukocytes(
    rgb: np.ndarray,
    *,
    mpp: float,
    stain: StainEstimate | None = None,
    min_area_um2: float = 20.0,
    max_area_um2: float = 400.0,
    merge_distance_um: float = 3.0,
    nucleus_threshold: float = 1.0,
    seed_threshold: float = 1.4,
    residual_scale: float = 0.4,
    darkness_scale: float = 2.0,
    smoothing_um: float = 0.5,
    cell_margin_um: float = 3.0,
    max_span_um: float = 16.0,
    tint_block_um: float = 20.0,
    verify_window_um: float = 60.0,
    working_mpp: float = 0.0,
    origin: tuple[int, int] = (0, 0),
) -> CellTable:
    """Find leukocytes by their stained nuclei.

    Args:
        rgb: (H, W, 3) uint8 RGB at ``mpp`` microns per pixel.
        mpp: microns per pixel of ``rgb``.
        stain: the slide's stain estimate; estimated from ``rgb`` itself when omitted (a field
            or a whole small slide). With no stained foreground, no cells are found.
        min_area_um2: smallest nucleus area kept (platelets are below), square microns.
        max_area_um2: largest nucleus area kept (clumps, debris), square microns.
        merge_distance_um: nucleus fragments closer than this are one cell, microns.
        nucleus_threshold: nucleus contrast a nucleus pixel exceeds (see
            :func:`~leukoscreen.pipeline.stain.nucleus_contrast`).
        seed_threshold: contrast at least one pixel of every nucleus exceeds.
        residual_scale: off-hue density, in red-cell densities, worth a contrast of 1.
        darkness_scale: excess density along the red-cell hue, in red-cell densities, worth a
            contrast of 1.
        smoothing_um: sigma of the Gaussian applied to the contrast first, microns.
        cell_margin_um: margin around the nucleus box that makes the whole-cell box, microns.
        max_span_um: a merged group wider than this (microns, along rows or columns) is not
            one nucleus: it is split into clusters no wider, nearest fragments first
            (:func:`~leukoscreen.pipeline.nuclei.split_wide_groups`). 0 keeps every merge.
        tint_block_um: side of the blocks whose own plasma tint is undone first
            (:func:`~leukoscreen.pipeline.stain.flatten_tint`), microns; 0 trusts the slide's
            one background everywhere.
        verify_window_um: on a slide of several colour renditions (``stain.renditions``), the
            cells found under each rendition are kept only where a detection with the stain of
            the square of this side around them, alone, finds them too
            (:func:`~leukoscreen.pipeline.renditions.confirm_locally`), microns.
        working_mpp: detect on the pixels averaged in the largest blocks that keep a working
            pixel at or under this size, microns (:mod:`~leukoscreen.pipeline.binning`); 0
            keeps the scan's own pixels.
        origin: slide position (row, col) of ``rgb``'s first pixel (a tile's window), so that
            the tint correction samples the slide's grid, as on the whole slide.

    Returns:
        One row per cell in (row, col) order, coordinates in pixels of ``rgb``.

    Raises:
        ValueError: ``rgb`` is not (H, W, 3) uint8, or an option is out of range.
    """
    _check_options(rgb, mpp, min_area_um2, max_area_um2, nucleus_threshold, seed_threshold)
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        return CellTable.empty()
    options: dict[str, Any] = {
        "min_area_um2": min_area_um2, "max_area_um2": max_area_um2,
        "merge_distance_um": merge_distance_um, "nucleus_threshold": nucleus_threshold,
        "seed_threshold": seed_threshold, "residual_scale": residual_scale,
        "darkness_scale": darkness_scale, "smoothing_um": smoothing_um,
        "cell_margin_um": cell_margin_um, "max_span_um": max_span_um,
    }  # fmt: skip
    factor = block_factor(mpp, working_mpp)
    if factor > 1:
        small, first = bin_blocks(rgb, factor, origin)
        cells = detect_leukocytes(
            small, mpp=mpp * factor, stain=stain, tint_block_um=tint_block_um,
            verify_window_um=verify_window_um, **options,
            origin=((origin[0] + first[0]) // factor, (origin[1] + first[1]) // factor),
        )  # fmt: skip
        return cells_in_full_pixels(cells, factor, first, (rgb.shape[0], rgb.shape[1]))
    tint_block_px = round(tint_block_um / mpp) if tint_block_um > 0 else 0
    if stain is None:
        stain = estimate_stain(rgb)
        if tint_block_px:
            stain = replace(stain, tinted_share=tinted_share([rgb], stain, block_px=tint_block_px))
    if not stain.has_foreground:
        return CellTable.empty()
    if len(stain.renditions) > 1:
        # Proposals under each rendition, at the thresholds and at STRICTER times them: where
        # no rendition fits a region, its red cells can pass the threshold and swallow a
        # nucleus into one blob too large to keep; the nucleus stands apart at the stricter one.
        strict = dict(options, nucleus_threshold=nucleus_threshold * STRICTER,
                      seed_threshold=seed_threshold * STRICTER)  # fmt: skip
        proposals = [
            detect_leukocytes(
                rgb, mpp=mpp, stain=r, origin=origin, tint_block_um=tint_block_um, **settings
            )
            for r in stain.renditions
            for settings in (options, strict)
        ]
        return confirm_locally(
            rgb, proposals,
            lambda window, at, centre: detect_leukocytes(
                window, mpp=mpp, origin=(origin[0] + at[0], origin[1] + at[1]),
                stain=window_stain(window, centre, tint_block_px=tint_block_px),
                tint_block_um=tint_block_um, **options,
            ),
            window_px=max(round(verify_window_um / mpp), 1), match_px=VERIFY_MATCH_UM / mpp,
        )  # fmt: skip

    return _nuclei_cells(rgb, stain, mpp=mpp, tint_block_px=tint_block_px, origin=origin,
                         **options)  # fmt: skip


def _nuclei_cells(
    rgb: np.ndarray, stain: StainEstimate, *, mpp: float, tint_block_px: int,
    origin: tuple[int, int], min_area_um2: float, max_area_um2: float,
    merge_distance_um: float, nucleus_threshold: float, seed_threshold: float,
    residual_scale: float, darkness_scale: float, smoothing_um: float,
    cell_margin_um: float, max_span_um: float,
) -> CellTable:  # fmt: skip
    """:func:`detect_leukocytes` under one stain estimate, the tint block in pixels."""
    if tint_block_px:
        rgb = flatten_tint(rgb, stain, block_px=tint_block_px, origin=origin)
    contrast = nucleus_contrast(
        rgb, stain, residual_scale=residual_scale, darkness_scale=darkness_scale
    )  # (H, W)
    if smoothing_um > 0:
        contrast = ndi.gaussian_filter(contrast, smoothing_um / mpp, truncate=3.0)
    regions, nuclei = hysteresis(contrast, nucleus_threshold, seed_threshold)
    if not nuclei.any():
        return CellTable.empty()

    # Fragments within merge_distance_um of each other (Chebyshev distance: a square dilation,
    # separable and fast) share a label of the dilated mask.
    radius_px = max(round(merge_distance_um / mpp / 2.0), 0)
    grown = ndi.maximum_filter(nuclei, size=2 * radius_px + 1) if radius_px else nuclei
    grown_labels, n_labels = ndi.label(grown, structure=np.ones((3, 3), bool))

    # Statistics over nucleus pixels only (sparse): area, centroid, box, stain strength.
    height, width = nuclei.shape
    flat = np.flatnonzero(nuclei)
    label = grown_labels.ravel()[flat] - 1  # (P,) 0-based cell of each nucleus pixel
    pix_row, pix_col = np.divmod(flat, width)
    if max_span_um > 0:
        label, n_labels = split_wide_groups(
            label, n_labels, pix_row, pix_col, regions.ravel()[flat],
            max_span_px=max_span_um / mpp, max_area_px=max_area_um2 / (mpp * mpp),
        )  # fmt: skip
    area_px = np.bincount(label, minlength=n_labels)
    centre_row = np.bincount(label, pix_row, n_labels) / np.maximum(area_px, 1)
    centre_col = np.bincount(label, pix_col, n_labels) / np.maximum(area_px, 1)
    strength = np.clip(
        (contrast.ravel()[flat] - nucleus_threshold)
        / (2.0 * (seed_threshold - nucleus_threshold) + 1e-6),
        0.0,
        1.0,
    )
    score = np.bincount(label, strength, n_labels) / np.maximum(area_px, 1)
    row0, col0, row1, col1 = group_boxes(label, n_labels, pix_row, pix_col)

    area_um2 = area_px * (mpp * mpp)
    keep = (area_px > 0) & (area_um2 >= min_area_um2) & (area_um2 <= max_area_um2)
    if not keep.any():
        return CellTable.empty()
    boxes = cell_boxes((row0, col0, row1, col1), round(cell_margin_um / mpp), (height, width))
    return CellTable(
        centre_row[keep], centre_col[keep], boxes[keep], area_um2[keep], score[keep]
    ).sorted()


def _check_options(
    rgb: np.ndarray, mpp: float, min_area_um2: float, max_area_um2: float,
    nucleus_threshold: float, seed_threshold: float,
) -> None:  # fmt: skip
    """Raise ``ValueError`` for an image or option :func:`detect_leukocytes` cannot use."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be > 0, got {mpp!r}")
    if not 0 <= min_area_um2 <= max_area_um2:
        raise ValueError(
            f"need 0 <= min_area_um2 <= max_area_um2, got {min_area_um2}, {max_area_um2}"
        )
    if not 0 < nucleus_threshold <= seed_threshold:
        raise ValueError(
            "need 0 < nucleus_threshold <= seed_threshold, got "
            f"{nucleus_threshold}, {seed_threshold}"
        )


def detect_options(cfg: DetectConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`detect_leukocytes` held by ``cfg`` (all but ``mpp`` and
    ``stain``)."""
    names = ("min_area_um2", "max_area_um2", "merge_distance_um", "max_span_um", "working_mpp",
             "nucleus_threshold", "seed_threshold", "residual_scale", "darkness_scale",
             "smoothing_um", "cell_margin_um", "tint_block_um", "verify_window_um")  # fmt: skip
    return {name: getattr(cfg, name) for name in names}


# ----------------------------------------------------------------------------- tiling


@dataclass(frozen=True)
class Tile:
    """One detection tile.

    Attributes:
        index: position in the plan (row-major over the tile grid).
        core: ``(row0, col0, row1, col1)`` level-0 px, end exclusive: cells whose centre lies
            here belong to this tile. The cores of a plan partition the slide.
        halo: the core grown by ``halo_px`` on each side, clipped to the slide: the window read.
    """

    index: int
    core: tuple[int, int, int, int]
    halo: tuple[int, int, int, int]


def _foreground_mask(slide: Slide, target_mpp: float) -> tuple[np.ndarray, float]:
    """Where the slide is not empty glass, at about ``target_mpp``, read strip by strip.

    Returns:
        (h, w) bool mask and its level-0 pixels per mask pixel.
    """
    downsamples = slide.level_downsamples
    # The coarsest level still at least as fine as the target.
    level = max((i for i, ds in enumerate(downsamples) if slide.mpp * ds <= target_mpp), default=0)
    level_ds = downsamples[level]
    factor = max(int(target_mpp // (slide.mpp * level_ds)), 1)  # block size on that level
    level_h, level_w = slide.level_dimensions[level]
    out_h, out_w = -(-level_h // factor), -(-level_w // factor)
    mask = np.zeros((out_h, out_w), bool)
    strip_rows = factor * max(1, 256 // factor)  # bounded: a strip is strip_rows x level width
    for top in range(0, level_h, strip_rows):
        rows = min(strip_rows, level_h - top)
        row0 = round(top * level_ds)
        strip = slide.read_region(row0, 0, rows, level_w, level=level).astype(np.float32)
        pad_h, pad_w = -(-rows // factor) * factor, out_w * factor
        padded = np.full((pad_h, pad_w, 3), 255.0, np.float32)  # (h, w, 3)
        padded[:rows, :level_w] = strip
        blocks = padded.reshape(pad_h // factor, factor, out_w, factor, 3).mean(axis=(1, 3))
        od = -np.log(np.maximum(blocks, 1.0) / 255.0).mean(axis=2)
        brightest = blocks.max(axis=2)
        chroma = (brightest - blocks.min(axis=2)) / np.maximum(brightest, 1.0)
        fg = (od > GLASS_MAX_OD) | (chroma > GLASS_MAX_CHROMA)
        mask[top // factor : top // factor + fg.shape[0]] = fg
    return mask, level_ds * factor


def plan_tiles(
    slide: Slide, *, tile_size_px: int, halo_px: int, foreground_level_mpp: float
) -> list[Tile]:
    """Cut level 0 into detection tiles, skipping tiles of empty glass.

    The foreground is judged on the coarsest pyramid level at most ``foreground_level_mpp`` per
    pixel, block-averaged to about that pixel size and read in strips, so level 0 is never held
    whole. A tile is kept when any foreground pixel touches its halo.

    Args:
        slide: the slide.
        tile_size_px: side of a core, level-0 px.
        halo_px: margin read around each core, level-0 px; it must exceed the radius of the
            largest nucleus plus ``merge_distance_um`` for every cell to be found exactly once.
        foreground_level_mpp: pixel size at which empty glass is judged, microns.

    Returns:
        The kept tiles, row-major.

    Raises:
        ValueError: a non-positive tile size or a negative halo.
    """
    if tile_size_px < 1 or halo_px < 0:
        raise ValueError(f"need tile_size_px >= 1 and halo_px >= 0, got {tile_size_px}, {halo_px}")
    height, width = slide.dimensions
    mask, mask_ds = _foreground_mask(slide, foreground_level_mpp)
    tiles: list[Tile] = []
    for row0 in range(0, height, tile_size_px):
        for col0 in range(0, width, tile_size_px):
            core = (row0, col0, min(row0 + tile_size_px, height), min(col0 + tile_size_px, width))
            halo = (max(core[0] - halo_px, 0), max(core[1] - halo_px, 0),
                    min(core[2] + halo_px, height), min(core[3] + halo_px, width))  # fmt: skip
            # Mask pixels touching the halo, one mask pixel of slack for rounding.
            r0, c0 = max(int(halo[0] // mask_ds) - 1, 0), max(int(halo[1] // mask_ds) - 1, 0)
            r1, c1 = int(-(-halo[2] // mask_ds)) + 1, int(-(-halo[3] // mask_ds)) + 1
            if mask[r0:r1, c0:c1].any():
                tiles.append(Tile(len(tiles), core, halo))
    return tiles


def stain_windows(
    tiles: Sequence[Tile], *, sample_windows: int, window_px: int
) -> list[tuple[int, int, int, int]]:
    """Where to sample the slide's stain: ``(row, col, height, width)`` windows, level-0 px.

    ``sample_windows`` windows of at most ``window_px`` square, spread evenly over the whole
    plan: with many tiles, one window at the centre of each of ``sample_windows`` tiles taken
    evenly along the plan; with fewer tiles than that, a k x k grid of windows inside every
    tile (k = floor(sqrt(sample_windows / tiles))), so a small slide is sampled all over
    rather than at its centre alone. Deterministic.
    """
    if sample_windows < 1 or window_px < 1:
        raise ValueError(f"need sample_windows, window_px >= 1, got {sample_windows}, {window_px}")
    if not tiles:
        return []
    per_side = max(1, math.isqrt(sample_windows // len(tiles)))
    picks = np.unique(np.linspace(0, len(tiles) - 1, min(sample_windows, len(tiles))).round())
    windows = []
    for i in picks.astype(int):
        r0, c0, r1, c1 = tiles[i].core
        h, w = min(window_px, r1 - r0), min(window_px, c1 - c0)
        for top in _spread(r0, r1 - h, per_side):
            for left in _spread(c0, c1 - w, per_side):
                windows.append((top, left, h, w))
    return sorted(set(windows))


def _spread(first: int, last: int, count: int) -> list[int]:
    """``count`` integer positions from ``first`` to ``last`` evenly; the middle for one."""
    if count == 1:
        return [(first + last) // 2]
    return [int(v) for v in np.linspace(first, last, count).round()]


def estimate_slide_stain(
    slide: Slide,
    tiles: Sequence[Tile],
    *,
    sample_windows: int,
    window_px: int,
    tint_block_px: int = 0,
    cfg: DetectConfig | None = None,
) -> StainEstimate:
    """Estimate the slide's stain from windows spread over its planned (non-glass) tiles.

    The windows (:func:`stain_windows`) are read at level 0 (a lower level would blur red cells
    into the plasma) and, with ``cfg``, averaged in the blocks detection works on. With
    ``tint_block_px``, the share of their plasma that is colour-cast is measured too
    (``StainEstimate.tinted_share``). With ``cfg``, its renditions are sought, from
    ``cfg.rendition_sample_windows`` windows where the first ones show more than one.

    Returns:
        The estimate over all sampled pixels (no foreground when ``tiles`` is empty).
    """
    windows = stain_windows(tiles, sample_windows=sample_windows, window_px=window_px)
    if not windows:
        return estimate_stain(np.zeros((0, 3), np.uint8))
    factor = block_factor(slide.mpp, cfg.working_mpp) if cfg is not None else 1
    # The pixels detection sees: block means on the slide's grid (factor 1: the windows).
    images = [bin_blocks(slide.read_region(*w), factor, (w[0], w[1]))[0] for w in windows]
    block_px = round(tint_block_px / factor)  # the tint block in those pixels
    stain = estimate_stain(np.concatenate([image.reshape(-1, 3) for image in images]))
    if block_px:
        stain = replace(stain, tinted_share=tinted_share(images, stain, block_px=block_px))
    if cfg is None or cfg.max_renditions < 2:
        return stain
    found = search_renditions(
        images, stain, residual_scale=cfg.residual_scale, darkness_scale=cfg.darkness_scale,
        threshold=cfg.nucleus_threshold, max_renditions=cfg.max_renditions,
        tint_block_px=block_px,
    )  # fmt: skip
    if not found.look_closer or cfg.rendition_sample_windows <= sample_windows:
        return found.stain  # a slide of one rendition pays nothing more
    return estimate_slide_stain(
        slide, tiles, sample_windows=cfg.rendition_sample_windows, window_px=window_px,
        tint_block_px=tint_block_px, cfg=replace(cfg, rendition_sample_windows=0),
    )  # fmt: skip


def detect_tile(slide: Slide, tile: Tile, cfg: DetectConfig, stain: StainEstimate) -> CellTable:
    """Detect leukocytes in one tile: read the halo window, keep the cells centred in the core.

    Args:
        slide: the slide.
        tile: one tile of :func:`plan_tiles`.
        cfg: detection settings.
        stain: the slide's estimate (:func:`estimate_slide_stain`), the same for every tile.

    Returns:
        The tile's cells in level-0 coordinates, (row, col) order.
    """
    row0, col0, row1, col1 = tile.halo
    if len(stain.renditions) > 1:  # room for the local check of every cell of the core
        extra = math.ceil(cfg.verify_window_um / 2 / slide.mpp)
        height, width = slide.dimensions
        row0, col0 = max(row0 - extra, 0), max(col0 - extra, 0)
        row1, col1 = min(row1 + extra, height), min(col1 + extra, width)
    rgb = slide.read_region(row0, col0, row1 - row0, col1 - col0)
    cells = detect_leukocytes(
        rgb, mpp=slide.mpp, stain=stain, origin=(row0, col0), **detect_options(cfg)
    )
    cells = cells.shifted(row0, col0)
    r0, c0, r1, c1 = tile.core
    inside = (cells.row >= r0) & (cells.row < r1) & (cells.col >= c0) & (cells.col < c1)
    return cells.take(np.flatnonzero(inside))


def _gather(tables: Sequence[CellTable]) -> CellTable:
    return CellTable.concat(tables).sorted()


def plan_detection(slide: Slide, cfg: DetectConfig) -> tuple[list[Tile], StainEstimate]:
    """The tile plan and the slide's stain estimate: what every detection task needs."""
    tiles = plan_tiles(slide, tile_size_px=cfg.tile_size_px, halo_px=cfg.halo_px,
                       foreground_level_mpp=cfg.foreground_level_mpp)  # fmt: skip
    factor = block_factor(slide.mpp, cfg.working_mpp)  # windows keep their working pixels
    stain = estimate_slide_stain(
        slide, tiles, sample_windows=cfg.stain_sample_windows,
        window_px=max(cfg.stain_window_px * factor, round(cfg.stain_window_um / slide.mpp)),
        tint_block_px=round(cfg.tint_block_um / slide.mpp) if cfg.tint_block_um > 0 else 0,
        cfg=cfg,
    )  # fmt: skip
    return tiles, stain


def detect_slide(
    slide: Slide, cfg: DetectConfig, *, progress: bool = False
) -> tuple[CellTable, StainEstimate]:
    """Detection over a whole slide in this process, tile by tile (no cluster).

    Args:
        slide: the slide.
        cfg: detection settings.
        progress: show a progress bar over the tiles on stderr.

    Returns:
        The slide's cells in (row, col) order and the stain estimate they were found with.
    """
    import sys

    from tqdm import tqdm

    tiles, stain = plan_detection(slide, cfg)
    if not stain.has_foreground:
        return CellTable.empty(), stain
    bar = tqdm(tiles, unit="tile", desc=f"detect {slide.path.name}", disable=not progress,
               file=sys.stderr)  # fmt: skip
    return _gather([detect_tile(slide, tile, cfg, stain) for tile in bar]), stain
