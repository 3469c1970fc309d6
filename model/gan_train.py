"""Adversarial training of SRGAN and SFTGAN (:mod:`leukoscreen.model.gan`), resumable exactly.

The paper (§3.4) trains both with its common settings (Adam, beta1 0.9, lr 1e-4 halved every 10
epochs, batch 8) for 100 (SRGAN) and 200 (SFTGAN) epochs, the generator pre-trained on the
pixel loss. Per batch, as Ledig et al.:

1. the discriminator D takes a step on ``BCE(D(HR), 1) + BCE(D(SR), 0)``;
2. the generator takes a step on ``feature_weight * content + adversarial_weight *
   BCE(D(SR), 1)``, where ``content`` is the squared distance of :class:`CellFeatures` of the SR
   and HR images relative to the HR features' mean square (the scale-free counterpart of Ledig
   et al.'s rescaled VGG loss). The SR luminance goes into the feature network with the HR
   image's Cb and Cr, so only the luminance is compared.

During the first ``pixel_epochs`` epochs the generator trains on the pixel MSE alone (its
pre-training; for SFTGAN, whose SFT layers start at zero on the pixel-trained SRResNet) and D
rests. The generator starts from ``init`` (default: the shipped SRResNet, the pixel-trained
generator), SFTGAN's parsing prior from the shipped GP-SFT.

``run_dir/last.pt`` holds both networks, both optimisers, the epochs done and the history, and
is rewritten atomically each epoch, so a killed run resumes bit-identically (no randomness after
initialisation: shuffling, flips and recolouring depend on (seed, epoch, image) only).
``run_dir/generator.pt`` holds the generator after the latest epoch: a GAN is not chosen by
validation PSNR, which is not what it optimises (the history records it each epoch).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from leukoscreen.model.checkpoint import load_init, save_weights
from leukoscreen.model.config import TrainConfig
from leukoscreen.model.data import SRDataset
from leukoscreen.model.device import (
    autocast,
    channels_last,
    model_input,
    run_network,
)
from leukoscreen.model.errors import CheckpointError, UsageError
from leukoscreen.model.gan import (
    SFTGAN,
    CellFeatures,
    SRGANDiscriminator,
    srresnet_state_to_sftgan,
)
from leukoscreen.model.networks import build_network
from leukoscreen.model.train import (
    TrainResult,
    check_resumable,
    evaluate,
    last_epoch,
    lr_at,
    start_run,
    training_batch,
    training_sets,
)

GAN_FORMAT = "leukoscreen-gan-train/1"
GAN_ARCHS = ("srgan", "sftgan")


def build_generator(cfg: TrainConfig) -> tuple[nn.Module, dict[str, Any]]:
    """The generator at its starting point and its constructor arguments: ``cfg.init`` (an
    SRResNet, or the same GAN's weights), by default the shipped SRResNet; the trunk's size
    follows those weights; SFTGAN's parsing prior is the shipped GP-SFT.

    Raises:
        UsageError: ``cfg.arch`` is not a GAN, or ``init`` holds another network.
    """
    if cfg.arch not in GAN_ARCHS:
        raise UsageError(f"arch: expected one of {', '.join(GAN_ARCHS)}, got {cfg.arch!r}")
    spec = cfg.init or "srresnet"
    initial = load_init(spec, cfg.scale)
    kwargs = dict(initial.meta.get("arch_kwargs", {}))
    if initial.arch not in ("srresnet", cfg.arch) or kwargs.get("global_residual"):
        raise UsageError(
            f"--init {spec}: holds {initial.arch} {kwargs}, expected srresnet (the paper's, "
            f"without global_residual) or {cfg.arch}"
        )
    if initial.arch == cfg.arch or cfg.arch == "srgan":  # SRGAN's generator is SRResNet
        return initial.model, kwargs
    prior = load_init("gpsft", cfg.scale)
    kwargs["prior_kwargs"] = dict(prior.meta.get("arch_kwargs", {}))
    generator = build_network("sftgan", scale=cfg.scale, **kwargs)
    assert isinstance(generator, SFTGAN)
    generator.prior.load_state_dict(prior.model.state_dict())
    trunk = srresnet_state_to_sftgan(initial.model.state_dict(), len(generator.blocks))
    missing, unexpected = generator.load_state_dict(trunk, strict=False)
    if unexpected or any(not k.startswith(("prior.", "condition.")) and ".sft." not in k
                         for k in missing):  # fmt: skip
        raise UsageError(f"--init {spec}: does not fit the SFTGAN trunk")
    return generator, kwargs


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def content_loss(features: nn.Module, sr: torch.Tensor, hr_ycbcr: torch.Tensor) -> torch.Tensor:
    """Feature distance of SR and HR, relative to the HR features' mean square (fp32)."""
    with torch.no_grad():
        reference = features(hr_ycbcr).float()
    produced = features(torch.cat([sr.to(hr_ycbcr.dtype), hr_ycbcr[:, 1:]], dim=1)).float()
    return F.mse_loss(produced, reference) / reference.pow(2).mean().clamp(min=1e-8)


class _Gan:
    """The two networks, their optimisers and the feature network of one run."""

    def __init__(self, cfg: TrainConfig, dev: torch.device) -> None:
        self.cfg = cfg
        generator, self.kwargs = build_generator(cfg)
        self.generator = channels_last(generator.to(dev))
        self.discriminator = channels_last(SRGANDiscriminator().to(dev))
        self.features = channels_last(CellFeatures.from_shipped().to(dev))
        trainable = [p for p in self.generator.parameters() if p.requires_grad]
        self.opt_g = torch.optim.Adam(trainable, lr=cfg.lr, betas=(0.9, 0.999))
        self.opt_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=cfg.lr, betas=(0.9, 0.999)
        )

    def state(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])

    def step(
        self, batch: dict[str, torch.Tensor], dev: torch.device, precision: str, pixel_only: bool
    ) -> dict[str, float]:
        """One discriminator step and one generator step (only the latter when ``pixel_only``)."""
        cfg, hr = self.cfg, batch["hr"].contiguous(memory_format=torch.channels_last)
        sr, _ = run_network(
            self.generator, model_input(self.generator, batch), device=dev, precision=precision
        )
        if pixel_only:
            loss = F.mse_loss(sr.float(), hr)
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
            return {"g_loss": float(loss.detach())}
        self.discriminator.requires_grad_(True)
        with autocast(dev, precision):
            real, fake = self.discriminator(hr), self.discriminator(sr.detach())
        d_loss = _bce(real, True) + _bce(fake, False)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        self.discriminator.requires_grad_(False)  # the generator's step only
        with autocast(dev, precision):
            adversarial = _bce(self.discriminator(sr), True)
            content = content_loss(self.features, sr, batch["hr_ycbcr"])
        g_loss = cfg.feature_weight * content + cfg.adversarial_weight * adversarial
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        return {
            "g_loss": float(g_loss.detach()),
            "d_loss": float(d_loss.detach()),
            "content": float(content.detach()),
            "adversarial": float(adversarial.detach()),
            "d_real": float(torch.sigmoid(real.detach().float()).mean()),
            "d_fake": float(torch.sigmoid(fake.detach().float()).mean()),
        }


