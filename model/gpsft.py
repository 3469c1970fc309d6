"""GP-SFT: the geometry prior of Hua et al. (2020) in a fast low-resolution residual trunk.

The paper's GP (:mod:`leukoscreen.model.gp`) runs a U-Net and its SR branch on the
bicubic-upsampled 224 x 224 image: about 96 GFLOP per cell, and a shallow SR branch (6 residual
blocks). This variant keeps the paper's idea, a parsing prior that tells the SR branch where the
nucleus and cytoplasm are, trained with the same Charbonnier + lambda * BCE loss, and changes
where the work is done:

* everything runs on the **LR** image (Y, Cb, Cr; 1/16 or 1/64 of the HR pixels), the HR image
  and the parsing map are made by sub-pixel convolution (Shi et al. 2016) at the end;
* the prior is a small U-Net (widths 32, 64, 128) on the LR YCbCr whose features condition a
  deeper SR trunk (16 residual blocks, as EDSR-baseline) through **spatial feature transform**
  layers (Wang et al. 2018, SFTGAN: ``features * (1 + gamma) + beta`` with gamma, beta from the
  prior's features) instead of the paper's concatenation;
* the output is added to the MATLAB-style bicubic up-sampling of the LR luminance (the same
  operator the data and the baseline use), and the last convolution starts at zero, so the
  untrained network *is* bicubic and training only has to improve on it.

About 9 GFLOP per 224 x 224 cell at x4 and 3 GFLOP at x8 (``benchmarks/model_benchmark.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from leukoscreen.model.blocks import LEAKY_SLOPE, ConvLReLU, conv3x3, he_init_, zero_init_
from leukoscreen.model.imresize import resize_matrix
from leukoscreen.model.unet import PriorUNet, double_conv

HR_CONTEXT_LR = 2
"""LR pixels beyond a kept region that the HR stages of :class:`GeometryPriorSFT` read: a
sub-pixel head reaches 1 LR px (its 3 x 3 expansion) plus 1 HR px; the refiner's two 3 x 3
convolutions per x2 step reach 2 px at each step's size, 1 + 1/2 + 1/4 LR px at x8. Both stay
under 2 LR px (one less changes the outputs, ``tests/test_networks.py``)."""


class BicubicUp(nn.Module):
    """MATLAB-compatible bicubic up-sampling by an integer ``scale`` as two matrix products.

    Equal to :func:`leukoscreen.model.imresize.imresize` (``tests/test_networks.py``); the
    matrices are built once per input size and kept out of the state dict.

    Shapes: (N, C, h, w) -> (N, C, h * scale, w * scale).
    """

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self._cache: dict[tuple[int, torch.device], torch.Tensor] = {}

    def _matrix(self, length: int, device: torch.device) -> torch.Tensor:
        key = (length, device)
        if key not in self._cache:
            matrix = resize_matrix(length, float(self.scale))
            self._cache[key] = torch.from_numpy(matrix).float().to(device)
        return self._cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self._matrix(x.shape[-2], x.device)  # (H, h)
        cols = self._matrix(x.shape[-1], x.device)  # (W, w)
        return torch.einsum("Hh,nchw,Ww->ncHW", rows, x.float(), cols)


class SFTResidualBlock(nn.Module):
    """A residual block whose input is modulated by the prior: x + body(SFT(x, condition)).

    SFT (Wang et al. 2018): ``gamma`` and ``beta`` are 1x1 convolutions of the shared
    condition features; ``x * (1 + gamma) + beta`` starts as the identity when they are zero.

    Shapes: x (N, C, h, w), condition (N, K, h, w) -> (N, C, h, w).
    """

    def __init__(self, num_features: int, condition_features: int) -> None:
        super().__init__()
        self.gamma = nn.Conv2d(condition_features, num_features, kernel_size=1)
        self.beta = nn.Conv2d(condition_features, num_features, kernel_size=1)
        zero_init_(self.gamma)  # SFT starts as the identity
        zero_init_(self.beta)
        self.body = nn.Sequential(
            ConvLReLU(num_features, num_features), conv3x3(num_features, num_features)
        )

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        modulated = x * (1 + self.gamma(condition)) + self.beta(condition)
        return x + self.body(modulated)


class SubPixelHead(nn.Module):
    """LR features -> HR maps: 3x3 conv to ``scale**2 * width`` channels, pixel shuffle,
    LeakyReLU, 3x3 conv to ``out_channels`` at HR.

    Shapes: (N, C, h, w) -> (N, out_channels, h * scale, w * scale).
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int, width: int = 16) -> None:
        super().__init__()
        self.expand = conv3x3(in_channels, width * scale * scale)
        self.shuffle = nn.PixelShuffle(scale)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        self.out = conv3x3(width, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.shuffle(self.expand(x))))


