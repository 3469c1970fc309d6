"""Measure super-resolution quality in place: SR cells of the example slide vs the real pixels.

The BCCD test fields are built into the example mosaics (``tools/build_example.py``:
the full-resolution mosaic, and the same mosaic shrunk x8 / x4 with the MATLAB-style bicubic into
an ``.svs``). The real pipeline (:func:`leukoscreen.pipeline.run.run_slide`: detection, crops,
SR, Zarr store) runs on the shrunk slide once per network; each stored SR cell is then compared
with the same cell cut from the full-resolution mosaic.

Footprint (mirrors :mod:`leukoscreen.pipeline.crops`): a cell of centre ``(row, col)`` (level-0
px of the shrunk slide) has the LR core ``[core_row0, core_row0 + core_px)`` with
``core_row0 = floor(row + 0.5) - core_px // 2`` (:func:`~leukoscreen.pipeline.crops.crop_origins`
with no margin), and the same for columns. LR pixel ``i`` is the bicubic shrink of full-resolution
pixels ``[i * scale, (i + 1) * scale)`` (both share the pixel-area convention of MATLAB's
``imresize``), so the SR cell, ``hr_size_px`` square after the context margin is trimmed, covers
full-resolution rows ``[core_row0 * scale, core_row0 * scale + hr_size_px)``. The script checks
this on a few cells: bicubic's PSNR against the reference is highest at zero shift among shifts of
up to 2 px in each direction, or it stops with an error.

Scoring: PSNR and SSIM of the luminance (MATLAB ``rgb2ycbcr`` Y in [0, 1], float32) with
``shave = scale`` px per side (:mod:`leukoscreen.model.metrics`), averaged over the cells whose
whole LR crop, context margin included, lies inside the slide (no white border padding feeds the
network); cells that touch the padding are counted and left out.

Run from the project root (the built mosaics and stores are kept in ``--cache``, git-ignored)::

    python tools/sr_quality.py --bccd ../shared/data/BCCD --scale 8 \\
        --arch gp --arch bicubic --doc docs/sr-in-place.md

Without ``--arch``, bicubic and every network with shipped weights at the scale are measured.
When the BCCD folder is absent the script says so and exits with status 0 (nothing to measure).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from build_example import build, read_split
from numpy.typing import NDArray

from leukoscreen.model.checkpoint import read_manifest, resolve_arch
from leukoscreen.model.imresize import rgb2y
from leukoscreen.model.metrics import psnr, ssim
from leukoscreen.pipeline.config import Config, load_config, override
from leukoscreen.pipeline.crops import CropGeometry, crop_origins

DEFAULT_CACHE = Path(".example-build")
SPLIT = "test"
ALIGN_SHIFT_PX = 2  # the alignment check tries every shift up to this in rows and columns
ALIGN_CELLS = 3  # cells the alignment check runs on


# ----------------------------------------------------------------------------- geometry


def hr_footprint(
    rows: NDArray[np.floating], cols: NDArray[np.floating], geometry: CropGeometry
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Top-left full-resolution pixel of each SR cell's footprint.

    Args:
        rows: (N,) cell-centre rows, level-0 px of the shrunk slide (the store's ``row``).
        cols: (N,) cell-centre columns.
        geometry: the run's crop geometry.

    Returns:
        ``(hr_row0, hr_col0)``, each (N,) int64: the SR cell of cell ``i`` covers full-resolution
        rows ``[hr_row0[i], hr_row0[i] + hr_size_px)`` and the same for columns (may be negative
        for cells at the slide border).
    """
    row0, col0 = crop_origins(rows, cols, size_px=geometry.core_px, margin_px=0)
    return row0 * geometry.scale, col0 * geometry.scale


