"""Detection on slides made of single-cell images: segmentation_WBC's two datasets as mosaics.

Lab script (not installed). From the project root::

    python tools/cell_image_mosaics.py --data ../shared/data/segmentation_WBC \\
        --out docs/results/detection_cell_images.json

A lab that collects leukocyte images (a CellaVision-type analyser, a cell atlas) has a leukocyte
in every image: laid out as a slide the way ``tools/build_example.py`` lays out BCCD fields, a
third of the stained pixels can be nuclei, against about one in a thousand on a smear. The
detector was never tuned on these images. Each dataset of segmentation_WBC (data README: Dataset
1, Jiangxi Tecom, 120 px images, rapid stain, white or yellow plasma; Dataset 2, CellaVision, 300
px, Wright-type stain with many red cells) becomes one mosaic per pixel size
(:func:`mosaic.build_mosaic`, the image's own plasma around it). A leukocyte's box is its expert
mask's (nucleus and cytoplasm) bounding box; a detection matches it when its centre lies inside,
one-to-one (``detection_scores``). Dataset 1 is also scored by its two plasma colours apart
(white: the brightest tenth of the image has its blue at least 0.85 of its red; yellow: less).

Every mosaic is also scored under the colour shifts of ``docs/detection.md``
(``mosaic.COLOUR_SHIFTS``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from build_example import write_svs
from detection_scores import score_slide
from mosaic import COLOUR_SHIFTS, build_mosaic, shift_colours

from leukoscreen.model.data import read_image_folder
from leukoscreen.model.fields import Field, source_mpp
from leukoscreen.pipeline.config import DetectConfig
from leukoscreen.pipeline.stain import bright_background

MPPS = (0.3, 0.5, 0.7, 1.0)
YELLOW_BLUE_RATIO = 0.85  # the plasma's blue below this share of its red: a yellow rendition


def read_cell_images(root: Path, dataset: int) -> dict[str, list[Field]]:
    """One dataset's images as fields with their mask's box: ``all``, ``white``, ``yellow``.

    Images and masks are read by :func:`leukoscreen.model.data.read_image_folder`, as training
    reads them (masks snapped to nucleus / cytoplasm / background)."""
    folder = root / f"Dataset {dataset}"
    groups: dict[str, list[Field]] = {"all": [], "white": [], "yellow": []}
    for sample in read_image_folder(folder, source=f"segwbc{dataset}"):
        assert sample.labels is not None, f"{sample.image_id}: every image here has a mask"
        rows, cols = np.nonzero(sample.labels)  # nucleus or cytoplasm
        box = np.array([[rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]], np.float64)
        stem = sample.image_id.removeprefix(f"{sample.source}-")
        cell = Field(sample.image_id, sample.source, folder / f"{stem}.bmp", box)
        plasma = bright_background(sample.rgb)
        groups["all"].append(cell)
        groups["yellow" if plasma[2] < YELLOW_BLUE_RATIO * plasma[0] else "white"].append(cell)
    return groups if dataset == 1 else {"all": groups["all"]}


def evaluate(root: Path, work: Path) -> list[dict[str, object]]:
    """Recall and precision of every dataset, group, pixel size and colour shift."""
    rows: list[dict[str, object]] = []
    for dataset in (1, 2):
        for group, cells in read_cell_images(root, dataset).items():
            own_mpp = source_mpp(cells)
            for mpp in MPPS:
                mosaic = build_mosaic(cells, source_mpp=own_mpp, mpp=mpp)
                for shift in COLOUR_SHIFTS:
                    rgb = shift_colours(mosaic.rgb, shift)
                    path = work / "mosaic.svs"
                    write_svs(path, rgb, mpp)
                    counts = score_slide(path, mosaic.boxes, DetectConfig())
                    rows.append({
                        "dataset": dataset, "group": group, "images": len(cells),
                        "source_mpp": own_mpp, "mpp": mpp,
                        "shift": shift.name,
                        "boxes": counts.boxes, "detections": counts.detections,
                        "matched": counts.matched, "recall": counts.recall,
                        "precision": counts.precision,
                    })  # fmt: skip
                line = [f"{r['shift']} {r['recall']:.3f}/{r['precision']:.3f}"
                        for r in rows[-len(COLOUR_SHIFTS):]]  # fmt: skip
                print(f"Dataset {dataset} {group} {mpp} um/px: " + " | ".join(line), flush=True)
    return rows


def render_section(report: dict) -> list[str]:
    """The Markdown table of ``report`` (this script's JSON): one row per dataset, group and
    pixel size, unshifted recall / precision and the largest drop under a colour shift."""
    lines = [
        "| Images | um/px | recall / precision | worst drop under a shift (which) |",
        "|---|---:|---:|---|",
    ]
    rows = report["rows"]
    keys = sorted({(r["dataset"], r["group"], r["mpp"]) for r in rows},
                  key=lambda k: (k[0], ("all", "white", "yellow").index(k[1]), k[2]))  # fmt: skip
    for dataset, group, mpp in keys:
        mine = [r for r in rows if (r["dataset"], r["group"], r["mpp"]) == (dataset, group, mpp)]
        base = next(r for r in mine if r["shift"] == "none")
        drops = [(max(base["recall"] - r["recall"], base["precision"] - r["precision"]),
                  r["shift"]) for r in mine if r["shift"] != "none"]  # fmt: skip
        worst, name = max(drops)
        label = f"Dataset {dataset}, {group} ({base['images']})"
        lines.append(f"| {label} | {mpp:.1f} | {base['recall']:.3f} / {base['precision']:.3f} | "
                     f"{max(worst, 0.0):.3f} ({name}) |")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--data", type=Path, required=True, help="the segmentation_WBC folder")
    parser.add_argument("--out", type=Path, required=True, help="JSON of every row")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        rows = evaluate(args.data, Path(work))
    command = "python tools/cell_image_mosaics.py " + shlex.join(sys.argv[1:] if argv is None
                                                                else argv)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"command": command, "seconds": round(time.perf_counter() - start, 1), "rows": rows}
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
