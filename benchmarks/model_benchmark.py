"""GP inference speed at 224 x 224: fp32 eager vs bf16 autocast + channels_last (+ torch.compile).

Cells per second of the full-size geometry-prior network (``build_network("gp")``, 8.5 M
parameters, random weights: speed does not depend on their values) on one-channel 224 x 224
inputs, for each batch size. Variants are timed *interleaved*: every repeat runs each variant
once in turn, so a machine that gets busier or quieter during the run affects them alike and the
ratio stays meaningful even when the absolute numbers move. Each timing is one forward pass under
``torch.inference_mode``; the reported figure is the median over repeats, after warm-up passes.

Variants:

* ``fp32``: eager, contiguous (NCHW) tensors, no autocast -- the baseline;
* ``bf16_cl``: eager, weights and input in ``channels_last``, ``torch.autocast(bfloat16)`` -- what
  ``leukoscreen.model.inference`` uses on CPUs with AMX/AVX-512 bf16 and on CUDA;
* ``gpsft_x4_bf16_cl``, ``gpsft_x8_bf16_cl``: GP-SFT (``leukoscreen.model.gpsft``) at x4 and
  x8 the same way, on the LR Y, Cb, Cr it reads (56 x 56 and 28 x 28 for a 224 x 224 cell), with
  the HR parsing refiner the shipped weights have;
  ``ratio_gpsft_x*_vs_bf16_cl`` is its speed-up over the paper's GP in the same run;
* ``bf16_cl_compiled``, ``gpsft_x*_bf16_cl_compiled`` (``--compile``): the same under
  ``torch.compile`` (inductor); its compile time shows in ``first_call_s`` (each new batch size
  compiles again).

``--flops`` counts each network's forward FLOPs per cell with ``torch.utils.flop_counter``
(convolutions and matrix products, 2 FLOPs per multiply-add; element-wise work not counted) and,
with ``--peak-tflops`` (the card's dense bf16 peak from its datasheet), reports each variant's
achieved TFLOP/s and its share of that peak.

Usage::

    python benchmarks/model_benchmark.py --batch-sizes 1,8,32 [--device auto] [--compile]

Prints one JSON document: machine, torch, per batch size the median seconds and cells/s of each
variant and the ratio of each variant to fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from leukoscreen.model.device import resolve_device
from leukoscreen.model.networks import build_network, design_kwargs

SIDE_PX = 224


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_variants(
    device: torch.device, *, compile_model: bool
) -> dict[str, Callable[[torch.Tensor], Any]]:
    """Forward functions keyed by variant name; each takes an NCHW fp32 batch."""
    torch.manual_seed(0)
    fp32_model = build_network("gp", scale=8, **design_kwargs("gp")).to(device).eval()
    cl_model = build_network("gp", scale=8, **design_kwargs("gp")).to(device).eval()
    cl_model.load_state_dict(fp32_model.state_dict())
    cl_model = cl_model.to(memory_format=torch.channels_last)

    def fp32(x: torch.Tensor) -> Any:
        return fp32_model(x)

    def bf16_cl(x: torch.Tensor) -> Any:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return cl_model(x.contiguous(memory_format=torch.channels_last))

    variants: dict[str, Callable[[torch.Tensor], Any]] = {"fp32": fp32, "bf16_cl": bf16_cl}
    sft_models: dict[int, Any] = {}
    for scale in (4, 8):
        # as shipped: with the HR parsing refiner (model/weights/manifest.json, arch_kwargs)
        sft = build_network("gpsft", scale=scale, refine_widths=(16, 32, 48)).to(device).eval()
        sft = sft.to(memory_format=torch.channels_last)

        def gpsft_bf16_cl(x: torch.Tensor, model: Any = sft, step: int = scale) -> Any:
            lr = x[:, :, ::step, ::step].contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return model(lr)

        variants[f"gpsft_x{scale}_bf16_cl"] = gpsft_bf16_cl
        sft_models[scale] = sft
    if compile_model:
        compiled = torch.compile(cl_model)

        def bf16_cl_compiled(x: torch.Tensor) -> Any:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return compiled(x.contiguous(memory_format=torch.channels_last))

        variants["bf16_cl_compiled"] = bf16_cl_compiled
        for scale, sft in sft_models.items():
            sft_compiled = torch.compile(sft)

            def gpsft_compiled(
                x: torch.Tensor, model: Any = sft_compiled, step: int = scale
            ) -> Any:
                lr = x[:, :, ::step, ::step].contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return model(lr)

            variants[f"gpsft_x{scale}_bf16_cl_compiled"] = gpsft_compiled
    return variants


def network_of(variant: str) -> str:
    """The network a variant runs: ``gp``, ``gpsft_x4`` or ``gpsft_x8``."""
    return variant[: len("gpsft_x4")] if variant.startswith("gpsft") else "gp"


def flops_per_cell() -> dict[str, float]:
    """Forward FLOPs of one 224 x 224 cell per network, counted on the CPU in fp32."""
    from torch.utils.flop_counter import FlopCounterMode

    channels = 3 if design_kwargs("gp").get("prior_input") == "ycbcr" else 1
    networks = {"gp": (build_network("gp", scale=8, **design_kwargs("gp")), 1)}
    for scale in (4, 8):
        sft = build_network("gpsft", scale=scale, refine_widths=(16, 32, 48))
        networks[f"gpsft_x{scale}"] = (sft, scale)
    counts = {}
    for name, (model, step) in networks.items():
        x = torch.rand(1, channels if name == "gp" else 3, SIDE_PX // step, SIDE_PX // step)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model.eval()(x)
        counts[name] = float(counter.get_total_flops())
    return counts


def add_throughput(results: list[dict[str, Any]], flops: dict[str, float], peak: float) -> None:
    """Achieved TFLOP/s of every variant (and share of ``peak`` TFLOP/s when given)."""
    for result in results:
        for name, entry in list(result.items()):
            if isinstance(entry, dict) and "cells_per_s" in entry:
                tflops = entry["cells_per_s"] * flops[network_of(name)] / 1e12
                entry["tflop_per_s"] = round(tflops, 2)
                if peak:
                    entry["share_of_peak"] = round(tflops / peak, 4)


@torch.inference_mode()
def bench_batch(
    variants: dict[str, Callable[[torch.Tensor], Any]],
    batch_size: int,
    *,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> dict[str, Any]:
    """Median seconds per forward pass and cells/s per variant, timed interleaved."""
    channels = 3 if design_kwargs("gp").get("prior_input") == "ycbcr" else 1  # Y (Cb, Cr)
    shape = (batch_size, channels, SIDE_PX, SIDE_PX)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    first_call_s: dict[str, float] = {}
    for name, forward in variants.items():
        for k in range(warmup):
            started = time.perf_counter()
            forward(x)
            _sync(device)
            if k == 0:
                first_call_s[name] = time.perf_counter() - started  # includes compilation
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, forward in variants.items():
            started = time.perf_counter()
            forward(x)
            _sync(device)
            times[name].append(time.perf_counter() - started)
    result: dict[str, Any] = {"batch_size": batch_size}
    for name, values in times.items():
        median = statistics.median(values)
        result[name] = {
            "median_s": round(median, 4),
            "cells_per_s": round(batch_size / median, 3),
            "first_call_s": round(first_call_s.get(name, float("nan")), 2),
            "times_s": [round(v, 4) for v in values],
        }
    for name in variants:
        if name.startswith("gpsft"):
            result[f"ratio_{name}_vs_bf16_cl"] = round(
                result[name]["cells_per_s"] / result["bf16_cl"]["cells_per_s"], 3
            )
        if name != "fp32":
            result[f"ratio_{name}_vs_fp32"] = round(
                result[name]["cells_per_s"] / result["fp32"]["cells_per_s"], 3
            )
            # Each round times the variants back to back: the median of per-round ratios is
            # the figure least moved by other load on the machine.
            per_round = [f / v for f, v in zip(times["fp32"], times[name], strict=True)]
            result[f"ratio_{name}_vs_fp32_per_round_median"] = round(
                statistics.median(per_round), 3
            )
    return result


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every batch size, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch-sizes", default="1,8,32", help="comma-separated batch sizes (default 1,8,32)"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes per variant")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per variant")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--flops", action="store_true", help="count FLOPs per cell")
    parser.add_argument(
        "--peak-tflops", type=float, default=0.0, help="dense bf16 peak of the card, TFLOP/s"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    variants = make_variants(device, compile_model=args.compile)
    started = time.perf_counter()
    results = [
        bench_batch(variants, b, device=device, warmup=args.warmup, repeats=args.repeats)
        for b in batch_sizes
    ]
    flops = flops_per_cell() if args.flops else {}
    if flops:
        add_throughput(results, flops, args.peak_tflops)
    report = {
        "benchmark": "GP forward, 1x224x224 luminance, cells/s",
        "gflop_per_cell": {k: round(v / 1e9, 3) for k, v in flops.items()},
        "peak_tflops": args.peak_tflops or None,
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        ),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "warmup": args.warmup,
        "repeats": args.repeats,
        "results": results,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
