"""Every network at tiny widths on tiny seeded inputs: shapes, gradient flow, determinism, args."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from leukoscreen.model.blocks import ResidualBlock
from leukoscreen.model.gp import GeometryPriorSR
from leukoscreen.model.gpsft import gflop_per_cell, with_parsing_prior
from leukoscreen.model.imresize import imresize
from leukoscreen.model.networks import build_network, design_kwargs
from leukoscreen.model.srcnn import SRCNN
from leukoscreen.model.srresnet import SRResNet
from leukoscreen.model.unet import PriorUNet
from leukoscreen.model.vdsr import VDSR

SCALE = 4
TINY: dict[str, dict[str, Any]] = {
    "gp": {"num_features": 8, "num_blocks": 1, "unet_widths": (4, 8, 16)},
    "np": {"num_features": 8, "num_blocks": 1},
    "srcnn": {"num_features": 8},
    "vdsr": {"num_features": 8, "num_layers": 4},
    "srresnet": {"num_features": 8, "num_blocks": 2},
    "gpsft": {"num_features": 8, "num_blocks": 2, "unet_widths": (4, 8), "condition_features": 4},
}
ARCHS = tuple(TINY)


def _tiny(arch: str, *, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_network(arch, scale=SCALE, **TINY[arch])
    if arch == "gpsft":  # its SR head and SFT layers start at zero (bicubic): wake them up
        with torch.no_grad():
            for parameter in model.parameters():
                if not parameter.abs().sum() > 0:
                    parameter.normal_(0, 0.1)
    return model


def _input(model: nn.Module, n: int, hr_rows: int, hr_cols: int) -> torch.Tensor:
    """A seeded batch of what ``model`` reads: HR-sized luminance, or LR for SRResNet."""
    generator = torch.Generator().manual_seed(1)
    if getattr(model, "input_kind", "upsampled") == "lr":
        return torch.rand(n, 1, hr_rows // SCALE, hr_cols // SCALE, generator=generator)
    if getattr(model, "input_kind", "upsampled") == "lr_ycbcr":
        return torch.rand(n, 3, hr_rows // SCALE, hr_cols // SCALE, generator=generator)
    return torch.rand(n, 1, hr_rows, hr_cols, generator=generator)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("rows", "cols"), [(16, 16), (20, 28), (12, 36)])
def test_output_shapes(arch: str, rows: int, cols: int) -> None:
    # 20 x 28 and 12 x 36 are not multiples of the U-Net's 2 ** (levels - 1).
    model = _tiny(arch).eval()
    with torch.no_grad():
        sr, logits = model(_input(model, 2, rows, cols))
    assert sr.shape == (2, 1, rows, cols)
    assert sr.dtype == torch.float32
    if arch in ("gp", "gpsft"):
        assert logits is not None
        assert logits.shape == (2, 3, rows, cols)
    else:
        assert logits is None


def test_prior_unet_keeps_odd_sizes() -> None:
    torch.manual_seed(0)
    unet = PriorUNet(widths=(4, 8, 16, 32))
    with torch.no_grad():
        out = unet(torch.rand(1, 1, 19, 23))
    assert out.shape == (1, 3, 19, 23)


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_every_parameter(arch: str) -> None:
    model = _tiny(arch).train()
    sr, _ = model(_input(model, 2, 20, 28))
    # Only the SR output: for GP the U-Net must be reached through the mask encoder too.
    sr.square().mean().backward()
    named = list(model.named_parameters())
    if arch in ("gp", "gpsft"):
        assert any(name.startswith("prior.") for name, _ in named)
    # GP-SFT's parsing head only makes the map; the prior reaches SR through SFT
    named = [(name, p) for name, p in named if not name.startswith("parsing_head.")]
    missing = [name for name, p in named if p.grad is None]
    assert not missing
    zero = [name for name, p in named if p.grad is not None and not p.grad.abs().sum() > 0]
    assert not zero, f"parameters without gradient signal: {zero}"


def test_gp_parsing_loss_reaches_the_unet() -> None:
    model = _tiny("gp").train()
    _, logits = model(_input(model, 1, 20, 28))
    assert logits is not None
    logits.mean().backward()
    assert model.prior is not None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.prior.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_same_seed_same_output(arch: str) -> None:
    outputs = []
    for _ in range(2):
        model = _tiny(arch, seed=7).eval()
        with torch.no_grad():
            outputs.append(model(_input(model, 2, 20, 28))[0])
    assert torch.equal(outputs[0], outputs[1])
    other = _tiny(arch, seed=8).eval()
    with torch.no_grad():
        assert not torch.equal(outputs[0], other(_input(other, 2, 20, 28))[0])


def test_gp_full_size_has_about_8_5_million_parameters() -> None:
    gp = build_network("gp", scale=8)
    count = sum(p.numel() for p in gp.parameters())
    assert abs(count - 8.5e6) <= 0.1e6


def test_np_has_no_prior_branch() -> None:
    np_model = build_network("np", scale=8)
    assert isinstance(np_model, GeometryPriorSR)
    assert np_model.prior is None
    assert np_model.mask_encoder is None
    assert not any(k.startswith(("prior.", "mask_encoder.")) for k in np_model.state_dict())
    gp_count = sum(p.numel() for p in build_network("gp", scale=8).parameters())
    assert sum(p.numel() for p in np_model.parameters()) < gp_count / 10


def test_gp_global_residual_adds_the_input() -> None:
    torch.manual_seed(0)
    with_res = GeometryPriorSR(**TINY["np"], use_prior=False, global_residual=True).eval()
    torch.manual_seed(0)
    without = GeometryPriorSR(**TINY["np"], use_prior=False, global_residual=False).eval()
    x = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(with_res(x)[0], without(x)[0] + x)


@pytest.mark.parametrize("upscale", [2, 4, 8])
def test_srresnet_upsamples_by_its_factor(upscale: int) -> None:
    torch.manual_seed(0)
    model = SRResNet(upscale=upscale, num_features=4, num_blocks=1).eval()
    with torch.no_grad():
        sr, _ = model(torch.rand(1, 1, 5, 7))
    assert sr.shape == (1, 1, 5 * upscale, 7 * upscale)


@pytest.mark.parametrize(
    ("build", "shown"),
    [
        (lambda: GeometryPriorSR(num_features=0), "0"),
        (lambda: GeometryPriorSR(num_blocks=-2), "-2"),
        (lambda: PriorUNet(widths=(4,)), "(4,)"),
        (lambda: PriorUNet(widths=(4, 0)), "(4, 0)"),
        (lambda: PriorUNet(init="xavier"), "'xavier'"),
        (lambda: SRCNN(num_features=1), "1"),
        (lambda: VDSR(num_layers=1), "1"),
        (lambda: VDSR(num_features=0), "0"),
        (lambda: SRResNet(upscale=3), "3"),
        (lambda: SRResNet(upscale=0), "0"),
        (lambda: ResidualBlock(0), "0"),
    ],
    ids=[
        "gp-features",
        "gp-blocks",
        "unet-levels",
        "unet-width",
        "unet-init",
        "srcnn",
        "vdsr-layers",
        "vdsr-features",
        "srresnet-3",
        "srresnet-0",
        "block",
    ],
)
def test_invalid_constructor_arguments_raise_value_error(build: Any, shown: str) -> None:
    with pytest.raises(ValueError, match="got") as info:
        build()
    assert shown in str(info.value)


def test_build_network_unknown_arch() -> None:
    with pytest.raises(ValueError, match=r"unknown arch 'nope'; expected one of gp, np"):
        build_network("nope", scale=4)


def test_build_network_passes_the_scale_to_srresnet_only() -> None:
    model = build_network("srresnet", scale=8, num_features=4, num_blocks=1)
    with torch.no_grad():
        assert model(torch.rand(1, 1, 4, 4))[0].shape == (1, 1, 32, 32)


def test_gp_ycbcr_prior_reads_chroma_and_sr_branch_reads_luminance() -> None:
    torch.manual_seed(0)
    model = GeometryPriorSR(**TINY["gp"], prior_input="ycbcr").eval()
    assert model.input_kind == "upsampled_ycbcr"
    assert model.prior is not None
    assert model.prior.down[0][0].in_channels == 3
    x = torch.rand(2, 3, 16, 20, generator=torch.Generator().manual_seed(2))
    other_chroma = x.clone()
    other_chroma[:, 1:] = torch.rand(2, 2, 16, 20, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        sr, logits = model(x)
        _, logits2 = model(other_chroma)
    assert sr.shape == (2, 1, 16, 20) and logits is not None and logits.shape == (2, 3, 16, 20)
    assert logits2 is not None and not torch.allclose(logits, logits2)  # the prior sees Cb, Cr
    # with the prior branch's output fixed, the SR branch only reads Y: zero the mask encoder
    for p in model.mask_encoder.parameters():  # type: ignore[union-attr]
        torch.nn.init.zeros_(p)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], model(other_chroma)[0])


def test_gp_softmax_map_sums_to_one_in_the_mask_encoder() -> None:
    torch.manual_seed(0)
    model = GeometryPriorSR(**TINY["gp"], prior_activation="softmax").eval()
    seen: list[torch.Tensor] = []
    model.mask_encoder[0].register_forward_hook(  # type: ignore[index]
        lambda module, inputs, output: seen.append(inputs[0])
    )
    with torch.no_grad():
        model(torch.rand(1, 1, 16, 16))
    torch.testing.assert_close(seen[0].sum(dim=1), torch.ones(1, 16, 16))


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [({"prior_input": "rgb"}, "'rgb'"), ({"prior_activation": "tanh"}, "'tanh'")],
)
def test_gp_rejects_unknown_prior_options(kwargs: dict[str, str], shown: str) -> None:
    with pytest.raises(ValueError, match=shown):
        GeometryPriorSR(**TINY["gp"], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("build", [lambda: PriorUNet(widths=(16, 32, 64)), lambda: VDSR()])
def test_he_initialisation(build: Any) -> None:
    torch.manual_seed(0)
    model = build()
    for layer in model.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            weight = layer.weight
            k = weight.shape[-1] * weight.shape[-2]
            fan_in = k * (
                weight.shape[0] if isinstance(layer, nn.ConvTranspose2d) else weight.shape[1]
            )
            if weight.numel() >= 1000:  # enough samples for the standard deviation
                assert weight.std().item() == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.1)
            assert layer.bias is not None and not layer.bias.any()


def test_he_initialised_unet_keeps_the_signal_through_its_depth() -> None:
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    stds = {}
    for init in ("he", "pytorch"):
        torch.manual_seed(0)
        with torch.no_grad():
            stds[init] = PriorUNet(widths=(32, 64, 128, 256, 512), init=init)(x).std().item()
    assert stds["he"] > 0.2  # the parsing logits start with spread across the image
    assert stds["pytorch"] < stds["he"] / 5  # why the U-Net paper's initialisation is used


@pytest.mark.parametrize("scale", [4, 8])
def test_untrained_gpsft_is_exactly_matlab_bicubic(scale: int) -> None:
    # the last convolution starts at zero, so training starts from the baseline it must beat
    torch.manual_seed(0)
    model = build_network("gpsft", scale=scale, **TINY["gpsft"]).eval()
    lr = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        sr, logits = model(lr)
    assert sr.shape == (2, 1, 7 * scale, 9 * scale) and logits.shape == (2, 3, 7 * scale, 9 * scale)
    for n in range(2):
        expected = imresize(lr[n, 0].double().numpy(), float(scale))
        np.testing.assert_allclose(sr[n, 0].numpy(), expected, atol=1e-5)
    assert not np.allclose(sr[0, 0].numpy(), sr[1, 0].numpy())


def test_gpsft_costs_a_fraction_of_the_paper_gp() -> None:
    gp = build_network("gp", scale=8, **design_kwargs("gp"))
    sft = {scale: build_network("gpsft", scale=scale) for scale in (4, 8)}
    gp_gflop = gflop_per_cell(gp, scale=8)
    assert 95 < gp_gflop < 100  # the paper's GP: a U-Net and 6 blocks at 224 x 224
    assert gflop_per_cell(sft[4], scale=4) < gp_gflop / 8
    assert gflop_per_cell(sft[8], scale=8) < gp_gflop / 20


def test_srresnet_with_a_global_residual_starts_at_bicubic() -> None:
    torch.manual_seed(0)
    model = build_network("srresnet", scale=4, num_features=8, num_blocks=1, global_residual=True)
    lr = torch.rand(1, 1, 6, 5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        sr, _ = model.eval()(lr)
    expected = imresize(lr[0, 0].double().numpy(), 4.0)
    np.testing.assert_allclose(sr[0, 0].numpy(), expected, atol=1e-5)
    plain = build_network("srresnet", scale=4, num_features=8, num_blocks=1)
    with torch.no_grad():
        far = plain.eval()(lr)[0][0, 0].numpy()
    assert np.abs(far - expected).mean() > 0.05  # the original starts from a random image


@pytest.mark.parametrize("scale", [4, 8])
def test_an_untrained_parsing_refiner_changes_nothing(scale: int) -> None:
    """GP-SFT with and without the HR refiner, the shared weights equal: the same SR image and
    the same logits (the refiner's last convolution starts at zero); training then moves it."""
    torch.manual_seed(0)
    kwargs = dict(TINY["gpsft"])
    plain = build_network("gpsft", scale=scale, **kwargs).eval()
    refined = build_network("gpsft", scale=scale, refine_widths=(4, 4, 4), **kwargs).eval()
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("refiner.") for k in missing)
    x = torch.rand(2, 3, 6, 5)
    with torch.no_grad():
        sr_plain, logits_plain = plain(x)
        sr_refined, logits_refined = refined(x)
    assert logits_refined.shape == (2, 3, 6 * scale, 5 * scale)
    torch.testing.assert_close(sr_refined, sr_plain)
    torch.testing.assert_close(logits_refined, logits_plain)
    assert len(refined.refiner.ups) == round(math.log2(scale))


