"""The paper's benchmark (Hua et al. 2020, §3.4, Table 2 and Figs. 4-5) on leukocyte images.

:func:`evaluate_methods` runs bicubic and every shipped network on the test split of
segmentation_WBC (the split training used: ``split_ids`` with the same seed) or on every image of
any folder of HR images, and returns a :class:`Table`; :func:`write_results` writes it as
``table2.md``, ``table2.csv``, ``table2.json`` and the figures ``fig_x4.png`` / ``fig_x8.png``.

The pipeline per image is the training one (``leukoscreen.model.data.SRDataset``), so evaluation
sees exactly what training saw: HR RGB fitted to its size group (120 px for segmentation_WBC
Dataset 1, 224 px otherwise; centre crop, reflect-pad bottom/right), Y of MATLAB ``rgb2ycbcr``,
LR = ``imresize(Y, 1/s)`` (MATLAB bicubic, antialiased, unrounded), network input =
``imresize(LR, s)`` (SRResNet reads LR itself). The SR output is clipped to [0, 1]; PSNR and SSIM
are computed on Y in float32 over the ``valid`` extent of original pixels with ``shave = scale``
pixels removed per side (``leukoscreen.model.metrics``), per image, then averaged. Networks run in
fp32 by default (the paper's "float32"), so the committed table reproduces to ~1e-6 on a CPU.

Parsing is scored for GP only, against the expert masks where they exist: IoU and Dice per class
(nucleus, cytoplasm) on the valid extent, averaged over images; mIoU is their class mean.

``python -m leukoscreen.model.evaluate --write-card`` copies the committed ``table2.md`` and the
training wall times of ``runs/*/last.pt`` into ``docs/model-card.md`` between its markers.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import math
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import skimage.io
import torch
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from leukoscreen.model import __version__
from leukoscreen.model.checkpoint import (
    WEIGHTS_DIR,
    LoadedWeights,
    load_weights,
    read_manifest,
)
from leukoscreen.model.config import PRIOR_ARCHS, SCALES, check_scale
from leukoscreen.model.data import Sample, SRDataset, fit_to_size
from leukoscreen.model.device import (
    channels_last,
    model_input,
    parsing_labels,
    resolve_device,
    resolve_precision,
    run_network,
)
from leukoscreen.model.errors import CheckpointError, UsageError
from leukoscreen.model.imresize import degrade, rgb2ycbcr, ycbcr2rgb
from leukoscreen.model.inference import colour_parsing
from leukoscreen.model.metrics import PROXY_KEYS, parsing_proxies, parsing_scores, psnr, ssim
from leukoscreen.model.networks import METHOD_NAMES
from leukoscreen.model.train import read_samples, split_samples

METHODS = ("bicubic", "srcnn", "vdsr", "srresnet", "np", "gp", "gpsft")
"""Table 2's columns in the paper's order (SRGAN and SFTGAN are not built yet), then our
faster variant GP-SFT (``leukoscreen.model.gpsft``)."""
FIGURE_METHODS = ("bicubic", "srresnet", "np", "gp")
"""The SR panels of Figs. 4-5, between the LR input and the HR ground truth."""
FIGURE_IMAGES = 3
PARSING_NAMES = {"gp": "GP", "gpsft": "GP-SFT"}
PARSING_KEYS = ("miou", "mdice", "iou_nucleus", "iou_cytoplasm", "dice_nucleus", "dice_cytoplasm")
CSV_COLUMNS = ("scale", "method", "name", "source", "n_images", "psnr", "ssim", *PARSING_KEYS)

PAPER_TABLE2: dict[int, dict[str, dict[str, float]]] = {
    4: {
        "bicubic": {"psnr": 36.6830, "ssim": 0.9714},
        "srcnn": {"psnr": 37.8846, "ssim": 0.9775},
        "vdsr": {"psnr": 36.6831, "ssim": 0.9714},
        "srresnet": {"psnr": 38.4418, "ssim": 0.9785},
        "srgan": {"psnr": 36.1347, "ssim": 0.9421},
        "sftgan": {"psnr": 35.9718, "ssim": 0.9238},
        "np": {"psnr": 39.5252, "ssim": 0.9832},
        "gp": {"psnr": 39.9251, "ssim": 0.9834},
    },
    8: {
        "bicubic": {"psnr": 31.1077, "ssim": 0.9239},
        "srcnn": {"psnr": 31.4251, "ssim": 0.9314},
        "vdsr": {"psnr": 31.1073, "ssim": 0.9241},
        "srresnet": {"psnr": 33.7853, "ssim": 0.9498},
        "srgan": {"psnr": 31.4918, "ssim": 0.9156},
        "sftgan": {"psnr": 31.3653, "ssim": 0.8566},
        "np": {"psnr": 34.4041, "ssim": 0.9565},
        "gp": {"psnr": 34.9352, "ssim": 0.9572},
    },
}
"""Hua et al. 2020, Table 2 (their private 52-image leukocyte set), for reference only."""

CARD_BEGIN, CARD_END = "<!-- table2:begin -->", "<!-- table2:end -->"
TIMES_BEGIN, TIMES_END = "<!-- walltime:begin -->", "<!-- walltime:end -->"


@dataclass(frozen=True)
class ImageScore:
    """PSNR and SSIM of one method on one image at one scale (Y, float32, shave = scale)."""

    image_id: str
    source: str
    scale: int
    method: str
    psnr: float
    ssim: float


@dataclass(frozen=True)
class ParsingScore:
    """GP's parsing map against the expert mask of one image (see ``metrics.parsing_scores``)."""

    image_id: str
    source: str
    scale: int
    scores: dict[str, float]
    method: str = "gp"


