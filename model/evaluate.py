"""The paper's benchmark (Hua et al. 2020, §3.4, Table 2 and Figs. 4-5) on leukocyte images.

:func:`evaluate_methods` runs bicubic and every shipped network on the test split of
segmentation_WBC (the split training used: ``split_ids`` with the same seed) or on every image of
any folder of HR images, and returns a :class:`Table` of scores;
:func:`leukoscreen.model.report.write_results` renders it as ``table2.md``, ``table2.csv``,
``table2.json`` and the figures ``fig_x4.png`` / ``fig_x8.png``.

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

This module computes; :mod:`leukoscreen.model.report` renders (tables, figures, the model card).
"""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
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
from leukoscreen.model.metrics import (
    PROXY_KEYS,
    parsing_proxies,
    parsing_scores,
    psnr,
    ssim,
    stain_nucleus_mask,
    texture_ratio,
)
from leukoscreen.model.networks import METHOD_NAMES
from leukoscreen.model.sources import read_samples, split_samples

METHODS = ("bicubic", "srcnn", "vdsr", "srresnet", "srgan", "sftgan", "np", "gp", "gpsft")
"""Table 2's columns in the paper's order, then our faster variant GP-SFT."""
FIGURE_METHODS = ("bicubic", "srresnet", "srgan", "sftgan", "np", "gp")
"""The SR panels of Figs. 4-5 (the GANs' too), between the LR input and the HR image."""
FIGURE_IMAGES = 3
PARSING_KEYS = ("miou", "mdice", "iou_nucleus", "iou_cytoplasm", "dice_nucleus", "dice_cytoplasm")


@dataclass(frozen=True)
class ImageScore:
    """PSNR and SSIM of one method on one image at one scale (Y, float32, shave = scale)."""

    image_id: str
    source: str
    scale: int
    method: str
    psnr: float
    ssim: float
    texture: float = float("nan")  # nucleus gradient energy, SR over HR (metrics.texture_ratio)


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


