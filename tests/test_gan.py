"""SRGAN and SFTGAN: networks, the feature network, adversarial training with exact resume."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from leukoscreen.model.checkpoint import load_init, load_weights, save_weights
from leukoscreen.model.config import TrainConfig
from leukoscreen.model.errors import CheckpointError, UsageError
from leukoscreen.model.gan import (
    SFTGAN,
    CellFeatures,
    SRGANDiscriminator,
    srresnet_state_to_sftgan,
)
from leukoscreen.model.gan_train import train_gan
from leukoscreen.model.srresnet import SRResNet

CellWriter = Callable[..., Path]
TINY: dict[str, Any] = {"num_features": 8, "num_blocks": 2}
CFG = TrainConfig(
    arch="srgan",
    scale=4,
    epochs=2,
    batch_size=4,
    hr_size_px=32,
    precision="fp32",
    num_threads=1,
    seed=5,
)


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory, write_cells: CellWriter) -> Path:
    return write_cells(tmp_path_factory.mktemp("data") / "cells")


@pytest.fixture(scope="module")
def tiny_srresnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pixel-'trained' SRResNet (random weights, batch-norm statistics moved off their
    defaults): the generator a GAN run starts from."""
    torch.manual_seed(0)
    net = SRResNet(upscale=4, **TINY)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("init") / "srresnet_x4.pt"
    save_weights(net, path, arch="srresnet", scale=4, arch_kwargs=TINY, dtype=torch.float32)
    return path


