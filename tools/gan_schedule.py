"""The GAN schedule of issue 15: SRGAN and SFTGAN at x4 and x8, the paper's settings, resumable.

``python tools/gan_schedule.py --data ../shared/data/segmentation_WBC --runs runs/gan --epochs N``
trains each of SRGAN x4, SRGAN x8, SFTGAN x4 and SFTGAN x8 (in that order) up to ``N`` epochs
(at most the paper's: SRGAN 100, SFTGAN 200; §3.4) with ``leukoscreen.model.gan_train``,
resuming whatever a previous call left in ``runs/gan/<arch>_x<scale>/``. A later call with a
larger ``N`` continues the same runs exactly, so the paper's schedule is reached call by call.
The recipe is the paper's common one (Adam 1e-4 halved every 10 epochs, batch 8, whole images)
on segmentation_WBC's train part, with the 8 symmetries of the square; SFTGAN's first
:data:`SFTGAN_PIXEL_EPOCHS` epochs pre-train its SFT layers on the pixel loss.

``--export`` writes each run's latest generator (fp16) into the checkout's ``model/weights/``
and its manifest, with the epochs done, so ``leukoscreen evaluate`` reports them.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from train_schedule import WEIGHTS_DIR, ship

from leukoscreen.model.checkpoint import load_weights
from leukoscreen.model.config import TrainConfig
from leukoscreen.model.gan_train import train_gan

PAPER_EPOCHS = {"srgan": 100, "sftgan": 200}
SFTGAN_PIXEL_EPOCHS = 5
ORDER = (("srgan", 4), ("srgan", 8), ("sftgan", 4), ("sftgan", 8))
BASE = TrainConfig(arch="srgan", epochs=1, augment=True)  # content weight 10: TrainConfig's


def run_config(arch: str, scale: int, epochs: int) -> TrainConfig:
    """The config of one run at ``epochs`` (everything else fixed, so runs resume)."""
    pixel = SFTGAN_PIXEL_EPOCHS if arch == "sftgan" else 0
    return replace(
        BASE, arch=arch, scale=scale, epochs=min(epochs, PAPER_EPOCHS[arch]), pixel_epochs=pixel
    )  # type: ignore[arg-type]


def export(runs: Path, arch: str, scale: int, weights_dir: Path = WEIGHTS_DIR) -> Path | None:
    """Ship the latest generator of ``runs/<arch>_x<scale>`` (fp16) with its manifest entry."""
    source = runs / f"{arch}_x{scale}" / "generator.pt"
    if not source.exists():
        return None
    return ship(load_weights(source), weights_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/segmentation_WBC"))
    parser.add_argument("--runs", type=Path, default=Path("runs/gan"))
    parser.add_argument("--epochs", type=int, required=True, help="train each run up to this")
    parser.add_argument("--only", nargs="*", default=None, help="e.g. srgan_x4 sftgan_x8")
    parser.add_argument("--export", action="store_true", help="ship the generators afterwards")
    args = parser.parse_args()
    for arch, scale in ORDER:
        name = f"{arch}_x{scale}"
        if args.only is not None and name not in args.only:
            continue
        run_dir = args.runs / name
        result = train_gan(
            run_config(arch, scale, args.epochs),
            data=args.data,
            run_dir=run_dir,
            resume=(run_dir / "last.pt").exists(),
        )
        psnr = result.history[-1]["val_psnr"] if result.history else float("nan")
        print(f"{name}: {result.epochs_done} epochs, val PSNR {psnr:.3f}")
        if args.export:
            print(f"  shipped {export(args.runs, arch, scale)}")


if __name__ == "__main__":
    main()
