"""A whole smear of realistic size and density through ``leukoscreen run``, stage by stage; JSON.

The slide (``build_smear``): the real BCCD fields of the bundled example
(``pipeline/example/bccd_x8.svs``, 0.52 um/px, MIT licence) laid edge to edge on a grid over a
``--height`` x ``--width`` px smear (default 20,000 x 40,000), with a band of empty glass on the
right (the feathered edge). ``--cells`` grid slots (default 3,600) hold a field with its
leukocytes; every other slot holds a field whose leukocytes were painted over with the red cells
of another field at the same place, so the density of white cells is a real smear's (a few
thousand per slide) while every pixel is a real stained blood pixel. The fields' leukocyte boxes
are the ground truth (recall and precision are reported, as a check that the run is real).
Written as a tiled (512 px), pyramidal (/1, /4, /16) Aperio-style TIFF, JPEG where imagecodecs
is installed, else zlib; OpenSlide reads it like a scanner's file.

Then, in one invocation on one machine:

- ``pipeline``: ``run_slide`` with the embedded cluster (one pinned worker per GPU plus CPU
  workers, or CPU workers only), timed end to end, with the stage timings the run reports:
  detection Mpx/s (level-0 pixels / detection wall seconds), crop reads per second, SR stage
  cells/s, store writes MB/s (bytes on disk / write seconds summed over tasks); peak host memory
  of this process and all its children (RSS and PSS) and, on CUDA, the GPU's utilisation
  (NVML) sampled through the run;
- ``model_only``: the same network, batch and precision upscaling the stored LR crops in this
  process, nothing else (the SR-stage target compares against it);
- ``detection_vs_raw``: in one process, a sample of detection tiles read raw by OpenSlide and
  read + detected, alternating (the detection target: >= 0.5 x raw);
- ``naive``: the loop a user would write, on a sample of the detected cells: OpenSlide
  ``read_region`` of each cell, the network in fp32 at batch 1 (``load_pretrained``, colour on
  the host), one PNG per cell; ``ratio_run_vs_naive`` = ``leukoscreen run`` cells/s over it;
- ``naive_gp``: the same loop with the paper-faithful GP (``--naive-gp-cells``, default 8; it
  runs at HR on the 224 px bicubic image: about 2 cells/s on the 2-core AMD EPYC):
  ``ratio_run_vs_naive_gp``.

Usage::

    python benchmarks/smear_benchmark.py                                # the full smear
    python benchmarks/smear_benchmark.py --height 4000 --width 6000 --cells 120 --naive-cells 8
    python benchmarks/smear_benchmark.py --device cuda --batch-size 64 --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks import each other

from detection_benchmark import halo_mpx, read_halos
from pipeline_benchmark import MemorySampler, model_only
from smear_slide import SmearPlan, build_smear, match_cells

from leukoscreen.pipeline.cluster import available_cores, plan_local_workers, visible_gpus
from leukoscreen.pipeline.config import Config, override
from leukoscreen.pipeline.detect import detect_tile, plan_detection
from leukoscreen.pipeline.run import run_slide
from leukoscreen.pipeline.slide import Slide
from leukoscreen.pipeline.store import open_cells


class GpuSampler(threading.Thread):
    """GPU utilisation (%) and memory used (MiB) every 0.2 s through NVML, when it is there."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int, int]] = []
        self.stop_event = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml: Any = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML, no NVIDIA driver: nothing to sample
            self.nvml = None

    def run(self) -> None:
        while self.nvml is not None and not self.stop_event.is_set():
            rates = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
            memory = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
            self.samples.append((time.perf_counter(), int(rates.gpu), int(memory.used >> 20)))
            time.sleep(0.2)

    def summary(self) -> dict[str, Any] | None:
        self.stop_event.set()
        if self.nvml is None or not self.samples:
            return None
        util = np.array([s[1] for s in self.samples])
        busy = np.flatnonzero(util > 0)
        window = util[busy[0] : busy[-1] + 1] if len(busy) else util
        return {
            "samples": len(util),
            "mean_util_pct_whole_run": round(float(util.mean()), 1),
            "mean_util_pct_busy_window": round(float(window.mean()), 1),
            "max_util_pct": int(util.max()),
            "peak_memory_used_mib": max(s[2] for s in self.samples),
        }


