"""VDSR (Kim et al., CVPR 2016): 20 3x3 conv layers with ReLU and a global residual."""

from __future__ import annotations

import torch
from torch import nn


class VDSR(nn.Module):
    """VDSR with ``num_layers`` convolutions, predicting the residual to the bicubic input.

    Args:
        num_features: filters of the hidden layers (64).
        num_layers: convolution layers in all (20).

    Shapes: x (N, 1, H, W) bicubic-upsampled luminance -> (sr (N, 1, H, W), None).
    """

    input_kind = "upsampled"

    def __init__(self, *, num_features: int = 64, num_layers: int = 20) -> None:
        super().__init__()
        if num_layers < 2 or num_features < 1:
            raise ValueError(
                f"need num_layers >= 2 and num_features >= 1, got {num_layers!r}, {num_features!r}"
            )
        layers: list[nn.Module] = [nn.Conv2d(1, num_features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(num_layers - 2):
            layers += [nn.Conv2d(num_features, num_features, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(num_features, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x + self.body(x), None