def _epoch(
    gan: _Gan, train_set: SRDataset, epoch: int, dev: torch.device, precision: str, progress: bool
) -> dict[str, float]:
    cfg = gan.cfg
    batches = list(train_set.batches(cfg.batch_size, seed=cfg.seed, epoch=epoch))
    pixel_only = epoch < cfg.pixel_epochs
    bar = tqdm(
        batches,
        desc=f"{cfg.arch} x{cfg.scale} epoch {epoch + 1}/{cfg.epochs}"
        + (" (pixel)" if pixel_only else ""),
        disable=not progress,
        unit="batch",
        dynamic_ncols=True,
    )
    totals: dict[str, list[float]] = {}
    for indices in bar:
        batch = training_batch(train_set, indices, cfg, epoch, dev)
        for key, value in gan.step(batch, dev, precision, pixel_only).items():
            totals.setdefault(key, []).append(value)
        bar.set_postfix(g=f"{totals['g_loss'][-1]:.4f}")
    return {f"train_{k}": float(np.mean(v)) for k, v in totals.items()}


def _resume(
    last_path: Path, cfg: TrainConfig, gan: _Gan, dev: torch.device
) -> tuple[int, list[dict[str, float]]]:
    """Load ``last.pt`` (if there is one) into ``gan``: ``(epochs done, history)``.

    Raises:
        CheckpointError: the run was trained with another config.
    """
    if not last_path.exists():
        return 0, []
    state = torch.load(last_path, map_location=dev, weights_only=True)
    if state.get("format") != GAN_FORMAT:
        raise CheckpointError(f"{last_path}: not a GAN run's checkpoint ({GAN_FORMAT})")
    check_resumable(last_path, state["config"], cfg)
    gan.load(state)
    return int(state["epoch"]), list(state["history"])


