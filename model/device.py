"""Where and how a network runs: device, precision, memory layout, its input and its outputs.

Shared by training, evaluation and inference, so that the product's inference path
(``leukoscreen.model.inference``) never loads the training code. On the CPU we autocast to bf16
with channels_last weights and input (about 3x faster than fp32 on AMX hardware).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from leukoscreen.model.errors import UsageError

INPUT_KEYS = {
    "upsampled": "up",
    "upsampled_ycbcr": "up_ycbcr",
    "lr": "lr",
    "lr_ycbcr": "lr_ycbcr",
}
"""A network's ``input_kind`` -> the key of a data-set batch that holds that input."""


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU.

    Raises:
        UsageError: a device other than auto, cpu or cuda, or cuda without a CUDA device.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"device: expected auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device: cuda was asked for but torch sees no CUDA device")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA with bf16 and on CPUs with native bf16 (AMX/AVX-512 bf16).

    Raises:
        UsageError: a precision other than auto, bf16 or fp32.
    """
    if precision not in ("auto", "bf16", "fp32"):
        raise UsageError(f"precision: expected auto, bf16 or fp32, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for ``precision == "bf16"``, else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def channels_last(model: nn.Module) -> nn.Module:
    """``model`` with its weights in channels_last layout (faster bf16 convolutions on CPU)."""
    # torch's type stubs omit Module.to(memory_format=...), which torch supports.
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def model_input(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The tensor a network reads: the bicubic-upsampled Y (or Y, Cb, Cr), or the LR Y."""
    return batch[INPUT_KEYS[getattr(model, "input_kind", "upsampled")]]


def run_network(
    model: nn.Module, x: torch.Tensor, *, device: torch.device, precision: str, trim: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward pass as every caller runs it: channels_last input under the precision's autocast.

    Args:
        model: a network of ``leukoscreen.model.networks``, on ``device``.
        x: (N, C, H, W) float32 input (:func:`model_input`), on ``device``.
        device: the device the network is on.
        precision: ``bf16`` or ``fp32`` (resolved).
        trim: LR px per side the network leaves out of its outputs (only networks with
            ``trims_context``, i.e. GP-SFT; 0 for every other).

    Returns:
        ``sr`` (N, 1, H', W') and the parsing logits (N, 3, H', W') or ``None``, in the autocast
        dtype (call ``.float()`` before losses and metrics).
    """
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        sr, logits = model(x, trim=trim) if trim else model(x)
    return sr, logits


def parsing_labels(scores: torch.Tensor) -> torch.Tensor:
    """Parsing labels from per-class scores (logits, probabilities or a one-hot map).

    Args:
        scores: (..., 3, H, W), channel order (nucleus, cytoplasm, background).

    Returns:
        (..., H, W) uint8 labels: 2 nucleus, 1 cytoplasm, 0 background.
    """
    return (2 - scores.float().argmax(dim=-3)).to(torch.uint8)
