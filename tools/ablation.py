"""Ablations of the choices the paper leaves open, at one scale and a matched short budget.

``python tools/ablation.py --data DIR --scale 8 --epochs 6`` trains, from the same
seed and with the same recipe as ``leukoscreen train``, each variant of :data:`VARIANTS` into
``runs/ablation_x<scale>/<name>/`` (resumable: call again after a kill) and writes the validation
PSNR and parsing mIoU of every epoch to ``docs/results/ablation_x<scale>.json`` and a markdown
table next to it. The choice is made on the validation split; the test split stays for Table 2.

Each variant differs from ``gp``, the class defaults (global residual, sigmoid map with BCE,
luminance-only prior, U-Net initialised as in the U-Net paper), in exactly one choice:

* ``gp_ycbcr_prior``: the U-Net reads the bicubic Y, Cb and Cr instead of Y alone (the design
  that ships, :data:`leukoscreen.model.networks.DESIGN_KWARGS`);
* ``gp_pytorch_init``: the U-Net keeps PyTorch's default initialisation;
* ``gp_softmax``: softmax map with cross-entropy instead of per-channel sigmoid with BCE;
* ``gp_no_global_residual``: the decoder predicts the image itself, not the residual;
* ``np``: no prior at all (the paper's Table 1 comparison at the same budget).

The table also has a ``bicubic`` row: the validation PSNR of the network input itself.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leukoscreen.model.config import SCALES, TrainConfig
from leukoscreen.model.data import SRDataset
from leukoscreen.model.sources import read_samples, split_samples
from leukoscreen.model.train import evaluate, train

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "gp": ("gp", {}),
    "gp_ycbcr_prior": ("gp", {"prior_input": "ycbcr"}),
    "gp_pytorch_init": ("gp", {"unet_init": "pytorch"}),
    "gp_softmax": ("gp", {"prior_activation": "softmax"}),
    "gp_no_global_residual": ("gp", {"global_residual": False}),
    "np": ("np", {}),
}


class _Bicubic(nn.Module):
    """The bicubic input itself, as a network (the reference row of the table)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x, None


def bicubic_val_psnr(data: Path, scale: int) -> float:
    """Mean validation PSNR of bicubic up-sampling, scored exactly as training scores epochs."""
    val = split_samples(read_samples(data), TrainConfig().seed)["val"]
    scores = evaluate(
        _Bicubic(), SRDataset(val, scale=scale), device=torch.device("cpu"), precision="fp32"
    )
    return scores["psnr"]


def markdown_table(
    results: dict[str, list[dict[str, float]]], scale: int, bicubic: float | None = None
) -> str:
    """One row per variant: last-epoch and best val PSNR, last-epoch mIoU, seconds per epoch."""
    lines = [
        f"| Variant (x{scale}) | epochs | val PSNR last (dB) | val PSNR best (dB) "
        "| val mIoU last | s/epoch |",
        "|---|---|---|---|---|---|",
    ]
    if bicubic is not None:
        lines.append(f"| bicubic | – | {bicubic:.3f} | {bicubic:.3f} | – | – |")
    for name, history in results.items():
        last = history[-1]
        best = max(h["val_psnr"] for h in history)
        miou = f"{last['val_miou']:.3f}" if "val_miou" in last else "–"
        seconds = sum(h["seconds"] for h in history) / len(history)
        lines.append(
            f"| {name} | {len(history)} | {last['val_psnr']:.3f} | {best:.3f} | {miou} "
            f"| {seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the ablation (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="segmentation_WBC root")
    parser.add_argument("--scale", type=int, default=8, choices=SCALES)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per variant")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="checkpoint root")
    parser.add_argument("--out", type=Path, default=Path("docs/results"), help="table folder")
    parser.add_argument("--only", default="", help="comma list of variant names")
    args = parser.parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"ablation_x{args.scale}.json"
    results: dict[str, list[dict[str, float]]] = {}
    if json_path.exists():
        results = json.loads(json_path.read_text())["variants"]
    bicubic = bicubic_val_psnr(args.data, args.scale)
    for name, (arch, arch_kwargs) in VARIANTS.items():
        if only and name not in only:
            continue
        cfg = replace(TrainConfig(), arch=arch, scale=args.scale, epochs=args.epochs)
        result = train(
            cfg,
            data=args.data,
            run_dir=args.runs / f"ablation_x{args.scale}" / name,
            resume=True,
            arch_kwargs=arch_kwargs,
            progress=True,
        )
        results[name] = result.history
        ordered = {k: results[k] for k in VARIANTS if k in results}
        saved = {
            "scale": args.scale,
            "epochs": args.epochs,
            "bicubic_val_psnr": bicubic,
            "variants": ordered,
        }
        json_path.write_text(json.dumps(saved, indent=1) + "\n")
        table = markdown_table(ordered, args.scale, bicubic)
        (args.out / f"ablation_x{args.scale}.md").write_text(table)
        print(markdown_table({name: result.history}, args.scale), flush=True)


if __name__ == "__main__":
    main()
