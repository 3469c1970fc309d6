"""Memory and throughput of ``leukoscreen run`` on a large synthetic slide; prints JSON.

Builds a ``--size`` x ``--size`` px (default 20,000) tiled, pyramidal, JPEG Aperio ``.svs`` at
0.52 um/px, tile by tile (the builder never holds a level either): a pink plasma background with a
repeating red-cell texture, a band of empty glass on the right, and ``--cells`` leukocytes
(lavender cytoplasm, dark-purple nucleus) on a jittered grid. Then it runs the pipeline
(:func:`leukoscreen.pipeline.run.run_slide`, embedded LocalCluster) while a sampler thread adds up
the memory of this process and all its descendants (the Dask scheduler lives in this process,
the nannies and workers are children) every 0.1 s.

Throughput, in the same invocation on the same machine:

- ``end_to_end_cells_per_s``: cells / wall seconds of ``run_slide`` (cluster start, detection,
  crops, SR, writes and finalize all included);
- ``sr_stage_cells_per_s``: cells / wall seconds of the SR stage (crops + model + writes);
- ``model_only_cells_per_s``: after the run, this process loads the same weights with the same
  torch thread count as one worker and upscales the stored LR crops batch by batch, nothing else.

Memory: ``peak_rss_total_mib`` (sum of resident sets, counts shared library pages once per
process, so an upper bound) and ``peak_pss_total_mib`` (proportional set size, sampled every
0.5 s; shared pages split between processes).

Weights: ``--checkpoint``, else the shipped GP weights for ``--scale``, else a randomly
initialised full-size GP network (same cost as trained weights).

Usage::

    python benchmarks/pipeline_benchmark.py                  # 20,000 px, 200 cells
    python benchmarks/pipeline_benchmark.py --size 4000 --cells 50 --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import tifffile
from skimage.draw import disk

from leukoscreen.pipeline.config import Config, override
from leukoscreen.pipeline.run import plan_run, run_slide
from leukoscreen.pipeline.sr_task import super_resolve
from leukoscreen.pipeline.store import open_cells

MPP = 0.52
TILE_PX = 512
BACKGROUND_RGB = (236, 205, 208)
GLASS_RGB = (246, 246, 244)
RBC_RGB = (214, 128, 138)
CYTOPLASM_RGB = (212, 190, 222)
NUCLEUS_RGB = (92, 44, 134)
GLASS_FRACTION = 0.1  # the right tenth of the slide is empty glass


def red_cell_texture(seed: int = 0) -> np.ndarray:
    """(512, 512, 3) uint8: background with ~7.5 um red cells, repeated over the smear."""
    rng = np.random.default_rng(seed)
    tex = np.empty((TILE_PX, TILE_PX, 3), np.uint8)
    tex[:] = BACKGROUND_RGB
    radius_px = 3.75 / MPP
    for _ in range(900):
        centre = rng.uniform(0, TILE_PX, 2)
        rr, cc = disk(tuple(centre), radius_px, shape=tex.shape[:2])
        tex[rr, cc] = RBC_RGB
    return tex


def block_mean(rgb: np.ndarray, factor: int) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., H / factor, W / factor, 3) uint8 block means, rounded (a
    remainder of H, W beyond a multiple of ``factor`` is dropped)."""
    *lead, height, width, channels = rgb.shape
    h, w = height // factor, width // factor
    blocks = rgb[..., : h * factor, : w * factor, :].reshape(*lead, h, factor, w, factor, channels)
    return (blocks.mean(axis=(-4, -2)) + 0.5).astype(np.uint8)


