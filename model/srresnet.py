"""SRResNet-16 (Ledig et al., CVPR 2017), the paper's strongest non-GAN baseline.

Unlike the other methods it works at LR resolution and up-samples at the end with sub-pixel
convolutions (two x2 PixelShuffle stages at x4, three at x8), as in the original. Batch norm
and PReLU as in the original. The bicubic-upsampled input is not used.

``global_residual=True`` (not in the original) adds the MATLAB-bicubic up-sampling of the LR
input to the output and starts the last convolution at zero, so training starts at bicubic
instead of at a random image: the fix for SRResNet staying below bicubic on this small data set
(``docs/model-card.md``, SRResNet below bicubic).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from leukoscreen.model.blocks import zero_init_
from leukoscreen.model.gpsft import BicubicUp


class _BNResidualBlock(nn.Module):
    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(num_features, num_features, 3, padding=1),
            nn.BatchNorm2d(num_features),
            nn.PReLU(num_features),
            nn.Conv2d(num_features, num_features, 3, padding=1),
            nn.BatchNorm2d(num_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """SRResNet with ``num_blocks`` residual blocks and sub-pixel up-sampling by ``upscale``.

    Args:
        upscale: 2, 4 or 8 (a power of two).
        num_features: filters (64).
        num_blocks: residual blocks (16).

    Shapes: x (N, 1, h, w) LR luminance -> (sr (N, 1, h*upscale, w*upscale), None).
    """

    input_kind = "lr"

    def __init__(
        self,
        *,
        upscale: int,
        num_features: int = 64,
        num_blocks: int = 16,
        global_residual: bool = False,
    ) -> None:
        super().__init__()
        stages = round(math.log2(upscale)) if upscale > 0 else -1
        if stages < 1 or 2**stages != upscale:
            raise ValueError(f"upscale must be a power of two >= 2, got {upscale!r}")
        self.head = nn.Sequential(nn.Conv2d(1, num_features, 9, padding=4), nn.PReLU(num_features))
        self.body = nn.Sequential(
            *(_BNResidualBlock(num_features) for _ in range(num_blocks)),
            nn.Conv2d(num_features, num_features, 3, padding=1),
            nn.BatchNorm2d(num_features),
        )
        upsample: list[nn.Module] = []
        for _ in range(stages):
            upsample += [
                nn.Conv2d(num_features, 4 * num_features, 3, padding=1),
                nn.PixelShuffle(2),
                nn.PReLU(num_features),
            ]
        self.upsample = nn.Sequential(*upsample)
        self.tail = nn.Conv2d(num_features, 1, 9, padding=4)
        self.bicubic = BicubicUp(upscale) if global_residual else None
        if global_residual:
            zero_init_(self.tail)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        head = self.head(x)
        sr = self.tail(self.upsample(head + self.body(head)))
        if self.bicubic is not None:
            sr = sr.float() + self.bicubic(x)
        return sr, None
