"""VDSR (Kim et al., CVPR 2016): 20 3x3 conv layers with ReLU and a global residual.

Initialised as the VDSR paper does (He et al.'s Gaussian, std sqrt(2 / fan-in)): with PyTorch's
default initialisation the 20-layer ReLU stack starts with a residual about 1e-4 of its input
and, at the paper's Adam 1e-4 without VDSR's high learning rate and gradient clipping, stayed at
the bicubic result.
"""

from __future__ import annotations

import torch
from torch import nn

from leukoscreen.model.blocks import he_init_


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
        he_init_(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x + self.body(x), None
