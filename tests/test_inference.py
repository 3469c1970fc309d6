"""The inference API the pipeline calls: load_pretrained, load_checkpoint, Upscaler.upscale."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from train_schedule import register_shipped

from leukoscreen.model import checkpoint
from leukoscreen.model.checkpoint import read_manifest, save_weights
from leukoscreen.model.config import DEFAULT_ARCH, PARSING_ARCHS
from leukoscreen.model.errors import CheckpointError, UsageError
from leukoscreen.model.gp import GeometryPriorSR
from leukoscreen.model.imresize import rgb2ycbcr
from leukoscreen.model.inference import (
    PARSING_COLOURS,
    Upscaler,
    colour_parsing,
    load_checkpoint,
    load_pretrained,
)
from leukoscreen.model.networks import build_network

TINY: dict[str, dict[str, Any]] = {
    "gp": {"num_features": 4, "num_blocks": 1, "unet_widths": (4, 8)},
    "np": {"num_features": 4, "num_blocks": 1},
    "srcnn": {"num_features": 4},
    "vdsr": {"num_features": 4, "num_layers": 3},
    "srresnet": {"num_features": 4, "num_blocks": 1},
    "gpsft": {"num_features": 4, "num_blocks": 1, "unet_widths": (4, 8), "condition_features": 4},
}


def _save(path: Path, arch: str, scale: int) -> Path:
    torch.manual_seed(0)
    model = build_network(arch, scale=scale, **TINY[arch])
    save_weights(model, path, arch=arch, scale=scale, arch_kwargs=TINY[arch])
    return path


def _lr(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# loading


def test_load_pretrained_unknown_arch() -> None:
    with pytest.raises(
        UsageError, match=r"^arch: expected default, bicubic or one of gp, np, .*got 'esrgan'"
    ):
        load_pretrained("esrgan", 4)


def test_load_pretrained_unknown_scale() -> None:
    with pytest.raises(UsageError, match=r"^scale: expected one of 4, 8, got 3"):
        load_pretrained("gp", 3)


def test_load_pretrained_without_shipped_weights(weights_dir: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_pretrained("gp", 8, device="cpu")
    assert str(info.value).startswith(
        f"{weights_dir / 'manifest.json'}: no shipped weights for arch 'gp' at scale 8"
    )


def test_load_pretrained_from_the_manifest(weights_dir: Path) -> None:
    path = _save(weights_dir / "gp_x4.pt", "gp", 4)
    register_shipped(weights_dir, "gp", 4, path)
    upscaler = load_pretrained("gp", 4, device="cpu", precision="fp32")
    assert (upscaler.arch, upscaler.scale, upscaler.precision) == ("gp", 4, "fp32")
    assert upscaler.checkpoint_sha256 == read_manifest()["gp_x4"]["sha256"]
    assert upscaler.device == torch.device("cpu")
    assert upscaler.has_prior
    assert upscaler.model is not None and not upscaler.model.training


def test_load_pretrained_refuses_a_tampered_file(weights_dir: Path) -> None:
    path = _save(weights_dir / "np_x8.pt", "np", 8)
    register_shipped(weights_dir, "np", 8, path)
    _save(path, "np", 4)  # replaced after registration
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: sha256 ")):
        load_pretrained("np", 8, device="cpu")


def test_load_pretrained_bicubic_needs_no_weights(weights_dir: Path) -> None:
    upscaler = load_pretrained("bicubic", 8, device="cpu")
    assert upscaler.model is None
    assert upscaler.checkpoint_sha256 == ""
    assert not upscaler.has_prior


def test_load_checkpoint_checks_arch_and_scale(tmp_path: Path) -> None:
    path = _save(tmp_path / "best.pt", "srcnn", 4)
    upscaler = load_checkpoint(path, device="cpu", expected_arch="srcnn", expected_scale=4)
    assert (upscaler.arch, upscaler.scale) == ("srcnn", 4)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: holds arch 'srcnn', expected")):
        load_checkpoint(path, device="cpu", expected_arch="gp")
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: holds scale x4, expected x8")):
        load_checkpoint(path, device="cpu", expected_scale=8)


# ---------------------------------------------------------------------------------------------
# upscale


@pytest.mark.parametrize("arch", ["gp", "np", "srcnn", "vdsr", "srresnet", "gpsft"])
@pytest.mark.parametrize("scale", [4, 8])
def test_upscale_shapes_and_dtypes(tmp_path: Path, arch: str, scale: int) -> None:
    upscaler = load_checkpoint(
        _save(tmp_path / "w.pt", arch, scale), device="cpu", precision="fp32"
    )
    sr, parsing = upscaler.upscale(_lr(2, 5, 7))
    assert sr.shape == (2, 5 * scale, 7 * scale, 3)
    assert sr.dtype == np.uint8
    if arch in ("gp", "gpsft"):
        assert parsing is not None
        assert parsing.shape == (2, 5 * scale, 7 * scale)
        assert parsing.dtype == np.uint8
        assert set(np.unique(parsing).tolist()) <= {0, 1, 2}
    else:
        assert parsing is None


def test_upscale_in_bf16(tmp_path: Path) -> None:
    upscaler = load_checkpoint(_save(tmp_path / "w.pt", "gp", 4), device="cpu", precision="bf16")
    sr, parsing = upscaler.upscale(_lr(1, 6, 6))
    assert sr.shape == (1, 24, 24, 3)
    assert parsing is not None and parsing.shape == (1, 24, 24)


def test_upscale_of_a_batch_equals_one_by_one(tmp_path: Path) -> None:
    upscaler = load_checkpoint(_save(tmp_path / "w.pt", "gp", 4), device="cpu", precision="fp32")
    lr = _lr(3, 6, 5)
    sr, parsing = upscaler.upscale(lr)
    assert parsing is not None
    for i in range(3):
        sr_i, parsing_i = upscaler.upscale(lr[i : i + 1])
        assert parsing_i is not None
        assert np.abs(sr_i[0].astype(int) - sr[i].astype(int)).max() <= 1
        assert (parsing_i[0] == parsing[i]).mean() > 0.99


def test_parsing_labels_follow_the_prior_channel_order() -> None:
    # A network whose logits favour channel 0 (nucleus) everywhere must give label 2.
    class NucleusEverywhere(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
            logits[:, 0] = 1.0
            return x, logits

    upscaler = Upscaler("gp", 4, "", torch.device("cpu"), "fp32", NucleusEverywhere())
    _, parsing = upscaler.upscale(_lr(1, 4, 4))
    assert parsing is not None
    assert (parsing == 2).all()


def test_bicubic_keeps_a_constant_image() -> None:
    upscaler = load_pretrained("bicubic", 8, device="cpu")
    lr = np.empty((2, 5, 6, 3), dtype=np.uint8)
    lr[:] = (200, 120, 160)
    sr, parsing = upscaler.upscale(lr)
    assert parsing is None
    assert sr.shape == (2, 40, 48, 3)
    assert (sr == np.array([200, 120, 160], dtype=np.uint8)).all()


def test_identity_network_equals_bicubic() -> None:
    # NP with a zero last layer and the global residual outputs its bicubic input.
    model = GeometryPriorSR(use_prior=False, **TINY["np"]).eval()
    torch.nn.init.zeros_(model.tail.weight)
    torch.nn.init.zeros_(model.tail.bias)
    identity = Upscaler("np", 4, "", torch.device("cpu"), "fp32", model)
    bicubic = load_pretrained("bicubic", 4, device="cpu")
    lr = _lr(2, 6, 7, seed=5)
    sr, _ = identity.upscale(lr)
    expected, _ = bicubic.upscale(lr)
    assert np.abs(sr.astype(int) - expected.astype(int)).max() <= 1  # Y through float32


@pytest.mark.parametrize("arch", ["gp", "np", "bicubic"])
def test_upscale_of_an_empty_batch(tmp_path: Path, arch: str) -> None:
    if arch == "bicubic":
        upscaler = load_pretrained("bicubic", 4, device="cpu")
    else:
        upscaler = load_checkpoint(_save(tmp_path / "w.pt", arch, 4), device="cpu")
    sr, parsing = upscaler.upscale(np.zeros((0, 9, 7, 3), dtype=np.uint8))
    assert sr.shape == (0, 36, 28, 3)
    assert sr.dtype == np.uint8
    if arch in ("gp", "gpsft"):
        assert parsing is not None and parsing.shape == (0, 36, 28)
    else:
        assert parsing is None


@pytest.mark.parametrize(
    ("lr", "message"),
    [
        (np.zeros((1, 3, 8, 3), np.uint8), "at least 4 px per side, got 3x8"),
        (np.zeros((1, 8, 2, 3), np.uint8), "at least 4 px per side, got 8x2"),
        (np.zeros((8, 8, 3), np.uint8), "(N, h, w, 3) uint8, got (8, 8, 3) uint8"),
        (np.zeros((1, 8, 8, 4), np.uint8), "got (1, 8, 8, 4) uint8"),
        (np.zeros((1, 8, 8, 3), np.float32), "got (1, 8, 8, 3) float32"),
    ],
    ids=["short", "narrow", "no-batch", "rgba", "float"],
)
def test_upscale_bad_input(lr: np.ndarray, message: str) -> None:
    upscaler = load_pretrained("bicubic", 4, device="cpu")
    with pytest.raises(ValueError, match=re.escape(message)):
        upscaler.upscale(lr)


def test_colour_parsing() -> None:
    labels = np.array([[[0, 1, 2]]], dtype=np.uint8)  # (1, 1, 3)
    rgb = colour_parsing(labels)
    assert rgb.shape == (1, 1, 3, 3)
    assert rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    assert (colour_parsing(labels) == PARSING_COLOURS[labels]).all()


# ---------------------------------------------------------------------------------------------
# the weights that ship with the package (present once training has produced them)


def _shipped() -> list[tuple[str, int]]:
    return sorted((str(e["arch"]), int(e["scale"])) for e in read_manifest().values())


@pytest.mark.parametrize("arch_scale", _shipped() or [pytest.param(None, id="none")])
def test_shipped_weights_pass_their_sha_check(arch_scale: tuple[str, int] | None) -> None:
    if arch_scale is None:
        pytest.skip(f"{checkpoint.MANIFEST} lists no shipped weights yet")
    arch, scale = arch_scale
    upscaler = load_pretrained(arch, scale, device="cpu", precision="fp32")
    path, sha = checkpoint.shipped_weights_path(arch, scale)
    assert upscaler.checkpoint_sha256 == sha == checkpoint.sha256_file(path)
    sr, parsing = upscaler.upscale(_lr(1, 8, 8))
    assert sr.shape == (1, 8 * scale, 8 * scale, 3)
    assert (parsing is not None) == (arch in PARSING_ARCHS)  # SFTGAN passes on its prior's map


def test_upscale_feeds_chroma_to_a_ycbcr_prior(tmp_path: Path) -> None:
    torch.manual_seed(0)
    kwargs = {**TINY["gp"], "prior_input": "ycbcr"}
    model = build_network("gp", scale=4, **kwargs)
    save_weights(model, tmp_path / "w.pt", arch="gp", scale=4, arch_kwargs=kwargs)
    upscaler = load_checkpoint(tmp_path / "w.pt", device="cpu", precision="fp32")
    grey = np.full((1, 6, 6, 3), 128, np.uint8)
    tinted = grey.copy()
    tinted[..., 2] = 200
    sr, parsing = upscaler.upscale(np.concatenate([grey, tinted]))
    assert sr.shape == (2, 24, 24, 3) and parsing is not None and parsing.shape == (2, 24, 24)
    seen: list[torch.Tensor] = []
    assert upscaler.model is not None
    upscaler.model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    upscaler.upscale(tinted)
    assert seen[0].shape == (1, 3, 24, 24)
    ycc = rgb2ycbcr(tinted.astype(np.float64) / 255.0)[0]
    for channel in range(3):  # a constant crop stays constant through the bicubic
        np.testing.assert_allclose(seen[0][0, channel].numpy(), ycc[0, 0, channel], atol=1e-5)


def test_default_resolves_to_the_shipped_default_network() -> None:
    manifest = read_manifest()
    for scale in (4, 8):
        for upscaler in (load_pretrained(scale=scale), load_pretrained("default", scale)):
            assert upscaler.arch == DEFAULT_ARCH and upscaler.scale == scale
            assert upscaler.checkpoint_sha256 == manifest[f"{DEFAULT_ARCH}_x{scale}"]["sha256"]
            assert upscaler.has_prior  # the default gives parsing maps


def test_untrained_gpsft_upscales_like_bicubic(tmp_path: Path) -> None:
    # GP-SFT starts as MATLAB bicubic of Y (zero last layer), on the LR Y, Cb, Cr it reads
    lr = _lr(2, 6, 5)
    sft = load_checkpoint(_save(tmp_path / "w.pt", "gpsft", 4), device="cpu", precision="fp32")
    bicubic = load_pretrained("bicubic", 4, device="cpu", precision="fp32")
    assert np.abs(sft.upscale(lr)[0].astype(int) - bicubic.upscale(lr)[0].astype(int)).max() <= 1
