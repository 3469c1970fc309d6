"""``leukoscreen batch`` against a shell loop of ``leukoscreen run`` over the same slides; prints
JSON.

The slides are the bundled BCCD example slide under the eight symmetries of the square (flips
and quarter turns): the same leukocytes, eight different files (different header sha256, so the
batch does not take them for duplicates). Both ways run as a user runs them, as separate
processes with the shipped weights and the default config:

- ``sequential``: ``leukoscreen run SLIDE --out DIR/<stem>.leukoscreen.zarr`` once per slide, one
  after the other (each invocation starts its own Dask cluster and loads the model);
- ``batch``: ``leukoscreen batch FOLDER --out DIR`` once (one cluster, one model load, two slides
  in flight).

Rounds alternate the two (sequential, batch, sequential, batch, ...) into fresh output folders;
the ratio ``batch_s / sequential_s`` is computed per round and its median reported, so machine
noise hits both sides alike. Target (issue 12): ratio <= 0.85.

Usage::

    python benchmarks/batch_benchmark.py [--rounds 2] [--slides 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
from build_example import write_svs  # noqa: E402  (a lab script, by its file name)

from leukoscreen.pipeline.store import read_attrs  # noqa: E402

EXAMPLE = REPO / "pipeline" / "example" / "bccd_x8.svs"
MPP = 0.52


def symmetries(rgb: np.ndarray) -> list[np.ndarray]:
    """The eight images of ``rgb`` under flips and quarter turns."""
    out = []
    for flip in (False, True):
        image = rgb[:, ::-1] if flip else rgb
        out += [np.ascontiguousarray(np.rot90(image, k)) for k in range(4)]
    return out


def leukoscreen(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "leukoscreen.pipeline.cli", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--slides", type=int, default=8, choices=range(1, 9))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="leukoscreen-batch-bench-"))
    try:
        slides = work / "slides"
        slides.mkdir()
        rgb = tifffile.imread(EXAMPLE, key=0)
        paths = []
        for k, image in enumerate(symmetries(rgb)[: args.slides]):
            paths.append(slides / f"example_{k}.svs")
            write_svs(paths[-1], image, MPP)
        rounds = []
        for r in range(args.rounds):
            seq_out, batch_out = work / f"seq{r}", work / f"batch{r}"
            seq_out.mkdir()
            t0 = time.perf_counter()
            for path in paths:
                leukoscreen(
                    "run", str(path), "--out", str(seq_out / f"{path.stem}.leukoscreen.zarr")
                )
            sequential_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            leukoscreen("batch", str(slides), "--out", str(batch_out), "--no-progress")
            batch_s = time.perf_counter() - t0
            cells = [read_attrs(batch_out / f"{p.stem}.leukoscreen.zarr")["n_cells"] for p in paths]
            same = cells == [read_attrs(seq_out / f"{p.stem}.leukoscreen.zarr")["n_cells"]
                             for p in paths]  # fmt: skip
            rounds.append({"sequential_s": round(sequential_s, 2), "batch_s": round(batch_s, 2),
                           "ratio": round(batch_s / sequential_s, 3), "cells": sum(cells),
                           "same_cell_counts": same})  # fmt: skip
            print(json.dumps(rounds[-1]), file=sys.stderr)
        print(json.dumps({
            "machine": f"{platform.processor() or platform.machine()}, "
                       f"{len(__import__('os').sched_getaffinity(0))} cores",
            "slides": len(paths),
            "rounds": rounds,
            "median_ratio_batch_over_sequential": statistics.median(r["ratio"] for r in rounds),
        }, indent=2))  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