def _save(gan: _Gan, run_dir: Path, history: list[dict[str, float]]) -> None:
    """``generator.pt`` and (atomically) ``last.pt`` after the epoch ``history`` ends with."""
    cfg = gan.cfg
    save_weights(
        gan.generator,
        run_dir / "generator.pt",
        arch=cfg.arch,
        scale=cfg.scale,
        arch_kwargs=gan.kwargs,
        config=asdict(cfg),
        metrics=history[-1],
        dtype=torch.float32,
    )
    state = {
        "format": GAN_FORMAT,
        **gan.state(),
        "epoch": len(history),
        "config": asdict(cfg),
        "history": history,
    }
    tmp = run_dir / "last.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(run_dir / "last.pt")


def train_gan(
    cfg: TrainConfig,
    *,
    data: Path | Sequence[Path],
    run_dir: Path,
    resume: bool = False,
    device: str = "auto",
    stop_after_epochs: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train SRGAN or SFTGAN at ``cfg.scale`` on ``data`` (see the module docstring); the
    arguments of :func:`leukoscreen.model.train.train` but ``arch_kwargs``: the generator's size
    follows its ``init`` weights. ``TrainResult.best_weights`` is ``generator.pt``, the
    generator after the last epoch done.

    Raises:
        UsageError, DataError, CheckpointError: bad arguments, data or checkpoint.
    """
    run_dir = Path(run_dir)
    last_path, weights_path = run_dir / "last.pt", run_dir / "generator.pt"
    dev, precision = start_run(cfg, run_dir, resume=resume, device=device)
    train_set, val_set, _ = training_sets(cfg, data)
    gan = _Gan(cfg, dev)
    start, history = _resume(last_path, cfg, gan, dev) if resume else (0, [])
    run_dir.mkdir(parents=True, exist_ok=True)
    for epoch in range(start, last_epoch(cfg, start, stop_after_epochs)):
        for optimizer in (gan.opt_g, gan.opt_d):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch, cfg)
        began = time.perf_counter()
        gan.generator.train()
        gan.discriminator.train()
        record: dict[str, float] = {"epoch": epoch + 1, "lr": lr_at(epoch, cfg)}
        record.update(_epoch(gan, train_set, epoch, dev, precision, progress))
        record["seconds"] = time.perf_counter() - began
        scores = evaluate(gan.generator, val_set, device=dev, precision=precision)
        record.update({f"val_{k}": v for k, v in scores.items()})
        history.append(record)
        if progress:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k.startswith("train_"))
            tqdm.write(f"epoch {epoch + 1}: val PSNR {record['val_psnr']:.3f} dB; {shown}")
        _save(gan, run_dir, history)
    return TrainResult(
        run_dir=run_dir, epochs_done=len(history), history=history, best_weights=weights_path
    )
