"""SRResNet with a bicubic global residual: the evidence for why the plain one stays below bicubic.

Trains ``SRResNet(global_residual=True)`` (the output added to the MATLAB-bicubic up-sampling of
the LR input, last convolution starting at zero) with the paper's recipe otherwise unchanged
(Adam 1e-4 halved every 10 epochs, batch 8, the 8 flips) for the first ``--epochs`` epochs on
segmentation_WBC, resuming from ``runs/srresnet_res_x<scale>/last.pt``, and writes the
validation curve to ``docs/results/srresnet_residual_x<scale>.json``.

    python tools/srresnet_residual.py --scale 4 --epochs 10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leukoscreen.model.config import TrainConfig
from leukoscreen.model.train import train


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, train (or resume), write the curve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=4, choices=(4, 8))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/segmentation_WBC"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args(argv)
    run_dir = Path(f"runs/srresnet_res_x{args.scale}")
    cfg = TrainConfig(
        arch="srresnet", scale=args.scale, epochs=args.epochs, augment=True,
        num_threads=args.threads,
    )  # fmt: skip
    result = train(
        cfg, data=args.data, run_dir=run_dir, resume=(run_dir / "last.pt").exists(),
        arch_kwargs={"global_residual": True}, progress=False,
    )  # fmt: skip
    doc = {
        "command": f"python tools/srresnet_residual.py --scale {args.scale} --epochs {args.epochs}",
        "arch_kwargs": {"global_residual": True},
        "history": result.history,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"srresnet_residual_x{args.scale}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    for record in result.history:
        print(record["epoch"], round(record["val_psnr"], 3), flush=True)


if __name__ == "__main__":
    main()