@dataclass(frozen=True)
class ProxyScore:
    """Mask-free measures of a parsing map on one image (``metrics.parsing_proxies``)."""

    image_id: str
    source: str
    scale: int
    method: str
    scores: dict[str, float]


@dataclass
class Table:
    """Everything one evaluation measured; aggregates, markdown, CSV and JSON are views of it.

    Attributes:
        scales: evaluated SR factors.
        methods: requested methods in Table 2 order (missing ones included).
        images: per-image SR scores.
        parsing: per-image parsing scores of GP (images with masks only).
        missing: ``<method>_x<scale>`` keys that had no weights and were skipped.
        weights: ``<method>_x<scale>`` -> file, sha256, epoch and validation PSNR of the weights.
        meta: command, date, data, split, split sizes, device, precision, versions.
        figures: scale -> (H, W, 3) uint8 figure like the paper's Figs. 4-5 (not serialised).
    """

    scales: tuple[int, ...]
    methods: tuple[str, ...]
    images: list[ImageScore]
    parsing: list[ParsingScore]
    missing: list[str]
    weights: dict[str, dict[str, Any]]
    meta: dict[str, Any]
    figures: dict[int, NDArray[np.uint8]] = field(default_factory=dict, repr=False)
    proxies: list[ProxyScore] = field(default_factory=list)

    def proxy_mean(self, scale: int, method: str, source: str = "all") -> dict[str, Any]:
        """Mean mask-free parsing measures of ``method`` at ``scale`` ({} when none)."""
        return _mean_scores(self.proxies, PROXY_KEYS, "n_images", scale, method, source)

    def sources(self) -> list[str]:
        """``all`` followed by each source when there are several."""
        names = sorted({score.source for score in self.images})
        return ["all", *names] if len(names) > 1 else ["all"]

    def rows(self) -> list[dict[str, Any]]:
        """One row per (scale, method, source): mean PSNR/SSIM, and GP's parsing where scored."""
        rows = []
        for scale in self.scales:
            for method in self.methods:
                for source in self.sources():
                    picked = [
                        s
                        for s in self.images
                        if s.scale == scale
                        and s.method == method
                        and (source == "all" or s.source == source)
                    ]
                    if not picked:
                        continue
                    row: dict[str, Any] = {
                        "scale": scale,
                        "method": method,
                        "name": METHOD_NAMES[method],
                        "source": source,
                        "n_images": len(picked),
                        "psnr": float(np.mean([s.psnr for s in picked])),
                        "ssim": float(np.mean([s.ssim for s in picked])),
                    }
                    if method in PRIOR_ARCHS:
                        row.update(self.parsing_mean(scale, source, method))
                    rows.append(row)
        return rows

    def parsing_mean(self, scale: int, source: str = "all", method: str = "gp") -> dict[str, Any]:
        """Mean parsing scores of ``method`` at ``scale`` over images with masks ({} if none)."""
        return _mean_scores(self.parsing, PARSING_KEYS, "n_masks", scale, method, source)

    def value(self, scale: int, method: str, metric: str, source: str = "all") -> float | None:
        """One aggregated number, or None when it was not measured."""
        for row in self.rows():
            if (row["scale"], row["method"], row["source"]) == (scale, method, source):
                result = row.get(metric)
                return None if result is None else float(result)
        return None

    def to_markdown(self) -> str:
        """Table 2 in the paper's layout, then parsing, per-source and the paper's values."""
        return _markdown(self)

    def to_csv(self) -> str:
        """:data:`CSV_COLUMNS`, one line per :meth:`rows` entry; empty cells where not scored."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({k: _csv_cell(row.get(k)) for k in CSV_COLUMNS})
        return buffer.getvalue()

    def to_json(self) -> dict[str, Any]:
        """Metadata, aggregated rows, parsing per scale, and the paper's Table 2."""
        parsing = []
        for scale in self.scales:
            for source in self.sources():
                means = self.parsing_mean(scale, source)
                if means:
                    parsing.append({"scale": scale, "source": source, **means})
        return {
            **self.meta,
            "scales": list(self.scales),
            "methods": list(self.methods),
            "missing": list(self.missing),
            "weights": self.weights,
            "results": self.rows(),
            "parsing": parsing,
            "parsing_proxies": [
                {"scale": scale, "method": method, "source": source, **means}
                for scale in self.scales
                for method in self.methods
                for source in self.sources()
                if (means := self.proxy_mean(scale, method, source))
            ],
            "paper_table2": {str(k): v for k, v in PAPER_TABLE2.items()},
        }


