"""Building blocks shared by the networks (paper §2.2, Fig. 1)."""

from __future__ import annotations

import torch
from torch import nn

LEAKY_SLOPE = 0.2  # paper §2.2: "Leaky ReLU with a negative slope of 0.2"


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 convolution with zero padding 1, so spatial size is kept (paper §2.4)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


class ConvLReLU(nn.Sequential):
    """The paper's orange block: a 3x3 convolution followed by LeakyReLU(0.2).

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            conv3x3(in_channels, out_channels), nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        )


class ResidualBlock(nn.Module):
    """The paper's green block: two ConvLReLU blocks and an identity skip, no batch norm.

    The paper follows EDSR in dropping batch norm and draws each conv followed by a LeakyReLU
    (Fig. 1 caption), so the second activation sits inside the skip.

    Args:
        num_features: channels in and out.

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features!r}")
        self.body = nn.Sequential(
            ConvLReLU(num_features, num_features), ConvLReLU(num_features, num_features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def he_init_(module: nn.Module) -> None:
    """He et al. (2015) initialisation of every (transposed) convolution in ``module``.

    Gaussian weights with standard deviation sqrt(2 / fan-in) and zero biases, the scheme U-Net
    (Ronneberger et al. 2015, §3) and VDSR (Kim et al. 2016, §4.1) use for their BN-free ReLU
    stacks. The fan-in of a transposed convolution is its ``in_channels * k * k``, which torch
    calls ``fan_out`` for that layer type.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            transposed = isinstance(layer, nn.ConvTranspose2d)
            nn.init.kaiming_normal_(
                layer.weight, mode="fan_out" if transposed else "fan_in", nonlinearity="relu"
            )
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def zero_init_(layer: nn.Conv2d) -> None:
    """Zero a convolution's weights and bias: a residual branch that starts as nothing."""
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
