"""``leukoscreen review``: one static HTML page per store for a person to look through the cells.

The page (``docs/review.md``) shows, for every cell, its super-resolved image beside the bicubic
upsampling of its LR crop, the parsing map as a toggleable coloured overlay, the cell's table row
and a flag the reviewer sets (none / check / artefact), exported as CSV from the page; above the
cells, a thumbnail of the slide with the cells marked. Sorting and filtering by score, area and
parsing confidence run in a small inline script; there is no server and no framework.

Choices:

* **One self-contained file.** Images are WebP data URIs inside the page (SR and bicubic lossy at
  quality ``WEBP_QUALITY``, the overlay lossless with alpha), so a page can be mailed or archived
  alone. A real x8 cell costs about 6 kB of page; 2,000 cells stay far below 50 MB.
* **Lazy images.** The data URIs sit in ``data-src`` attributes and the script moves them into
  ``src`` as cells come within a screen of the viewport (``IntersectionObserver``), so a
  2,000-cell page decodes only the images in view; cells off screen skip layout
  (``content-visibility: auto``).
* **The bicubic is the project's.** :func:`bicubic_baseline` trims the context margin from
  ``cells/lr`` and resizes the core with the MATLAB-style
  :func:`~leukoscreen.model.imresize.imresize`, on RGB. The bicubic ``Upscaler`` of
  :mod:`leukoscreen.model.inference` resizes YCbCr instead; the colour conversion is affine and
  the resize linear with weights summing to 1, so the two agree up to rounding
  (``tests/test_review.py`` checks it).
* **The thumbnail** is read from the slide path recorded in the store, only when that file's
  header sha256 matches the store's; otherwise the page says why and marks the cells on a blank
  map of the slide's size.

The page's HTML is :mod:`leukoscreen.pipeline.review_page` (pure: data in, text out); this
module reads stores and slides, encodes the images (:func:`load_page`) and writes the pages
(:func:`review_stores`).
"""

from __future__ import annotations

import base64
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
from numpy.typing import NDArray
from skimage.measure import block_reduce
from tqdm import tqdm
from zarr.errors import NodeNotFoundError

from leukoscreen.model.errors import OutputError, UsageError
from leukoscreen.model.imresize import imresize
from leukoscreen.model.inference import PARSING_COLOURS
from leukoscreen.pipeline.plan import check_distinct_outputs, store_stem
from leukoscreen.pipeline.review_page import (
    CellImages,
    ReviewPage,
    Thumbnail,
    render_index,
    render_page,
)
from leukoscreen.pipeline.slide import Slide, header_sha256
from leukoscreen.pipeline.store import FORMAT_VERSION, StoredCells, open_cells

WEBP_QUALITY = 90  # lossy WebP quality of the SR, bicubic and thumbnail images
THUMBNAIL_MAX_PX = 1024  # longer side of the slide thumbnail
PAGE_SUFFIX = ".review.html"
ENCODE_CHUNK = 64  # cells whose bicubic bicubic_baseline makes at once
HTML_SUFFIXES = (".html", ".htm")  # --out with one of these is the page itself
INDEX_NAME = "index.html"


# --- images -------------------------------------------------------------------------------------


def bicubic_baseline(lr: NDArray[np.uint8], *, scale: int, margin_px: int) -> NDArray[np.uint8]:
    """The bicubic upsampling of each LR crop's core: what the network is compared with.

    Args:
        lr: (N, h, w, 3) uint8 crops with ``margin_px`` of context per side (``cells/lr``).
        scale: the store's SR factor.
        margin_px: the store's ``context_margin_px``.

    Returns:
        (N, (h - 2 * margin_px) * scale, (w - 2 * margin_px) * scale, 3) uint8 RGB.
    """
    n, h, w, _ = lr.shape
    if n > ENCODE_CHUNK:  # float64 planes: a 2,000-cell call took about 20 GB at once
        return np.concatenate([
            bicubic_baseline(lr[i : i + ENCODE_CHUNK], scale=scale, margin_px=margin_px)
            for i in range(0, n, ENCODE_CHUNK)
        ])  # fmt: skip
    core = lr[:, margin_px : h - margin_px, margin_px : w - margin_px].astype(np.float64)
    ch, cw = core.shape[1:3]
    stacked = core.transpose(1, 2, 0, 3).reshape(ch, cw, n * 3)  # resize all planes at once
    up = imresize(stacked, float(scale)).reshape(ch * scale, cw * scale, n, 3)
    return np.clip(np.rint(up.transpose(2, 0, 1, 3)), 0, 255).astype(np.uint8)


