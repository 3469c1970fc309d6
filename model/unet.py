"""The prior network: a U-Net with half the channels, zero padding (paper §2.1).

Ronneberger et al.'s U-Net uses 64...1024 channels and valid convolutions; the paper halves the
channels (32, 64, 128, 256, 512) and zero-pads so the parsing map has the input's size. The
paper is silent on the up-sampling operator; we use a 2x2 transposed convolution as the original
U-Net does ("up-conv 2x2"), and ReLU as U-Net does inside the prior network.

Initialisation follows the U-Net paper too (Ronneberger et al. 2015, §3: Gaussian weights with
standard deviation sqrt(2/N), N the fan-in; zero biases). PyTorch's default initialisation
(``init="pytorch"``) shrinks the activations about tenfold from the first level to the
bottleneck of this BN-free network, and the prior then learns much more slowly
(``docs/model-card.md``, ablation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leukoscreen.model.blocks import he_init_

PRIOR_CLASSES = ("nucleus", "cytoplasm", "background")  # channel order of the parsing map


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class PriorUNet(nn.Module):
    """U-Net estimating the 3-channel parsing map (nucleus, cytoplasm, background).

    Inputs whose sides are not multiples of ``2 ** (len(widths) - 1)`` are zero-padded inside
    and the output is cropped back, so any size works.

    Args:
        in_channels: image channels (1: the bicubic-upsampled luminance).
        out_channels: parsing-map channels (3).
        widths: channels per level; the paper's half-width U-Net is (32, 64, 128, 256, 512).
        init: ``he`` (U-Net's Gaussian, std sqrt(2 / fan-in), zero bias) or ``pytorch``.

    Shapes: (N, in_channels, H, W) -> logits (N, out_channels, H, W).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 3,
        widths: tuple[int, ...] = (32, 64, 128, 256, 512),
        init: str = "he",
    ) -> None:
        super().__init__()
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths must hold >= 2 positive channel counts, got {widths!r}")
        if init not in ("he", "pytorch"):
            raise ValueError(f"init must be 'he' or 'pytorch', got {init!r}")
        self.widths = tuple(widths)
        self.down = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.down.append(double_conv(previous, width))
            previous = width
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for deep, shallow in zip(widths[:0:-1], widths[-2::-1], strict=True):
            self.up.append(nn.ConvTranspose2d(deep, shallow, kernel_size=2, stride=2))
            self.merge.append(double_conv(2 * shallow, shallow))
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)
        if init == "he":
            he_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2 ** (len(self.widths) - 1)
        pad_rows, pad_cols = -height % multiple, -width % multiple
        x = F.pad(x, (0, pad_cols, 0, pad_rows))  # zero padding, cropped back below
        skips = []
        for level, block in enumerate(self.down):
            if level > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = up(x)  # (N, C/2, 2h, 2w)
            x = merge(torch.cat([skips.pop(), x], dim=1))
        return self.head(x)[..., :height, :width]