def detection_vs_raw(slide_path: Path, config: Config, n_tiles: int, rounds: int) -> dict:
    """Raw OpenSlide reads of a sample of detection tiles against read + detect, one process."""
    cfg = config.detect
    with Slide.open(slide_path) as slide:
        t0 = time.perf_counter()
        tiles, stain = plan_detection(slide, cfg)
        plan_s = time.perf_counter() - t0
        step = max(1, len(tiles) // n_tiles)
        sample = tiles[::step][:n_tiles]
        mpx = halo_mpx(sample)
        raw_s, detect_s = [], []
        for _ in range(rounds):
            raw_s.append(read_halos(slide, sample))
            t0 = time.perf_counter()
            for t in sample:
                detect_tile(slide, t, cfg, stain)
            detect_s.append(time.perf_counter() - t0)
    raw = mpx / float(np.median(raw_s))
    detect = mpx / float(np.median(detect_s))
    return {
        "tiles_planned": len(tiles), "tiles_timed": len(sample), "halo_mpx_timed": round(mpx, 1),
        "plan_and_stain_s": round(plan_s, 2), "raw_read_mpx_per_s": round(raw, 2),
        "detect_and_read_mpx_per_s": round(detect, 2), "detect_over_raw": round(detect / raw, 3),
    }  # fmt: skip


def naive_loop(
    slide_path: Path, store: Path, config: Config, n_cells: int, out: Path, arch: str = ""
) -> dict:
    """Per cell: OpenSlide ``read_region``, the network (``arch``, default the run's) in fp32
    at batch 1, a PNG."""
    import openslide
    import skimage.io
    import torch

    from leukoscreen.model.inference import load_pretrained

    inference = config.inference
    arch = arch or inference.arch
    upscaler = load_pretrained(arch, inference.scale, device=inference.device,
                               precision="fp32", compile="off")  # fmt: skip
    upscaler.colour_on_device = False  # the numpy colour handling a script would call
    torch.set_num_threads(os.cpu_count() or 1)
    side = inference.hr_size_px // inference.scale
    table = open_cells(store).table
    rows, cols = np.asarray(table["row"]), np.asarray(table["col"])
    pick = np.linspace(0, len(rows) - 1, min(n_cells, len(rows))).round().astype(int)
    out.mkdir(parents=True, exist_ok=True)
    osr = openslide.OpenSlide(str(slide_path))
    upscaler.upscale(np.zeros((1, side, side, 3), np.uint8))  # first call outside the clock
    t0 = time.perf_counter()
    for k in pick:
        top, left = int(rows[k]) - side // 2, int(cols[k]) - side // 2
        crop = np.asarray(osr.read_region((left, top), 0, (side, side)).convert("RGB"))
        sr, _ = upscaler.upscale(crop[None])
        skimage.io.imsave(out / f"cell_{k:06d}.png", sr[0], check_contrast=False)
    seconds = time.perf_counter() - t0
    osr.close()
    rate = round(len(pick) / seconds, 3)
    return {"cells": len(pick), "seconds": round(seconds, 2), "cells_per_s": rate,
            "arch": upscaler.arch, "precision": "fp32", "batch": 1}  # fmt: skip


def save(result: dict[str, Any], out: Path | None) -> None:
    """Write the figures so far to ``out`` (when given)."""
    if out is not None:
        out.write_text(json.dumps(result, indent=1) + "\n")


def store_bytes(store: Path) -> int:
    """Bytes on disk of the whole store (every file under it)."""
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file())


