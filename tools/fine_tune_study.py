"""Fine-tuning a shipped network on a lab's own cells: how much it gains, and how fast.

For a field source the network was not trained on (default: draaslan), its leukocytes are cut
at full resolution (``leukoscreen.model.fields.crop_leukocytes``) and dealt once, seeded, into a
fixed test set and a pool. For each size n, the first n pool images are written as a plain image
folder (no masks: what a lab has) and ``leukoscreen train --init <network>`` is run on it with the
CLI's fine-tuning defaults; then the shipped network, the fine-tuned one and bicubic are scored
on the same test images with ``leukoscreen evaluate``. Writes one JSON document.

    python tools/fine_tune_study.py --source draaslan --scale 8 --sizes 20,50 \
        --out docs/results/fine_tune_draaslan_x8.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import skimage.io

from leukoscreen.model.checkpoint import load_init
from leukoscreen.model.config import TrainConfig
from leukoscreen.model.data import LAB_SPLIT_FRACTIONS
from leukoscreen.model.evaluate import evaluate_methods
from leukoscreen.model.fields import SOURCES, crop_leukocytes
from leukoscreen.model.train import train
from leukoscreen.pipeline.cli_model import FINE_TUNE

FOLDERS = {"bccd": "BCCD", "deepbionet": "DeepBioNet", "draaslan": "draaslan"}


def write_folder(samples: list[Any], folder: Path) -> Path:
    """The samples as PNG files in ``folder`` (a lab's plain image folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for sample in samples:
        skimage.io.imsave(folder / f"{sample.image_id}.png", sample.rgb, check_contrast=False)
    return folder


def study(
    source: str,
    data_root: Path,
    *,
    scale: int,
    sizes: list[int],
    n_test: int,
    init: str,
    work: Path,
    epochs: int = int(FINE_TUNE["epochs"]),
    lr: float = float(FINE_TUNE["lr"]),
    lr_halve_every: int = int(FINE_TUNE["lr_halve_every"]),
    batch_size: int = int(FINE_TUNE.get("batch_size", 8)),
    phase_augment: bool = bool(FINE_TUNE["phase_augment"]),
    seed: int = 0,
) -> dict[str, Any]:
    """Run the study; returns the JSON document."""
    samples = sorted(crop_leukocytes(source, data_root / FOLDERS[source]), key=lambda s: s.image_id)
    order = np.random.default_rng([seed, scale]).permutation(len(samples))
    test, pool = [samples[i] for i in order[:n_test]], [samples[i] for i in order[n_test:]]
    test_dir = write_folder(test, work / "test")
    initial = load_init(init, scale)
    key = f"{initial.arch}_x{scale}"
    shipped = evaluate_methods(
        data=test_dir, scales=(scale,), methods=["bicubic", initial.arch], figures=False,
        precision="bf16",
    )  # fmt: skip
    runs = []
    for n in sizes:
        if n > len(pool):
            runs.append({"n_images": n, "skipped": f"only {len(pool)} images outside the test set"})
            continue
        lab = write_folder(pool[:n], work / f"lab_{n}")
        cfg = TrainConfig(
            arch=initial.arch,
            scale=scale,
            epochs=epochs,
            lr=lr,
            lr_halve_every_epochs=lr_halve_every,
            batch_size=batch_size,
            init=init,
            lab_split=True,  # as `leukoscreen train --init` sets it
            augment=bool(FINE_TUNE["augment"]),
            phase_augment=phase_augment,
        )
        started = time.perf_counter()
        result = train(
            cfg, data=lab, run_dir=work / f"run_{n}",
            arch_kwargs=dict(initial.meta.get("arch_kwargs", {})), progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        tuned = evaluate_methods(
            data=test_dir, scales=(scale,), methods=[initial.arch], figures=False,
            checkpoints={key: result.best_weights}, precision="bf16",
        )  # fmt: skip
        runs.append(
            {
                "n_images": n,
                "train_images": n - max(round(LAB_SPLIT_FRACTIONS[1] * n), 1),
                "train_seconds": round(seconds, 1),
                "best_epoch": max(result.history, key=lambda r: r["val_psnr"])["epoch"],
                "psnr": tuned.value(scale, initial.arch, "psnr"),
                "gain_db": tuned.value(scale, initial.arch, "psnr")
                - shipped.value(scale, initial.arch, "psnr"),
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    arguments = [
        f"--source {source}",
        f"--scale {scale}",
        f"--sizes {','.join(map(str, sizes))}",
        f"--n-test {n_test}",
        f"--init {init}",
        f"--epochs {epochs}",
        f"--lr {lr:g}",
        f"--lr-halve-every {lr_halve_every}",
        f"--batch-size {batch_size}",
        "--phase-augment" if phase_augment else "--no-phase-augment",
    ]
    return {
        "command": "python tools/fine_tune_study.py " + " ".join(arguments),
        "source": source,
        "scale": scale,
        "network": key,
        "network_sha256": initial.sha256,
        "n_test": len(test),
        "fine_tune": {
            "epochs": epochs,
            "lr": lr,
            "lr_halve_every": lr_halve_every,
            "batch_size": batch_size,
            "lab_split": True,
            "augment": bool(FINE_TUNE["augment"]),
            "phase_augment": phase_augment,
            "precision": "auto",
        },
        "bicubic_psnr": shipped.value(scale, "bicubic", "psnr"),
        "shipped_psnr": shipped.value(scale, initial.arch, "psnr"),
        "runs": runs,
    }


def run_name(args: argparse.Namespace) -> str:
    """The study's folder under ``--work``: one per setting, so settings never share runs."""
    phase = "_phase" if args.phase_augment else ""
    schedule = f"e{args.epochs}_b{args.batch_size}_h{args.lr_halve_every}"
    return f"{args.source}_x{args.scale}_{schedule}{phase}"


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the study, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="draaslan", choices=SOURCES)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--scale", type=int, default=8, choices=(4, 8))
    parser.add_argument("--sizes", default="20,50", help="comma-separated training-set sizes")
    parser.add_argument("--n-test", type=int, default=40, help="fixed test images")
    parser.add_argument("--init", default="default", help="network to fine-tune")
    parser.add_argument("--work", type=Path, default=Path("runs/fine_tune"))
    parser.add_argument("--epochs", type=int, default=int(FINE_TUNE["epochs"]))
    parser.add_argument("--lr", type=float, default=float(FINE_TUNE["lr"]))
    parser.add_argument(
        "--lr-halve-every",
        type=int,
        default=int(FINE_TUNE["lr_halve_every"]),
        help="halve the learning rate every N epochs (0: held constant)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=int(FINE_TUNE.get("batch_size", 8)),
        help="images per step",
    )
    parser.add_argument(
        "--phase-augment",
        action=argparse.BooleanOptionalAction,
        default=bool(FINE_TUNE["phase_augment"]),
        help="shift each cell to another phase of the LR grid every epoch",
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    doc = study(
        args.source, args.data, scale=args.scale, n_test=args.n_test, init=args.init,
        epochs=args.epochs, lr=args.lr, lr_halve_every=args.lr_halve_every,
        batch_size=args.batch_size, phase_augment=args.phase_augment,
        sizes=[int(s) for s in args.sizes.split(",")], work=args.work / run_name(args),
    )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in doc.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
