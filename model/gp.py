"""The geometry-prior SR network and its none-prior variant (Hua et al. 2020, §2.2, Fig. 1).

The paper fixes: 1-channel bicubic-upsampled luminance in, a 3x3 conv + LeakyReLU(0.2) feature
extractor to 64 channels (shallow features), an LR feature encoder of 3 residual blocks (deep
features), a mask encoder "of the same depth" on the parsing map, concatenation to 192
channels, an SR decoder of residual blocks (6 blocks in the SR branch in all), 3x3 kernels
except the last 1x1 conv, 64 filters, no batch norm.

Where the paper is silent we chose, and ``docs/model-card.md`` shows the measured effect:

* mask encoder input: a 3x3 conv + LeakyReLU from the 3 parsing probabilities to 64 channels,
  then 3 residual blocks (the same depth as the LR encoder);
* decoder reduction: one 3x3 conv + LeakyReLU from 192 (128 without prior) to 64 channels,
  then 3 residual blocks (3 encoder + 3 decoder = the paper's 6 in the SR branch);
* a global residual: the network predicts the difference to its bicubic input (VDSR-style),
  which the paper motivates ("a relatively good starting point") but does not state;
* the parsing map is fed to the mask encoder as per-channel sigmoid probabilities, matching the
  paper's binary-cross-entropy prior loss; labels are the arg-max
  (``prior_activation="softmax"`` feeds softmax probabilities and trains with cross-entropy);
* the prior U-Net sees the luminance only, the SR branch's one channel (``prior_input="ycbcr"``
  gives it the bicubic-upsampled Y, Cb and Cr: the stain colour that separates nucleus from
  cytoplasm lives in the chroma).
"""

from __future__ import annotations

import torch
from torch import nn

from leukoscreen.model.blocks import ConvLReLU, ResidualBlock
from leukoscreen.model.unet import PriorUNet


class GeometryPriorSR(nn.Module):
    """Geometry-prior (GP) super-resolution network; ``use_prior=False`` gives NP (Fig. 1b).

    Args:
        num_features: filters of every SR-branch convolution (paper: 64).
        num_blocks: residual blocks in each of the LR encoder, mask encoder and decoder (paper: 3).
        use_prior: build the prior U-Net and mask encoder (GP) or not (NP).
        unet_widths: channel widths of the prior U-Net (paper: 32, 64, 128, 256, 512).
        global_residual: add the bicubic input to the output.
        prior_input: ``y`` (the U-Net reads the luminance) or ``ycbcr`` (all three channels).
        prior_activation: ``sigmoid`` (per-channel, with BCE) or ``softmax`` (with cross-entropy).
        unet_init: initialisation of the prior U-Net, ``he`` (U-Net's) or ``pytorch``.

    Shapes: x (N, 1, H, W) bicubic-upsampled luminance in [0, 1], or (N, 3, H, W) Y, Cb, Cr
        when ``input_kind == "upsampled_ycbcr"`` -> (sr (N, 1, H, W), parsing logits
        (N, 3, H, W) or None for NP).
    """

    input_kind = "upsampled"

    def __init__(
        self,
        *,
        num_features: int = 64,
        num_blocks: int = 3,
        use_prior: bool = True,
        unet_widths: tuple[int, ...] = (32, 64, 128, 256, 512),
        global_residual: bool = True,
        prior_input: str = "y",
        prior_activation: str = "sigmoid",
        unet_init: str = "he",
    ) -> None:
        super().__init__()
        if num_features < 1 or num_blocks < 1:
            raise ValueError(
                f"num_features and num_blocks must be >= 1, got {num_features!r}, {num_blocks!r}"
            )
        if prior_input not in ("y", "ycbcr"):
            raise ValueError(f"prior_input must be 'y' or 'ycbcr', got {prior_input!r}")
        if prior_activation not in ("sigmoid", "softmax"):
            raise ValueError(
                f"prior_activation must be 'sigmoid' or 'softmax', got {prior_activation!r}"
            )
        self.use_prior = use_prior
        self.global_residual = global_residual
        self.prior_activation = prior_activation
        if use_prior and prior_input == "ycbcr":
            self.input_kind = "upsampled_ycbcr"
        self.extract = ConvLReLU(1, num_features)
        self.lr_encoder = nn.Sequential(*(ResidualBlock(num_features) for _ in range(num_blocks)))
        branches = 2
        self.prior: PriorUNet | None = None
        self.mask_encoder: nn.Sequential | None = None
        if use_prior:
            branches = 3
            self.prior = PriorUNet(
                in_channels=3 if prior_input == "ycbcr" else 1,
                out_channels=3,
                widths=unet_widths,
                init=unet_init,
            )
            self.mask_encoder = nn.Sequential(
                ConvLReLU(3, num_features),
                *(ResidualBlock(num_features) for _ in range(num_blocks)),
            )
        self.decoder = nn.Sequential(
            ConvLReLU(branches * num_features, num_features),
            *(ResidualBlock(num_features) for _ in range(num_blocks)),
        )
        self.tail = nn.Conv2d(num_features, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        y = x[:, :1]  # (N, 1, H, W) luminance; x[:, 1:] are Cb, Cr for a YCbCr prior
        shallow = self.extract(y)  # (N, F, H, W)
        features = [shallow, self.lr_encoder(shallow)]
        logits = None
        if self.prior is not None and self.mask_encoder is not None:
            logits = self.prior(x if self.input_kind == "upsampled_ycbcr" else y)  # (N, 3, H, W)
            if self.prior_activation == "softmax":
                probabilities = torch.softmax(logits, dim=1)
            else:
                probabilities = torch.sigmoid(logits)
            features.append(self.mask_encoder(probabilities))
        sr = self.tail(self.decoder(torch.cat(features, dim=1)))  # (N, 1, H, W)
        if self.global_residual:
            sr = sr + y
        return sr, logits