def _mean_scores(
    records: Sequence[ParsingScore | ProxyScore],
    keys: Sequence[str],
    count_key: str,
    scale: int,
    method: str,
    source: str,
) -> dict[str, Any]:
    """Per-key means of the ``scores`` of the records of (scale, method, source), with their
    count under ``count_key``; {} when there are none."""
    picked = [
        r.scores
        for r in records
        if r.scale == scale and r.method == method and source in ("all", r.source)
    ]
    if not picked:
        return {}
    means: dict[str, Any] = {key: float(np.mean([p[key] for p in picked])) for key in keys}
    means[count_key] = len(picked)
    return means


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    return f"{value:.6f}" if isinstance(value, float) else value


# ---------------------------------------------------------------------------------------------
# evaluation


def parse_checkpoint_specs(specs: Sequence[str]) -> dict[str, Path]:
    """``["gp_x8=runs/gp_x8/best.pt", ...]`` -> ``{"gp_x8": Path(...)}``.

    Raises:
        UsageError: a spec without ``=`` or with an unknown ``<method>_x<scale>`` name.
    """
    known = {f"{m}_x{s}" for m in METHODS[1:] for s in SCALES}
    parsed = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or name not in known or not path:
            raise UsageError(
                f"--checkpoint: expected <method>_x<scale>=PATH with <method>_x<scale> one of "
                f"{', '.join(sorted(known))}, got {spec!r}"
            )
        parsed[name] = Path(path)
    return parsed


def _check_arguments(scales: Sequence[int], methods: Sequence[str], split: str) -> None:
    for scale in scales:
        check_scale(scale, where="--scale")
    for method in methods:
        if method not in METHODS:
            raise UsageError(f"--method: expected one of {', '.join(METHODS)}, got {method!r}")
    if split not in ("train", "val", "test"):
        raise UsageError(f"--split: expected train, val or test, got {split!r}")


def _load_method(
    method: str, scale: int, checkpoints: Mapping[str, Path], *, required: bool
) -> LoadedWeights | None:
    """The weights of ``method`` at ``scale``: an explicit checkpoint, else the shipped one.

    Returns None when nothing is shipped for it and it was not explicitly asked for.
    """
    key = f"{method}_x{scale}"
    if key in checkpoints:
        loaded = load_weights(checkpoints[key])
        if (loaded.arch, loaded.scale) != (method, scale):
            raise CheckpointError(
                f"{checkpoints[key]}: holds {loaded.arch}_x{loaded.scale}, expected {key}"
            )
        return loaded
    entry = read_manifest().get(key)
    if entry is None:
        if required:
            raise CheckpointError(
                f"{WEIGHTS_DIR / 'manifest.json'}: no shipped weights for {key}; train it or "
                "pass a checkpoint"
            )
        return None
    return load_weights(WEIGHTS_DIR / entry["file"], expected_sha256=str(entry["sha256"]))