@dataclass(frozen=True)
class FigurePanels:
    """The images of one scale's figure (``leukoscreen.model.report.build_figure``).

    Attributes:
        samples: the pictured images.
        sizes: the size group of each (HR side, px).
        panels: method -> SR luminance (H, W) float32 of each pictured image.
        gp_labels: GP's parsing labels of each pictured image (empty without GP).
    """

    samples: list[Sample]
    sizes: list[int]
    panels: dict[str, list[NDArray[np.float32]]]
    gp_labels: list[NDArray[np.uint8] | None]


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
        figure_panels: scale -> what the Figs. 4-5 style figure shows (not serialised).
        proxies: per-image mask-free parsing measures of every network with a parsing map.
    """

    scales: tuple[int, ...]
    methods: tuple[str, ...]
    images: list[ImageScore]
    parsing: list[ParsingScore]
    missing: list[str]
    weights: dict[str, dict[str, Any]]
    meta: dict[str, Any]
    figure_panels: dict[int, FigurePanels] = field(default_factory=dict, repr=False)
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
                        "texture": float(np.nanmean([s.texture for s in picked])),
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


# ---------------------------------------------------------------------------------------------
# evaluation


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
    scales: Sequence[int] = SCALES,
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
    chosen, split, split_sizes = _choose_samples(data, split, seed)
    table = Table(
        scales=tuple(scales), methods=methods, images=[], parsing=[], proxies=[], missing=[],
        weights={}, meta={},
    )  # fmt: skip
    picks = _figure_picks(chosen, FIGURE_IMAGES) if figures else []
    for scale in scales:
        dataset = SRDataset(chosen, scale=scale)
        shown = FigurePanels([chosen[i] for i in picks], [dataset.sizes[i] for i in picks], {}, [])
        for method in methods:
            model: nn.Module | None = None
            if method != "bicubic":
                key = f"{method}_x{scale}"
                loaded = _load_method(method, scale, checkpoints, required=required)
                if loaded is None:
                    table.missing.append(key)
                    continue
                table.weights[key] = _describe(loaded, checkpoints.get(key))
                model = channels_last(loaded.model.to(dev)).eval()
            srs, labels = predict(model, dataset, device=dev, precision=prec, batch_size=batch_size)
            _score(table, dataset, chosen, method, srs, labels)
            if method in FIGURE_METHODS and picks:
                shown.panels[method] = [srs[i] for i in picks]
                if method == "gp":
                    shown.gp_labels[:] = [labels[i] for i in picks]
        if picks:
            table.figure_panels[scale] = shown
    table.meta.update(
        command=_command(data, scales, methods if required else None, split, seed),
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        leukoscreen=__version__,
        torch=torch.__version__,
        machine=platform.processor() or platform.machine(),
        device=str(dev),
        precision=prec,
        data=str(data),
        split=split,
        seed=seed,
        split_sizes=split_sizes,
        evaluated_ids=[s.image_id for s in chosen],
        convention=CONVENTION,
    )
    return table


def _choose_samples(
    data: Path, split: str, seed: int
) -> tuple[list[Sample], str, dict[str, dict[str, int]]]:
    """The images to score, the split's name (``all`` without a fixed split) and the sizes of
    every part, per source."""
    samples = read_samples(data)
    is_wbc = any((data / f"Dataset {n}").is_dir() for n in (1, 2))
    if is_wbc or any(s.split is not None for s in samples):  # a fixed split: score its part
        parts = split_samples(samples, seed)
        sizes = {
            part: {"all": len(items), **_count_sources(items)} for part, items in parts.items()
        }
        return parts[split], split, sizes
    return samples, "all", {"all": {"all": len(samples), **_count_sources(samples)}}


def _score(
    table: Table,
    dataset: SRDataset,
    chosen: Sequence[Sample],
    method: str,
    srs: Sequence[NDArray[np.float32]],
    labels: Sequence[NDArray[np.uint8] | None],
) -> None:
    """Add one method's per-image PSNR/SSIM, parsing proxies and expert parsing scores."""
    scale = dataset.scale
    for index, sample in enumerate(chosen):
        item = dataset[index]
        rows, cols = (int(v) for v in item["valid"])
        hr = item["hr"][0].numpy()[:rows, :cols]
        sr = srs[index][:rows, :cols]
        hr_rgb, _ = fit_to_size(sample.rgb, dataset.sizes[index])
        table.images.append(
            ImageScore(
                sample.image_id, sample.source, scale, method,
                psnr(hr, sr, shave_px=scale), ssim(hr, sr, shave_px=scale),
                texture_ratio(hr, sr, _nucleus(sample, hr_rgb, dataset.sizes[index])[:rows, :cols]),
            )
        )  # fmt: skip
        predicted = labels[index]
        if predicted is None:
            continue
        proxies = parsing_proxies(predicted[:rows, :cols], hr_rgb[:rows, :cols])
        table.proxies.append(ProxyScore(sample.image_id, sample.source, scale, method, proxies))
        if method in PRIOR_ARCHS and sample.labels is not None:
            expert, _ = fit_to_size(sample.labels, dataset.sizes[index])
            scores = parsing_scores(expert[:rows, :cols], predicted[:rows, :cols])
            table.parsing.append(
                ParsingScore(sample.image_id, sample.source, scale, scores, method)
            )


def _nucleus(sample: Sample, hr_rgb: NDArray[np.uint8], size_px: int) -> NDArray[np.bool_]:
    """The nucleus the texture is read in: the expert's, else the stain-derived one."""
    if sample.labels is not None:
        return np.asarray(fit_to_size(sample.labels, size_px)[0] == 2)
    return stain_nucleus_mask(hr_rgb)


CONVENTION = (
    "Y of MATLAB rgb2ycbcr in [0, 1], float32, SR clipped to [0, 1]; HR fitted to its "
    "size group (120 px wbc1, 224 px otherwise); PSNR (peak 1) and SSIM (Gaussian 11x11, "
    "sigma 1.5) per image on the valid extent with shave = scale px per side, then "
    "averaged; parsing IoU/Dice per image on the valid extent, then averaged"
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