@dataclass
class Scene:
    """The synthetic smear: size, leukocyte centres and radii, level-0 pixels."""

    size_px: int
    centres: np.ndarray  # (N, 2) float64 (row, col)
    cell_radius_px: float = 12.0 / MPP / 2
    texture: np.ndarray = field(default_factory=red_cell_texture)

    @classmethod
    def build(cls, size_px: int, n_cells: int, seed: int = 0) -> Scene:
        """Leukocytes on a jittered grid over the smear part (glass band excluded)."""
        rng = np.random.default_rng(seed)
        smear_w = size_px * (1 - GLASS_FRACTION)
        per_row = max(1, round(np.sqrt(n_cells * smear_w / size_px)))
        per_col = -(-n_cells // per_row)
        step_r, step_c = size_px / per_col, smear_w / per_row
        grid = [(r, c) for r in range(per_col) for c in range(per_row)][:n_cells]
        centres = np.array(
            [((r + 0.5) * step_r, (c + 0.5) * step_c) for r, c in grid], np.float64
        ).reshape(-1, 2)
        jitter = rng.uniform(-0.2, 0.2, centres.shape) * np.array([step_r, step_c])
        centres = np.clip(centres + jitter, 30, size_px - 30)
        return cls(size_px, centres)

    def render(self, row0: int, col0: int, height: int, width: int, ds: int) -> np.ndarray:
        """(height, width, 3) uint8 of the level with downsample ``ds`` at level-``ds`` pixels."""
        tex = self.texture if ds == 1 else block_mean(np.tile(self.texture, (ds, ds, 1)), ds)
        rr = (np.arange(height) + row0) % tex.shape[0]
        cc = (np.arange(width) + col0) % tex.shape[1]
        out = tex[rr[:, None], cc[None, :]].copy()
        glass_col = int(self.size_px * (1 - GLASS_FRACTION) / ds)
        if col0 + width > glass_col:
            out[:, max(glass_col - col0, 0) :] = GLASS_RGB
        reach = self.cell_radius_px + 2
        r_l0, c_l0 = row0 * ds, col0 * ds
        near = (
            (self.centres[:, 0] > r_l0 - reach)
            & (self.centres[:, 0] < r_l0 + height * ds + reach)
            & (self.centres[:, 1] > c_l0 - reach)
            & (self.centres[:, 1] < c_l0 + width * ds + reach)
        )
        for row, col in self.centres[near]:
            centre = (row / ds - row0, col / ds - col0)
            for radius, colour in ((self.cell_radius_px, CYTOPLASM_RGB),
                                   (self.cell_radius_px * 0.55, NUCLEUS_RGB)):  # fmt: skip
                r, c = disk(centre, max(radius / ds, 0.6), shape=(height, width))
                out[r, c] = colour
        return out


def write_slide(path: Path, scene: Scene) -> None:
    """A tiled pyramidal JPEG Aperio .svs, written tile by tile (levels x1, x4, x16, ...)."""
    size = scene.size_px
    head = f"Aperio Image Library v10.0.0\n{size}x{size} [0,0 {size}x{size}] ({TILE_PX}x{TILE_PX}) "
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        ds = 1
        while ds == 1 or -(-size // ds) >= TILE_PX:
            side = -(-size // ds)

            def tiles(ds: int = ds, side: int = side) -> Iterator[np.ndarray]:
                for row0 in range(0, side, TILE_PX):
                    for col0 in range(0, side, TILE_PX):
                        yield scene.render(row0, col0, TILE_PX, TILE_PX, ds)

            description = head + (f"JPEG|AppMag = 20|MPP = {MPP}" if ds == 1
                                  else f"-> {side}x{side} JPEG|")  # fmt: skip
            tif.write(tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(TILE_PX, TILE_PX),
                      compression="jpeg", compressionargs={"level": 90}, photometric="rgb",
                      description=description, metadata=None,
                      subfiletype=0 if ds == 1 else 1)  # fmt: skip
            ds *= 4


class MemorySampler(threading.Thread):
    """Peak memory of this process and all its descendants, sampled in the background."""

    def __init__(self, interval_s: float = 0.1, pss_every: int = 5) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.pss_every = pss_every
        self.stop_event = threading.Event()
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_processes = 0
        self.per_process_peak_rss: dict[str, int] = {}

    def run(self) -> None:
        me = psutil.Process()
        tick = 0
        while not self.stop_event.is_set():
            procs = [me, *me.children(recursive=True)]
            rss = 0
            pss = 0
            for proc in procs:
                try:
                    mem = proc.memory_info().rss
                    rss += mem
                    name = f"{proc.pid}:{' '.join(proc.cmdline()[1:3])[:60]}"
                    self.per_process_peak_rss[name] = max(
                        self.per_process_peak_rss.get(name, 0), mem
                    )
                    if tick % self.pss_every == 0:
                        pss += proc.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_processes = max(self.peak_processes, len(procs))
            tick += 1
            time.sleep(self.interval_s)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


_MAKE_WEIGHTS = """
import sys, torch
from leukoscreen.model.checkpoint import save_weights
from leukoscreen.model.errors import CheckpointError
from leukoscreen.model.inference import load_pretrained
from leukoscreen.model.networks import build_network
scale, path = int(sys.argv[1]), sys.argv[2]
try:
    load_pretrained("gp", scale, device="cpu")
    print("shipped")
except CheckpointError:
    torch.manual_seed(0)
    save_weights(build_network("gp", scale=scale), path, arch="gp", scale=scale)
    print("random")
"""


def resolve_checkpoint(arg: str, scale: int, folder: Path) -> tuple[str, str]:
    """The checkpoint to use and where it came from.

    Runs in a child process so that this process (the Dask driver and scheduler, whose memory is
    measured) does not import torch, as ``leukoscreen run`` does not.
    """
    if arg:
        return arg, "given"
    path = folder / f"random_gp_x{scale}.pt"
    found = subprocess.run(
        [sys.executable, "-c", _MAKE_WEIGHTS, str(scale), str(path)],
        check=True, capture_output=True, text=True,
    ).stdout.split()[-1]  # fmt: skip
    if found == "shipped":
        return "", "shipped"
    return str(path), "random full-size GP (no shipped weights yet)"


def model_only(store: Path, config: Config, checkpoint: str, threads: int) -> dict[str, float]:
    """Upscale the stored LR crops batch by batch in this process: the model's own speed.

    Same batches, same cells per network call, same torch thread count as one worker.
    """
    import torch

    from leukoscreen.model.inference import load_upscaler

    torch.set_num_threads(threads)
    inference = config.inference
    upscaler = load_upscaler(
        inference.arch, inference.scale, checkpoint=checkpoint, device=inference.device,
        precision=inference.precision, compile=inference.compile,
        batch_bucket=inference.batch_size,
    )  # fmt: skip
    cells = open_cells(store)
    lr = cells.lr
    n = int(lr.shape[0])
    if n == 0:
        return {"model_only_cells_per_s": 0.0, "model_only_s": 0.0}
    geometry = plan_run(config).geometry
    per_call = 0 if str(upscaler.device).startswith("cuda") else config.cluster.cpu_cells_per_call
    warm = np.asarray(lr[: inference.batch_size])
    super_resolve(upscaler, warm, geometry, cells_per_call=per_call)  # warm-up (and compile)
    seconds = 0.0
    for start in range(0, n, inference.batch_size):
        batch = np.asarray(lr[start : start + inference.batch_size])
        t0 = time.perf_counter()
        super_resolve(upscaler, batch, geometry, cells_per_call=per_call)
        seconds += time.perf_counter() - t0
    return {"model_only_cells_per_s": n / seconds, "model_only_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=20_000, help="slide side, level-0 px")
    parser.add_argument("--cells", type=int, default=200, help="leukocytes drawn on the slide")
    parser.add_argument("--scale", type=int, default=8, choices=(4, 8), help="SR factor")
    parser.add_argument("--batch-size", type=int, default=16, help="cells per SR batch")
    parser.add_argument("--workers", type=int, default=0, help="LocalCluster workers (0: auto)")
    parser.add_argument("--checkpoint", default="", help="weights (default: shipped or random)")
    parser.add_argument("--precision", default="auto", help="auto, bf16 or fp32")
    parser.add_argument("--workdir", type=Path, default=None, help="keep slide and store here")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="leukoscreen-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    slide_path = workdir / f"synthetic_{args.size}.svs"
    t0 = time.perf_counter()
    scene = Scene.build(args.size, args.cells)
    if not slide_path.exists():
        write_slide(slide_path, scene)
    build_s = time.perf_counter() - t0

    checkpoint, weights = resolve_checkpoint(args.checkpoint, args.scale, workdir)
    # The slide is drawn at 0.52 um/px, what the x8 model expects; x4 expects half of it.
    config = override(
        Config(),
        **{"inference.scale": args.scale, "inference.batch_size": args.batch_size,
           "inference.checkpoint": checkpoint, "inference.precision": args.precision,
           "cluster.n_workers": args.workers or None,
           "slide.expected_mpp": MPP if args.scale == 8 else 2 * MPP},
    )  # fmt: skip
    store = workdir / "synthetic.leukoscreen.zarr"

    sampler = MemorySampler()
    sampler.start()
    t0 = time.perf_counter()
    summary = run_slide(slide_path, config, out=store, overwrite=True, progress=False)
    run_s = time.perf_counter() - t0
    sampler.stop()

    from leukoscreen.pipeline.cluster import available_cores, plan_local_workers, visible_gpus

    plans = plan_local_workers(
        config.cluster, gpus=visible_gpus(config.inference.device), cores=available_cores()
    )
    n_workers, threads = len(plans), plans[0].nthreads
    speed = model_only(store, config, checkpoint, threads)
    end_to_end = summary.n_cells / run_s if run_s else 0.0
    sr_stage = summary.n_cells / summary.sr_s if summary.sr_s else 0.0
    mib = 1 << 20
    result: dict[str, Any] = {
        "slide_px": [args.size, args.size],
        "slide_build_s": round(build_s, 1),
        "slide_bytes": slide_path.stat().st_size,
        "cells_drawn": args.cells,
        "cells_found": summary.n_cells,
        "scale": args.scale,
        "batch_size": args.batch_size,
        "cpu_cells_per_call": config.cluster.cpu_cells_per_call,
        "weights": weights,
        "workers": n_workers,
        "threads_per_worker": threads,
        "run_s": round(run_s, 2),
        "detect_s": round(summary.detect_s, 2),
        "sr_s": round(summary.sr_s, 2),
        "model_s_in_tasks": round(summary.model_s, 2),
        "end_to_end_cells_per_s": round(end_to_end, 4),
        "sr_stage_cells_per_s": round(sr_stage, 4),
        "model_only_cells_per_s": round(speed["model_only_cells_per_s"], 4),
        "ratio_end_to_end": round(end_to_end / speed["model_only_cells_per_s"], 3)
        if speed["model_only_cells_per_s"]
        else None,
        "ratio_sr_stage": round(sr_stage / speed["model_only_cells_per_s"], 3)
        if speed["model_only_cells_per_s"]
        else None,
        "peak_rss_total_mib": round(sampler.peak_rss / mib),
        "peak_pss_total_mib": round(sampler.peak_pss / mib),
        "peak_processes": sampler.peak_processes,
        "per_process_peak_rss_mib": {
            k: round(v / mib) for k, v in sorted(sampler.per_process_peak_rss.items())
        },
        "target_memory_mib": 2048,
        "machine": {
            "cpu_count": os.cpu_count(),
            "cores_available": available_cores(),
            "load_average_1m": os.getloadavg()[0],
            "platform": platform.platform(),
        },
    }
    print(json.dumps(result, indent=2))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
