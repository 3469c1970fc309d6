"""The GAN baselines of the paper's Table 2: SRGAN and SFTGAN, their discriminator and the
feature network of their content loss.

* **SRGAN** (Ledig et al., CVPR 2017): the generator *is* SRResNet
  (:class:`~leukoscreen.model.srresnet.SRResNet`, pre-trained on the pixel loss: the shipped
  ``srresnet`` weights), trained on against :class:`SRGANDiscriminator` with a feature (content)
  loss plus 1e-3 times the adversarial loss (Ledig et al., eq. 3; our content weight, 10, was
  measured: ``docs/model-card.md``).
* **SFTGAN** (Wang et al., "Recovering realistic texture in image super-resolution by deep
  spatial feature transform", CVPR 2018): the same generator with a spatial feature transform
  layer in each residual block, conditioned on a parsing map. Wang et al. condition on a
  semantic segmentation; here (as the issue and Hua et al.'s comparison have it) the condition is
  our leukocyte parsing map (nucleus, cytoplasm, background), computed from the LR image by the
  shipped default network (GP-SFT, frozen inside :class:`SFTGAN`).

Hua et al. (§3.4) take the content loss's feature maps from torchvision's ImageNet-trained
VGG-19. Those weights cannot be downloaded here and no package on the registries ships them, so
:class:`CellFeatures` substitutes a feature network trained in this project: the first three
levels of the shipped GP ×4 prior U-Net, trained on these cells' parsing (``docs/model-card.md``
says so where the GAN rows are reported).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from leukoscreen.model.blocks import zero_init_
from leukoscreen.model.gpsft import GeometryPriorSFT
from leukoscreen.model.srresnet import SRResNet, _BNResidualBlock
from leukoscreen.model.unet import PriorUNet

SFT_SLOPE = 0.1  # Wang et al.'s SFT layers and condition network use LeakyReLU(0.1)


class SRGANDiscriminator(nn.Module):
    """Ledig et al.'s discriminator (their Fig. 4): eight 3x3 convolutions of 64, 64, 128, 128,
    256, 256, 512, 512 filters, stride 2 in every second, batch norm after all but the first,
    LeakyReLU(0.2); then dense 1024, LeakyReLU, dense 1 (a logit).

    Ledig et al. train on 96 x 96 px patches, so their dense layer reads a 6 x 6 map; we train
    on whole images (120 and 224 px, as every other method here), so an adaptive average pool
    brings any size to that 6 x 6 map first.

    Shapes: (N, in_channels, H, W) HR luminance -> (N,) logits (real > 0).
    """

    def __init__(self, *, in_channels: int = 1, widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for level, width in enumerate(widths):
            for stride in (1, 2):
                layers.append(nn.Conv2d(previous, width, 3, stride=stride, padding=1))
                if level or stride == 2:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.LeakyReLU(0.2, inplace=True))
                previous = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(6),
            nn.Flatten(),
            nn.Linear(previous * 36, 1024),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(1024, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))[:, 0]


class SFTLayer(nn.Module):
    """Wang et al.'s spatial feature transform: ``x * (1 + gamma) + beta``, gamma and beta two
    1 x 1 convolutions each of the shared condition features. The last convolutions start at
    zero, so an untrained layer is the identity.

    Shapes: x (N, C, h, w), condition (N, K, h, w) -> (N, C, h, w).
    """

    def __init__(self, num_features: int, condition_features: int) -> None:
        super().__init__()
        gamma_out = nn.Conv2d(condition_features, num_features, 1)
        beta_out = nn.Conv2d(condition_features, num_features, 1)
        zero_init_(gamma_out)
        zero_init_(beta_out)
        self.gamma = nn.Sequential(
            nn.Conv2d(condition_features, condition_features, 1),
            nn.LeakyReLU(SFT_SLOPE, inplace=True),
            gamma_out,
        )
        self.beta = nn.Sequential(
            nn.Conv2d(condition_features, condition_features, 1),
            nn.LeakyReLU(SFT_SLOPE, inplace=True),
            beta_out,
        )

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.gamma(condition)) + self.beta(condition)


class _SFTResidualBlock(_BNResidualBlock):
    """SRResNet's residual block (same ``body``, so SRResNet weights load into it) with an SFT
    layer at the end of its residual branch."""

    def __init__(self, num_features: int, condition_features: int) -> None:
        super().__init__(num_features)
        self.sft = SFTLayer(num_features, condition_features)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x + self.sft(self.body(x), condition)


class SFTGAN(nn.Module):
    """SFTGAN's generator on our parsing map: SRResNet with an SFT layer per residual block.

    The parsing map comes from ``prior``, a GP-SFT network (the shipped default when trained by
    ``leukoscreen train --arch sftgan``) that is never trained here; its sigmoid map at HR goes
    through Wang et al.'s condition network (a ``scale`` x ``scale`` stride-``scale``
    convolution down to LR, then 1 x 1 convolutions, 128 filters, to 32 shared condition
    features). With the SFT layers at zero the generator equals an SRResNet whose weights it
    holds (:func:`srresnet_state_to_sftgan`; ``tests/test_gan.py``).

    Args:
        scale: SR factor, a power of two.
        num_features, num_blocks: the SRResNet trunk's filters and residual blocks (64, 16).
        condition_features: channels of the shared condition (Wang et al.: 32).
        prior_kwargs: constructor arguments of the GP-SFT prior (the shipped file's).

    Shapes: x (N, 3, h, w) LR Y, Cb, Cr -> (sr (N, 1, h*s, w*s), the prior's parsing logits
        (N, 3, h*s, w*s)), so a store made with SFTGAN still has a parsing map.
    """

    input_kind = "lr_ycbcr"
    prior_activation = "sigmoid"

    def __init__(
        self,
        *,
        scale: int,
        num_features: int = 64,
        num_blocks: int = 16,
        condition_features: int = 32,
        prior_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        trunk = SRResNet(upscale=scale, num_features=num_features, num_blocks=num_blocks)
        self.scale = scale
        self.prior_kwargs = dict(prior_kwargs or {})
        self.prior = GeometryPriorSFT(scale=scale, **self.prior_kwargs)
        self.prior.requires_grad_(False)
        self.condition = nn.Sequential(
            nn.Conv2d(3, 128, scale, stride=scale),
            nn.LeakyReLU(SFT_SLOPE, inplace=True),
            nn.Conv2d(128, 128, 1),
            nn.LeakyReLU(SFT_SLOPE, inplace=True),
            nn.Conv2d(128, 128, 1),
            nn.LeakyReLU(SFT_SLOPE, inplace=True),
            nn.Conv2d(128, condition_features, 1),
        )
        self.head = trunk.head
        self.blocks = nn.ModuleList(
            _SFTResidualBlock(num_features, condition_features) for _ in range(num_blocks)
        )
        self.body_tail = nn.Sequential(trunk.body[-2], trunk.body[-1])  # conv, batch norm
        self.upsample = trunk.upsample
        self.tail = trunk.tail

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            _, logits = self.prior(x)
        condition = self.condition(torch.sigmoid(logits.float()).to(x.dtype))
        head = self.head(x[:, :1])
        features = head
        for block in self.blocks:
            features = block(features, condition)
        sr = self.tail(self.upsample(head + self.body_tail(features)))
        return sr, logits


def srresnet_state_to_sftgan(state: dict[str, torch.Tensor], num_blocks: int) -> dict[str, Any]:
    """SRResNet's state dict under :class:`SFTGAN`'s names (``body.i`` -> ``blocks.i`` for the
    residual blocks, the last conv and batch norm -> ``body_tail``)."""
    renamed = {}
    for name, tensor in state.items():
        if name.startswith("body."):
            index, rest = name[len("body.") :].split(".", 1)
            if int(index) < num_blocks:
                name = f"blocks.{index}.{rest}"
            else:
                name = f"body_tail.{int(index) - num_blocks}.{rest}"
        renamed[name] = tensor
    return renamed


class CellFeatures(nn.Module):
    """The content loss's feature network: the first ``levels`` levels of a prior U-Net.

    Our substitute for Ledig et al.'s ImageNet VGG-19 (not available here): the shipped GP ×4
    prior U-Net (``from_shipped``), trained on these leukocytes to tell nucleus, cytoplasm and
    background apart, read to its third level (128 features at 1/4 of the size, after 6
    convolutions), frozen. Like VGG's, its features respond to edges and texture, not to the
    pixel values themselves.

    Shapes: (N, in_channels, H, W) Y, Cb, Cr in [0, 1] -> (N, widths[levels-1], H/2^(l-1), ...).
    """

    def __init__(self, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.blocks = blocks
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_shipped(cls, levels: int = 3) -> CellFeatures:
        """The first ``levels`` levels of the shipped GP ×4 prior U-Net."""
        from leukoscreen.model.checkpoint import load_init

        prior = getattr(load_init("gp", 4).model, "prior", None)
        if not isinstance(prior, PriorUNet):
            raise TypeError("the shipped gp_x4 weights have no prior U-Net")
        return cls(nn.ModuleList(list(prior.down)[:levels]))

    def train(self, mode: bool = True) -> CellFeatures:
        return super().train(False)  # always frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for level, block in enumerate(self.blocks):
            x = block(F.max_pool2d(x, 2) if level else x)
        return x