def crop_inside(
    rows: NDArray[np.floating],
    cols: NDArray[np.floating],
    geometry: CropGeometry,
    lr_shape: tuple[int, int],
) -> NDArray[np.bool_]:
    """Whether each cell's whole LR crop (core and context margin) lies inside the slide.

    Args:
        rows: (N,) cell-centre rows, level-0 px.
        cols: (N,) cell-centre columns.
        geometry: the run's crop geometry.
        lr_shape: (height, width) of the slide's level 0.

    Returns:
        (N,) bool; False where the crop reads white padding past the slide edge.
    """
    row0, col0 = crop_origins(rows, cols, size_px=geometry.core_px, margin_px=geometry.margin_px)
    side = geometry.read_px
    return (row0 >= 0) & (col0 >= 0) & (row0 + side <= lr_shape[0]) & (col0 + side <= lr_shape[1])


def cut_reference(
    mosaic: NDArray[np.uint8],
    hr_row0: int,
    hr_col0: int,
    size_px: int,
    shift: tuple[int, int] = (0, 0),
) -> NDArray[np.uint8]:
    """Cut one SR cell's footprint (optionally shifted) from the full-resolution mosaic.

    Args:
        mosaic: (H, W, 3) uint8 full-resolution RGB.
        hr_row0: footprint's first row (:func:`hr_footprint`).
        hr_col0: footprint's first column.
        size_px: side of the SR cell, ``hr_size_px``.
        shift: (rows, cols) added to the origin (the alignment check).

    Returns:
        (size_px, size_px, 3) uint8.

    Raises:
        ValueError: the (shifted) footprint reaches outside the mosaic.
    """
    r0, c0 = hr_row0 + shift[0], hr_col0 + shift[1]
    if r0 < 0 or c0 < 0 or r0 + size_px > mosaic.shape[0] or c0 + size_px > mosaic.shape[1]:
        raise ValueError(
            f"footprint rows [{r0}, {r0 + size_px}) cols [{c0}, {c0 + size_px}) is outside the "
            f"mosaic {mosaic.shape[:2]}"
        )
    return mosaic[r0 : r0 + size_px, c0 : c0 + size_px]


