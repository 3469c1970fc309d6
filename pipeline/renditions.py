"""Slides of several colour renditions: finding them among the stain windows, and judging each
pixel by the one that fits its surroundings.

A slide is one stain bath and one lamp, but a slide made of several (fields stained or scanned
apart, a strong stain gradient, the DeepBioNet mosaic of ``docs/detection.md`` that lays blue,
grey, olive and yellow renditions side by side) has no one background and red-cell colour: under
one estimate, another rendition's red cells and plasma pass for nuclei. Nothing here is fitted
to a source's colours: a rendition is whatever the slide's own windows say, and a pixel's
rendition is whichever of them explains its neighbourhood best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from scipy import ndimage as ndi

from leukoscreen.pipeline.stain import (
    StainEstimate,
    estimate_stain,
    flatten_tint,
    nucleus_contrast,
    off_hue_density,
    tinted_share,
)

MISFIT_LIMIT = 0.15  # windows with more would-be nucleus pixels than this are not explained
MIN_RENDITION_WINDOWS = 8  # fewest stain windows that make a rendition of their own
OFF_HUE_WEIGHT = 0.5  # per OD of median off-hue density, in the rendition fit


def misfit(
    rgb: np.ndarray, stain: StainEstimate, *, residual_scale: float, darkness_scale: float,
    threshold: float,
) -> float:  # fmt: skip
    """Share of ``rgb``'s pixels that ``stain`` would call nucleus (contrast above
    ``threshold``): a few percent where the estimate fits (nuclei are rare), tens of percent
    where another rendition's plasma and red cells pass for nuclei."""
    if rgb.size == 0:
        return 0.0
    contrast = nucleus_contrast(
        rgb, stain, residual_scale=residual_scale, darkness_scale=darkness_scale
    )
    return float(np.count_nonzero(contrast > threshold)) / contrast.size


def find_renditions(
    images: Sequence[np.ndarray],
    stain: StainEstimate,
    *,
    residual_scale: float,
    darkness_scale: float,
    threshold: float,
    max_renditions: int = 4,
    misfit_limit: float = MISFIT_LIMIT,
    min_windows: int = MIN_RENDITION_WINDOWS,
    tint_block_px: int = 0,
) -> StainEstimate:
    """Look for regions of other colour renditions among a slide's stain windows.

    A slide is one stain bath and one lamp, but a slide made of several (fields scanned or
    stained apart, a stain gradient, the DeepBioNet mosaic of ``docs/detection.md``) has no one
    background and red-cell colour: one estimate calls another rendition's red cells and plasma
    nuclei. Here the windows the slide's estimate does not explain (:func:`misfit` above
    ``misfit_limit`` under every estimate so far) get an estimate of their own, up to
    ``max_renditions``; then each window goes to the estimate that explains it best and every
    estimate is made again from its own windows (one k-means-like step), dropping any with
    fewer than ``min_windows``. On a slide every window of which fits, nothing changes.

    Args:
        images: the slide's stain windows, (h, w, 3) uint8 each.
        stain: the estimate over all of them (with foreground).
        residual_scale, darkness_scale, threshold: the detector's contrast settings.
        max_renditions: most estimates per slide; 1 keeps one estimate per slide.
        misfit_limit: share of would-be nucleus pixels above which a window is not explained.
        min_windows: fewest windows that make a rendition.
        tint_block_px: with it, each rendition's ``tinted_share`` is measured on its windows.

    Returns:
        ``stain`` itself when one estimate explains the slide, else ``stain`` with
        ``renditions`` (the first being the estimate of the windows it explains).
    """
    if max_renditions < 2 or not stain.has_foreground or len(images) < 2 * min_windows:
        return stain
    options = {"residual_scale": residual_scale, "darkness_scale": darkness_scale,
               "threshold": threshold}  # fmt: skip
    candidates = [stain]
    fits = [[misfit(image, stain, **options) for image in images]]
    while len(candidates) < max_renditions:
        unexplained = np.flatnonzero(np.min(fits, axis=0) > misfit_limit)
        if len(unexplained) < min_windows:
            break
        new = estimate_stain(np.concatenate([images[i].reshape(-1, 3) for i in unexplained]))
        if not new.has_foreground:
            break
        candidates.append(new)
        fits.append([misfit(image, new, **options) for image in images])
    if len(candidates) == 1:
        return stain
    owner = np.argmin(fits, axis=0)  # ties: the earlier estimate, the slide's own first
    renditions = []
    for k in range(len(candidates)):
        mine = [images[i] for i in np.flatnonzero(owner == k)]
        if len(mine) < min_windows:
            continue
        own = estimate_stain(np.concatenate([image.reshape(-1, 3) for image in mine]))
        if not own.has_foreground:
            continue
        if tint_block_px:
            own = replace(own, tinted_share=tinted_share(mine, own, block_px=tint_block_px))
        renditions.append(own)
    return replace(stain, renditions=tuple(renditions)) if len(renditions) > 1 else stain


