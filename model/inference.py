"""Ready-to-use super-resolution: shipped weights in, uint8 RGB cells and parsing labels out.

The pipeline calls exactly this API::

    upscaler = load_pretrained(scale=8)   # the default network; or load_pretrained("gp", 8)
    sr, parsing = upscaler.upscale(lr)   # lr: (N, h, w, 3) uint8 RGB crops

As in the paper (§2.4), the network super-resolves the luminance of MATLAB's ``rgb2ycbcr``; Cb
and Cr are up-sampled with the same MATLAB-style bicubic, and the result is converted back to
RGB, clipped and rounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from leukoscreen.model.checkpoint import (
    LoadedWeights,
    load_weights,
    resolve_arch,
    shipped_weights_path,
)
from leukoscreen.model.config import ARCHS, PARSING_ARCHS, check_scale
from leukoscreen.model.device import (
    channels_last,
    parsing_labels,
    resolve_device,
    resolve_precision,
    run_network,
)
from leukoscreen.model.errors import CheckpointError, UsageError
from leukoscreen.model.gpsft import BicubicUp, crop_border
from leukoscreen.model.imresize import YCBCR_MATRIX, YCBCR_OFFSET, imresize, rgb2ycbcr, ycbcr2rgb

MIN_LR_SIDE_PX = 4  # smaller crops carry no structure to super-resolve
YCBCR_INVERSE = np.linalg.inv(YCBCR_MATRIX)  # ycbcr2rgb's matrix, for the device path
PARSING_COLOURS = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], dtype=np.uint8)
"""Label -> RGB as in the paper's Fig. 2: background black, cytoplasm red, nucleus blue."""