def _gan(cfg: TrainConfig, data: Path, run_dir: Path, **kwargs: Any) -> Any:
    return train_gan(cfg, data=data, run_dir=run_dir, device="cpu", progress=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# networks


@pytest.mark.parametrize("side", [32, 120, 224])
def test_discriminator_gives_one_logit_per_image_of_any_size(side: int) -> None:
    torch.manual_seed(0)
    disc = SRGANDiscriminator().eval()
    assert disc(torch.rand(2, 1, side, side)).shape == (2,)
    convs = [m for m in disc.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2] * 4


def _tiny_pair() -> tuple[SRResNet, SFTGAN]:
    torch.manual_seed(1)
    srresnet = SRResNet(upscale=4, **TINY).eval()
    prior = {"unet_widths": (4, 8), "condition_features": 4, "num_features": 4, "num_blocks": 1}
    sftgan = SFTGAN(scale=4, **TINY, prior_kwargs=prior).eval()
    missing, unexpected = sftgan.load_state_dict(
        srresnet_state_to_sftgan(srresnet.state_dict(), 2), strict=False
    )
    assert not unexpected
    assert all(k.startswith(("prior.", "condition.")) or ".sft." in k for k in missing)
    return srresnet, sftgan


def test_untrained_sftgan_is_the_srresnet_it_was_loaded_from() -> None:
    srresnet, sftgan = _tiny_pair()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        expected, _ = srresnet(x[:, :1])
        sr, logits = sftgan(x)
    assert sr.shape == (2, 1, 32, 32) and logits.shape == (2, 3, 32, 32)
    torch.testing.assert_close(sr, expected, rtol=0, atol=1e-6)


def test_sftgan_output_follows_the_parsing_map_once_its_sft_layers_train() -> None:
    _, sftgan = _tiny_pair()
    torch.nn.init.normal_(sftgan.blocks[0].sft.gamma[-1].weight, std=0.5)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        before, _ = sftgan(x)
        sftgan.prior.parsing_head.out.bias += torch.tensor([3.0, -3.0, 0.0])  # another map
        after, _ = sftgan(x)
    assert (after - before).abs().max() > 1e-4
    assert not any(p.requires_grad for p in sftgan.prior.parameters())


def test_cell_features_are_the_shipped_gp_prior_levels_and_stay_frozen() -> None:
    features = CellFeatures.from_shipped()
    features.train()
    assert not features.training
    assert not any(p.requires_grad for p in features.parameters())
    prior = load_init("gp", 4).model.prior
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        out = features(x)
        reference = prior.down[0](x)
        reference = prior.down[1](torch.nn.functional.max_pool2d(reference, 2))
        reference = prior.down[2](torch.nn.functional.max_pool2d(reference, 2))
    assert out.shape == (1, 128, 8, 8)
    torch.testing.assert_close(out, reference)


# ---------------------------------------------------------------------------------------------
# training


def _without_time(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


@pytest.fixture(scope="module")
def srgan_cfg(tiny_srresnet: Path) -> TrainConfig:
    return replace(CFG, init=str(tiny_srresnet), pixel_epochs=1, augment=True)


@pytest.fixture(scope="module")
def straight(cells: Path, srgan_cfg: TrainConfig, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _gan(srgan_cfg, cells, tmp_path_factory.mktemp("straight"))


def test_srgan_pretrains_on_pixels_then_trains_adversarially(
    straight: Any, tiny_srresnet: Path
) -> None:
    pixel, adversarial = straight.history
    assert "train_d_loss" not in pixel and math.isfinite(pixel["train_g_loss"])
    for key in ("train_d_loss", "train_content", "train_adversarial", "val_psnr"):
        assert math.isfinite(adversarial[key]), key
    assert 0 < adversarial["train_d_real"] < 1 and 0 < adversarial["train_d_fake"] < 1
    trained = load_weights(straight.best_weights)
    start = load_weights(tiny_srresnet)
    assert trained.arch == "srgan" and trained.meta["metrics"]["epoch"] == 2
    moved = [
        not torch.equal(a, b)
        for a, b in zip(
            trained.model.state_dict().values(), start.model.state_dict().values(), strict=True
        )
        if a.is_floating_point()
    ]
    assert all(moved[:4])  # the generator trained


def test_gan_resume_after_a_kill_is_bit_identical(
    cells: Path, srgan_cfg: TrainConfig, straight: Any, tmp_path: Path
) -> None:
    first = _gan(srgan_cfg, cells, tmp_path, stop_after_epochs=1)
    assert first.epochs_done == 1
    resumed = _gan(srgan_cfg, cells, tmp_path, resume=True)
    assert _without_time(resumed.history) == _without_time(straight.history)
    a = torch.load(straight.run_dir / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "last.pt", weights_only=True)
    for part in ("generator", "discriminator"):
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    for part in ("opt_g", "opt_d"):
        for index in a[part]["state"]:
            assert torch.equal(
                a[part]["state"][index]["exp_avg"], b[part]["state"][index]["exp_avg"]
            )
    with pytest.raises(CheckpointError, match="another config"):
        _gan(replace(srgan_cfg, adversarial_weight=0.1), cells, tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="pass --resume"):
        _gan(srgan_cfg, cells, tmp_path)


def test_sftgan_trains_its_condition_and_keeps_the_shipped_prior(
    cells: Path, tiny_srresnet: Path, tmp_path: Path
) -> None:
    cfg = replace(CFG, arch="sftgan", epochs=1, init=str(tiny_srresnet))
    result = _gan(cfg, cells, tmp_path)
    trained = load_weights(result.best_weights)  # rebuilt from the file's own arch_kwargs
    assert trained.arch == "sftgan" and isinstance(trained.model, SFTGAN)
    shipped = load_init("gpsft", 4).model.state_dict()
    for name, tensor in trained.model.prior.state_dict().items():
        assert torch.equal(tensor, shipped[name].float()), name
    gamma = trained.model.blocks[0].sft.gamma[-1].weight
    assert gamma.abs().max() > 0  # started at zero, learnt to use the parsing map
    sr, logits = trained.model(torch.rand(1, 3, 8, 8))
    assert sr.shape == (1, 1, 32, 32) and logits.shape == (1, 3, 32, 32)


def test_a_gan_refuses_another_network_as_its_start(cells: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    other = tmp_path / "vdsr.pt"
    from leukoscreen.model.networks import build_network

    kwargs = {"num_features": 4, "num_layers": 3}
    save_weights(
        build_network("vdsr", scale=4, **kwargs), other, arch="vdsr", scale=4, arch_kwargs=kwargs
    )
    with pytest.raises(UsageError, match="expected srresnet"):
        _gan(replace(CFG, init=str(other)), cells, tmp_path / "run")


def test_an_sftgan_checkpoint_upscales_cells_with_its_parsing_map(
    cells: Path, tiny_srresnet: Path, tmp_path: Path
) -> None:
    from leukoscreen.model.inference import load_checkpoint

    cfg = replace(CFG, arch="sftgan", epochs=1, init=str(tiny_srresnet), pixel_epochs=1)
    result = _gan(cfg, cells, tmp_path)
    upscaler = load_checkpoint(result.best_weights, device="cpu", precision="fp32")
    assert upscaler.has_prior
    lr = np.random.default_rng(0).integers(0, 256, (2, 9, 10, 3), dtype=np.uint8)
    sr, parsing = upscaler.upscale(lr)
    assert sr.shape == (2, 36, 40, 3) and parsing is not None and parsing.shape == (2, 36, 40)
    gpsft = load_init("gpsft", 4).model  # the stored map is the shipped GP-SFT's
    from leukoscreen.model.device import parsing_labels
    from leukoscreen.model.imresize import rgb2ycbcr

    x = torch.from_numpy(rgb2ycbcr(lr / 255.0).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        expected = parsing_labels(gpsft(x)[1]).numpy()
    assert (parsing == expected).mean() > 0.999
