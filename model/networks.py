"""Construct any of the networks by its short name (the names the CLI and checkpoints use)."""

from __future__ import annotations

from typing import Any

from torch import nn

from leukoscreen.model.config import ARCHS
from leukoscreen.model.gan import SFTGAN
from leukoscreen.model.gp import GeometryPriorSR
from leukoscreen.model.gpsft import GeometryPriorSFT
from leukoscreen.model.srcnn import SRCNN
from leukoscreen.model.srresnet import SRResNet
from leukoscreen.model.vdsr import VDSR

METHOD_NAMES = {
    "bicubic": "Bicubic",
    "srcnn": "SRCNN",
    "vdsr": "VDSR",
    "srresnet": "SRResNet",
    "np": "Ours (NP)",
    "gp": "Ours (GP)",
    "gpsft": "GP-SFT",
    "srgan": "SRGAN",
    "sftgan": "SFTGAN",
}


DESIGN_KWARGS: dict[str, dict[str, Any]] = {"gp": {"prior_input": "ycbcr"}}
"""Constructor arguments of the networks ``leukoscreen train`` and the schedule train and ship,
where they differ from the class defaults (which follow the paper's text). GP's prior U-Net reads
the bicubic Y, Cb and Cr: measured better than Y alone (``docs/model-card.md``, ablation)."""


def design_kwargs(arch: str) -> dict[str, Any]:
    """A copy of :data:`DESIGN_KWARGS` for ``arch`` (empty for most networks)."""
    return dict(DESIGN_KWARGS.get(arch, {}))


def build_network(arch: str, *, scale: int, **arch_kwargs: Any) -> nn.Module:
    """A freshly initialised network.

    Args:
        arch: a name of :data:`~leukoscreen.model.config.ARCHS`.
        scale: SR factor (only SRResNet's layers depend on it).
        **arch_kwargs: constructor arguments (e.g. ``num_features=8`` for tiny test networks).

    Raises:
        ValueError: an unknown ``arch``.
    """
    if arch == "gp":
        return GeometryPriorSR(use_prior=True, **arch_kwargs)
    if arch == "np":
        return GeometryPriorSR(use_prior=False, **arch_kwargs)
    if arch == "srcnn":
        return SRCNN(**arch_kwargs)
    if arch == "vdsr":
        return VDSR(**arch_kwargs)
    if arch == "srresnet":
        return SRResNet(upscale=scale, **arch_kwargs)
    if arch == "gpsft":
        return GeometryPriorSFT(scale=scale, **arch_kwargs)
    if arch == "srgan":  # the generator is SRResNet (Ledig et al.)
        return SRResNet(upscale=scale, **arch_kwargs)
    if arch == "sftgan":
        return SFTGAN(scale=scale, **arch_kwargs)
    raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
