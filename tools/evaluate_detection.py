"""Leave-one-source-out evaluation of leukocyte detection; writes ``docs/detection.md``.

Lab script (not installed). From the project root, with the data beside the checkout::

    python tools/evaluate_detection.py --data ../shared/data --tune --doc docs/detection.md

Steps:

1. **Tune** (``--tune``; otherwise the last ``docs/results/detection_tuning.json`` is reused):
   a small grid over ``residual_scale`` x ``darkness_scale`` (the thresholds stay 1.0 / 1.4, so
   the grid spans the two ways a nucleus differs from red cells) x ``max_span_um`` (off or on)
   x ``min_area_um2`` (the smallest nucleus: two or three platelets merged reach 12-18 um2)
   on the *train* parts only, as field slides at x4 and x8 (every field a single-stain slide,
   as a lab's slide is), once per tuning set: BCCD only, DeepBioNet only, both. The best mean
   F1 over the set's sources and scales wins (ties: the point nearest the code's defaults).
   Mosaics are not tuned on: a DeepBioNet mosaic puts another stain rendition in every field,
   a stress test of one estimate per slide rather than a slide (see docs/detection.md).
2. **Test parts, per source and scale**, for each tuned configuration: field slides (every field
   its own slide) and one mosaic slide per source (an ``.svs`` through the tiled pipeline path).
3. **Colour shifts** of the same test images (background tint, stain +-30 %, brightness +-20 %)
   with the configuration tuned on both sources.
4. **Pixel sizes** from 0.25 to 1.0 um/px with the same configuration.

The JSON of every figure goes to ``docs/results/detection.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from build_example import write_svs
from cell_image_mosaics import render_section
from detection_scores import (
    Counts,
    score_fields,
    score_slide,
)
from mosaic import (
    COLOUR_SHIFTS,
    Mosaic,
    build_mosaic,
    shift_colours,
)

from leukoscreen.model.fields import read_fields, source_mpp, split_fields
from leukoscreen.pipeline.config import DetectConfig

FOLDERS = {"bccd": "BCCD", "deepbionet": "DeepBioNet", "draaslan": "draaslan"}
TUNING_SETS = {"BCCD": ("bccd",), "DeepBioNet": ("deepbionet",), "both": ("bccd", "deepbionet")}
GRID = {
    "residual_scale": (0.4, 0.5, 0.6, 0.7),
    "darkness_scale": (1.0, 1.5, 2.0),
    "max_span_um": (0.0, 16.0),
    "min_area_um2": (12.0, 20.0, 24.0),
}
SCALES = (4, 8)
MPPS = (0.25, 0.35, 0.5, 0.7, 1.0)
TRAIN_EVERY = 3  # tuning uses every third DeepBioNet train field (about 470): minutes, not hours


class Source:
    """One field source: its fields, split, pixel size, and shrunk layouts cached by mpp."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.fields = read_fields(name, root)
        self.mpp = source_mpp(self.fields)
        self.split = split_fields(self.fields, root=root)
        self._cache: dict[tuple[str, float, bool], list[Mosaic]] = {}

    def layout(self, part: str, mpp: float, *, mosaic: bool) -> list[Mosaic]:
        """Field slides (one per field) or a one-element list with the mosaic, at ``mpp``."""
        key = (part, round(mpp, 6), mosaic)
        if key not in self._cache:
            fields = self.split[part]
            if part == "train" and self.name == "deepbionet":
                fields = fields[::TRAIN_EVERY]
            if mosaic:
                self._cache[key] = [build_mosaic(fields, source_mpp=self.mpp, mpp=mpp)]
            else:
                self._cache[key] = [
                    build_mosaic([f], source_mpp=self.mpp, mpp=mpp, gap_um=0.0) for f in fields
                ]
        return self._cache[key]


def _shifted(layout: list[Mosaic], shift_index: int) -> list[Mosaic]:
    shift = COLOUR_SHIFTS[shift_index]
    return [replace(m, rgb=shift_colours(m.rgb, shift)) for m in layout]


def _score(layout: list[Mosaic], cfg: DetectConfig, *, mosaic: bool, work: Path) -> Counts:
    if not mosaic:
        return score_fields(layout, cfg)
    (m,) = layout
    # One file per mosaic content, written once. (Naming it by id(m) reused the file of a
    # mosaic already garbage-collected: a shifted mosaic got another mosaic's pixels.)
    digest = hashlib.blake2b(np.ascontiguousarray(m.rgb).data, digest_size=12)
    digest.update(np.float64(m.mpp).tobytes())
    path = work / f"mosaic-{digest.hexdigest()}.svs"
    if not path.is_file():
        write_svs(path, m.rgb, m.mpp)
    return score_slide(path, m.boxes, cfg)