def main() -> None:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=20_000, help="smear height, level-0 px")
    parser.add_argument("--width", type=int, default=40_000, help="smear width, level-0 px")
    parser.add_argument("--cells", type=int, default=3_600, help="grid slots with leukocytes")
    parser.add_argument("--scale", type=int, default=8, choices=(4, 8))
    parser.add_argument("--batch-size", type=int, default=16, help="cells per SR batch")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--compile", default="off", help="off, auto (CUDA only) or on")
    parser.add_argument("--naive-cells", type=int, default=32, help="cells of the naive loop")
    parser.add_argument("--naive-gp-cells", type=int, default=8,
                        help="cells of the naive loop with the paper's GP (0: skip)")  # fmt: skip
    parser.add_argument("--detect-tiles", type=int, default=16, help="tiles of detection_vs_raw")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of detection_vs_raw")
    parser.add_argument("--workdir", type=Path, default=None, help="keep slide and store here")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="leukoscreen-smear-"))
    workdir.mkdir(parents=True, exist_ok=True)
    example = Path(str(files("leukoscreen.pipeline.example") / "bccd_x8.svs"))
    plan = SmearPlan.make(example, args.height, args.width, args.cells)
    slide_path = workdir / f"smear_{args.height}x{args.width}.svs"
    t0 = time.perf_counter()
    compression = build_smear(slide_path, plan)
    build_s = time.perf_counter() - t0

    config = override(
        Config(),
        **{"inference.scale": args.scale, "inference.batch_size": args.batch_size,
           "inference.device": args.device, "inference.compile": args.compile,
           "slide.expected_mpp": plan.mpp if args.scale == 8 else 2 * plan.mpp},
    )  # fmt: skip
    store = workdir / "smear.leukoscreen.zarr"
    memory, gpu = MemorySampler(), GpuSampler()
    memory.start()
    gpu.start()
    t0 = time.perf_counter()
    summary = run_slide(slide_path, config, out=store, overwrite=True, progress=False)
    run_s = time.perf_counter() - t0
    memory.stop()
    gpu_summary = gpu.summary()

    n = summary.n_cells
    mpx = args.height * args.width / 1e6
    table = open_cells(store).table
    found = np.stack([table["row"], table["col"]], axis=1)
    mib = 1 << 20
    written = store_bytes(store)
    result: dict[str, Any] = {
        "slide_px": [args.height, args.width], "slide_mpx": round(mpx, 1), "mpp": plan.mpp,
        "compression": compression, "slide_bytes": slide_path.stat().st_size,
        "slide_build_s": round(build_s, 1), "leukocytes_placed": len(plan.truth),
        "cells_found": n, **match_cells(found, plan.truth),
        "scale": args.scale, "batch_size": args.batch_size, "device": args.device,
        "compile": args.compile,
        "pipeline": {
            "end_to_end_s": round(run_s, 2), "run_total_s": round(summary.total_s, 2),
            "end_to_end_cells_per_s": round(n / run_s, 2),
            "detect_s": round(summary.detect_s, 2),
            "detect_mpx_per_s": round(mpx / summary.detect_s, 1) if summary.detect_s else None,
            "sr_s": round(summary.sr_s, 2),
            "sr_stage_cells_per_s": round(n / summary.sr_s, 2) if summary.sr_s else None,
            "crop_reads_per_s_in_tasks": round(n / summary.read_s, 1) if summary.read_s else None,
            "model_s_in_tasks": round(summary.model_s, 2),
            "store_bytes": written,
            "write_mb_per_s_in_tasks": round(written / 1e6 / summary.write_s, 1)
            if summary.write_s else None,
            "peak_rss_total_mib": round(memory.peak_rss / mib),
            "peak_pss_total_mib": round(memory.peak_pss / mib),
            "peak_processes": memory.peak_processes,
            "gpu": gpu_summary,
        },
    }  # fmt: skip
    save(result, args.out)  # each stage's figures are kept even if a later one runs out of time
    workers = plan_local_workers(config.cluster, gpus=visible_gpus(args.device),
                                 cores=available_cores())  # fmt: skip
    speed = model_only(store, config, "", workers[0].nthreads)  # as the (first) SR worker
    result["model_only_cells_per_s"] = round(speed["model_only_cells_per_s"], 2)
    if result["pipeline"]["sr_stage_cells_per_s"] and speed["model_only_cells_per_s"]:
        result["ratio_sr_stage_vs_model_only"] = round(
            result["pipeline"]["sr_stage_cells_per_s"] / speed["model_only_cells_per_s"], 3
        )
    save(result, args.out)
    result["detection_vs_raw"] = detection_vs_raw(slide_path, config, args.detect_tiles,
                                                  args.rounds)  # fmt: skip
    save(result, args.out)
    naive = naive_loop(slide_path, store, config, args.naive_cells, workdir / "naive_png")
    result["naive"] = naive
    result["ratio_run_vs_naive"] = round(result["pipeline"]["end_to_end_cells_per_s"]
                                         / naive["cells_per_s"], 2)  # fmt: skip
    if args.naive_gp_cells:  # the paper-faithful network, as a user of the paper would run it
        naive_gp = naive_loop(slide_path, store, config, args.naive_gp_cells,
                              workdir / "naive_gp_png", arch="gp")  # fmt: skip
        result["naive_gp"] = naive_gp
        result["ratio_run_vs_naive_gp"] = round(result["pipeline"]["end_to_end_cells_per_s"]
                                                / naive_gp["cells_per_s"], 2)  # fmt: skip
    result["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                         "load_average_1m": round(os.getloadavg()[0], 2)}  # fmt: skip
    save(result, args.out)
    print(json.dumps(result, indent=1))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