@pytest.mark.parametrize("scale, widths", [(3, (4, 4)), (8, (4, 4))])
def test_parsing_refiner_needs_a_power_of_two_and_a_width_per_step(scale, widths) -> None:
    with pytest.raises(ValueError, match="power-of-two scale"):
        build_network("gpsft", scale=scale, refine_widths=widths, **TINY["gpsft"])


@pytest.mark.parametrize("scale", [4, 8])
def test_gpsft_trim_equals_cutting_the_full_output(scale: int, monkeypatch) -> None:
    """forward(x, trim=k) is forward(x) with k * scale HR px cut per side, although the HR
    stages skip all but HR_CONTEXT_LR LR px of the trimmed margin; one pixel less of that
    context changes the outputs (the constant is the reach of the HR stages, not a guess)."""
    import leukoscreen.model.gpsft as gpsft

    torch.manual_seed(0)
    net = build_network("gpsft", scale=scale, refine_widths=(4, 4, 4), **TINY["gpsft"]).eval()
    with torch.no_grad():
        for parameter in net.parameters():  # no zero-initialised head: every stage counts
            parameter.normal_(0.0, 0.3)
        x = torch.rand(2, 3, 13, 12)
        sr, logits = net(x)
        for trim in (1, 2, 3, 5):
            cut = trim * scale
            sr_t, logits_t = net(x, trim=trim)
            assert sr_t.shape == (2, 1, 13 * scale - 2 * cut, 12 * scale - 2 * cut)
            torch.testing.assert_close(sr_t, sr[..., cut:-cut, cut:-cut], rtol=0, atol=1e-5)
            torch.testing.assert_close(logits_t, logits[..., cut:-cut, cut:-cut], rtol=0, atol=1e-5)
        monkeypatch.setattr(gpsft, "HR_CONTEXT_LR", gpsft.HR_CONTEXT_LR - 1)
        cut = 5 * scale
        sr_short, logits_short = net(x, trim=5)
        assert (sr_short - sr[..., cut:-cut, cut:-cut]).abs().max() > 1e-3
        assert (logits_short - logits[..., cut:-cut, cut:-cut]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="trim must be"):
        net(x, trim=6)


