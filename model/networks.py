"""Construct any of the networks by its short name (the names the CLI and checkpoints use)."""

from __future__ import annotations

from typing import Any

from torch import nn

from leukoscreen.model.config import ARCHS
from leukoscreen.model.gp import GeometryPriorSR
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
}


def build_network(arch: str, *, scale: int, **arch_kwargs: Any) -> nn.Module:
    """A freshly initialised network.

    Args:
        arch: ``gp``, ``np``, ``srcnn``, ``vdsr`` or ``srresnet``.
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
    raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
