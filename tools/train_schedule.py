"""The documented CPU training schedule: every shipped network, in order, resumable.

``python tools/train_schedule.py --data DIR --runs DIR`` trains each (arch, scale) of
:data:`CPU_SCHEDULE` into ``runs/<arch>_x<scale>/`` with ``leukoscreen.model.train.train``,
resuming whatever a previous call left, and after each one exports its best weights (fp16) into
the checkout's ``model/weights/`` folder when they beat the shipped ones on validation PSNR.

The paper trains 100 epochs per network on two GPUs (§2.5). On a 2-core CPU we run the first
``epochs`` epochs of that same recipe (Adam 1e-4, halved every 10 epochs, batch 8, whole images):
the epochs the shipped weights had (GP and NP longest, as they are the product's networks; a
later call with larger epochs continues the same runs). ``docs/model-card.md`` has the numbers.
Kill it at any time and call it again to continue.

On a GPU, ``--paper`` runs the paper's 100 epochs for every network. Small networks leave a GPU
mostly idle, so several schedules can share one (``--only`` lists, ``--threads`` each, and
``--no-export``), followed by one ``--export-only`` call that ships whatever beat the shipped
weights; the shipped weights were made that way (``docs/model-card.md``, Training).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from leukoscreen.model.checkpoint import LoadedWeights, load_weights, save_weights, sha256_file
from leukoscreen.model.config import TrainConfig
from leukoscreen.model.errors import UsageError
from leukoscreen.model.networks import design_kwargs
from leukoscreen.model.train import train

# (arch, scale, epochs), most important first so a partial run still ships the main model.
# GP and NP get equal epochs (the paper's GP-vs-NP comparison); SRCNN is cheap enough for the
# paper's full 100; VDSR (31 s/epoch) and SRResNet (13 s/epoch) get what the CPU budget allowed.
CPU_SCHEDULE: tuple[tuple[str, int, int], ...] = (
    ("gp", 8, 24),
    ("gp", 4, 24),
    ("np", 8, 24),
    ("np", 4, 24),
    ("srcnn", 8, 100),
    ("srcnn", 4, 100),
    ("vdsr", 8, 10),
    ("vdsr", 4, 10),
    ("srresnet", 8, 40),
    ("srresnet", 4, 40),
)
PAPER_EPOCHS = 100  # paper §3.4, for every network of Table 2 but the GANs
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "model" / "weights"
"""The checkout's shipped-weights folder: what this script exports into (a source folder, never
an installed package)."""


def register_shipped(
    weights_dir: Path,
    arch: str,
    scale: int,
    weights_file: Path,
    *,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Add or replace the manifest entry of a weights file inside ``weights_dir``."""
    manifest_path = weights_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[f"{arch}_x{scale}"] = {
        "file": weights_file.name,
        "sha256": sha256_file(weights_file),
        "arch": arch,
        "scale": scale,
        "metrics": metrics or {},
    }
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")


def read_shipped(weights_dir: Path) -> dict[str, Any]:
    """The manifest of ``weights_dir`` (empty when there is none)."""
    manifest_path = weights_dir / "manifest.json"
    return json.loads(manifest_path.read_text()) if manifest_path.exists() else {}


def export_if_better(best: Path, arch: str, scale: int) -> bool:
    """Copy ``best`` into the shipped weights (fp16) if its val PSNR beats the shipped one."""
    loaded = load_weights(best)
    new_psnr = float(loaded.meta["metrics"].get("val_psnr", float("-inf")))
    entry = read_shipped(WEIGHTS_DIR).get(f"{arch}_x{scale}")
    if entry is not None and float(entry["metrics"].get("val_psnr", float("-inf"))) >= new_psnr:
        return False
    ship(loaded, WEIGHTS_DIR)
    return True


def ship(loaded: LoadedWeights, weights_dir: Path) -> Path:
    """Write ``loaded`` as ``weights_dir/<arch>_x<scale>.pt`` (fp16) with its manifest entry."""
    target = weights_dir / f"{loaded.arch}_x{loaded.scale}.pt"
    save_weights(
        loaded.model,
        target,
        arch=loaded.arch,
        scale=loaded.scale,
        arch_kwargs=loaded.meta["arch_kwargs"],
        config=loaded.meta["config"],
        metrics=loaded.meta["metrics"],
        dtype=torch.float16,
    )
    register_shipped(weights_dir, loaded.arch, loaded.scale, target, metrics=loaded.meta["metrics"])
    return target


def _plan(only: str, paper: bool, epochs_scale: float) -> list[tuple[str, int, int]]:
    """(arch, scale, epochs) to run: the schedule, or the ``--only`` names in the order given."""
    by_name = {f"{arch}_x{scale}": (arch, scale, epochs) for arch, scale, epochs in CPU_SCHEDULE}
    names = [s for s in only.split(",") if s] or list(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        expected = ", ".join(by_name)
        raise UsageError(f"--only: unknown run {unknown[0]!r}; expected some of {expected}")
    plan = []
    for name in names:
        arch, scale, epochs = by_name[name]
        epochs = PAPER_EPOCHS if paper else epochs
        plan.append((arch, scale, max(1, round(epochs * epochs_scale))))
    return plan


def export_runs(runs: Path, names: list[str]) -> None:
    """Export each run's ``best.pt`` that beats the shipped weights (one process at a time)."""
    for name in names:
        best = runs / name / "best.pt"
        if best.exists():
            arch, scale = name.rsplit("_x", 1)
            print(f"{name}: shipped={export_if_better(best, arch, int(scale))}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the schedule (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="segmentation_WBC root")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="checkpoint folder")
    parser.add_argument(
        "--only", default="", help="comma list of <arch>_x<scale> to run, in this order"
    )
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply all epochs")
    parser.add_argument(
        "--paper", action="store_true", help=f"{PAPER_EPOCHS} epochs for every network (GPU work)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    parser.add_argument(
        "--augment", action="store_true", help="flip / rotate training images (TrainConfig.augment)"
    )
    parser.add_argument(
        "--no-export",
        action="store_true",
        help="train only; several schedules sharing a GPU export afterwards with --export-only",
    )
    parser.add_argument(
        "--export-only", action="store_true", help="export the runs' best weights, train nothing"
    )
    args = parser.parse_args(argv)
    try:
        plan = _plan(args.only, args.paper, args.epochs_scale)
    except UsageError as error:
        parser.error(str(error))  # one line, exit status 2
    if args.export_only:
        export_runs(args.runs, [f"{arch}_x{scale}" for arch, scale, _ in plan])
        return
    for arch, scale, epochs in plan:
        name = f"{arch}_x{scale}"
        cfg = replace(
            TrainConfig(),
            arch=arch,
            scale=scale,
            epochs=epochs,
            num_threads=args.threads,
            augment=args.augment,
        )
        result = train(
            cfg,
            data=args.data,
            run_dir=args.runs / name,
            resume=True,
            arch_kwargs=design_kwargs(arch),
            progress=True,
        )
        shipped = False if args.no_export else export_if_better(result.best_weights, arch, scale)
        print(
            f"{name}: {result.epochs_done} epochs, best val PSNR "
            f"{max(h['val_psnr'] for h in result.history):.3f} dB, shipped={shipped}",
            flush=True,
        )


if __name__ == "__main__":
    main()