def _distance(combo: tuple[float, ...]) -> float:
    """Relative distance of a grid point from the code's default DetectConfig."""
    default = DetectConfig()
    return sum(
        abs(value - getattr(default, name)) / max(GRID[name])
        for name, value in zip(GRID, combo, strict=True)
    )


def tune(sources: dict[str, Source]) -> dict[str, dict[str, object]]:
    """Grid search per tuning set on the train parts (field slides), x4 and x8."""
    results: dict[str, dict[str, object]] = {}
    combos = list(itertools.product(*GRID.values()))
    for set_name, names in TUNING_SETS.items():
        rows = []
        for combo in combos:
            cfg = DetectConfig(**dict(zip(GRID, combo, strict=True)))  # type: ignore[arg-type]
            f1 = []
            for name, scale in itertools.product(names, SCALES):
                src = sources[name]
                layout = src.layout("train", src.mpp * scale, mosaic=False)
                f1.append(score_fields(layout, cfg).f1)
            rows.append({"options": dict(zip(GRID, combo, strict=True)), "mean_f1": np.mean(f1)})
            print(f"tune {set_name} {rows[-1]}", flush=True)
        # Ties (the score is flat near the optimum): the point nearest the code's defaults.
        best = max(range(len(rows)), key=lambda i: (rows[i]["mean_f1"], -_distance(combos[i])))
        results[set_name] = {"options": rows[best]["options"], "grid": rows}
    return results


def _row(counts: Counts) -> dict[str, float | int]:
    return {**asdict(counts), "recall": counts.recall, "precision": counts.precision}


def evaluate(sources: dict[str, Source], tuned: dict[str, dict[str, object]], work: Path) -> dict:
    """Every table of the page (see the module docstring)."""
    out: dict[str, list[dict[str, object]]] = {"loso": [], "shifts": [], "mpp": []}
    both = DetectConfig(**tuned["both"]["options"])  # type: ignore[arg-type]
    for name, src in sources.items():
        for scale, mosaic in itertools.product(SCALES, (False, True)):
            layout = src.layout("test", src.mpp * scale, mosaic=mosaic)
            for set_name, result in tuned.items():
                cfg = DetectConfig(**result["options"])  # type: ignore[arg-type]
                counts = _score(layout, cfg, mosaic=mosaic, work=work)
                out["loso"].append(
                    {
                        "source": name,
                        "scale": scale,
                        "mpp": src.mpp * scale,
                        "mosaic": mosaic,
                        "tuned_on": set_name,
                        **_row(counts),
                    }
                )
                print(out["loso"][-1], flush=True)
            for i, shift in enumerate(COLOUR_SHIFTS):
                counts = _score(_shifted(layout, i), both, mosaic=mosaic, work=work)
                out["shifts"].append(
                    {
                        "source": name,
                        "scale": scale,
                        "mosaic": mosaic,
                        "shift": shift.name,
                        **_row(counts),
                    }
                )
        for mpp, mosaic in itertools.product(MPPS, (False, True)):
            layout = src.layout("test", mpp, mosaic=mosaic)
            counts = _score(layout, both, mosaic=mosaic, work=work)
            out["mpp"].append({"source": name, "mpp": mpp, "mosaic": mosaic, **_row(counts)})
    return out


def _pct(value: float) -> str:
    return f"{value:.3f}"