@dataclass
class Upscaler:
    """A network bound to a device and precision, with the colour handling around it.

    Attributes:
        arch: ``gp``, ``np``, ``srcnn``, ``vdsr``, ``srresnet`` or ``bicubic`` (no network).
        scale: SR factor.
        checkpoint_sha256: sha256 of the weights file ('' for bicubic).
        device: torch device the network runs on.
        precision: ``bf16`` or ``fp32``.
        model: the network in eval mode (None for bicubic), compiled when ``compiled``.
        colour_on_device: do the colour conversion and the bicubic chroma up-sampling in torch on
            the network's device (float32) instead of in numpy (float64) on the host; on by
            default on CUDA, where the host would be the slow stage.
        batch_bucket: pad every network call to a multiple of this many crops, so that the
            network only ever sees a fixed batch shape (what ``torch.compile`` needs to compile
            once); 0 feeds the crops as given.
        compiled: whether ``model`` went through ``torch.compile``.
    """

    arch: str
    scale: int
    checkpoint_sha256: str
    device: torch.device
    precision: str
    model: nn.Module | None = field(default=None, repr=False)
    colour_on_device: bool = False
    batch_bucket: int = 0
    compiled: bool = False

    @property
    def has_prior(self) -> bool:
        """Whether :meth:`upscale` returns parsing labels."""
        return self.arch in PARSING_ARCHS

    def upscale(
        self, lr: NDArray[np.uint8], *, trim: int = 0
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8] | None]:
        """Super-resolve a batch of RGB crops: :meth:`upscale_maps` without the confidence."""
        sr, parsing, _ = self.upscale_maps(lr, trim=trim)
        return sr, parsing

    @torch.no_grad()
    def upscale_maps(
        self, lr: NDArray[np.uint8], *, trim: int = 0
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8] | None, NDArray[np.float32] | None]:
        """Super-resolve a batch of RGB crops, with the parsing map and its confidence.

        Args:
            lr: (N, h, w, 3) uint8 RGB, any h, w >= 4.
            trim: LR pixels of context on each side of the crops that are not wanted back: the
                outputs lose ``trim * scale`` HR px per side (as if cut afterwards), and a
                network that can (GP-SFT) skips their HR stages.

        Returns:
            ``sr`` (N, H, W, 3) uint8 RGB, ``parsing`` (N, H, W) uint8 labels (0 background,
            1 cytoplasm, 2 nucleus) and ``confidence`` (N, H, W) float32, the share of the
            winning class in the three sigmoid probabilities (1/3 to 1); both None for networks
            without a prior. ``H = (h - 2 * trim) * s``, ``W = (w - 2 * trim) * s``.
        """
        lr = np.asarray(lr)
        if lr.ndim != 4 or lr.shape[-1] != 3 or lr.dtype != np.uint8:
            raise ValueError(f"lr must be (N, h, w, 3) uint8, got {lr.shape} {lr.dtype}")
        n, h, w, _ = lr.shape
        if min(h, w) < MIN_LR_SIDE_PX:
            raise ValueError(f"lr crops must be at least {MIN_LR_SIDE_PX} px per side, got {h}x{w}")
        if not 0 <= 2 * trim < min(h, w):
            raise ValueError(f"trim must be >= 0 and leave pixels of {h}x{w} crops, got {trim}")
        s = self.scale
        cut = trim * s
        if n == 0:
            side_h, side_w = h * s - 2 * cut, w * s - 2 * cut
            empty = np.zeros((0, side_h, side_w), np.uint8) if self.has_prior else None
            return (
                np.zeros((0, side_h, side_w, 3), np.uint8),
                empty,
                None if empty is None else empty.astype(np.float32),
            )
        if self.colour_on_device and self.model is not None:
            return self._upscale_on_device(lr, trim)
        ycc = rgb2ycbcr(lr.astype(np.float64) / 255.0)  # (N, h, w, 3)
        stacked = ycc.transpose(1, 2, 0, 3).reshape(h, w, n * 3)  # resize all planes at once
        up = imresize(stacked, float(s)).reshape(h * s, w * s, n, 3).transpose(2, 0, 1, 3)
        parsing, confidence = None, None
        kept = (slice(None), slice(cut, h * s - cut), slice(cut, w * s - cut))
        if self.model is None:
            y = up[..., 0][kept]
        else:
            kind = getattr(self.model, "input_kind", "upsampled")
            if kind == "upsampled_ycbcr":
                source = up.transpose(0, 3, 1, 2)  # (N, 3, H, W) Y, Cb, Cr
            elif kind == "lr_ycbcr":
                source = ycc.transpose(0, 3, 1, 2)  # (N, 3, h, w) LR Y, Cb, Cr
            else:
                source = (ycc[..., 0] if kind == "lr" else up[..., 0])[:, None]
            x = torch.from_numpy(np.ascontiguousarray(source, dtype=np.float32)).to(self.device)
            sr, logits = self._forward(x, trim)
            y = sr.float()[:, 0].cpu().numpy()
            if logits is not None:
                labels, share = _labels_and_confidence(logits)
                parsing, confidence = labels.cpu().numpy(), share.cpu().numpy()
        out = ycbcr2rgb(np.concatenate([y[..., None], up[kept][..., 1:]], axis=-1))
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8), parsing, confidence

    def _forward(self, x: torch.Tensor, trim: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The network on ``x``, in calls of exactly ``batch_bucket`` crops when it is set (the
        last call padded with copies of the last crop, their outputs dropped); ``trim`` LR px
        per side cut from the outputs (by the network itself where it can)."""
        assert self.model is not None
        if trim and not getattr(self.model, "trims_context", False):
            sr, logits = self._forward(x, 0)
            cut = trim * self.scale
            return crop_border(sr, cut), None if logits is None else crop_border(logits, cut)
        model, device, precision = self.model, self.device, self.precision
        bucket = self.batch_bucket
        if bucket <= 0 or len(x) == bucket:
            return run_network(model, x, device=device, precision=precision, trim=trim)
        srs, all_logits = [], []
        for start in range(0, len(x), bucket):
            part = x[start : start + bucket]
            real = len(part)
            if real < bucket:
                part = torch.cat([part, part[-1:].expand(bucket - real, *part.shape[1:])])
            sr, logits = run_network(model, part, device=device, precision=precision, trim=trim)
            srs.append(sr[:real])
            if logits is not None:
                all_logits.append(logits[:real])
        return torch.cat(srs), torch.cat(all_logits) if all_logits else None

    def _upscale_on_device(
        self, lr: NDArray[np.uint8], trim: int = 0
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8] | None, NDArray[np.float32] | None]:
        """:meth:`upscale_maps` with the colour handling in torch on ``self.device``: the uint8
        crops go over (pinned, asynchronously on CUDA), uint8 images and labels come back."""
        host = torch.from_numpy(np.ascontiguousarray(lr))
        if self.device.type == "cuda":
            host = host.pin_memory()
        rgb = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float() / 255.0
        matrix = torch.as_tensor(YCBCR_MATRIX, dtype=torch.float32, device=self.device)
        offset = torch.as_tensor(YCBCR_OFFSET, dtype=torch.float32, device=self.device)
        ycc = torch.einsum("kc,nchw->nkhw", matrix, rgb) + offset[:, None, None]
        up = _bicubic_up(self.scale, ycc)  # (N, 3, H, W)
        kind = getattr(self.model, "input_kind", "upsampled")
        source = {"upsampled_ycbcr": up, "lr_ycbcr": ycc, "lr": ycc[:, :1]}.get(kind, up[:, :1])
        sr, logits = self._forward(source.contiguous(), trim)
        chroma = crop_border(up[:, 1:], trim * self.scale)
        ycc_out = torch.cat([sr.float()[:, :1], chroma], dim=1) - offset[:, None, None]
        inverse = torch.as_tensor(YCBCR_INVERSE, dtype=torch.float32, device=self.device)
        out = torch.einsum("kc,nchw->nkhw", inverse, ycc_out)
        image = (out * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        if logits is None:
            return image.cpu().numpy(), None, None
        labels, share = _labels_and_confidence(logits)
        return image.cpu().numpy(), labels.cpu().numpy(), share.cpu().numpy()


_BICUBIC: dict[int, BicubicUp] = {}


def _bicubic_up(scale: int, x: torch.Tensor) -> torch.Tensor:
    """MATLAB-style bicubic up-sampling in torch (:class:`~leukoscreen.model.gpsft.BicubicUp`,
    its matrices kept per size and device)."""
    if scale not in _BICUBIC:
        _BICUBIC[scale] = BicubicUp(scale)
    return _BICUBIC[scale](x)


def _labels_and_confidence(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Parsing labels (N, H, W) uint8 and the pixel confidence (N, H, W) float32: the winning
    class's share of the three sigmoid probabilities."""
    probabilities = torch.sigmoid(logits.float())
    share = probabilities.amax(dim=1) / probabilities.sum(dim=1)
    return parsing_labels(logits), share.float()


def _bind(
    loaded: LoadedWeights, device: str, precision: str, compile: str = "off", batch_bucket: int = 0
) -> Upscaler:
    dev = resolve_device(device)
    model = channels_last(loaded.model.to(dev)).eval()
    compiled = compile == "on" or (compile == "auto" and dev.type == "cuda")
    if compiled:
        # one graph per input shape: batches are padded to batch_bucket, crops share one size
        model = torch.compile(model, dynamic=False)  # type: ignore[assignment]
    return Upscaler(
        arch=loaded.arch,
        scale=loaded.scale,
        checkpoint_sha256=loaded.sha256,
        device=dev,
        precision=resolve_precision(precision, dev),
        model=model,
        colour_on_device=dev.type == "cuda",
        batch_bucket=batch_bucket if compiled else 0,
        compiled=compiled,
    )


def load_pretrained(
    arch: str = "default",
    scale: int = 8,
    *,
    device: str = "auto",
    precision: str = "auto",
    compile: str = "off",
    batch_bucket: int = 0,
) -> Upscaler:
    """The shipped network ``arch`` at ``scale`` (``bicubic`` needs no weights; ``default`` is
    :data:`~leukoscreen.model.config.DEFAULT_ARCH`).

    ``compile`` (``off``, ``on``, or ``auto``: on CUDA only) puts the network through
    ``torch.compile``; a compiled network is fed batches padded to ``batch_bucket`` crops.

    Raises:
        UsageError: unknown arch or scale.
        CheckpointError: no shipped weights for them, or a file that fails its sha256 check.
    """
    arch = resolve_arch(arch)
    if arch != "bicubic" and arch not in ARCHS:
        raise UsageError(
            f"arch: expected default, bicubic or one of {', '.join(ARCHS)}, got {arch!r}"
        )
    check_scale(scale)
    if arch == "bicubic":
        dev = resolve_device(device)
        return Upscaler("bicubic", scale, "", dev, resolve_precision(precision, dev))
    path, sha = shipped_weights_path(arch, scale)
    return _bind(load_weights(path, expected_sha256=sha), device, precision, compile, batch_bucket)


def load_checkpoint(
    path: Path | str,
    *,
    device: str = "auto",
    precision: str = "auto",
    expected_arch: str | None = None,
    expected_scale: int | None = None,
    compile: str = "off",
    batch_bucket: int = 0,
) -> Upscaler:
    """A network from any leukoscreen weights file (``best.pt`` of a run, or shipped);
    ``compile`` and ``batch_bucket`` as in :func:`load_pretrained`.

    Raises:
        CheckpointError: unreadable file, or arch/scale other than the expected ones.
    """
    loaded = load_weights(path)
    if expected_arch is not None and loaded.arch != expected_arch:
        raise CheckpointError(f"{path}: holds arch {loaded.arch!r}, expected {expected_arch!r}")
    if expected_scale is not None and loaded.scale != expected_scale:
        raise CheckpointError(f"{path}: holds scale x{loaded.scale}, expected x{expected_scale}")
    return _bind(loaded, device, precision, compile, batch_bucket)


def colour_parsing(parsing: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Labels (..., H, W) -> RGB (..., H, W, 3) with :data:`PARSING_COLOURS`."""
    return PARSING_COLOURS[parsing]


def load_upscaler(
    arch: str = "default",
    scale: int = 8,
    *,
    checkpoint: Path | str = "",
    device: str = "auto",
    precision: str = "auto",
    expected_arch: str | None = None,
    expected_scale: int | None = None,
    compile: str = "off",
    batch_bucket: int = 0,
) -> Upscaler:
    """The network a command asks for: a weights file when ``checkpoint`` is given, else the
    shipped ``arch`` at ``scale`` (:func:`load_checkpoint`, :func:`load_pretrained`).

    Args:
        arch: shipped network name (``default``, ``bicubic`` or one of ``ARCHS``); ignored with a
            checkpoint, which names its own.
        scale: SR factor of the shipped weights; ignored with a checkpoint.
        checkpoint: a weights file, or ``""`` for the shipped weights.
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``auto``, ``bf16`` or ``fp32``.
        expected_arch: with a checkpoint, the arch it must hold (``None``: any).
        expected_scale: with a checkpoint, the scale it must hold (``None``: any).
        compile: ``off``, ``on``, or ``auto`` (``torch.compile`` on CUDA only).
        batch_bucket: with a compiled network, the fixed batch every call is padded to.

    Raises:
        UsageError: unknown arch or scale.
        CheckpointError: no shipped weights, an unreadable file, or another arch or scale than
            expected.
    """
    if checkpoint:
        return load_checkpoint(
            checkpoint,
            device=device,
            precision=precision,
            expected_arch=expected_arch,
            expected_scale=expected_scale,
            compile=compile,
            batch_bucket=batch_bucket,
        )
    return load_pretrained(
        arch, scale, device=device, precision=precision, compile=compile, batch_bucket=batch_bucket
    )
