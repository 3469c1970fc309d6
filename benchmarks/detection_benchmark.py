"""Detection + reading against raw reading of the same tiles, in one run; prints JSON.

The slide: the bundled example (``pipeline/example/bccd_x8.svs``, real BCCD fields at
0.52 um/px) repeated ``--repeat`` x ``--repeat`` times into a JPEG-tiled pyramidal Aperio
``.svs`` (quality 90, 256 px tiles, the way a scanner writes it), so the read path is the real
one: OpenSlide decoding JPEG tiles.

For the detection tile plan of that slide (``DetectConfig`` defaults), in one process on one
thread, alternating ``--rounds`` times:

- ``raw``: ``Slide.read_region`` of every tile's halo window, nothing else;
- ``detect``: what a detection run does: the stain estimate from sampled windows, then
  ``detect_tile`` (read + detect) for every tile.

Rates are the tiles' halo megapixels per second (median over rounds); the target of the detection
issue is ``detect_over_raw >= 0.5``.

Usage::

    python benchmarks/detection_benchmark.py                 # 8 x 8 copies (~4,800 x 4,000 px)
    python benchmarks/detection_benchmark.py --repeat 16 --rounds 5
    python benchmarks/detection_benchmark.py --slide other.svs   # any slide, e.g. one of
                                                                 # several colour renditions
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import tifffile

from leukoscreen.pipeline.config import DetectConfig
from leukoscreen.pipeline.detect import detect_tile, plan_detection
from leukoscreen.pipeline.slide import Slide


def build_slide(path: Path, repeat: int) -> tuple[int, int]:
    """The example slide's level 0 tiled ``repeat`` x ``repeat`` times, as a JPEG .svs."""
    example = Path(str(files("leukoscreen.pipeline.example") / "bccd_x8.svs"))
    with Slide.open(example) as slide:
        height, width = slide.dimensions
        base = slide.read_region(0, 0, height, width)
        mpp = slide.mpp
    rgb = np.tile(base, (repeat, repeat, 1))
    small = rgb[::4, ::4]
    head = f"Aperio Image Library v10.0.0\n{rgb.shape[1]}x{rgb.shape[0]} [0,0] (256x256) "
    with tifffile.TiffWriter(path) as tif:
        for level, text in ((rgb, f"JPEG/RGB Q=90|MPP = {mpp}"), (small, "-> level 1")):
            tif.write(level, tile=(256, 256), compression="jpeg", compressionargs={"level": 90},
                      photometric="rgb", description=head + text, metadata=None)  # fmt: skip
    return rgb.shape[0], rgb.shape[1]


def halo_mpx(tiles: list) -> float:
    """Megapixels of the tiles' halo windows."""
    return sum((t.halo[2] - t.halo[0]) * (t.halo[3] - t.halo[1]) for t in tiles) / 1e6


def read_halos(slide: Slide, tiles: list) -> float:
    """Seconds to read every tile's halo window raw from the slide, nothing else."""
    start = time.perf_counter()
    for t in tiles:
        slide.read_region(t.halo[0], t.halo[1], t.halo[2] - t.halo[0], t.halo[3] - t.halo[1])
    return time.perf_counter() - start


def main() -> None:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=8, help="copies of the example per side")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument(
        "--slide", type=Path, default=None,
        help="time this slide instead of the example mosaic (e.g. one of several renditions)",
    )  # fmt: skip
    parser.add_argument(
        "--rendition-sample-windows", type=int, default=DetectConfig.rendition_sample_windows,
        help="detect.rendition_sample_windows (0: no second, denser look at the stain)",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = DetectConfig(rendition_sample_windows=args.rendition_sample_windows)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.slide or Path(tmp) / "bench.svs"
        if args.slide is None:
            build_slide(path, args.repeat)
        with Slide.open(path) as slide:
            shape = slide.dimensions
            tiles, _ = plan_detection(slide, cfg)
            mpx = halo_mpx(tiles)
            raw_s, detect_s, cells = [], [], 0
            for _ in range(args.rounds):
                raw_s.append(read_halos(slide, tiles))
                start = time.perf_counter()
                tiles, stain = plan_detection(slide, cfg)
                cells = sum(len(detect_tile(slide, t, cfg, stain)) for t in tiles)
                detect_s.append(time.perf_counter() - start)
    raw_rate = mpx / float(np.median(raw_s))
    detect_rate = mpx / float(np.median(detect_s))
    print(
        json.dumps(
            {
                "slide_px": list(shape),
                "tiles": len(tiles),
                "halo_mpx": round(mpx, 2),
                "cells": cells,
                "renditions": len(stain.renditions),
                "rendition_sample_windows": cfg.rendition_sample_windows,
                "raw_read_mpx_per_s": round(raw_rate, 2),
                "detect_and_read_mpx_per_s": round(detect_rate, 2),
                "detect_over_raw": round(detect_rate / raw_rate, 3),
                "rounds": args.rounds,
                "machine": f"{platform.machine()} {os.cpu_count()} cores",
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
