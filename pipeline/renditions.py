"""Slides of several colour renditions: finding them among the stain windows, and confirming
each cell found under them with the stain of its own neighbourhood.

A slide is one stain bath and one lamp, but a slide made of several (fields stained or scanned
apart, a strong stain gradient, the DeepBioNet mosaic of ``docs/detection.md`` that lays blue,
grey, olive and yellow renditions side by side) has no one background and red-cell colour: under
one estimate, another rendition's red cells and plasma pass for nuclei. Nothing here is fitted
to a source's colours: a rendition is whatever the slide's own windows say, and a cell stands
when a detection with the stain of the square around it alone finds it too.

The estimates made here (a rendition's, a proposal's square) keep the dense foreground's first
estimate, without the second look of a sample rich in leukocytes
(:mod:`leukoscreen.pipeline.stain`, step 2): a square around a proposal holds a leukocyte by
construction. With the look in the renditions' own estimates the DeepBioNet test mosaic at x4
fell from recall 0.982 to 0.934, and to 0.931 with it in the squares too (2026-12-08). The
slide's own estimate takes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from leukoscreen.pipeline.cell_table import CellTable
from leukoscreen.pipeline.stain import (
    StainEstimate,
    bright_background,
    estimate_stain,
    nucleus_contrast,
    plasma_at,
    tinted_share,
)

MISFIT_LIMIT = 0.15  # windows with more would-be nucleus pixels than this are not explained
MIN_RENDITION_WINDOWS = 8  # fewest stain windows that make a rendition of their own
EXCLUSIVE_SHARE = 0.5  # a new rendition must fail on this share of the windows others explain
CLOSER_LOOK_WINDOWS = 2  # fewest unexplained stain windows that call for a denser sample


class RenditionSearch(NamedTuple):
    """What :func:`search_renditions` found: the estimate, how many stain windows the slide's
    own estimate did not explain (none or a few on a slide of one rendition, where a window
    holds several leukocytes), and whether a denser sample of windows could find a rendition
    this one missed: where renditions were found (a small one may hold too few windows), or
    where the unexplained windows' own estimate fails where the others' fits, as another
    rendition's does, but they are too few (under ``min_windows``) to make one."""

    stain: StainEstimate
    unexplained: int
    look_closer: bool


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


