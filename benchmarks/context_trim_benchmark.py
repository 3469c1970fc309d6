"""What the context margin costs the network, with and without trimming it inside the network.

The pipeline reads every cell with ``margin_px`` LR pixels of context per side and wants the
super-resolved core back (``Upscaler.upscale_maps(lr, trim=margin_px)``). This times the shipped
default network on synthetic crops of the pipeline's size, in calls of several sizes (the
``cluster.cpu_cells_per_call`` choice), with ``trim`` 0 (full output, cut afterwards) and with the
margin trimmed (GP-SFT skips the margin's HR stages). One process, interleaved points, JSON out.
From the project root::

    python benchmarks/context_trim_benchmark.py --scale 8 --out /tmp/context_trim.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from leukoscreen.model.inference import load_pretrained
from leukoscreen.pipeline.config import load_config
from leukoscreen.pipeline.crops import CropGeometry


def cells_per_s(upscaler, lr: np.ndarray, *, trim: int, per_call: int, seconds: float) -> float:
    """Cells per second of ``upscale_maps`` over ``lr`` in calls of ``per_call`` crops."""
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for first in range(0, len(lr), per_call):
            upscaler.upscale_maps(lr[first : first + per_call], trim=trim)
        done += len(lr)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, choices=(4, 8), default=8)
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 4, 8, 16], help="crops/call")
    parser.add_argument("--seconds", type=float, default=6.0, help="per point and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    inference = load_config(None).inference  # the defaults: HR size and context margin
    geometry = CropGeometry(
        scale=args.scale, hr_size_px=inference.hr_size_px, margin_px=inference.context_margin_px
    )
    upscaler = load_pretrained(scale=args.scale, device="cpu")
    rng = np.random.default_rng(0)
    side = geometry.read_px
    lr = np.clip(rng.normal(180, 30, (16, side, side, 3)), 0, 255).astype(np.uint8)
    points: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for per_call in args.calls:
            for trim in (0, geometry.margin_px):
                key = f"per_call={per_call} trim={trim}"
                upscaler.upscale_maps(lr[:per_call], trim=trim)  # warm-up of this shape
                speed = cells_per_s(upscaler, lr, trim=trim, per_call=per_call,
                                    seconds=args.seconds)  # fmt: skip
                points.setdefault(key, []).append(round(speed, 2))
                print(f"{key}: {speed:.1f} cells/s", flush=True)
    result = {
        "arch": upscaler.arch,
        "scale": args.scale,
        "crop_px": side,
        "margin_px": geometry.margin_px,
        "precision": upscaler.precision,
        "threads": args.threads,
        "cells_per_s": points,
        "machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform()},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