@pytest.mark.parametrize("scale", [4, 8])
def test_an_untrained_hr_parser_changes_nothing_and_trim_stays_exact(scale: int) -> None:
    """GP-SFT with an HR parser: untrained (head at zero) it gives exactly the outputs of the
    network without it; with trained weights ``trim`` still equals cutting the full outputs,
    and the parser never sends a gradient into the SR path."""
    torch.manual_seed(0)
    kwargs = {**TINY["gpsft"], "refine_widths": (4, 4, 4)}
    plain = build_network("gpsft", scale=scale, **kwargs).eval()
    parsed = build_network("gpsft", scale=scale, hr_parser_widths=(4, 8), **kwargs).eval()
    missing, unexpected = parsed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("hr_parser.") for k in missing)
    x = torch.rand(2, 3, 13, 12)
    with torch.no_grad():
        for parameter in plain.parameters():
            parameter.normal_(0.0, 0.3)
        parsed.load_state_dict(plain.state_dict(), strict=False)
        torch.testing.assert_close(parsed(x)[0], plain(x)[0])
        torch.testing.assert_close(parsed(x)[1], plain(x)[1])
        for parameter in parsed.hr_parser.parameters():
            parameter.normal_(0.0, 0.3)
        sr, logits = parsed(x)
        assert (logits - plain(x)[1]).abs().max() > 1e-3
        torch.testing.assert_close(sr, plain(x)[0])  # the parser touches the map only
        for trim in (1, 3):
            cut = trim * scale
            sr_t, logits_t = parsed(x, trim=trim)
            torch.testing.assert_close(sr_t, sr[..., cut:-cut, cut:-cut], rtol=0, atol=1e-5)
            torch.testing.assert_close(logits_t, logits[..., cut:-cut, cut:-cut], rtol=0, atol=1e-5)
    _, logits = parsed(x)
    logits.sum().backward()
    assert all(p.grad is None for p in parsed.sr_head.parameters())
    assert all(p.grad is None for p in parsed.blocks.parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in parsed.hr_parser.parameters())