def search_renditions(
    images: Sequence[np.ndarray],
    stain: StainEstimate,
    *,
    residual_scale: float,
    darkness_scale: float,
    threshold: float,
    max_renditions: int = 4,
    misfit_limit: float = MISFIT_LIMIT,
    min_windows: int = MIN_RENDITION_WINDOWS,
    exclusive_share: float = EXCLUSIVE_SHARE,
    tint_block_px: int = 0,
) -> RenditionSearch:
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
        exclusive_share: a new estimate is another rendition only if it fails (``misfit``
            above ``misfit_limit``) on at least this share of the windows the others explain.
        tint_block_px: with it, each rendition's ``tinted_share`` is measured on its windows.

    Returns:
        The estimate (``stain`` itself when one estimate explains the slide, else ``stain``
        with ``renditions``, the first made of the windows the slide's estimate explains best)
        how many windows the slide's estimate left unexplained, and whether to look again
        with more windows (:class:`RenditionSearch`).
    """
    if max_renditions < 2 or not stain.has_foreground or len(images) < 2 * min_windows:
        return RenditionSearch(stain, 0, False)
    options = {"residual_scale": residual_scale, "darkness_scale": darkness_scale,
               "threshold": threshold}  # fmt: skip
    candidates = [stain]
    fits = [[misfit(image, stain, **options) for image in images]]
    unexplained_by_slide = int(np.count_nonzero(np.array(fits[0]) > misfit_limit))
    too_few = False  # unexplained windows that look like another rendition, but too few
    while len(candidates) < max_renditions:
        explained = np.min(fits, axis=0) <= misfit_limit
        unexplained = np.flatnonzero(~explained)
        if len(unexplained) < CLOSER_LOOK_WINDOWS:
            break
        new = estimate_stain(
            np.concatenate([images[int(i)].reshape(-1, 3) for i in unexplained]), second_look=False
        )
        if not new.has_foreground:
            break
        new_fits = np.array([misfit(image, new, **options) for image in images])
        # Another rendition fails on the windows the others explain (their plasma and red cells
        # are not its own). One that explains them too is not another rendition but a more
        # permissive estimate (made of windows a leukocyte fills, say): it would hide nuclei.
        if explained.any() and np.mean(new_fits[explained] > misfit_limit) < exclusive_share:
            break
        if len(unexplained) < min_windows:
            too_few = True
            break
        candidates.append(new)
        fits.append(list(new_fits))
    if len(candidates) == 1:
        return RenditionSearch(stain, unexplained_by_slide, too_few)
    renditions = _own_estimates(images, np.argmin(fits, axis=0), len(candidates),
                                min_windows=min_windows, tint_block_px=tint_block_px)  # fmt: skip
    found = replace(stain, renditions=tuple(renditions)) if len(renditions) > 1 else stain
    return RenditionSearch(found, unexplained_by_slide, too_few or found is not stain)


def _own_estimates(
    images: Sequence[np.ndarray], owner: np.ndarray, count: int, *, min_windows: int,
    tint_block_px: int,
) -> list[StainEstimate]:  # fmt: skip
    """Each of ``count`` renditions estimated again from the windows it explains best
    (``owner``, ties to the earlier one, the slide's own first); those with fewer than
    ``min_windows`` windows or no foreground are dropped."""
    renditions = []
    for k in range(count):
        mine = [images[int(i)] for i in np.flatnonzero(owner == k)]
        if len(mine) < min_windows:
            continue
        own = estimate_stain(
            np.concatenate([image.reshape(-1, 3) for image in mine]), second_look=False
        )
        if not own.has_foreground:
            continue
        if tint_block_px:
            own = replace(own, tinted_share=tinted_share(mine, own, block_px=tint_block_px))
        renditions.append(own)
    return renditions


def confirm_locally(
    rgb: np.ndarray,
    proposals: Sequence[CellTable],
    detect: Callable[[np.ndarray, tuple[int, int], tuple[float, float]], CellTable],
    *,
    window_px: int,
    match_px: float,
) -> CellTable:
    """Keep the proposed cells that a detector with the stain of their own neighbourhood finds.

    On a slide of several renditions, each rendition's detector (``proposals``, one table per
    rendition, run over all of ``rgb``) finds the leukocytes of its own regions and takes some
    of the other regions' red cells for nuclei. Which region is which need not be decided:
    around each proposal, a square of ``window_px`` is detected again with a stain estimated
    from that square alone (``detect(window, offset)``), where one rendition dominates. A
    proposal stands when that local detection has a cell within ``match_px`` of it; the local
    cell (its centre, box and area, measured under the local stain) is what is kept, once.

    Args:
        rgb: (H, W, 3) uint8, the array the proposals were found in.
        proposals: one table per rendition, coordinates in pixels of ``rgb``.
        detect: detection of a window with its own stain estimate (:func:`window_stain`),
            called with the window, its (row, col) in ``rgb`` and the proposal's (row, col)
            in the window.
        window_px: side of the neighbourhood, pixels.
        match_px: largest distance between a proposal and its local cell, pixels.

    Returns:
        The confirmed cells in (row, col) order, no two within ``match_px`` of each other.
    """
    candidates = CellTable.concat(list(proposals)).sorted()
    height, width = rgb.shape[:2]
    half = max(window_px // 2, 1)
    kept: list[CellTable] = []
    centres: list[tuple[float, float]] = []
    for i in range(len(candidates)):
        row, col = float(candidates.row[i]), float(candidates.col[i])
        if any(np.hypot(row - r, col - c) < match_px for r, c in centres):
            continue  # this cell was confirmed from another rendition's proposal
        r0, c0 = max(int(row) - half, 0), max(int(col) - half, 0)
        r1, c1 = min(int(row) + half, height), min(int(col) + half, width)
        local = detect(rgb[r0:r1, c0:c1], (r0, c0), (row - r0, col - c0)).shifted(r0, c0)
        if len(local) == 0:
            continue
        distance = np.hypot(local.row - row, local.col - col)
        nearest = int(np.argmin(distance))
        if distance[nearest] >= match_px:
            continue
        cell = local.take(np.array([nearest]))
        if any(np.hypot(cell.row[0] - r, cell.col[0] - c) < match_px for r, c in centres):
            continue
        kept.append(cell)
        centres.append((float(cell.row[0]), float(cell.col[0])))
    return CellTable.concat(kept).sorted() if kept else CellTable.empty()


def window_stain(
    window: np.ndarray, centre: tuple[float, float], *, tint_block_px: int
) -> StainEstimate:
    """The stain of a proposal's neighbourhood, against the plasma around the proposal itself.

    The window's brightest pixels are its background where it holds one plasma. Where it
    straddles two (a field's edge on a slide of several renditions), they belong to the
    brighter one, and the red cells of the other, measured against it, take the colour of
    their own plasma on top of theirs and pass for nuclei (more so when the brighter plasma
    clips at 255: ``docs/detection.md``, colour shifts). So the background is the plasma at
    the proposal (:func:`~leukoscreen.pipeline.stain.plasma_at`, a closing of half the window's
    side), unless that is darker than half the window's background (a cell in a clump: no
    plasma near it), and the red cells and tint are measured against it.

    Args:
        window: (H, W, 3) uint8, the square around the proposal.
        centre: the proposal's (row, col) in ``window``.
        tint_block_px: block of :func:`~leukoscreen.pipeline.stain.tinted_share`, pixels
            (0: the tint is not measured).
    """
    if window.size == 0:
        return estimate_stain(window)  # no foreground: no cells
    plasma = plasma_at(window, centre, block_px=max(min(window.shape[:2]) // 2, 3))
    brightest = bright_background(window)  # what estimate_stain(window) would take
    stain = estimate_stain(
        window, second_look=False,
        background_rgb=plasma if sum(plasma) >= 0.5 * sum(brightest) else brightest,
    )  # fmt: skip
    if tint_block_px and stain.has_foreground:
        stain = replace(stain, tinted_share=tinted_share([window], stain, block_px=tint_block_px))
    return stain
