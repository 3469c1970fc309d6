"""Does super-resolution help a leukocyte classifier? (issue 13 part 4; writes docs/downstream.md)

The paper motivates SR by the "fine details for classification" but never measures it. Here a
small CNN learns the five leukocyte types of segmentation_WBC (its ``Class Labels of Dataset
N.csv``; the fixed 70/15/15 split of ``leukoscreen.model.data.split_ids``, seed 0, the split the
shipped networks were trained on, so their test images are unseen) from

- ``hr``: the full-resolution cell (each source's size group: 120 px Dataset 1, 224 px Dataset 2);
- ``bicubic_x4`` / ``bicubic_x8``: the bicubic upsampling of its x4 / x8 LR version (the paper's
  degradation, ``leukoscreen.model.imresize.degrade``);
- ``sr_x4`` / ``sr_x8``: the shipped default network's output from the same LR version.

The LR, SR and bicubic inputs go through the product as a downstream user meets them: the LR
versions are super-resolved by ``load_upscaler`` and written into real stores
(``leukoscreen.pipeline.store.CellStore``, one per source, split and scale); the classifier
reads them back with ``CellDataset`` (``sr`` for SR, the bicubic upsampling of ``lr`` for the
baseline). Every input is resized to ``--side`` px (area-averaging down, as a classifier's input
layer would see it). Training: Adam 1e-3, batch 32, class-weighted cross entropy, the 8
symmetries of the square as augmentation, ``--epochs`` epochs, the epoch with the best
validation macro-F1 kept; test accuracy and macro-F1 reported as mean ± sd over ``--seeds``.

    python tools/downstream_classifier.py --data ../shared/data/segmentation_WBC \\
        --work runs/downstream --seeds 0 1 2 --epochs 40
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leukoscreen.model.data import fit_to_size, read_segmentation_wbc, size_for, split_ids
from leukoscreen.model.imresize import degrade
from leukoscreen.model.inference import load_upscaler
from leukoscreen.pipeline.dataset import CellDataset
from leukoscreen.pipeline.sr_task import cell_confidence
from leukoscreen.pipeline.store import CellStore, StoreIdentity

CLASSES = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")
PARTS = ("train", "val", "test")
BATCH = 16


def read_labels(root: Path) -> dict[str, int]:
    """image id (``wbc1-001``) -> class index 0..4."""
    labels = {}
    for number in (1, 2):
        with (root / f"Class Labels of Dataset {number}.csv").open(newline="") as f:
            rows = csv.reader(f)
            next(rows)  # "image ID,class label" (Dataset 1), "image ID,class" (Dataset 2)
            for image_id, label in rows:
                labels[f"wbc{number}-{int(image_id):03d}"] = int(label) - 1
    return labels


def write_store(path: Path, hr: np.ndarray, scale: int, upscaler, name: str) -> None:
    """The x``scale`` LR versions of ``hr`` (N, S, S, 3), super-resolved, as a complete store."""
    n, size = len(hr), hr.shape[1]
    lr = np.stack([degrade(h.astype(np.float64) / 255.0, scale)[0] for h in hr])
    lr = np.clip(np.rint(lr * 255.0), 0, 255).astype(np.uint8)
    identity = StoreIdentity(
        slide_path=name, slide_size_px=(size, size * n), slide_header_sha256="", slide_vendor=
        "segmentation_WBC", mpp=1.0, scale=scale, arch=str(upscaler.arch),
        checkpoint_sha256=str(upscaler.checkpoint_sha256), has_prior=True, hr_size_px=size,
        margin_px=0, batch_size=BATCH,
    )  # fmt: skip
    store = CellStore.create(path, identity, config={"downstream": name}, overwrite=True)
    index = np.arange(n, dtype=np.float64)
    store.write_table({
        "row": np.full(n, size / 2), "col": index * size + size / 2, "row_um": np.full(n, size / 2),
        "col_um": index * size + size / 2,
        "bbox": np.stack([np.zeros(n), index * size, np.full(n, size), (index + 1) * size],
                         axis=1).astype(np.int64),
        "area_um2": np.zeros(n), "score": np.ones(n, np.float32),
    })  # fmt: skip
    for b in range(store.n_batches):
        start, stop = store.batch_bounds(b)
        sr, parsing, confidence = upscaler.upscale_maps(lr[start:stop])
        store.write_batch(b, sr, parsing, lr[start:stop], cell_confidence(parsing, confidence))
        store.mark_done(b)
    store.finalize(timings={})


def to_input(images: torch.Tensor, side: int) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, side, side) float in [0, 1] (area-averaged down)."""
    x = images.float() / 255.0
    return F.interpolate(x, size=(side, side), mode="area") if x.shape[-1] != side else x


def inputs_from_stores(stores: list[Path], kind: str, side: int, bicubic) -> torch.Tensor:
    """Every cell of ``stores`` through ``CellDataset``: ``sr``, or the bicubic of ``lr``."""
    dataset, out = CellDataset(stores), []
    for i in range(len(dataset)):
        item = dataset[i]
        if kind == "sr":
            image = item["sr"][None]
        else:
            lr = item["lr"].permute(1, 2, 0).numpy()[None]
            up, _ = bicubic.upscale(lr)
            image = torch.from_numpy(up).permute(0, 3, 1, 2)
        out.append(to_input(image, side))
    return torch.cat(out)