@torch.no_grad()
def predict(
    model: nn.Module | None,
    dataset: SRDataset,
    *,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 8,
) -> tuple[list[NDArray[np.float32]], list[NDArray[np.uint8] | None]]:
    """Run a network (or bicubic, ``model=None``) on every item of ``dataset``.

    Returns:
        per item, in dataset order: SR luminance (H, W) float32 clipped to [0, 1], and parsing
        labels (H, W) uint8 (0 background, 1 cytoplasm, 2 nucleus) or None without a prior.
    """
    srs: list[NDArray[np.float32]] = [np.empty(0, np.float32)] * len(dataset)
    labels: list[NDArray[np.uint8] | None] = [None] * len(dataset)
    for indices in dataset.batches(batch_size, seed=0, epoch=0, shuffle=False):
        batch = dataset.collate(indices)
        if model is None:
            sr, logits = batch["up"], None
        else:
            x = model_input(model, batch).to(device)
            # (N, 1, H, W), (N, 3, H, W) or None
            sr, logits = run_network(model, x, device=device, precision=precision)
        sr_np = sr.float().clamp(0, 1).cpu().numpy()[:, 0]
        for row, index in enumerate(indices):
            srs[index] = sr_np[row]
            if logits is not None:
                labels[index] = parsing_labels(logits[row]).cpu().numpy()
    return srs, labels


def _figure_picks(samples: Sequence[Sample], count: int) -> list[int]:
    """Indices of ``count`` images spread over the sorted ids of the largest size group."""
    sizes = {s.source: max(s.rgb.shape[:2]) for s in samples}
    best = max(sizes.values())
    pool = sorted(
        (i for i, s in enumerate(samples) if sizes[s.source] == best and s.labels is not None),
        key=lambda i: samples[i].image_id,
    ) or sorted(range(len(samples)), key=lambda i: samples[i].image_id)
    if len(pool) <= count:
        return pool
    return [pool[round(k * (len(pool) - 1) / (count - 1))] for k in range(count)]