class ParsingRefiner(nn.Module):
    """Draws the parsing map's boundaries at HR: a decoder from the prior's LR features up to HR,
    one x2 step at a time, each step merging the bicubic-upsampled Y, Cb, Cr at that step's size
    (U-Net's up-path, with the image in place of the down-path's skips). Its output corrects the
    sub-pixel head's coarse logits; the last convolution starts at zero, so an untrained refiner
    changes nothing.

    The coarse map comes from the LR prior (28 x 28 px for a 224 px cell at x8); the paper's GP
    draws its boundaries with a U-Net at HR. The refiner never feeds the SR trunk, so training it
    leaves the SR image unchanged.

    Args:
        condition_features: channels of the prior's LR features.
        scale: SR factor, a power of two: ``log2(scale)`` x2 steps.
        widths: channels per step, HR step first; the first ``log2(scale)`` are used.

    Shapes: condition (N, K, h, w), image (N, 3, h*s, w*s), logits (N, 3, h*s, w*s) ->
        (N, 3, h*s, w*s).
    """

    def __init__(
        self, condition_features: int, scale: int, widths: tuple[int, ...] = (16, 32, 48)
    ) -> None:
        super().__init__()
        steps = round(math.log2(scale))
        if 2**steps != scale or len(widths) < steps:
            raise ValueError(
                f"the refiner needs a power-of-two scale and one width per x2 step, got scale "
                f"{scale!r}, widths {widths!r}"
            )
        self.ups = nn.ModuleList()
        self.merges = nn.ModuleList()
        previous = condition_features
        for width in reversed(widths[:steps]):  # coarse to fine
            self.ups.append(nn.ConvTranspose2d(previous, width, kernel_size=2, stride=2))
            self.merges.append(double_conv(width + 3, width))
            previous = width
        self.head = nn.Conv2d(previous, 3, kernel_size=1)
        he_init_(self)
        zero_init_(self.head)

    def forward(
        self, condition: torch.Tensor, image: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        features = condition
        for step, (up, merge) in enumerate(zip(self.ups, self.merges, strict=True)):
            features = up(features)
            factor = 2 ** (len(self.ups) - 1 - step)
            level = F.avg_pool2d(image, factor) if factor > 1 else image
            features = merge(torch.cat([features, level.to(features.dtype)], dim=1))
        return logits + self.head(features)


class GeometryPriorSFT(nn.Module):
    """GP-SFT: LR residual trunk conditioned on a parsing prior by spatial feature transform.

    Args:
        scale: SR factor (the sub-pixel heads depend on it).
        num_features: trunk channels.
        num_blocks: SFT residual blocks in the trunk.
        unet_widths: channel widths of the LR prior U-Net.
        condition_features: channels of the prior's features that drive SFT and the parsing map.
        head_width: HR channels of the sub-pixel heads.
        refine_widths: channels per x2 step of the HR :class:`ParsingRefiner` (e.g.
            ``(16, 32, 48)``); empty (the default, as the shipped weights were trained) for the
            coarse sub-pixel map alone.
        hr_parser_widths: level widths of an HR parser (e.g. ``(16, 32, 64, 128)``): a
            :class:`~leukoscreen.model.unet.PriorUNet` at HR that reads the SR luminance (detached:
            it never trains the SR path), the bicubic Cb, Cr and the sigmoid of the map so far,
            and adds a correction to the logits (its head starts at zero). The paper's GP draws
            its map with a U-Net at HR; this one reads the SR image instead of the bicubic one.
            Empty (the default) for none. With it, the HR stages run on the whole input and
            ``trim`` only crops (its reach is wider than :data:`HR_CONTEXT_LR`).
        parsing_prior: give the parsing map a prior U-Net and condition layer of its own, a
            copy of the SR path's at the start (``tools/add_parsing_refiner.py
            --parsing-prior``), so ``--parsing-only`` training can change what the map sees
            without touching the SR image. False (the default) shares one prior.

    Shapes: x (N, 3, h, w) LR Y, Cb, Cr in [0, 1] -> (sr (N, 1, h*s, w*s), parsing logits
        (N, 3, h*s, w*s) in the order nucleus, cytoplasm, background).
    """

    input_kind = "lr_ycbcr"
    prior_activation = "sigmoid"
    trims_context = True  # forward(x, trim=...) skips the HR stages of the context margin

    def __init__(
        self,
        *,
        scale: int,
        num_features: int = 64,
        num_blocks: int = 16,
        unet_widths: tuple[int, ...] = (32, 64, 128),
        condition_features: int = 64,
        head_width: int = 16,
        refine_widths: tuple[int, ...] = (),
        hr_parser_widths: tuple[int, ...] = (),
        parsing_prior: bool = False,
    ) -> None:
        super().__init__()
        if scale < 2 or num_features < 1 or num_blocks < 1:
            raise ValueError(
                f"scale must be >= 2 and num_features, num_blocks >= 1, got {scale!r}, "
                f"{num_features!r}, {num_blocks!r}"
            )
        self.scale = scale
        self.upsample = BicubicUp(scale)
        self.prior = PriorUNet(in_channels=3, out_channels=condition_features, widths=unet_widths)
        self.condition = nn.Sequential(
            nn.LeakyReLU(LEAKY_SLOPE), ConvLReLU(condition_features, condition_features)
        )
        self.parsing_prior = (
            PriorUNet(in_channels=3, out_channels=condition_features, widths=unet_widths)
            if parsing_prior
            else None
        )
        self.parsing_condition = (
            nn.Sequential(
                nn.LeakyReLU(LEAKY_SLOPE), ConvLReLU(condition_features, condition_features)
            )
            if parsing_prior
            else None
        )
        self.parsing_head = SubPixelHead(condition_features, 3, scale, head_width)
        self.refiner = (
            ParsingRefiner(condition_features, scale, tuple(refine_widths))
            if refine_widths
            else None
        )
        self.hr_parser = (
            PriorUNet(in_channels=6, out_channels=3, widths=tuple(hr_parser_widths))
            if hr_parser_widths
            else None
        )
        if self.hr_parser is not None:
            zero_init_(self.hr_parser.head)
        self.extract = conv3x3(1, num_features)
        self.blocks = nn.ModuleList(
            SFTResidualBlock(num_features, condition_features) for _ in range(num_blocks)
        )
        self.trunk_out = conv3x3(num_features, num_features)
        self.sr_head = SubPixelHead(num_features, 1, scale, head_width)
        zero_init_(self.sr_head.out)  # the untrained network is bicubic

    def forward(self, x: torch.Tensor, trim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """SR luminance and parsing logits; ``trim`` LR px of context dropped on each side.

        The outputs with ``trim`` equal the full outputs with ``trim * scale`` HR px cut from
        each side (``tests/test_networks.py``), but the HR stages (the sub-pixel heads and the
        refiner) only run on the kept part plus :data:`HR_CONTEXT_LR` LR px, the reach of their
        convolutions: a crop read with a context margin (``pipeline.crops``) pays for the margin
        in the LR prior and trunk, which need it, and not in the HR stages, which dominate.
        """
        height, width = x.shape[-2:]
        if not 0 <= 2 * trim < min(height, width):
            raise ValueError(f"trim must be >= 0 and leave pixels of {height}x{width}, got {trim}")
        reach = HR_CONTEXT_LR if self.hr_parser is None else trim
        cut = max(trim - reach, 0)  # LR px the HR stages never see
        rest = (trim - cut) * self.scale  # HR px cut from what they compute
        y = x[:, :1]  # (N, 1, h, w) LR luminance
        condition = self.condition(self.prior(x))  # (N, K, h, w)
        if self.parsing_prior is not None and self.parsing_condition is not None:
            kept = crop_border(self.parsing_condition(self.parsing_prior(x)), cut)
        else:
            kept = crop_border(condition, cut)
        logits = self.parsing_head(kept)  # (N, 3, H, W), blocky at x8
        up = crop_border(self.upsample(x), cut * self.scale)  # (N, 3, H, W) bicubic Y, Cb, Cr
        if self.refiner is not None:
            logits = self.refiner(kept, up, logits)
        shallow = self.extract(y)
        features = shallow
        for block in self.blocks:
            features = block(features, condition)
        features = crop_border(self.trunk_out(features) + shallow, cut)
        sr = self.sr_head(features).float() + up[:, :1]
        if self.hr_parser is not None:
            guide = torch.cat([sr.detach(), up[:, 1:], torch.sigmoid(logits.float())], dim=1)
            logits = logits + self.hr_parser(guide)
        return crop_border(sr, rest), crop_border(logits, rest)  # (N, 1, H', W'), (N, 3, H', W')


def with_parsing_prior(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GP-SFT weights for ``parsing_prior=True``: the SR path's prior and condition layer copied
    to the parsing map's own (``parsing_prior.*``, ``parsing_condition.*``), so the network
    computes exactly what the shared one did."""
    weights = dict(state_dict)
    for key, value in state_dict.items():
        for shared, own in (("prior.", "parsing_prior."), ("condition.", "parsing_condition.")):
            if key.startswith(shared):
                weights[own + key[len(shared) :]] = value.clone()
    return weights


def crop_border(x: torch.Tensor, px: int) -> torch.Tensor:
    """``x`` without ``px`` pixels on each side of its last two dimensions (a view)."""
    return x[..., px : x.shape[-2] - px, px : x.shape[-1] - px] if px else x


def gflop_per_cell(model: nn.Module, *, scale: int, hr_side_px: int = 224) -> float:
    """Multiply-adds x 2 of the convolutions (and transposed ones) for one square cell of
    ``hr_side_px``, counted by forward hooks on a zero input of what ``model`` reads."""
    total = 0.0

    def count(layer: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            kernel = math.prod(layer.kernel_size) * layer.in_channels // layer.groups
            total += 2.0 * kernel * output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    try:
        kind = getattr(model, "input_kind", "upsampled")
        side = hr_side_px // scale if kind in ("lr", "lr_ycbcr") else hr_side_px
        channels = 3 if kind in ("lr_ycbcr", "upsampled_ycbcr") else 1
        with torch.no_grad():
            model(torch.zeros(1, channels, side, side))
    finally:
        for hook in hooks:
            hook.remove()
    return total / 1e9
