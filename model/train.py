"""Training: the paper's recipe in one visible loop, with checkpoints and exact resume.

Paper §2.3-§2.5 and §3.4: loss = Charbonnier(SR - HR), eps 1e-3, + lambda * BCE(parsing map),
lambda 1, trained end to end; Adam (beta1 0.9) at 1e-4, halved every 10 epochs; batch 8; whole
images, no patches. On the CPU we autocast to bf16 with channels_last (about 3x faster than fp32
on AMX hardware); the loss is computed in fp32.

Resume is exact: shuffling depends only on (seed, epoch), there is no other randomness after
initialisation, and ``last.pt`` holds the weights, the optimiser state, the completed epochs and
the history. A run killed at any point and resumed gives the same weights as an uninterrupted
one (checkpoints are written atomically at each epoch end).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from leukoscreen.model.checkpoint import load_init, save_weights
from leukoscreen.model.config import PRIOR_ARCHS, TrainConfig
from leukoscreen.model.data import (
    SRDataset,
    augment,
    colour_augment,
    colour_jitters,
    dihedral_codes,
)
from leukoscreen.model.device import (
    channels_last,
    model_input,
    parsing_labels,
    resolve_device,
    resolve_precision,
    run_network,
)
from leukoscreen.model.errors import CheckpointError, DataError, UsageError
from leukoscreen.model.metrics import parsing_scores, psnr
from leukoscreen.model.networks import build_network
from leukoscreen.model.phases import phase_offsets, phase_shift
from leukoscreen.model.sources import plain_folders, read_sources, split_samples

TRAIN_FORMAT = "leukoscreen-train/1"


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    """Learning rate during ``epoch`` (0-based): halved every ``lr_halve_every_epochs``."""
    if cfg.lr_halve_every_epochs <= 0:
        return cfg.lr
    return cfg.lr * 0.5 ** (epoch // cfg.lr_halve_every_epochs)


def charbonnier(prediction: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """Mean Charbonnier penalty sqrt(d^2 + eps^2) (LapSRN's robust L1, paper eq. 4)."""
    return torch.sqrt((prediction - target) ** 2 + eps**2).mean()


def prior_loss_per_image(
    logits: torch.Tensor, onehot: torch.Tensor, activation: str
) -> torch.Tensor:
    """(N,) prior loss: BCE per parsing channel (U-Net's, paper §2.3) or softmax cross-entropy."""
    if activation == "softmax":
        return F.cross_entropy(logits, onehot.argmax(dim=1), reduction="none").mean(dim=(1, 2))
    return F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").mean(dim=(1, 2, 3))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: SRDataset,
    *,
    device: torch.device,
    precision: str,
    batch_size: int = 8,
) -> dict[str, float]:
    """Mean PSNR (Y, shave = scale, valid pixels) and, for prior models, parsing mIoU."""
    model.eval()
    psnrs, mious = [], []
    for indices in dataset.batches(batch_size, seed=0, epoch=0, shuffle=False):
        batch = {k: v.to(device) for k, v in dataset.collate(indices).items()}
        sr, logits = run_network(
            model, model_input(model, batch), device=device, precision=precision
        )
        sr_np = sr.float().clamp(0, 1).cpu().numpy()[:, 0]
        hr_np = batch["hr"].cpu().numpy()[:, 0]
        for i, (rows, cols) in enumerate(batch["valid"].cpu().tolist()):
            psnrs.append(
                psnr(hr_np[i, :rows, :cols], sr_np[i, :rows, :cols], shave_px=dataset.scale)
            )
            if logits is not None and batch["has_mask"][i] > 0:
                predicted = parsing_labels(logits[i]).cpu().numpy()
                reference = parsing_labels(batch["onehot"][i]).cpu().numpy()
                mious.append(
                    parsing_scores(reference[:rows, :cols], predicted[:rows, :cols])["miou"]
                )
    model.train()
    return {"psnr": float(np.mean(psnrs)), **({"miou": float(np.mean(mious))} if mious else {})}


PARSING_PRIOR = ("parsing_prior", "parsing_condition")  # GP-SFT(parsing_prior=True)

PRIOR_MODULES = ("prior", "condition", "parsing_head", "refiner", "hr_parser", *PARSING_PRIOR)
"""Sub-modules that make the parsing map (GP: the U-Net; GP-SFT: also condition, heads, prior)."""