def evaluate_methods(
    *,
    data: Path,
    scales: Sequence[int] = (4, 8),
    methods: Sequence[str] | None = None,
    split: str = "test",
    seed: int = 0,
    device: str = "auto",
    precision: str = "fp32",
    checkpoints: Mapping[str, Path] | None = None,
    figures: bool = True,
    batch_size: int = 8,
) -> Table:
    """Benchmark SR methods as in the paper's Table 2 (see the module docstring).

    Args:
        data: segmentation_WBC root (its ``split`` is evaluated) or any folder of HR images with
            optional masks (all of its images are evaluated).
        scales: SR factors, 4 and/or 8.
        methods: subset of :data:`METHODS`; None means all, and then a method without weights is
            reported as missing instead of failing.
        split: ``train``, ``val`` or ``test`` (segmentation_WBC only).
        seed: seed of the split (training's ``TrainConfig.seed``).
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``fp32`` (default, reproducible) or ``bf16`` / ``auto`` for speed.
        checkpoints: ``<method>_x<scale>`` -> weights file, used instead of the shipped weights.
        figures: also build the Figs. 4-5 style figure per scale.
        batch_size: images per forward pass (within one size group).

    Raises:
        UsageError: unknown scale, method or split.
        DataError: missing or empty folder, masks of another size, too few images.
        CheckpointError: requested weights absent, or a file failing its sha256/arch check.
    """
    required = methods is not None
    _check_arguments(scales, methods or [], split)
    if required and not methods:
        raise UsageError("--method: no method given")
    methods = tuple(m for m in METHODS if m in (methods or METHODS))  # Table 2's order
    checkpoints = dict(checkpoints or {})
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    data = Path(data)
    samples = read_samples(data)
    is_wbc = any((data / f"Dataset {n}").is_dir() for n in (1, 2))
    if is_wbc or any(s.split is not None for s in samples):  # a fixed split: score its part
        parts = split_samples(samples, seed)
        chosen = parts[split]
        split_sizes = {
            part: {"all": len(items), **_count_sources(items)} for part, items in parts.items()
        }
    else:
        chosen, split = samples, "all"
        split_sizes = {"all": {"all": len(samples), **_count_sources(samples)}}

    images: list[ImageScore] = []
    parsing: list[ParsingScore] = []
    proxies: list[ProxyScore] = []
    missing: list[str] = []
    weights: dict[str, dict[str, Any]] = {}
    figure_maps: dict[int, NDArray[np.uint8]] = {}
    picks = _figure_picks(chosen, FIGURE_IMAGES) if figures else []
    for scale in scales:
        dataset = SRDataset(chosen, scale=scale)
        panels: dict[str, list[NDArray[np.float32]]] = {}
        gp_labels: list[NDArray[np.uint8] | None] = []
        for method in methods:
            model: nn.Module | None = None
            if method != "bicubic":
                loaded = _load_method(method, scale, checkpoints, required=required)
                if loaded is None:
                    missing.append(f"{method}_x{scale}")
                    continue
                weights[f"{method}_x{scale}"] = _describe(
                    loaded, checkpoints.get(f"{method}_x{scale}")
                )
                model = channels_last(loaded.model.to(dev)).eval()
            srs, labels = predict(model, dataset, device=dev, precision=prec, batch_size=batch_size)
            for index, sample in enumerate(chosen):
                item = dataset[index]
                rows, cols = (int(v) for v in item["valid"])
                hr = item["hr"][0].numpy()[:rows, :cols]
                sr = srs[index][:rows, :cols]
                images.append(
                    ImageScore(
                        sample.image_id,
                        sample.source,
                        scale,
                        method,
                        psnr(hr, sr, shave_px=scale),
                        ssim(hr, sr, shave_px=scale),
                    )
                )
                predicted = labels[index]
                if predicted is not None:
                    hr_rgb, _ = fit_to_size(sample.rgb, dataset.sizes[index])
                    proxies.append(
                        ProxyScore(
                            sample.image_id,
                            sample.source,
                            scale,
                            method,
                            parsing_proxies(predicted[:rows, :cols], hr_rgb[:rows, :cols]),
                        )
                    )
                if method in PRIOR_ARCHS and sample.labels is not None and predicted is not None:
                    expert, _ = fit_to_size(sample.labels, dataset.sizes[index])
                    parsing.append(
                        ParsingScore(
                            sample.image_id,
                            sample.source,
                            scale,
                            parsing_scores(expert[:rows, :cols], predicted[:rows, :cols]),
                            method,
                        )
                    )
            if method in FIGURE_METHODS and picks:
                panels[method] = [srs[i] for i in picks]
                if method == "gp":
                    gp_labels = [labels[i] for i in picks]
        if picks:
            figure_maps[scale] = build_figure(
                [chosen[i] for i in picks],
                [dataset.sizes[i] for i in picks],
                scale=scale,
                panels=panels,
                gp_labels=gp_labels,
            )

    meta = {
        "command": _command(data, scales, methods if required else None, split, seed),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "leukoscreen": __version__,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "device": str(dev),
        "precision": prec,
        "data": str(data),
        "split": split,
        "seed": seed,
        "split_sizes": split_sizes,
        "evaluated_ids": [s.image_id for s in chosen],
        "convention": (
            "Y of MATLAB rgb2ycbcr in [0, 1], float32, SR clipped to [0, 1]; HR fitted to its "
            "size group (120 px wbc1, 224 px otherwise); PSNR (peak 1) and SSIM (Gaussian 11x11, "
            "sigma 1.5) per image on the valid extent with shave = scale px per side, then "
            "averaged; parsing IoU/Dice per image on the valid extent, then averaged"
        ),
    }
    return Table(
        scales=tuple(scales),
        methods=methods,
        images=images,
        parsing=parsing,
        proxies=proxies,
        missing=missing,
        weights=weights,
        meta=meta,
        figures=figure_maps,
    )