def overlay_rgba(parsing: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Labels (..., H, W) -> (..., H, W, 4) RGBA: the paper's colours, background transparent."""
    alpha = np.where(parsing > 0, 255, 0).astype(np.uint8)  # the page dims it (CSS opacity)
    return np.concatenate([PARSING_COLOURS[parsing], alpha[..., None]], axis=-1)


def data_uri(pixels: NDArray[np.uint8], *, lossless: bool = False) -> str:
    """A (H, W, 3 or 4) uint8 image as a ``data:image/webp;base64,...`` URI."""
    options: dict[str, Any] = {"lossless": True} if lossless else {"quality": WEBP_QUALITY}
    encoded = iio.imwrite("<bytes>", pixels, extension=".webp", **options)
    return "data:image/webp;base64," + base64.b64encode(encoded).decode("ascii")


def encode_cells(
    sr: NDArray[np.uint8],
    parsing: NDArray[np.uint8] | None,
    lr: NDArray[np.uint8],
    *,
    scale: int,
    margin_px: int,
) -> list[CellImages]:
    """Encode a batch of cells for the page.

    Args:
        sr: (n, H, W, 3) uint8 super-resolved cells.
        parsing: (n, H, W) uint8 labels, or ``None``.
        lr: (n, h, w, 3) uint8 LR crops with their context margin.
        scale, margin_px: the store's SR factor and ``context_margin_px``.

    Raises:
        ValueError: the bicubic of the LR core is not the size of the SR image.
    """
    bicubic = bicubic_baseline(lr, scale=scale, margin_px=margin_px)
    if bicubic.shape != sr.shape:
        raise ValueError(
            f"bicubic of the LR core is {bicubic.shape}, the SR cells are {sr.shape}: the LR "
            f"crops do not match scale {scale} and margin {margin_px}"
        )
    overlays = None if parsing is None else overlay_rgba(parsing)
    return [
        CellImages(
            sr=data_uri(sr[i]),
            bicubic=data_uri(bicubic[i]),
            overlay=None if overlays is None else data_uri(overlays[i], lossless=True),
        )
        for i in range(len(sr))
    ]


# --- reading stores and slides ------------------------------------------------------------------


def _reduced_level(slide: Slide, max_side_px: int) -> NDArray[np.uint8]:
    """The coarsest pyramid level at least ``max_side_px`` long (else level 0), block-averaged
    to at most ``max_side_px``, read in strips of rows so a flat slide never loads whole."""
    levels = slide.level_dimensions
    level = max((i for i, (h, w) in enumerate(levels) if max(h, w) >= max_side_px), default=0)
    height, width = levels[level]
    factor = max(1, math.ceil(max(height, width) / max_side_px))
    downsample = slide.level_downsamples[level]
    strip_px = factor * max(1, (16 << 20) // (3 * width * factor * factor))  # <= ~16 MB a strip
    strips = []
    for top in range(0, height, strip_px):
        rows = min(strip_px, height - top)
        # read_region takes the top edge in level-0 pixels; ceil keeps floor(row / ds) == top.
        pixels = slide.read_region(math.ceil(top * downsample), 0, rows, width, level=level)
        strips.append(block_reduce(pixels, (factor, factor, 1), np.mean, cval=255))
    return np.clip(np.rint(np.concatenate(strips)), 0, 255).astype(np.uint8)


def read_thumbnail(attrs: Mapping[str, Any], *, max_side_px: int = THUMBNAIL_MAX_PX) -> Thumbnail:
    """The slide of a store drawn small, or why it cannot be (missing, changed, unreadable).

    Args:
        attrs: the store's ``leukoscreen`` attributes (``slide.path``, ``size_px``, ``mpp``,
            ``header_sha256``); a relative slide path is read from the current folder (the
            run read it from its own).
        max_side_px: longer side of the thumbnail.
    """
    slide_attrs = attrs["slide"]
    path = Path(slide_attrs["path"])
    slide_h, slide_w = (int(v) for v in slide_attrs["size_px"])
    ratio = min(1.0, max_side_px / max(slide_h, slide_w, 1))
    blank = (max(1, round(slide_h * ratio)), max(1, round(slide_w * ratio)))
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        note = f"slide file {path} not found{where}: no image"
        return Thumbnail((slide_h, slide_w), blank, None, note)
    try:
        if header_sha256(path) != slide_attrs["header_sha256"]:
            note = f"slide file {path} is not the slide this store was made from: no image"
            return Thumbnail((slide_h, slide_w), blank, None, note)
        with Slide.open(path, mpp=float(slide_attrs["mpp"])) as slide:
            pixels = _reduced_level(slide, max_side_px)
    except OSError as err:  # SlideReadError is one
        return Thumbnail((slide_h, slide_w), blank, None, f"{path}: {err}: no image")
    return Thumbnail((slide_h, slide_w), pixels.shape[:2], data_uri(pixels), "")


def open_store(path: Path) -> StoredCells:
    """Open a complete store of this format for review.

    Raises:
        UsageError: ``path`` does not exist.
        OutputError: not a leukoscreen store, another format version, not complete, or a cell
            array missing.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such store")
    try:  # open_cells refuses non-stores and unfinished runs, naming the path
        cells = open_cells(path)
    except (NodeNotFoundError, KeyError) as err:
        raise OutputError(f"{path}: incomplete store, a cell array is missing ({err})") from err
    if cells.attrs.get("format_version") != FORMAT_VERSION:
        raise OutputError(
            f"{path}: store format version {cells.attrs.get('format_version')!r}, this "
            f"leukoscreen reads {FORMAT_VERSION}"
        )
    if cells.lr.shape[0] != len(cells.sr) or len(cells.table["cell_id"]) != len(cells.sr):
        raise OutputError(f"{path}: cells/sr, cells/lr and the table disagree on the cell count")
    return cells


def _facts(path: Path, attrs: Mapping[str, Any], n_cells: int) -> dict[str, str]:
    return {
        "store": str(path),
        "slide": str(attrs["slide"]["path"]),
        "cells": str(n_cells),
        "scale": f"x{attrs['scale']}",
        "network": str(attrs["model"]["arch"]),
        "µm/px": f"{attrs['slide']['mpp']:g}",
        "finished": str(attrs["finished_at"]),
        "leukoscreen": str(attrs["leukoscreen_version"]),
    }


def load_page(
    path: Path, cells: StoredCells, *, csv_name: str, progress: bool = False
) -> ReviewPage:
    """Read a store's cells batch by batch and encode them: the page's data.

    Args:
        path: the store.
        cells: the store opened by :func:`open_store`.
        csv_name: file name offered for the flag CSV.
        progress: show a progress bar on stderr.
    """
    geometry = cells.attrs["geometry"]
    scale, margin_px = int(cells.attrs["scale"]), int(geometry["context_margin_px"])
    step = int(geometry["batch_size"])  # one chunk of the cell arrays per read
    encoded: list[CellImages] = []
    n_cells = len(cells)
    with tqdm(total=n_cells, unit="cell", desc=f"review {path.name}", disable=not progress) as bar:
        for start in range(0, n_cells, step):
            stop = min(start + step, n_cells)
            sr = cells.sr[start:stop].compute(scheduler="synchronous")
            lr = cells.lr[start:stop].compute(scheduler="synchronous")
            parsing = None
            if cells.parsing is not None:
                parsing = cells.parsing[start:stop].compute(scheduler="synchronous")
            encoded += encode_cells(sr, parsing, lr, scale=scale, margin_px=margin_px)
            bar.update(stop - start)
    return ReviewPage(
        store=str(path.resolve()),
        run=str(cells.attrs["finished_at"]),
        facts=_facts(path, cells.attrs, n_cells),
        table=cells.table,
        cells=encoded,
        cell_size_px=int(geometry["hr_size_px"]),
        thumbnail=read_thumbnail(cells.attrs),
        csv_name=csv_name,
    )


# --- writing ------------------------------------------------------------------------------------


def default_page(store: Path) -> Path:
    """``<folder of the store>/<store name without .leukoscreen.zarr>.review.html``."""
    return Path(store).parent / f"{store_stem(store)}{PAGE_SUFFIX}"


def page_paths(stores: Sequence[Path], out: Path | None) -> list[Path]:
    """Where each store's page goes: beside the store by default; with ``out``, that file for
    one store when it ends in ``.html``, else the folder ``out`` (:func:`default_page` names).

    Raises:
        UsageError: ``out`` is an existing file that cannot hold the pages, or two stores would
            get one page path.
    """
    if out is None:
        pages = [default_page(store) for store in stores]
    elif len(stores) == 1 and out.suffix.lower() in HTML_SUFFIXES and not out.is_dir():
        pages = [out]
    else:
        if out.exists() and not out.is_dir():
            raise UsageError(
                f"{out}: expected a folder for the review pages (or a .html file for one "
                "store), found a file"
            )
        pages = [out / default_page(store).name for store in stores]
    check_distinct_outputs(stores, pages, kind="review page", inputs="stores")
    return pages


def _check_folder(folder: Path, *, create: bool) -> None:
    """Refuse an output folder that does not exist (or cannot be made) or cannot be written.

    Raises:
        OutputError: naming the folder and the reason.
    """
    if create and not folder.exists():
        try:
            folder.mkdir()
        except OSError as err:
            raise OutputError(
                f"{folder}: cannot create the output folder ({err.strerror})"
            ) from err
    if not folder.is_dir():
        raise OutputError(f"{folder}: output folder does not exist or is not a folder")
    try:  # os.access is wrong for root and read-only mounts: try a real write
        handle, probe = tempfile.mkstemp(prefix=".leukoscreen-probe-", dir=folder)
    except OSError as err:
        raise OutputError(
            f"{folder}: cannot write into the output folder ({err.strerror})"
        ) from err
    os.close(handle)
    os.unlink(probe)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file and a rename: a reader never sees half a page.

    Raises:
        OutputError: the file cannot be written.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # open() keeps the umask
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write the review page ({err.strerror or err})") from err


def review_stores(
    stores: Sequence[Path], *, out: Path | None = None, progress: bool = False
) -> list[Path]:
    """Write one review page per store, and with several stores an ``index.html`` linking them.

    Every store and output folder is checked before the first page is written.

    Args:
        stores: leukoscreen stores (complete).
        out: the page for one store (a ``.html`` path), or the folder for the pages and the
            index (created if missing); default: each page beside its store and the index in
            the current folder.
        progress: show a progress bar per store on stderr.

    Returns:
        The pages written, then the index when there is one.

    Raises:
        UsageError: no store, a missing store, ``out`` an existing file that cannot hold the
            pages, two pages on one path.
        OutputError: not a (complete) store, or an output folder that cannot be written.
    """
    stores = [Path(store) for store in stores]
    if not stores:
        raise UsageError("review: expected at least one store")
    pages = page_paths(stores, out)
    opened = [open_store(store) for store in stores]
    index = (out if out is not None else Path.cwd()) / INDEX_NAME if len(stores) > 1 else None
    folders = {page.parent for page in pages} | ({index.parent} if index else set())
    for folder in sorted(folders):
        _check_folder(folder, create=folder == out)
    for store, cells, page in zip(stores, opened, pages, strict=True):
        stem = page.name.removesuffix(PAGE_SUFFIX) if page.name.endswith(PAGE_SUFFIX) else page.stem
        csv_name = f"{stem}.flags.csv"
        write_text(page, render_page(load_page(store, cells, csv_name=csv_name, progress=progress)))
    if index is None:
        return pages
    entries = [
        (os.path.relpath(page, index.parent), str(store), len(cells))
        for store, cells, page in zip(stores, opened, pages, strict=True)
    ]
    write_text(index, render_index(entries))
    return [*pages, index]