PARSING_MODULES = ("parsing_head", "refiner", "hr_parser", *PARSING_PRIOR)
"""Sub-modules that make only the parsing map and never feed the SR image (GP-SFT)."""


def freeze_prior(model: nn.Module) -> None:
    """Stop training the modules that make ``model``'s parsing map: :data:`PRIOR_MODULES`, or with
    a parsing prior of its own only :data:`PARSING_MODULES` (the SR prior then feeds SR alone)."""
    own_prior = getattr(model, "parsing_prior", None) is not None
    for name in PARSING_MODULES if own_prior else PRIOR_MODULES:
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            module.requires_grad_(False)


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) training run left behind."""

    run_dir: Path
    epochs_done: int
    history: list[dict[str, float]]
    best_weights: Path


def _check_parsing_only(cfg: TrainConfig) -> None:
    """``parsing_only`` needs GP-SFT weights to start from (the one check across fields).

    Raises:
        UsageError: ``parsing_only`` with another arch or without ``init``.
    """
    if cfg.parsing_only and (cfg.arch != "gpsft" or not cfg.init):
        raise UsageError(
            f"parsing_only trains GP-SFT's parsing modules from --init weights, got arch "
            f"{cfg.arch!r}, init {cfg.init!r}"
        )


def _batches(dataset: SRDataset, cfg: TrainConfig, epoch: int) -> Iterator[list[int]]:
    return dataset.batches(cfg.batch_size, seed=cfg.seed, epoch=epoch)


def training_sets(
    cfg: TrainConfig, data: Path | Sequence[Path]
) -> tuple[SRDataset, SRDataset, bool]:
    """The training and validation sets of ``data`` and whether no training image has a mask.

    Raises:
        DataError: too few images for the split, or a prior network from scratch without masks.
    """
    labs = plain_folders(data) if cfg.lab_split else set()
    parts = split_samples(read_sources(data), cfg.seed, labs)
    where = data if isinstance(data, (str, Path)) else ", ".join(map(str, data))
    if not parts["train"] or not parts["val"]:
        raise DataError(
            f"{where}: too few images for a train/val split ({sum(map(len, parts.values()))})"
        )
    no_masks = not any(s.labels is not None for s in parts["train"])
    if cfg.arch in PRIOR_ARCHS and no_masks and not cfg.init:
        raise DataError(
            f"{where}: arch {cfg.arch!r} needs parsing masks to train from scratch; none found "
            "(fine-tuning with --init works without masks)"
        )
    masked = [s for s in parts["train"] if s.labels is not None]
    shown = parts["train"] + masked * (cfg.mask_repeat - 1)
    if cfg.parsing_only:
        if not masked:
            raise DataError(f"{where}: parsing_only needs images with parsing masks, found none")
        shown = masked * cfg.mask_repeat
    train_set = SRDataset(shown, scale=cfg.scale, hr_size_px=cfg.hr_size_px)
    val_set = SRDataset(parts["val"], scale=cfg.scale, hr_size_px=cfg.hr_size_px)

    return train_set, val_set, no_masks


def _build_model(cfg: TrainConfig, arch_kwargs: dict[str, Any], no_masks: bool) -> nn.Module:
    """A fresh network, or the ``--init`` weights (parsing part frozen without masks).

    Raises:
        UsageError: ``--init`` weights of another arch or design.
    """
    model = build_network(cfg.arch, scale=cfg.scale, **arch_kwargs)
    if cfg.init:
        initial = load_init(cfg.init, cfg.scale)
        if (initial.arch, initial.meta.get("arch_kwargs", {})) != (cfg.arch, arch_kwargs):
            raise UsageError(
                f"--init {cfg.init}: holds {initial.arch} {initial.meta.get('arch_kwargs')}, "
                f"expected {cfg.arch} {arch_kwargs}"
            )
        model.load_state_dict(initial.model.state_dict())
        if cfg.arch in PRIOR_ARCHS and no_masks:
            freeze_prior(model)  # no masks to keep it honest: the parsing map stays as trained
        if cfg.parsing_only:  # the SR image stays exactly as initialised
            model.requires_grad_(False)
            for name in PARSING_MODULES:
                module = getattr(model, name, None)
                if isinstance(module, nn.Module):
                    module.requires_grad_(True)
    return model


def start_run(
    cfg: TrainConfig, run_dir: Path, *, resume: bool, device: str
) -> tuple[torch.device, str]:
    """What every training run does first: refuse a run folder in use unless resuming, set the
    threads and the seed, and resolve the device and precision (cuDNN autotuning on CUDA).

    Raises:
        CheckpointError: ``run_dir/last.pt`` exists and ``resume`` is false.
    """
    last_path = run_dir / "last.pt"
    if last_path.exists() and not resume:
        raise CheckpointError(
            f"{last_path}: a training run exists here; pass --resume or another --out"
        )
    torch.set_num_threads(cfg.num_threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    dev = resolve_device(device)
    if dev.type == "cuda":  # CUDA runs are not bit-exact anyway; let cuDNN pick fast kernels
        torch.backends.cudnn.benchmark = True
    return dev, resolve_precision(cfg.precision, dev)


def check_resumable(last_path: Path, saved_config: dict[str, Any], cfg: TrainConfig) -> None:
    """Raise ``CheckpointError`` unless the saved config is ``cfg`` (``epochs`` may grow; fields
    added to :class:`TrainConfig` since the run was saved count as their defaults)."""
    saved = {**asdict(TrainConfig()), **saved_config}
    if {**saved, "epochs": 0} != {**asdict(cfg), "epochs": 0}:
        raise CheckpointError(
            f"{last_path}: was trained with another config; resume needs the same one "
            f"(saved {saved}, given {asdict(cfg)})"
        )


def last_epoch(cfg: TrainConfig, start: int, stop_after_epochs: int | None) -> int:
    """The epoch this call stops before: ``cfg.epochs``, or ``stop_after_epochs`` past ``start``."""
    if stop_after_epochs is None:
        return cfg.epochs
    return min(cfg.epochs, start + max(stop_after_epochs, 0))


def _resume(
    last_path: Path,
    cfg: TrainConfig,
    arch_kwargs: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> tuple[int, list[dict[str, float]], float]:
    """Load ``last.pt`` into the model and optimizer: ``(epochs done, history, best PSNR)``.

    Raises:
        CheckpointError: the run was trained with another config.
    """
    dev = next(model.parameters()).device
    state = torch.load(last_path, map_location=dev, weights_only=True)
    check_resumable(last_path, state["config"], cfg)
    if state["arch_kwargs"] != arch_kwargs:
        raise CheckpointError(
            f"{last_path}: was trained with another config; resume needs the same one "
            f"(saved arch_kwargs {state['arch_kwargs']}, given {arch_kwargs})"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epoch"]), list(state["history"]), float(state["best_psnr"])


def training_batch(
    train_set: SRDataset, indices: list[int], cfg: TrainConfig, epoch: int, dev: torch.device
) -> dict[str, torch.Tensor]:
    """The batch at ``indices``, phase-shifted, recoloured and flipped as ``cfg`` asks (a
    function of (seed, epoch, image) alone), on ``dev``."""
    batch = train_set.collate(indices)
    if cfg.phase_augment:
        offsets = phase_offsets(indices, seed=cfg.seed, epoch=epoch, scale=cfg.scale)
        batch = phase_shift(batch, offsets, scale=cfg.scale)
    if cfg.colour_augment:
        jitters = colour_jitters(indices, seed=cfg.seed, epoch=epoch)
        batch = colour_augment(batch, jitters, scale=cfg.scale)
    if cfg.augment:
        batch = augment(batch, dihedral_codes(indices, seed=cfg.seed, epoch=epoch))
    return {k: v.to(dev) for k, v in batch.items()}


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_set: SRDataset,
    cfg: TrainConfig,
    epoch: int,
    dev: torch.device,
    precision: str,
    progress: bool,
) -> list[float]:
    """One pass over the training set (augmented per (seed, epoch)); the loss of each batch."""
    batches = list(_batches(train_set, cfg, epoch))
    bar = tqdm(
        batches,
        desc=f"{cfg.arch} x{cfg.scale} epoch {epoch + 1}/{cfg.epochs}",
        disable=not progress,
        unit="batch",
        dynamic_ncols=True,
    )
    seen, started, losses = 0, time.perf_counter(), []
    for indices in bar:
        batch = training_batch(train_set, indices, cfg, epoch, dev)
        x = model_input(model, batch)
        sr, logits = run_network(model, x, device=dev, precision=precision)
        loss = charbonnier(sr.float(), batch["hr"], cfg.charbonnier_eps)
        if logits is not None:
            # images without masks skip the prior loss
            per_image = prior_loss_per_image(
                logits.float(), batch["onehot"], getattr(model, "prior_activation", "sigmoid")
            )
            weight = batch["has_mask"]
            prior_loss = (per_image * weight).sum() / weight.sum().clamp(min=1)
            loss = loss + cfg.prior_weight * prior_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(indices)
        losses.append(float(loss.detach()))
        bar.set_postfix(
            loss=f"{losses[-1]:.4f}", img_s=f"{seen / (time.perf_counter() - started):.1f}"
        )
    return losses


def _save_last(
    last_path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    arch_kwargs: dict[str, Any],
    history: list[dict[str, float]],
    best_score: float,
    epochs_done: int,
) -> None:
    """Write ``last.pt``: the full state after ``epochs_done`` epochs, for an exact resume."""
    state = {
        "format": TRAIN_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epochs_done,
        "config": asdict(cfg),
        "arch_kwargs": arch_kwargs,
        "history": history,
        "best_psnr": best_score,  # the key predates parsing_only (then: mIoU)
    }
    tmp = last_path.with_name("last.pt.tmp")
    torch.save(state, tmp)
    tmp.replace(last_path)  # atomic: a kill leaves the previous epoch's checkpoint intact


def train(
    cfg: TrainConfig,
    *,
    data: Path | Sequence[Path],
    run_dir: Path,
    resume: bool = False,
    arch_kwargs: dict[str, Any] | None = None,
    device: str = "auto",
    stop_after_epochs: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``cfg.arch`` at ``cfg.scale`` on ``data``; checkpoints go to ``run_dir``.

    Args:
        cfg: the training config (saved into every checkpoint).
        data: one source or several, mixed (what a source may be:
            :func:`~leukoscreen.model.sources.read_samples`); images without masks train the SR
            loss only (the prior loss skips them).
        run_dir: holds ``last.pt`` (full state, every epoch) and ``best.pt`` (weights with the
            best validation PSNR).
        resume: continue from ``run_dir/last.pt``; the config must match (``epochs`` may grow).
        arch_kwargs: network constructor arguments (tiny widths for tests).
        device: ``auto``, ``cpu`` or ``cuda``.
        stop_after_epochs: stop (as if killed) after this many epochs in this call.
        progress: show a tqdm bar with loss and images/s.

    Raises:
        UsageError, DataError, CheckpointError: bad arguments, data or checkpoint.
    """
    _check_parsing_only(cfg)
    arch_kwargs = dict(arch_kwargs or {})
    run_dir = Path(run_dir)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    dev, precision = start_run(cfg, run_dir, resume=resume, device=device)
    train_set, val_set, no_masks = training_sets(cfg, data)
    model = channels_last(_build_model(cfg, arch_kwargs, no_masks).to(dev))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=cfg.lr, betas=(0.9, 0.999))
    history: list[dict[str, float]] = []
    start_epoch, best_score = 0, -math.inf
    if resume and last_path.exists():
        start_epoch, history, best_score = _resume(last_path, cfg, arch_kwargs, model, optimizer)

    run_dir.mkdir(parents=True, exist_ok=True)
    model.train()
    for epoch in range(start_epoch, last_epoch(cfg, start_epoch, stop_after_epochs)):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch, cfg)
        started = time.perf_counter()
        losses = _train_epoch(model, optimizer, train_set, cfg, epoch, dev, precision, progress)
        scores = evaluate(model, val_set, device=dev, precision=precision)
        record = {
            "epoch": epoch + 1,
            "lr": lr_at(epoch, cfg),
            "train_loss": float(np.mean(losses)),
            "seconds": time.perf_counter() - started,
            **{f"val_{k}": v for k, v in scores.items()},
        }
        history.append(record)
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}: loss {record['train_loss']:.4f}, "
                f"val PSNR {scores['psnr']:.3f} dB"
                + (f", val mIoU {scores['miou']:.3f}" if "miou" in scores else "")
            )
        best_key = "miou" if cfg.parsing_only else "psnr"
        if scores[best_key] > best_score:
            best_score = scores[best_key]
            save_weights(
                model,
                best_path,
                arch=cfg.arch,
                scale=cfg.scale,
                arch_kwargs=arch_kwargs,
                config=asdict(cfg),
                metrics=record,
                dtype=torch.float32,
            )
        _save_last(last_path, model, optimizer, cfg, arch_kwargs, history, best_score, epoch + 1)
    return TrainResult(
        run_dir=run_dir, epochs_done=len(history), history=history, best_weights=best_path
    )