def test_a_parsing_prior_of_its_own_starts_as_the_shared_one_and_leaves_the_sr_path() -> None:
    """GP-SFT with ``parsing_prior``: given copies of the shared prior's weights (what
    ``tools/add_parsing_refiner.py --parsing-prior`` writes) it computes exactly the shared
    network's outputs; changed, it moves the map and not the SR image, and the map's gradient
    reaches the parsing prior, never the SR path's prior."""
    torch.manual_seed(0)
    kwargs = {**TINY["gpsft"], "refine_widths": (4, 4, 4)}
    shared = build_network("gpsft", scale=4, **kwargs).eval()
    own = build_network("gpsft", scale=4, parsing_prior=True, **kwargs).eval()
    with torch.no_grad():
        for parameter in shared.parameters():
            parameter.normal_(0.0, 0.3)
    own.load_state_dict(with_parsing_prior(shared.state_dict()))  # strict: all tensors given
    x = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(own(x, trim=2)[0], shared(x, trim=2)[0])
        torch.testing.assert_close(own(x, trim=2)[1], shared(x, trim=2)[1])
        for parameter in own.parsing_prior.parameters():
            parameter.add_(0.2)
        sr, logits = own(x)
        torch.testing.assert_close(sr, shared(x)[0])
        assert (logits - shared(x)[1]).abs().max() > 1e-3
    _, logits = own(x)
    logits.sum().backward()
    assert all(p.grad is None for p in own.prior.parameters())
    assert all(p.grad is None for p in own.condition.parameters())
    grads = [p.grad for p in own.parsing_prior.parameters()]
    assert any(g is not None and g.abs().max() > 0 for g in grads)