def cell_image_section(report: dict) -> list[str]:
    """The section on slides made of single-cell images (``tools/cell_image_mosaics.py``)."""
    return [
        "## Slides made of single-cell images (segmentation_WBC, never tuned on)",
        "",
        "A lab that collects leukocyte images (a CellaVision-type analyser, a cell atlas) has a",
        "leukocyte in every image. Laid out as a slide, 15-17 % of the stained pixels are",
        "nuclei (by the expert masks), three to seven times as dense as the red cells, against",
        "about 1 in 1,000 on a smear, and the dense foreground that gives the red-cell estimate",
        "is mostly nuclei. Until 2026-12-08 the estimate was then the nuclei's own colour and no",
        "nucleus stood out:",
        "Dataset 2 (CellaVision) gave recall **0.000** at 0.3, 0.5 and 0.7 um/px, Dataset 1",
        "0.540 at 0.5 um/px (its white-plasma images 0.000 at 0.35-0.7 um/px). Now a slide's",
        "estimate that would call under 5 % of the stained pixels nucleus is made again beneath",
        "the nuclei (`leukoscreen.pipeline.stain`, step 2; `detection.stain.leukocyte_rich` in",
        "the store).",
        "Each dataset is one mosaic per pixel size, every image with its own plasma around it; a",
        f"leukocyte's box is its expert mask's. Command (about {report['seconds'] / 60:.0f} min):",
        "",
        "```",
        report["command"],
        "```",
        "",
        *render_section(report),
        "",
        "- These mosaics were used to design the second look (its 5 % gate: 3 % left Dataset 1",
        "  at 0.540 at 0.5 um/px), so they are not a held-out test of it; the sources of",
        "  ../shared/data that no choice looked at are above (Leave one source out).",
        "- The figures before the second look: the same command on the code of 7150016",
        "  (`git checkout 7150016 -- pipeline/stain.py pipeline/renditions.py`).",
        "- Dataset 1 mixes two renditions, white and yellow plasma, in small images with a",
        "  cell filling most of each. Its white images are found whole. Its yellow images (pale",
        "  ghost red cells, a nucleus as coloured as its cytoplasm) stay the weak case at",
        "  0.345-0.385: there the look would take the plasma's yellow (0.26 OD) for the red",
        "  cells and is refused (`RED_CELL_FLOOR`; without it they reached 0.625-0.925, but BCCD",
        "  fields lost precision to red-cell overlaps). The whole set is found at 0.3, 0.5 and",
        "  1.0 um/px, where the look takes the yellow images' cast against the white plasma",
        "  (0.54 OD) as the reference, but not at 0.7 um/px (0.540), where it is not taken, nor",
        "  at 0.3 um/px under the yellow tint or stain +30 % (0.653, 0.657); the renditions",
        "  search does not separate 40-px images of two plasmas.",
        "- Dataset 2 under brightness +20 %: the clipped plasma lowers the red-cell density",
        "  estimate and red cells touching a leukocyte are taken as a second cell (precision",
        "  0.867-0.915); every other shift moves it by at most 0.01.",
    ]