def rendition_contrast(
    rgb: np.ndarray, stain: StainEstimate, *, tint_block_px: int, rendition_block_px: int,
    origin: tuple[int, int], threshold: float, residual_scale: float, darkness_scale: float,
) -> np.ndarray:  # fmt: skip
    """Nucleus contrast of every pixel (:func:`~leukoscreen.pipeline.stain.nucleus_contrast`,
    after :func:`~leukoscreen.pipeline.stain.flatten_tint` with ``tint_block_px``) under the
    slide's one estimate, or, on a slide of several renditions, under the rendition that
    explains the ``rendition_block_px`` square around the pixel best."""
    scales = {"residual_scale": residual_scale, "darkness_scale": darkness_scale}

    def under(estimate: StainEstimate) -> np.ndarray:
        image = rgb
        if tint_block_px:
            image = flatten_tint(rgb, estimate, block_px=tint_block_px, origin=origin)
        return nucleus_contrast(image, estimate, **scales)

    if len(stain.renditions) < 2:
        return under(stain)
    # Which rendition explains the block around each pixel best (``fit``: lowest), on a grid of
    # about 8 samples per block side (the slide's grid, so tiles agree with each other).
    stride = max(round(rendition_block_px / 8), 1)
    first_row, first_col = -origin[0] % stride, -origin[1] % stride
    sample = rgb[first_row::stride, first_col::stride]
    size = max(round(rendition_block_px / stride), 1)

    def fit(rendition: StainEstimate) -> np.ndarray:
        # Two ways a rendition fails to explain a block: its red cells and plasma pass for
        # nuclei (the share above the threshold), or they lie off its red-cell line (the median
        # off-hue density, robust to the few nucleus pixels). The share alone prefers a
        # rendition under which the block's own nucleus vanishes; the median alone is blind to
        # a hue that is right but a density that is not. Weights chosen on the DeepBioNet
        # train mosaic (docs/detection.md).
        share = (nucleus_contrast(sample, rendition, **scales) > threshold).astype(np.float32)
        share = ndi.uniform_filter(share, size=size, mode="nearest")
        off_hue = ndi.median_filter(off_hue_density(sample, rendition), size=size, mode="nearest")
        return share + OFF_HUE_WEIGHT * off_hue

    fits = np.stack([fit(r) for r in stain.renditions])
    grid = np.argmin(fits, axis=0)  # ties: the earlier rendition
    height, width = rgb.shape[:2]
    rows = np.clip(np.round((np.arange(height) - first_row) / stride).astype(np.intp), 0,
                   grid.shape[0] - 1)  # fmt: skip
    cols = np.clip(np.round((np.arange(width) - first_col) / stride).astype(np.intp), 0,
                   grid.shape[1] - 1)  # fmt: skip
    choice = grid[rows[:, None], cols[None, :]]
    used = np.unique(grid)
    contrast = under(stain.renditions[int(used[0])])
    for k in used[1:]:
        np.copyto(contrast, under(stain.renditions[int(k)]), where=choice == k)
    return contrast