def luminance(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Y of MATLAB's ``rgb2ycbcr`` in [0, 1], float32: (..., 3) uint8 -> (...)."""
    return rgb2y(np.asarray(rgb, dtype=np.float64) / 255.0).astype(np.float32)


def score_cell(
    reference: NDArray[np.uint8], sr: NDArray[np.uint8], scale: int
) -> tuple[float, float]:
    """``(psnr, ssim)`` on Y, float32, shave = ``scale``."""
    ref_y, sr_y = luminance(reference), luminance(sr)
    return psnr(ref_y, sr_y, shave_px=scale), ssim(ref_y, sr_y, shave_px=scale)


def shift_psnr(
    mosaic: NDArray[np.uint8],
    sr: NDArray[np.uint8],
    hr_row0: int,
    hr_col0: int,
    scale: int,
    max_shift_px: int = ALIGN_SHIFT_PX,
) -> NDArray[np.float64]:
    """PSNR of one SR cell against its footprint shifted by ``-max..max`` px in rows and columns.

    Returns:
        (2 * max_shift_px + 1, 2 * max_shift_px + 1) PSNR in dB; the centre is zero shift.
    """
    size = sr.shape[0]
    sr_y = luminance(sr)
    span = range(-max_shift_px, max_shift_px + 1)
    grid = np.empty((len(span), len(span)))
    for i, dr in enumerate(span):
        for j, dc in enumerate(span):
            ref = cut_reference(mosaic, hr_row0, hr_col0, size, (dr, dc))
            grid[i, j] = psnr(luminance(ref), sr_y, shave_px=scale)
    return grid


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ArchResult:
    """Quality of one network's SR cells at one scale.

    Attributes:
        arch: network name (``bicubic``: no network).
        scale: SR factor.
        precision: the network's arithmetic, resolved (``bf16 on cpu``; ``-`` for bicubic).
        checkpoint_sha256: the weights' hash as the store records it ('' for bicubic).
        n_cells: cells in the store.
        n_scored: cells whose LR crop lies wholly inside the slide (scored).
        psnr_db: mean PSNR on Y over the scored cells, dB.
        ssim: mean SSIM on Y over the scored cells.
        psnr_median_db: median PSNR, dB.
        run_s: wall seconds of the pipeline run (0 when the store was reused).
        cell_ids: the scored cells' ids.
        cell_psnr_db: per scored cell PSNR, same order.
        cell_ssim: per scored cell SSIM.
    """

    arch: str
    scale: int
    precision: str
    checkpoint_sha256: str
    n_cells: int
    n_scored: int
    psnr_db: float
    ssim: float
    psnr_median_db: float
    run_s: float
    cell_ids: list[int] = field(repr=False)
    cell_psnr_db: list[float] = field(repr=False)
    cell_ssim: list[float] = field(repr=False)


@dataclass(frozen=True)
class Alignment:
    """The footprint check on a few cells with the bicubic SR.

    Attributes:
        scale: SR factor.
        cell_ids: the cells checked.
        zero_shift_psnr_db: PSNR at zero shift per cell.
        best_shifted_psnr_db: best PSNR over the non-zero shifts per cell.
        best_shift: the shift (rows, cols) giving the highest PSNR per cell.
    """

    scale: int
    cell_ids: list[int]
    zero_shift_psnr_db: list[float]
    best_shifted_psnr_db: list[float]
    best_shift: list[tuple[int, int]]

    @property
    def ok(self) -> bool:
        """Zero shift is the best for every checked cell."""
        return all(s == (0, 0) for s in self.best_shift)


# ----------------------------------------------------------------------------- building/running


def ensure_mosaics(bccd: Path, cache: Path, scales: tuple[int, ...]) -> dict[int, Path]:
    """Build the test-split mosaics into ``cache`` unless an identical build is there.

    A stamp file (``sr_quality_build.json``) records the split list's sha256 and the scales; the
    mosaics are rebuilt when it differs or a file is missing.

    Returns:
        Path per scale, with 1 for the full-resolution TIFF.
    """
    split_list = (bccd / "ImageSets" / "Main" / f"{SPLIT}.txt").read_bytes()
    read_split(bccd, SPLIT)  # a clear DataError for a missing or empty list
    stamp = {
        "split": SPLIT,
        "split_sha256": hashlib.sha256(split_list).hexdigest(),
        "scales": sorted(scales),
    }
    paths = {1: cache / f"bccd_{SPLIT}_x1.tif"}
    paths.update({s: cache / f"bccd_{SPLIT}_x{s}.svs" for s in scales})
    stamp_path = cache / "sr_quality_build.json"
    try:
        old = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        old = None
    present = all(p.is_file() and p.with_suffix(".json").is_file() for p in paths.values())
    if (
        old is not None
        and present
        and old["split_sha256"] == stamp["split_sha256"]
        and set(scales) <= set(old["scales"])
    ):
        return paths
    print(f"building the BCCD {SPLIT} mosaics into {cache} ...", file=sys.stderr, flush=True)
    written = build(bccd, cache, split=SPLIT, scales=tuple(sorted(scales)), full_resolution=True)
    stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")
    return {s: written[s] for s in paths}


def shipped_archs(scale: int) -> list[str]:
    """Networks with shipped weights at ``scale``, from the weights manifest."""
    archs = []
    for key in sorted(read_manifest()):
        arch, _, tail = key.rpartition("_x")
        if arch and tail == str(scale):
            archs.append(arch)
    return archs


def expected_sha256(arch: str, scale: int) -> str:
    """The hash a store made with the shipped ``arch`` weights records ('' for bicubic)."""
    if arch == "bicubic":
        return ""
    return str(read_manifest()[f"{resolve_arch(arch)}_x{scale}"]["sha256"])


def run_pipeline(
    slide: Path, store: Path, config: Config, *, rerun: bool
) -> tuple[float, dict[str, Any]]:
    """Run ``leukoscreen run`` on ``slide`` into ``store`` unless a matching complete store exists.

    Returns:
        Wall seconds of the run (0 when reused) and the store's attributes.
    """
    from leukoscreen.pipeline import store as zstore
    from leukoscreen.pipeline.run import run_slide

    inference = config.inference
    if not rerun and zstore.is_store(store):
        attrs = zstore.read_attrs(store)
        want = expected_sha256(inference.arch, inference.scale)
        if (
            attrs.get("status") == "complete"
            and attrs["model"]["arch"] == resolve_arch(inference.arch)
            and attrs["scale"] == inference.scale
            and attrs["model"]["checkpoint_sha256"] == want
            and attrs["config"]["inference"] == json.loads(json.dumps(asdict(inference)))
        ):
            print(f"reusing {store}", file=sys.stderr, flush=True)
            return 0.0, attrs
    print(f"running the pipeline: {inference.arch} x{inference.scale} -> {store}", file=sys.stderr)
    start = time.perf_counter()
    run_slide(slide, config, out=store, overwrite=True, progress=False)
    return time.perf_counter() - start, zstore.read_attrs(store)


def measure_store(
    store: Path,
    mosaic: NDArray[np.uint8],
    lr_shape: tuple[int, int],
    run_s: float,
    precision: str = "-",
) -> tuple[ArchResult, NDArray[np.uint8], NDArray[np.int64], NDArray[np.int64], NDArray[np.intp]]:
    """Score every in-slide SR cell of a store against the full-resolution mosaic.

    Returns:
        The result, the scored cells' SR pixels (n, H, W, 3), their footprint origins, and their
        indices in the store.
    """
    from leukoscreen.pipeline.store import open_cells

    cells = open_cells(store)
    attrs = cells.attrs
    geometry = CropGeometry(
        scale=int(attrs["scale"]),
        hr_size_px=int(attrs["geometry"]["hr_size_px"]),
        margin_px=int(attrs["geometry"]["context_margin_px"]),
    )
    rows, cols = cells.table["row"], cells.table["col"]
    keep = np.flatnonzero(crop_inside(rows, cols, geometry, lr_shape))
    hr_row0, hr_col0 = hr_footprint(rows[keep], cols[keep], geometry)
    sr = np.asarray(cells.sr[keep].compute()) if len(keep) else np.zeros((0, 1, 1, 3), np.uint8)
    scores = [
        score_cell(
            cut_reference(mosaic, int(r), int(c), geometry.hr_size_px), sr[i], geometry.scale
        )
        for i, (r, c) in enumerate(zip(hr_row0, hr_col0, strict=True))
    ]
    psnrs = [p for p, _ in scores]
    ssims = [s for _, s in scores]
    result = ArchResult(
        arch=str(attrs["model"]["arch"]),
        scale=geometry.scale,
        precision=precision,
        checkpoint_sha256=str(attrs["model"]["checkpoint_sha256"]),
        n_cells=len(cells),
        n_scored=len(keep),
        psnr_db=float(np.mean(psnrs)) if psnrs else float("nan"),
        ssim=float(np.mean(ssims)) if ssims else float("nan"),
        psnr_median_db=float(np.median(psnrs)) if psnrs else float("nan"),
        run_s=run_s,
        cell_ids=[int(i) for i in cells.table["cell_id"][keep]],
        cell_psnr_db=psnrs,
        cell_ssim=ssims,
    )
    return result, sr, hr_row0, hr_col0, keep


def check_alignment(
    mosaic: NDArray[np.uint8],
    sr: NDArray[np.uint8],
    hr_row0: NDArray[np.int64],
    hr_col0: NDArray[np.int64],
    cell_ids: list[int],
    scale: int,
    n_cells: int = ALIGN_CELLS,
) -> Alignment:
    """Run :func:`shift_psnr` on the first ``n_cells`` cells far enough from the mosaic edge."""
    size, pad = sr.shape[1], ALIGN_SHIFT_PX
    chosen = [
        i
        for i in range(len(sr))
        if hr_row0[i] >= pad
        and hr_col0[i] >= pad
        and hr_row0[i] + size + pad <= mosaic.shape[0]
        and hr_col0[i] + size + pad <= mosaic.shape[1]
    ][:n_cells]
    zero, best_other, best_shift = [], [], []
    for i in chosen:
        grid = shift_psnr(mosaic, sr[i], int(hr_row0[i]), int(hr_col0[i]), scale)
        centre = ALIGN_SHIFT_PX
        zero.append(float(grid[centre, centre]))
        others = grid.copy()
        others[centre, centre] = -np.inf
        best_other.append(float(others.max()))
        r, c = np.unravel_index(int(np.argmax(grid)), grid.shape)
        best_shift.append((int(r) - centre, int(c) - centre))
    return Alignment(scale, [cell_ids[i] for i in chosen], zero, best_other, best_shift)


def measure(
    bccd: Path,
    cache: Path,
    scales: tuple[int, ...],
    archs: tuple[str, ...] | None,
    config: Config,
    *,
    precisions: tuple[str, ...] = ("auto",),
    rerun: bool = False,
) -> tuple[list[ArchResult], list[Alignment], list[str]]:
    """Build, run the pipeline per network and scale, and score.

    Args:
        bccd: the BCCD folder.
        cache: folder for the mosaics and stores (kept between runs).
        scales: SR factors.
        archs: networks to measure; ``None`` means bicubic plus every shipped network.
        config: the base config (arch, scale and precision are set per run).
        precisions: ``inference.precision`` values; each network runs once per value (bicubic
            once: it has no network).
        rerun: rerun the pipeline even when a matching complete store is cached.

    Returns:
        Results per (scale, arch), the alignment check per scale, and notes on skipped networks.

    Raises:
        RuntimeError: the alignment check fails (the footprint is not where the SR cell is).
    """
    cache.mkdir(parents=True, exist_ok=True)
    paths = ensure_mosaics(bccd, cache, scales)
    mosaic = np.asarray(tifffile.imread(paths[1]))  # (H, W, 3) uint8, ~85 MB for the test split
    results: list[ArchResult] = []
    alignments: list[Alignment] = []
    notes: list[str] = []
    for scale in scales:
        lr_shape = (mosaic.shape[0] // scale, mosaic.shape[1] // scale)
        shipped = shipped_archs(scale)
        wanted = list(archs) if archs else ["bicubic", *shipped]
        if not archs and not shipped:
            notes.append(f"x{scale}: no network weights shipped yet (model/weights/manifest.json)")
        if "bicubic" not in wanted:
            wanted.insert(0, "bicubic")  # the alignment check and the baseline need it
        for arch in dict.fromkeys(wanted):
            if arch != "bicubic" and arch not in shipped:
                notes.append(f"{arch} x{scale}: no shipped weights (model/weights/manifest.json)")
                print(f"skipping {notes[-1]}", file=sys.stderr)
                continue
            for precision in precisions[:1] if arch == "bicubic" else precisions:
                cfg = override(
                    config,
                    **{
                        "inference.arch": arch,
                        "inference.scale": scale,
                        "inference.precision": precision,
                    },
                )
                tag = arch if precision == "auto" else f"{arch}.{precision}"
                store = cache / f"bccd_{SPLIT}_x{scale}.{tag}.leukoscreen.zarr"
                run_s, _ = run_pipeline(paths[scale], store, cfg, rerun=rerun)
                resolved = "-" if arch == "bicubic" else resolved_precision(cfg)
                result, sr, hr_row0, hr_col0, _ = measure_store(
                    store, mosaic, lr_shape, run_s, resolved
                )
                results.append(result)
                print(
                    f"x{scale} {arch} ({resolved}): PSNR {result.psnr_db:.2f} dB, SSIM "
                    f"{result.ssim:.4f} over {result.n_scored}/{result.n_cells} cells",
                    file=sys.stderr,
                )
            if arch == "bicubic":
                alignment = check_alignment(mosaic, sr, hr_row0, hr_col0, result.cell_ids, scale)
                alignments.append(alignment)
                if not alignment.ok or not alignment.cell_ids:
                    raise RuntimeError(
                        f"x{scale}: footprint alignment check failed: best shifts "
                        f"{alignment.best_shift} (expected (0, 0) for cells {alignment.cell_ids})"
                    )
    return results, alignments, notes


# ----------------------------------------------------------------------------- report


def render(
    results: list[ArchResult],
    alignments: list[Alignment],
    notes: list[str],
    command: str,
    config: Config,
    device: str,
) -> str:
    """The Markdown report."""
    inference = config.inference
    lines = [
        "# Super-resolution quality in place (example slide)",
        "",
        'Measured by `tools/sr_quality.py` (issue 4, target "SR quality in',
        'place"). Command, run from the project root:',
        "",
        "```",
        command,
        "```",
        "",
        "The BCCD test-split fields are tiled into a mosaic and shrunk with the MATLAB-style",
        "bicubic into a pyramidal `.svs`, exactly as the committed example slide",
        "(`tools/build_example.py`). `leukoscreen run` (detection, crops, SR, Zarr",
        f"store; {inference.hr_size_px} px cells, {inference.context_margin_px} LR px of context",
        f"trimmed after SR, device `{inference.device}` = {device}) runs on that slide once per",
        "network. Each stored SR cell is compared with the same cell cut from the",
        "full-resolution mosaic at its exact footprint: full-resolution rows",
        "`[core_row0 * scale, core_row0 * scale + hr_size_px)` with",
        "`core_row0 = floor(row + 0.5) - (hr_size_px // scale) // 2`, as `pipeline/crops.py`, and",
        "the same for columns.",
        "",
        "PSNR and SSIM are on Y (MATLAB `rgb2ycbcr`, [0, 1], float32) with `shave = scale` px per",
        "side (`leukoscreen.model.metrics`), averaged over the cells whose whole LR crop, context",
        "margin included, lies inside the slide (the others read white padding and are left out).",
        "",
        "| scale | network | precision | weights sha256 | cells in store | cells scored |"
        " PSNR (dB) | median PSNR (dB) | SSIM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        sha = r.checkpoint_sha256[:12] or "-"
        lines.append(
            f"| x{r.scale} | {r.arch} | {r.precision} | {sha} | {r.n_cells} | {r.n_scored} "
            f"| {r.psnr_db:.2f} | {r.psnr_median_db:.2f} | {r.ssim:.4f} |"
        )
    comparisons = []
    for r in results:
        base = next((b for b in results if b.scale == r.scale and b.arch == "bicubic"), None)
        if base is None or r.arch == "bicubic" or base.cell_ids != r.cell_ids:
            continue
        gain = np.asarray(r.cell_psnr_db) - np.asarray(base.cell_psnr_db)
        ssim_gain = np.asarray(r.cell_ssim) - np.asarray(base.cell_ssim)
        comparisons.append(
            f"- x{r.scale} {r.arch} ({r.precision}) vs bicubic, same {r.n_scored} cells: PSNR "
            f"{float(gain.mean()):+.2f} dB on average (higher on {int((gain > 0).sum())} cells), "
            f"SSIM {float(ssim_gain.mean()):+.4f} (higher on {int((ssim_gain > 0).sum())} cells)."
        )
    if comparisons:
        lines += ["", "Paired per cell:", "", *comparisons]
    weights = []
    manifest = read_manifest()
    for key in dict.fromkeys(f"{r.arch}_x{r.scale}" for r in results if r.arch != "bicubic"):
        entry = manifest.get(key, {})
        metrics = entry.get("metrics", {})
        if metrics:
            shown = ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
            )
            weights.append(f"- {key} ({str(entry.get('sha256', ''))[:12]}): {shown}.")
    if weights:
        lines += [
            "",
            "Shipped weights measured (training metrics from the manifest):",
            "",
            *weights,
        ]
    if notes:
        lines += ["", "Not measured:", "", *[f"- {n}" for n in notes]]
    lines += [
        "",
        "Footprint check (bicubic SR; PSNR against the reference shifted by up to "
        f"{ALIGN_SHIFT_PX} px in rows and columns; zero shift must be the best):",
        "",
        "| scale | cell | PSNR at zero shift (dB) | best shifted PSNR (dB) | best shift |",
        "|---|---|---|---|---|",
    ]
    for a in alignments:
        for cid, zero, other, shift in zip(
            a.cell_ids, a.zero_shift_psnr_db, a.best_shifted_psnr_db, a.best_shift, strict=True
        ):
            lines.append(f"| x{a.scale} | {cid} | {zero:.2f} | {other:.2f} | {shift} |")
    lines += [
        "",
        "The reference is the very image the slide was shrunk from, with the same antialiased",
        "bicubic that made the networks' training pairs, so these figures measure the networks on",
        "their own degradation model, in place on detected cells (crops centred by the detector,",
        "neighbouring red cells and mosaic gaps included), not on a real low-magnification scan.",
        "",
        "Data: BCCD (https://github.com/Shenggan/BCCD_Dataset, MIT licence, copyright (c) 2017",
        "shenggan), split `ImageSets/Main/test.txt`. Per-cell figures are in the JSON beside this",
        "file.",
        "",
    ]
    return "\n".join(lines)


def resolved_precision(config: Config) -> str:
    """The precision the configured one resolves to on this machine, with the device type."""
    from leukoscreen.model.device import resolve_device, resolve_precision

    device = resolve_device(config.inference.device)
    return f"{resolve_precision(config.inference.precision, device)} on {device.type}"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (see the module docstring).

    Returns:
        Exit status: 0 (also when the BCCD folder is absent: nothing to measure).
    """
    from leukoscreen.model.device import resolve_device  # imports torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bccd", type=Path, required=True, help="the BCCD folder")
    parser.add_argument(
        "--scale", type=int, action="append", choices=(4, 8), help="SR factor (repeatable; 8)"
    )
    parser.add_argument(
        "--arch",
        action="append",
        help="network (repeatable); default: bicubic and every network shipped at the scale",
    )
    parser.add_argument("--doc", type=Path, default=None, help="write the Markdown report here")
    parser.add_argument(
        "--json", type=Path, default=None, help="per-cell results (default: the --doc path, .json)"
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="mosaics and stores")
    parser.add_argument("--config", type=Path, default=None, help="leukoscreen TOML config")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda (inference.device)")
    parser.add_argument(
        "--precision",
        action="append",
        choices=("auto", "bf16", "fp32"),
        help="network precision (repeatable: one run per value; default: the config's)",
    )
    parser.add_argument("--rerun", action="store_true", help="rerun the pipeline, ignore cache")
    args = parser.parse_args(argv)
    if not (args.bccd / "ImageSets" / "Main" / f"{SPLIT}.txt").is_file():
        print(
            f"{args.bccd}: BCCD data not found (expected ImageSets/Main/{SPLIT}.txt); "
            "nothing to measure, skipped",
            file=sys.stderr,
        )
        return 0
    config = override(load_config(args.config), **{"inference.device": args.device})
    scales = tuple(dict.fromkeys(args.scale or [8]))
    archs = tuple(args.arch) if args.arch else None
    precisions = tuple(dict.fromkeys(args.precision or [config.inference.precision]))
    results, alignments, notes = measure(
        args.bccd, args.cache, scales, archs, config, precisions=precisions, rerun=args.rerun
    )
    command = "python tools/sr_quality.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    for r in results:
        print(
            f"x{r.scale} {r.arch} ({r.precision}): PSNR {r.psnr_db:.2f} dB  SSIM {r.ssim:.4f}  "
            f"({r.n_scored} of {r.n_cells} cells)"
        )
    json_path = args.json or (args.doc.with_suffix(".json") if args.doc else None)
    device = str(resolve_device(config.inference.device))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": command,
            "device": device,
            "results": [asdict(r) for r in results],
            "alignment": [{**asdict(a), "ok": a.ok} for a in alignments],
            "notes": notes,
        }
        json_path.write_text(json.dumps(payload, indent=1) + "\n")
    if args.doc:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        args.doc.write_text(render(results, alignments, notes, command, config, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