def _count_sources(samples: Sequence[Sample]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sample in samples:
        counts[sample.source] = counts.get(sample.source, 0) + 1
    return dict(sorted(counts.items()))


def _describe(loaded: LoadedWeights, explicit: Path | None) -> dict[str, Any]:
    metrics = loaded.meta.get("metrics", {})
    return {
        "file": str(explicit)
        if explicit is not None
        else f"model/weights/{loaded.arch}_x{loaded.scale}.pt",
        "sha256": loaded.sha256,
        "epoch": metrics.get("epoch"),
        "val_psnr": metrics.get("val_psnr"),
    }


def _command(
    data: Path, scales: Sequence[int], methods: Sequence[str] | None, split: str, seed: int
) -> str:
    words = ["leukoscreen", "evaluate", "--data", str(data)]
    for scale in scales:
        words += ["--scale", str(scale)]
    for method in methods or ():
        words += ["--method", method]
    if split not in ("test", "all"):
        words += ["--split", split]
    if seed:
        words += ["--seed", str(seed)]
    return " ".join(f"'{w}'" if " " in w else w for w in words)


# ---------------------------------------------------------------------------------------------
# figure


def _label_strip(
    names: Sequence[str], widths: Sequence[int], gap: int, height: int
) -> NDArray[np.uint8]:
    total = sum(widths) + gap * (len(widths) - 1)
    strip = Image.new("RGB", (total, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default()
    left = 0
    for name, width in zip(names, widths, strict=True):
        draw.text((left + 2, 2), name, fill=(0, 0, 0), font=font)
        left += width + gap
    return np.asarray(strip, dtype=np.uint8)


def build_figure(
    samples: Sequence[Sample],
    sizes: Sequence[int],
    *,
    scale: int,
    panels: Mapping[str, Sequence[NDArray[np.float32]]],
    gp_labels: Sequence[NDArray[np.uint8] | None],
    gap_px: int = 4,
) -> NDArray[np.uint8]:
    """A figure like the paper's Figs. 4-5: one row per image, panels side by side.

    Columns: LR (nearest-neighbour enlarged), each method of ``panels`` (SR luminance with the
    bicubic Cb/Cr, as ``Upscaler.upscale`` does), HR, and where available GP's parsing map and
    the expert map (black background, red cytoplasm, blue nucleus). Each panel is the valid
    extent of the fitted HR image.

    Returns:
        (H, W, 3) uint8 RGB on white, with a header row naming the columns.
    """
    rows: list[NDArray[np.uint8]] = []
    names: list[str] = []
    for k, (sample, size) in enumerate(zip(samples, sizes, strict=True)):
        rgb, (rows_px, cols_px) = fit_to_size(sample.rgb, size)
        ycc = rgb2ycbcr(rgb.astype(np.float64) / 255.0)  # (H, W, 3)
        lr, up = degrade(ycc, scale)  # (H/s, W/s, 3), (H, W, 3)
        lr_near = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
        row = [("LR", _to_rgb(lr_near)[:rows_px, :cols_px])]
        for method, srs in panels.items():
            ycbcr = np.concatenate([srs[k][..., None], up[..., 1:]], axis=-1)
            row.append((METHOD_NAMES[method], _to_rgb(ycbcr)[:rows_px, :cols_px]))
        row.append(("HR", rgb[:rows_px, :cols_px]))
        predicted = gp_labels[k] if gp_labels else None
        if predicted is not None:
            row.append(("GP parsing", colour_parsing(predicted)[:rows_px, :cols_px]))
        if sample.labels is not None:
            expert, _ = fit_to_size(sample.labels, size)
            row.append(("expert", colour_parsing(expert)[:rows_px, :cols_px]))
        if len(row) > len(names):
            names = [name for name, _ in row]
        rows.append(_hstack([panel for _, panel in row], gap_px))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    panel_width = max(s for s in sizes)
    header = _label_strip(names, [panel_width] * len(names), gap_px, 14)
    header = np.pad(
        header[:, :width],
        ((0, 0), (0, max(0, width - header.shape[1])), (0, 0)),
        constant_values=255,
    )
    blocks = [header]
    for r in rows:
        blocks += [np.full((gap_px, width, 3), 255, np.uint8), r]
    return np.concatenate(blocks, axis=0)


def _to_rgb(ycbcr: NDArray[np.float64]) -> NDArray[np.uint8]:
    return np.clip(np.rint(ycbcr2rgb(ycbcr) * 255.0), 0, 255).astype(np.uint8)


def _hstack(panels: Sequence[NDArray[np.uint8]], gap_px: int) -> NDArray[np.uint8]:
    height = max(p.shape[0] for p in panels)
    width = max(p.shape[1] for p in panels)
    padded = [
        np.pad(p, ((0, height - p.shape[0]), (0, width - p.shape[1]), (0, 0)), constant_values=255)
        for p in panels
    ]
    gap = np.full((height, gap_px, 3), 255, np.uint8)
    out: list[NDArray[np.uint8]] = [padded[0]]
    for panel in padded[1:]:
        out += [gap, panel]
    return np.concatenate(out, axis=1)


# ---------------------------------------------------------------------------------------------
# output


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _markdown(table: Table) -> str:
    meta = table.meta
    n = meta["split_sizes"].get(meta["split"], meta["split_sizes"].get("all", {})).get("all", "?")
    names = [METHOD_NAMES[m] for m in table.methods]
    lines = [
        "## Table 2: SR benchmark (bicubic degradation)",
        "",
        f"{meta['data']}, split `{meta['split']}` ({n} images), seed {meta['seed']}; "
        f"Y channel, float32, shave = scale px on the valid extent; {meta['device']} "
        f"{meta['precision']}; {meta['date']}.",
        "",
        "| | | " + " | ".join(names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    for scale in table.scales:
        for k, metric in enumerate(("psnr", "ssim")):
            digits = 4
            cells = [_fmt(table.value(scale, m, metric), digits) for m in table.methods]
            label = f"{scale}×" if k == 0 else ""
            lines.append(f"| {label} | {metric.upper()} | " + " | ".join(cells) + " |")
        if any(m in PRIOR_ARCHS for m in table.methods):
            cells = [
                _fmt(table.parsing_mean(scale, method=m).get("miou"), 4)
                if m in PRIOR_ARCHS
                else "–"
                for m in table.methods
            ]
            lines.append("|  | mIoU | " + " | ".join(cells) + " |")
    if table.missing:
        lines += ["", f"n/a: no weights yet for {', '.join(table.missing)}."]

    for method in (m for m in table.methods if m in PRIOR_ARCHS):
        if not any(table.parsing_mean(s, method=method) for s in table.scales):
            continue
        lines += [
            "",
            f"### {PARSING_NAMES[method]} parsing map vs the expert masks",
            "",
            "| scale | source | images | mIoU | mDice | IoU nucleus | IoU cytoplasm | "
            "Dice nucleus | Dice cytoplasm |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for scale in table.scales:
            for source in table.sources():
                p = table.parsing_mean(scale, source, method)
                if p:
                    cells = [_fmt(p[k], 4) for k in PARSING_KEYS]
                    lines.append(
                        f"| {scale}× | {source} | {p['n_masks']} | " + " | ".join(cells) + " |"
                    )

    proxy_methods = [m for m in table.methods if any(p.method == m for p in table.proxies)]
    if proxy_methods:
        lines += [
            "",
            "### Parsing maps without expert masks (proxies, `metrics.parsing_proxies`)",
            "",
            "Outer strip: share of the outer 16 px labelled cell; centre: share of cells whose "
            "nucleus covers >= 10 % of the central 64 x 64 px; stain IoU: predicted nucleus vs "
            "the haematoxylin (colour deconvolution) nucleus.",
            "",
            "| scale | method | source | images | outer strip cell | nucleus in centre | "
            "nucleus IoU (stain) |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for scale in table.scales:
            for method in proxy_methods:
                for source in table.sources():
                    q = table.proxy_mean(scale, method, source)
                    if q:
                        lines.append(
                            f"| {scale}× | {METHOD_NAMES[method]} | {source} | {q['n_images']} | "
                            f"{q['outer_strip_cell']:.3f} | {q['nucleus_in_centre']:.3f} | "
                            f"{q['nucleus_iou_stain']:.3f} |"
                        )

    if len(table.sources()) > 1:
        lines += [
            "",
            "### Per source (PSNR dB / SSIM)",
            "",
            "| scale | source | images | " + " | ".join(names) + " |",
            "|---|---|---:|" + "---:|" * len(names),
        ]
        for scale in table.scales:
            for source in table.sources()[1:]:
                count = sum(
                    1
                    for s in table.images
                    if s.scale == scale and s.source == source and s.method == table.methods[0]
                )
                cells = []
                for m in table.methods:
                    mean_psnr = table.value(scale, m, "psnr", source)
                    mean_ssim = table.value(scale, m, "ssim", source)
                    cells.append(
                        "n/a" if mean_psnr is None else f"{mean_psnr:.2f} / {_fmt(mean_ssim, 4)}"
                    )
                lines.append(f"| {scale}× | {source} | {count} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "### The paper's Table 2 (their private 52-image set; for reference, not comparable)",
        "",
        "| | | " + " | ".join(names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    for scale in (4, 8):
        for k, metric in enumerate(("psnr", "ssim")):
            cells = [
                f"{PAPER_TABLE2[scale][m][metric]:.4f}" if m in PAPER_TABLE2[scale] else "–"
                for m in table.methods
            ]
            label = f"{scale}×" if k == 0 else ""
            lines.append(f"| {label} | {metric.upper()} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{meta['command']}`", ""]
    return "\n".join(lines)


def write_results(table: Table, out: Path) -> list[Path]:
    """Write ``table2.md``, ``table2.csv``, ``table2.json`` and ``fig_x<s>.png`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("table2.md", table.to_markdown()),
        ("table2.csv", table.to_csv()),
        ("table2.json", json.dumps(table.to_json(), indent=2) + "\n"),
    ):
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    for scale, figure in table.figures.items():
        path = out / f"fig_x{scale}.png"
        skimage.io.imsave(path, figure, check_contrast=False)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# model card


def _histories(source: Path) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """(hardware, {run: history}) of a runs folder (``*/last.pt``) or a histories JSON file."""
    source = Path(source)
    if source.is_file():  # {"hardware": ..., "runs": {name: {"history": [...]}}}
        saved = json.loads(source.read_text(encoding="utf-8"))
        return str(saved.get("hardware", source.name)), {
            name: list(run["history"]) for name, run in saved["runs"].items()
        }
    found = {}
    for last in sorted(source.glob("*_x*/last.pt")):
        state = torch.load(last, map_location="cpu", weights_only=True)
        found[last.parent.name] = list(state.get("history", []))
    return f"CPU ({source})", found


def _shipped_epoch(history: list[dict[str, Any]], shipped: Mapping[str, Any]) -> int | None:
    """The epoch of ``history`` whose epoch and validation PSNR the shipped metrics record."""
    for record in history:
        if record["epoch"] == shipped.get("epoch") and math.isclose(
            record["val_psnr"], shipped.get("val_psnr", math.inf), abs_tol=1e-5
        ):
            return int(record["epoch"])
    return None


def training_times(*sources: Path) -> list[dict[str, Any]]:
    """Epochs, wall time, best validation scores of each run in ``sources``, and whether the
    shipped weights of ``<arch>_x<scale>`` came from it (same epoch and validation PSNR).

    Each source is a folder of ``<arch>_x<scale>/last.pt`` runs or a JSON file of histories
    (``docs/results/training_h200.json``).
    """
    manifest = read_manifest()
    found = []
    for source in sources:
        hardware, runs = _histories(source)
        for name, history in runs.items():
            shipped = manifest.get(name, {}).get("metrics", {})
            found.append(
                {
                    "run": name,
                    "hardware": hardware,
                    "epochs": len(history),
                    "seconds": float(sum(h["seconds"] for h in history)),
                    "best_val_psnr": max((h["val_psnr"] for h in history), default=float("nan")),
                    "best_val_miou": max(
                        (h["val_miou"] for h in history if "val_miou" in h), default=float("nan")
                    ),
                    "shipped_epoch": _shipped_epoch(history, shipped),
                }
            )
    return found


def _replace_block(text: str, begin: str, end: str, body: str) -> str:
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise UsageError(f"model card: markers {begin} ... {end} not found")
    return pattern.sub(lambda _: f"{begin}\n{body.strip()}\n{end}", text)


def write_card(card: Path, results: Path, runs: Path | Sequence[Path]) -> None:
    """Copy ``results/table2.md`` and the training wall times of ``runs`` (one or more run
    folders or histories JSON files) into the model card's markers."""
    table_md = (Path(results) / "table2.md").read_text(encoding="utf-8")
    table_md = re.sub(r"^(#+) ", r"#\1 ", table_md, flags=re.M)  # one level below the card's
    lines = [
        "| run | trained on | epochs | wall time | best val PSNR (dB) | best val mIoU | shipped |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    sources = [runs] if isinstance(runs, (str, Path)) else list(runs)
    for t in training_times(*map(Path, sources)):
        miou = "–" if np.isnan(t["best_val_miou"]) else f"{t['best_val_miou']:.3f}"
        shipped = "–" if t["shipped_epoch"] is None else f"epoch {t['shipped_epoch']}"
        lines.append(
            f"| {t['run']} | {t['hardware']} | {t['epochs']} | {t['seconds'] / 60:.1f} min | "
            f"{t['best_val_psnr']:.3f} | {miou} | {shipped} |"
        )
    text = Path(card).read_text(encoding="utf-8")
    text = _replace_block(text, CARD_BEGIN, CARD_END, table_md)
    text = _replace_block(text, TIMES_BEGIN, TIMES_END, "\n".join(lines))
    Path(card).write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """``--write-card``: refresh the model card from the committed results and ``runs/``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-card", action="store_true", help="update docs/model-card.md")
    parser.add_argument("--card", type=Path, default=Path("docs/model-card.md"), help="model card")
    parser.add_argument("--results", type=Path, default=Path("docs/results"), help="table2.md dir")
    parser.add_argument(
        "--runs",
        type=Path,
        action="append",
        help="training runs folder or histories JSON; repeatable "
        "(default: docs/results/training_h200*.json and runs)",
    )
    args = parser.parse_args(argv)
    if not args.write_card:
        parser.error("nothing to do; pass --write-card (evaluation itself: leukoscreen evaluate)")
    runs = args.runs or [*sorted(Path("docs/results").glob("training_*.json")), Path("runs")]
    write_card(args.card, args.results, [r for r in runs if r.exists()])
    print(f"updated {args.card}")


if __name__ == "__main__":
    main()