class SmallCNN(nn.Module):
    """Four conv blocks (32-64-128-128), global average pooling, a linear layer."""

    def __init__(self, n_classes: int = len(CLASSES)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in (32, 64, 128, 128):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(2)]  # fmt: skip
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(channels, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def macro_f1(pred: np.ndarray, true: np.ndarray, n: int = len(CLASSES)) -> float:
    """Mean F1 over the classes present in ``true`` or ``pred``."""
    scores = []
    for c in range(n):
        tp = int(((pred == c) & (true == c)).sum())
        fp, fn = int(((pred == c) & (true != c)).sum()), int(((pred != c) & (true == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x.contiguous(memory_format=torch.channels_last)).argmax(1).numpy()


def train_one(data: dict[str, tuple[torch.Tensor, torch.Tensor]], seed: int, epochs: int) -> dict:
    """Train on ``train``, keep the best validation macro-F1 epoch, score ``test``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = data["train"]
    model = SmallCNN().to(memory_format=torch.channels_last)
    counts = torch.bincount(y, minlength=len(CLASSES)).float()
    weights = torch.where(counts > 0, counts.sum() / (len(CLASSES) * counts.clamp(min=1)), 0.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    best = (-1.0, None)
    for _ in range(epochs):
        model.train()
        for batch in np.array_split(rng.permutation(len(x)), max(1, len(x) // 32)):
            xb = x[batch]
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            xb = torch.rot90(xb.flip(-1) if flip else xb, k, dims=(2, 3))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(xb.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits.float(), y[batch], weight=weights)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        f1 = macro_f1(predict(model, data["val"][0]), data["val"][1].numpy())
        if f1 > best[0]:
            best = (f1, {k: v.clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[1])
    pred, true = predict(model, data["test"][0]), data["test"][1].numpy()
    return {"seed": seed, "val_macro_f1": best[0], "test_accuracy": float((pred == true).mean()),
            "test_macro_f1": macro_f1(pred, true)}  # fmt: skip


def build_inputs(args: argparse.Namespace) -> tuple[dict, dict]:
    """Per variant and part: (inputs, labels); and the split sizes."""
    samples = read_segmentation_wbc(args.data)
    labels = read_labels(args.data)
    split = split_ids(samples, seed=0)
    variants: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    for part in PARTS:
        ids = set(split[part])
        chosen = {src: [s for s in samples if s.source == src and s.image_id in ids]
                  for src in ("wbc1", "wbc2")}  # fmt: skip
        y = torch.tensor([labels[s.image_id] for src in chosen for s in chosen[src]])
        hr = {src: np.stack([fit_to_size(s.rgb, size_for(src, 0))[0] for s in chosen[src]])
              for src in chosen}  # fmt: skip
        full = torch.cat([to_input(torch.from_numpy(hr[src]).permute(0, 3, 1, 2), args.side)
                          for src in chosen])  # fmt: skip
        variants.setdefault("hr", {})[part] = (full, y)
        for scale in (4, 8):
            upscaler = load_upscaler("default", scale, device="cpu", precision="auto")
            bicubic = load_upscaler("bicubic", scale, device="cpu", precision="fp32")
            stores = []
            for src in chosen:
                stores.append(args.work / f"wbc_{src}_{part}_x{scale}.leukoscreen.zarr")
                if not stores[-1].exists():
                    write_store(stores[-1], hr[src], scale, upscaler, f"{src}-{part}")
            for kind in ("bicubic", "sr"):
                x = inputs_from_stores(stores, kind, args.side, bicubic)
                variants.setdefault(f"{kind}_x{scale}", {})[part] = (x, y)
    sizes = {part: len(split[part]) for part in PARTS}
    return variants, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="segmentation_WBC folder")
    parser.add_argument("--work", type=Path, default=Path("runs/downstream"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--side", type=int, default=112, help="classifier input side, px")
    parser.add_argument("--out", type=Path, default=Path("docs/results/downstream.json"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    variants, sizes = build_inputs(args)
    results = {}
    for name, data in variants.items():
        runs = [train_one(data, seed, args.epochs) for seed in args.seeds]
        results[name] = {"runs": runs}
        for key in ("test_accuracy", "test_macro_f1"):
            values = [r[key] for r in runs]
            results[name][f"{key}_mean"] = statistics.mean(values)
            results[name][f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        print(name, json.dumps({k: round(v, 4) for k, v in results[name].items() if k != "runs"}))
    test_counts = torch.bincount(variants["hr"]["test"][1], minlength=len(CLASSES)).tolist()
    report = {"command": "python tools/downstream_classifier.py " + " ".join(
                  f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                  for k, v in vars(args).items() if k != "out"),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "split_sizes": sizes,
              "test_class_counts": dict(zip(CLASSES, test_counts, strict=True)),
              "side_px": args.side, "epochs": args.epochs,
              "seconds": round(time.perf_counter() - t0), "results": results}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
