"""SRCNN 9-5-5 (Dong et al., TPAMI 2016), the paper's Table 2 baseline.

Three convolutions on the bicubic-upsampled luminance: 9x9 to 64 channels, 5x5 to 32, 5x5 to 1,
ReLU between. Zero padding keeps the size (the original used valid convolutions and a smaller
output; padding lets every method be scored on the same pixels).
"""

from __future__ import annotations

import torch
from torch import nn


class SRCNN(nn.Module):
    """SRCNN 9-5-5.

    Args:
        num_features: channels after the first layer (64); the second has half.

    Shapes: x (N, 1, H, W) bicubic-upsampled luminance -> (sr (N, 1, H, W), None).
    """

    input_kind = "upsampled"

    def __init__(self, *, num_features: int = 64) -> None:
        super().__init__()
        if num_features < 2:
            raise ValueError(f"num_features must be >= 2, got {num_features!r}")
        self.body = nn.Sequential(
            nn.Conv2d(1, num_features, 9, padding=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_features, num_features // 2, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_features // 2, 1, 5, padding=2),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.body(x), None