def render(
    results: dict, tuned: dict, command: str, seconds: float, cell_images: dict | None = None
) -> str:
    """The Markdown page (``cell_images``: ``tools/cell_image_mosaics.py``'s JSON, if run)."""
    lines = [
        "# Leukocyte detection, source by source",
        "",
        "Measured by `tools/evaluate_detection.py` (about "
        f"{seconds / 60:.0f} min on the 2-core CPU). Command, from the project root:",
        "",
        "```",
        command,
        "```",
        "",
        "**What is measured.** A detection matches a leukocyte (WBC) box when its centre lies in",
        "the box, one-to-one (maximum bipartite matching). Each source's fields are shrunk with",
        "the MATLAB-style antialiased bicubic to emulate a low-power scan (x4 and x8 of the",
        "source's own pixel size, which makes its mean leukocyte box 12 um: BCCD "
        "0.0646, DeepBioNet 0.1041, draaslan 0.1305 um/px). Two layouts:",
        "",
        "- *fields*: every field is a slide of its own, so the stain is estimated on that field",
        "  alone (DeepBioNet's fields are colour renditions from blue to yellow; each is, in",
        "  effect, another lab);",
        "- *mosaic*: all test fields in one `.svs` slide (plasma between fields, fields ordered",
        "  by plasma hue), run through the pipeline's tiled path: the slide's own estimate, and",
        "  for the DeepBioNet mosaic, its renditions (below).",
        "",
        "**How detection adapts** (`leukoscreen.pipeline.stain`, `leukoscreen.pipeline.detect`):",
        "each slide's background (plasma or glass), red-cell stain direction and red-cell density",
        "are estimated from windows of its own tiles; a pixel's nucleus contrast is its distance",
        "from the red-cell line in optical density (another hue, or much denser), in units of",
        "that slide's red-cell density, so no colour and no absolute density is a constant of",
        "the code. The estimate is saved in each store's attributes (`detection.stain`). Where a",
        "region's plasma has another colour cast than the slide's (uneven staining or lighting),",
        "that cast is taken off first: each pixel's local background is a grey closing over",
        "`tint_block_um` (20 um, wider than a leukocyte), and the part of its density off the",
        "red-cell hue is divided out (`stain.flatten_tint`; casts under 0.15 OD are left alone,",
        "so an evenly lit slide is untouched).",
        "",
        "**Working pixel size** (`detect.working_mpp` = 1.05 um, `leukoscreen.pipeline.binning`).",
        "A nucleus is found as well at 1 um/px as at 0.25 um/px (the pixel-size table below),",
        "while detection's work grows with the square of the resolution. So a fine scan is",
        "detected on its pixels averaged in the largest whole f x f blocks that keep the working",
        "pixel at or under 1.05 um (f = 2 at 0.42-0.52 um/px, 3 at 0.35, 4 at 0.25-0.26; none",
        "from 0.53 um/px up), on the slide's own grid, so overlapping tiles see the same blocks.",
        "The stain windows are averaged the same way and keep their size in those pixels",
        "(`stain_window_px` working pixels), so the estimate describes the pixels detection sees",
        "from as many of them. Cells are mapped back to the scan's pixels. What it changed",
        "(2026-12-07, the same command before and after; rows at 0.53 um/px and coarser are",
        "unchanged): detection + reading went from 0.36x to 0.57x the raw read rate",
        "(docs/benchmarks.md). Recall held or rose in every row of every table: DeepBioNet x4",
        "mosaic 0.976 / 0.982 to 0.979 / 0.982, draaslan x4 0.980 / 1.000 to 0.990 / 0.990 as",
        "fields and 0.980 / 0.990 to 0.980 / 1.000 as a mosaic, draaslan's mosaic at 0.35 um/px",
        "0.980 / 0.980 to 0.990 / 0.990. Precision fell on the DeepBioNet mosaic: at 0.25 and",
        "0.35 um/px to 0.970 (from 0.979 and 0.973), and under brightness +20 % at x4 to 0.953",
        "(from 0.955), so its worst colour-shift drop went from 0.026 to 0.029 (0.015 since the",
        "local check's background is taken at the proposal, below). BCCD did not",
        "move. Two variants were measured first: averaging only the tiles, with the stain",
        "estimated on the scan's own pixels, cost the draaslan mosaic recall at 0.25 and 0.5",
        "um/px (0.960 at both); averaging the stain windows too but keeping their size in scan",
        "pixels (a quarter of the pixels at 0.52 um/px) gave a drop of 0.020 here, but on a",
        "DeepBioNet *train* mosaic at 0.5 um/px (`tools/train_mosaics.py`, offset 1) recall fell",
        "from 0.979 to 0.959, where windows of as many working pixels as before give 0.979 again.",
        "With them, the two DeepBioNet train mosaics (`python tools/train_mosaics.py --data",
        "../shared/data --offsets 1 2 --mpp 0.35 0.5`) give 0.981 / 0.969 and 0.979 / 0.969",
        "(offset 1; before 0.979 / 0.969 at both), 0.980 / 0.982 and 0.980 / 0.984 (offset 2;",
        "before 0.982 / 0.988 and 0.980 / 0.986) at 0.35 and 0.5 um/px.",
        "The tuning grid was run on the scan's own pixels, before this change, and not again.",
        "",
        "**Slides of several renditions** (`leukoscreen.pipeline.renditions`). A slide made of",
        "regions stained or lit apart has no one background and red-cell colour: under one",
        "estimate, another rendition's red cells pass for nuclei or swallow them. The stain",
        "windows (256, each at least `stain_window_um` = 32 um, so that a leukocyte never fills",
        "one) are checked against the slide's estimate: a window where more than 15 % of the",
        "pixels would be nucleus is not explained. The unexplained windows get an estimate of",
        "their own; it is another rendition only if it fails on at least half of the windows",
        "the others explain (an estimate that explains everything is merely more permissive and",
        "would hide nuclei). Then every window goes to the rendition that explains it best and",
        "each rendition is estimated again from its own windows (up to `max_renditions` = 4).",
        "Where renditions are found, or where 2 to 7 windows are unexplained and their own",
        "estimate fails on the others as another rendition's would (too few windows to make",
        "one), all of this is done again from 1,024 windows (`rendition_sample_windows`): a",
        "rendition that covers a small part of the slide then fills the windows it needs (with",
        "256, the top band of fields of the DeepBioNet mosaic at 0.35 um/px was not found as a",
        "rendition of its own and 14 of its cells were lost: recall 0.925). Neither happens on",
        "the BCCD and draaslan mosaics, the example slide or the detection benchmark's slide,",
        "so they do not pay for the second look.",
        "On such a slide every rendition's detector runs over each tile, and a cell is kept",
        "only where a detection with the stain of the 60 um square around it alone",
        "(`verify_window_um`) finds a cell within 4 um; that local cell is what is kept, once.",
        "That local stain is measured against the plasma *at the proposal*",
        "(`renditions.window_stain`: a grey closing of half the square's side there,",
        "`stain.plasma_at`), not the square's brightest pixels, which at the edge of a field of",
        "paler plasma belong to the other field; a proposal with no plasma near it (darker than",
        "half the square's brightest) keeps the square's own background.",
        "Which region is which is never decided. The renditions are saved with the estimate",
        "(`detection.stain.renditions`). On the BCCD and draaslan mosaics no rendition is",
        "found (1-2 and 15-16 of 256 windows go unexplained, windows full of leukocytes whose",
        "estimate is merely more permissive), so nothing changes there.",
        "",
        "**Splits** (`leukoscreen.model.fields`): BCCD's VOC `test` list (71 boxes); DeepBioNet",
        "by duplicate group (difference hash), seeded 70/15/15 over groups, test part; draaslan",
        "never tuned on, all 100 fields (100 boxes after dropping three that duplicate a red-cell",
        "box). Tuning used the *train* parts only.",
        "",
        "## Tuned configurations",
        "",
        "| tuned on | residual_scale | darkness_scale | max_span_um | min_area_um2 "
        "| mean train F1 |",
        "|---|---|---|---|---|---|",
    ]
    for set_name, result in tuned.items():
        opts = result["options"]
        best = max(r["mean_f1"] for r in result["grid"])
        lines.append(
            f"| {set_name} | {opts['residual_scale']} | {opts['darkness_scale']} | "
            f"{opts['max_span_um']} | {opts.get('min_area_um2', 12.0)} | {best:.3f} |"
        )
    lines += [
        "",
        "## Leave one source out (test parts)",
        "",
        "Rows on a source that the configuration was *not* tuned on are the held-out figures.",
        "",
        "| source | scale | mpp | layout | tuned on | held out | boxes | detections | recall |"
        " precision |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["loso"]:
        held = r["source"] not in TUNING_SETS[r["tuned_on"]]
        lines.append(
            f"| {r['source']} | x{r['scale']} | {r['mpp']:.2f} | "
            f"{'mosaic' if r['mosaic'] else 'fields'} | {r['tuned_on']} | "
            f"{'yes' if held else 'no'} | {r['boxes']} | {r['detections']} | "
            f"{_pct(r['recall'])} | {_pct(r['precision'])} |"
        )
    lines += [
        "",
        "## Colour shifts (configuration tuned on both)",
        "",
        "Recall / precision, and the largest drop from the unshifted images.",
        "",
        "| source | scale | layout | " + " | ".join(s.name for s in COLOUR_SHIFTS) + " | drop |",
        "|---|---|---|" + "---|" * (len(COLOUR_SHIFTS) + 1),
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in results["shifts"]:
        groups.setdefault((r["source"], r["scale"], r["mosaic"]), []).append(r)
    for (source, scale, mosaic), rows in groups.items():
        base = rows[0]
        drop = max(
            max(base["recall"] - r["recall"], base["precision"] - r["precision"]) for r in rows
        )
        cells = " | ".join(f"{r['recall']:.3f} / {r['precision']:.3f}" for r in rows)
        layout = "mosaic" if mosaic else "fields"
        lines.append(f"| {source} | x{scale} | {layout} | {cells} | {drop:.3f} |")
    lines += [
        "",
        "## Pixel size (configuration tuned on both)",
        "",
        "| source | layout | " + " | ".join(f"{m} um/px" for m in MPPS) + " |",
        "|---|---|" + "---|" * len(MPPS),
    ]
    by_source: dict[tuple, list[dict]] = {}
    for r in results["mpp"]:
        by_source.setdefault((r["source"], r["mosaic"]), []).append(r)
    for (source, mosaic), rows in by_source.items():
        cells = " | ".join(f"{r['recall']:.3f} / {r['precision']:.3f}" for r in rows)
        lines.append(f"| {source} | {'mosaic' if mosaic else 'fields'} | {cells} |")
    spread = max(
        max(r["mean_f1"] for r in t["grid"]) - min(r["mean_f1"] for r in t["grid"])
        for t in tuned.values()
    )
    chosen = {json.dumps(t["options"], sort_keys=True) for t in tuned.values()}
    same = (
        "all three tuning sets chose the same point"
        if len(chosen) == 1
        else "the tuning sets chose different points (table above)"
    )
    if cell_images is not None:
        lines += ["", *cell_image_section(cell_images)]
    lines += [
        "",
        "## What the figures do not show",
        "",
        "- **Label defects count against us.** The four unmatched BCCD detections on the mosaic",
        "  are leukocytes in fields whose annotation has no WBC box at all (BloodImage_00135,",
        "  00171, 00178, 00327; rendered and checked by eye): against the cells actually",
        "  present, BCCD precision on the mosaic is 75/75. The four, cut from their fields at",
        "  full resolution (the detection's centre marked; none of the four fields has a",
        "  leukocyte box): ![the four unmatched BCCD detections](images/unmatched_bccd_x4.png)",
        "  (`python tools/render_unmatched.py --data ../shared/data --source bccd --scale 4",
        "  --out docs/images/unmatched_bccd_x4.png`, 2026-12-08).",
        "- **Renditions: how the method was chosen.** Every choice was made on the *train*",
        "  mosaics (DeepBioNet at 0.25-1.0 um/px, BCCD at 0.25, 0.35 and 0.52 um/px); the test",
        "  mosaics were scored once, after. One estimate per slide gave the DeepBioNet train",
        "  mosaic 0.931 / 0.681 at x4 and 0.955 / 0.883 at x8 (recall / precision). Designs",
        "  tried, in order. (1) Each pixel judged by the rendition that fits a 30-40 um block",
        "  around it best: 0.947-0.990 / 0.87-0.96, but the share of would-be nucleus pixels as",
        "  the fit prefers the rendition under which the block's own nucleus vanishes, and with",
        "  windows of 64 px (17 um at 0.26 um/px) the BCCD mosaic grew a rendition made of",
        "  leukocyte-filled windows and its test recall fell to 0.817: hence the window size in",
        "  microns and the rule that a rendition must fail where the others fit. (2) Detection",
        "  under each rendition, confirmed by a detection with the local stain: 0.978-0.982 /",
        "  0.964-0.972 on the train mosaics at every pixel size but 0.5 um/px (0.955 / 0.961),",
        "  BCCD unchanged at 0.991 / 0.991. The misses at 0.5 um/px lay in fields that neither",
        "  rendition describes: their large nuclei merged with red cells into blobs over",
        "  `max_area_um2` under both, while a detection with their own stain found them. (3)",
        "  Proposals from a grid of 60 um windows, each with its own estimate, raised that",
        "  recall to 0.980 but precision fell to 0.925 (0.942 at x8); gating those windows by",
        "  how well their own estimate explains them lost recall (0.92-0.95). Not kept. (4)",
        "  Proposals under each rendition also at 1.5x the thresholds (kept; 2x gave the same),",
        "  where the swallowed nucleus stands apart from the red cells: 0.980-0.982 /",
        "  0.960-0.970 on the DeepBioNet train mosaics at all seven pixel sizes from 0.25 to",
        "  1.0 um/px, BCCD unchanged. Two renditions are found on every DeepBioNet train mosaic",
        "  (there, a third is refused by the rule above: it fails on only 9 % of the windows",
        "  the others explain), two and three on the test mosaic at x4 and x8.",
        "- **What it costs.** A slide of one rendition pays the window check once (256 small",
        "  windows); detection + reading runs at 0.57x the raw read rate on 2 x 2 block means",
        "  (docs/benchmarks.md; 0.36x on the scan's own pixels, and 0.53x before the raw read",
        "  stopped paying for a slow RGBA conversion).",
        "  A slide with renditions pays much more: each tile is detected once per rendition at",
        "  two thresholds, and every proposal gets a detection of its own 60 um window. On the",
        "  DeepBioNet train mosaic at 0.5 um/px (2 renditions, 503 cells in 7.3 Mpx, about 14",
        "  times a real smear's leukocyte density) detection + reading ran at **0.064x** the raw",
        "  read rate (`python benchmarks/detection_benchmark.py --slide SLIDE --rounds 3`; 1,963",
        "  local checks took 7.3 of 11.1 s in `cProfile`; on 2026-12-07, with block means and",
        "  against the true raw read, 0.038x; on the AMD EPYC of the next session, before and",
        "  after the local check took its background at the proposal, 0.038x and 0.031x:",
        "  each check may now also undo a tint). The local checks grow with the number",
        "  of proposals, so a sparse smear pays less, but the four detections per tile remain:",
        "  the speed target is met only on slides of one rendition.",
        "- **Earlier versions.** With one estimate per slide the tiled DeepBioNet test mosaic",
        "  gave 0.946 / 0.588 and 0.928 / 0.713 at x4 / x8; the local tint correction and",
        "  256 windows of 64 px took it to 0.973 / 0.918 and 0.928 / 0.966, with colour-shift",
        "  drops of 0.149 and 0.140. Re-estimating the whole stain on every block of the slide's",
        "  grid (30-120 um) lowered recall at every block size (0.919-0.967 at x4), and",
        "  splitting the slide where its plasma colour jumps cut across fields; both were left",
        "  out (details in this page's history).",
        "- **Colour shifts and pixel sizes on the DeepBioNet mosaic.** Until 2026-12-07 the",
        "  largest drop was brightness +20 % at x4 (precision 0.982 to 0.953 on 2 x 2 block",
        "  means; 0.982 to 0.955 on the scan's own pixels, 0.947 before the second look at the",
        "  stain), the target 0.02; the same shifts of the train mosaics moved their figures",
        "  by up to 0.018. Why, rendered and checked on the test mosaic (so the fix below is",
        "  less held out there than the other figures; the train mosaics are its check): the",
        "  new false cells were crenated red cells in olive fields next to a field of pale",
        "  plasma. Their 60 um local check took the square's brightest pixels, the pale field's",
        "  plasma, for the background; the olive plasma's own cast then lies on top of its red",
        "  cells, close to the red-cell hue, so no tint correction takes it off, and they reached",
        "  a contrast of 1.1-1.3 unshifted, against thresholds of 1.0 and 1.4. Brightened, the",
        "  pale plasma clips at 255 and the red-cell density, the unit of contrast, shrinks:",
        "  1.3-1.8, and the local check confirmed them. With the background taken at the",
        "  proposal (`renditions.window_stain`, above; nothing fitted to a colour) their",
        "  contrast is 0.2-0.4, and the test mosaic's worst drop is 0.015 (stain -30 % at x4),",
        "  brightness +20 % 0.982 / 0.979, with recall 0.982 at x4 and x8 (0.979 and 0.973",
        "  before) and x8 precision 0.979 (0.976). At 0.25 and 0.35 um/px its precision moved",
        "  0.970 to 0.967, at 0.5 um/px 0.985 / 0.976 to 0.982 / 0.979; no other source has",
        "  renditions, so none moved. The check on data the diagnosis never saw, the two",
        "  DeepBioNet train mosaics at 0.4164 um/px under the same shifts, before -> after:",
        "  worst drop 0.014 -> 0.010 (offset 1; brightness +20 % precision 0.971 -> 0.957",
        "  before, 0.969 -> 0.959 after) and 0.016 -> 0.002 (offset 2; 0.988 -> 0.972 before,",
        "  0.986 -> 0.984 after). Unshifted they moved 0.981 / 0.971 -> 0.981 / 0.969 and",
        "  0.980 / 0.988 -> 0.984 / 0.986; at 0.35 and 0.5 um/px (`--mpp 0.35 0.5`) 0.981 /",
        "  0.969 -> 0.983 / 0.967 and 0.979 / 0.969 -> 0.981 / 0.965 (offset 1), 0.980 / 0.982",
        "  -> 0.986 / 0.980 and 0.980 / 0.984 -> 0.982 / 0.984 (offset 2): recall rose by",
        "  0.002-0.006 everywhere, precision fell by up to 0.004.",
        "  Earlier: at 0.35 um/px the test mosaic had recall 0.925 (two renditions found, as at",
        "  the other sizes; the train mosaic at 0.35 um/px: 0.982). On 2026-12-07 that test",
        "  mosaic was looked at after all: 14 of its 25 misses lay in its top band of fields,",
        "  which 256 windows sampled too thinly to make a rendition of their own. The fix, the",
        "  second, denser look at the stain described above (1,024 windows, from 2 unexplained",
        "  windows; neither number was tuned), takes it to 0.976 / 0.973; the diagnosis used the",
        "  test part, so that figure is less held out than the others. Two more train mosaics",
        "  had been built instead (the other two thirds of the train fields, 2026-11-28): at",
        "  0.35 um/px 0.979 / 0.969 and 0.982 / 0.986, at 0.5 um/px 0.977 / 0.959 and 0.967 /",
        "  0.985; the 0.35 um/px miss does not recur. Commands: `python tools/train_mosaics.py",
        "  --data ../shared/data --offsets 1 2 --mpp 0.4164 --shifts` and `... --mpp 0.35 0.5`.",
        "  The one train recall under 0.97 there (third offset, 0.5 um/px: 0.967) is 16",
        "  leukocytes, mostly in teal fields (and their duplicates) that neither rendition",
        "  describes: under both, their nuclei reach a contrast of 1.2-1.4, under the seed",
        "  threshold, while their red cells reach as much, so no rendition proposes them, though",
        "  a detection with their own 60 um window finds them. Such a window is not 'unexplained'",
        "  (few would-be nucleus pixels): the misfit measures nuclei that appear, not nuclei",
        "  that vanish. Two probes, neither kept: `--exclusive-share 0.1` changed nothing (no",
        "  third rendition was even proposed), and `--misfit-limit 0.08` made the search give",
        "  up at 0.5 um/px (offset 0: 0.815 / 0.452, one estimate for the whole mosaic).",
        "  With the second, denser look at the stain (2026-12-07, same `--mpp 0.35 0.5`",
        "  command) these two train mosaics give 0.979 / 0.969 and 0.982 / 0.988 at 0.35 um/px,",
        "  0.979 / 0.969 and 0.980 / 0.986 at 0.5 um/px: that recall of 0.967 is now 0.980,",
        "  and no figure fell.",
        "- **Platelets.** On the DeepBioNet test mosaic, 11 of the 45 false detections of the",
        "  previous version were nuclei under 18 um2: clumps of two or three platelets merged",
        "  by `merge_distance_um` (rendered and checked by eye), while the 2nd percentile of the",
        "  matched detections' nucleus area was 34 um2. `min_area_um2` is now part of the tuning",
        "  grid (12 / 20 / 24); the train parts chose 20 for every tuning set (12 before).",
        "- **draaslan informed two features.** `max_span_um` (split a merged group wider than",
        "  one nucleus) was added after two of draaslan's misses turned out to be touching cells",
        "  merged into one detection; the local tint correction (`tint_block_um`) after its",
        "  mosaic's misses turned out to lie in its five blue-cast fields (their red cells",
        "  passed for nuclei and swallowed them). `max_span_um` is chosen on the train parts like",
        "  the rest and the tint correction has no value fitted to any source, but draaslan is not",
        "  a pristine held-out source for those two rules. Nor for a third: with `min_area_um2`",
        "  20, two draaslan neutrophils were lost because a speck chained to their lobes made the",
        "  group wider than `max_span_um`, and the split then left every lobe on its own, under",
        "  the area limit. A wide group is now split by merging its fragments nearest centres",
        "  first while they fit in `max_span_um` (`leukoscreen.pipeline.nuclei`): the lobes stay",
        "  together, the speck goes, two touching cells still come apart.",
        f"- **The tuning surface.** On the train parts the mean F1 spans at most {spread:.3f}",
        f"  over the grid (`docs/results/detection_tuning.json` lists every point); {same}.",
        "",
        "Data: BCCD (github.com/Shenggan/BCCD_Dataset, MIT); DeepBioNet (U. A. Shams et al.,",
        '"Bio-net dataset: AI-based diagnostic solutions using peripheral blood smear images",',
        "Blood Cells, Molecules and Diseases, 2024); draaslan",
        "(github.com/draaslan/blood-cell-detection-dataset, MIT).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="folder of the data sets")
    parser.add_argument("--tune", action="store_true", help="re-run the tuning grid")
    parser.add_argument("--doc", type=Path, default=None, help="write the Markdown page here")
    parser.add_argument(
        "--results", type=Path, default=Path("docs/results"), help="folder for the JSON files"
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="only rewrite --doc from the JSON files of the last evaluation",
    )
    args = parser.parse_args(argv)
    tuning_path = args.results / "detection_tuning.json"
    results_path = args.results / "detection.json"
    if args.render_only:
        results = json.loads(results_path.read_text())
        tuned = json.loads(tuning_path.read_text())
    else:
        if args.data is None:
            parser.error("--data is required unless --render-only")
        start = time.perf_counter()
        sources = {name: Source(name, args.data / folder) for name, folder in FOLDERS.items()}
        with tempfile.TemporaryDirectory() as tmp:
            if args.tune or not tuning_path.is_file():
                tuned = tune(sources)
                args.results.mkdir(parents=True, exist_ok=True)
                tuning_path.write_text(json.dumps(tuned, indent=1) + "\n")
            else:
                tuned = json.loads(tuning_path.read_text())
            results = evaluate(sources, tuned, Path(tmp))
        results["command"] = "python tools/evaluate_detection.py " + shlex.join(
            argv if argv is not None else sys.argv[1:]
        )
        results["seconds"] = time.perf_counter() - start
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    if args.doc:
        cells_path = args.results / "detection_cell_images.json"
        cells = json.loads(cells_path.read_text()) if cells_path.is_file() else None
        args.doc.write_text(render(results, tuned, results["command"], results["seconds"], cells))


if __name__ == "__main__":
    main()
