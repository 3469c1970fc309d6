"""The GPU path's logic, checked on the CPU: colour handling on the device, fixed-shape
(bucketed) batches for ``torch.compile``, and the compile switch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from leukoscreen.model.checkpoint import save_weights
from leukoscreen.model.config import InferenceConfig
from leukoscreen.model.inference import Upscaler, load_checkpoint, load_pretrained
from leukoscreen.model.networks import build_network
from leukoscreen.pipeline.config import load_config
from leukoscreen.pipeline.sr_task import ModelSpec, describe_model


def _crops(count: int, side: int = 36, seed: int = 0) -> np.ndarray:
    """Smooth random crops with a dark blob: a cell-like input the parsing map reacts to."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] - side / 2
    out = []
    for _ in range(count):
        base = rng.uniform(150, 230, 3)
        blob = np.exp(-(yy**2 + xx**2) / (2 * rng.uniform(4, 8) ** 2))[..., None]
        noise = rng.normal(0, 6, (side, side, 3))
        out.append(base - blob * rng.uniform(60, 120, 3) + noise)
    return np.clip(np.stack(out), 0, 255).round().astype(np.uint8)


def _agree(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    diff = np.abs(a.astype(int) - b.astype(int))
    return int(diff.max()), float((diff == 0).mean())


@pytest.mark.parametrize("arch", ["default", "gp"])
def test_colour_on_the_device_equals_the_host_path(arch: str) -> None:
    """float32 torch colour handling against numpy float64: the same uint8 image but for rare
    rounding flips, the same labels."""
    host = load_pretrained(arch, 8, device="cpu", precision="fp32")
    assert not host.colour_on_device  # the CPU default
    device = dataclasses.replace(host, colour_on_device=True)
    lr = _crops(3)
    sr_h, labels_h, conf_h = host.upscale_maps(lr)
    sr_d, labels_d, conf_d = device.upscale_maps(lr)
    assert sr_d.shape == sr_h.shape == (3, 288, 288, 3) and sr_d.dtype == np.uint8
    worst, same = _agree(sr_h, sr_d)
    assert worst <= 1 and same > 0.995
    assert labels_h is not None and labels_d is not None and conf_h is not None
    assert labels_d.dtype == np.uint8 and (labels_d == labels_h).mean() > 0.999
    assert conf_d is not None and np.abs(conf_d - conf_h).max() < 1e-3
    assert set(np.unique(labels_d)) >= {0, 2}  # not a blank map


def test_network_without_prior_on_the_device(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "vdsr.pt"
    tiny = {"num_features": 4, "num_layers": 3}
    save_weights(build_network("vdsr", scale=4, **tiny), path, arch="vdsr", scale=4,
                 arch_kwargs=tiny)  # fmt: skip
    host = load_checkpoint(path, device="cpu", precision="fp32")
    sr_h, none_h, _ = host.upscale_maps(_crops(2, side=20))
    sr_d, none_d, conf_d = dataclasses.replace(host, colour_on_device=True).upscale_maps(
        _crops(2, side=20)
    )
    assert none_h is None and none_d is None and conf_d is None
    worst, same = _agree(sr_h, sr_d)
    assert sr_d.shape == (2, 80, 80, 3) and worst <= 1 and same > 0.995


@pytest.mark.parametrize("count", [3, 4, 7, 9])
def test_bucketed_batches_give_the_same_cells(count: int) -> None:
    """A bucket of 4: 3 crops are padded to 4, 7 run as 4 + 4 (one padded), 9 as 4 + 4 + 4; the
    padding never shows and never changes a real cell."""
    plain = load_pretrained("default", 8, device="cpu", precision="fp32")
    bucketed = dataclasses.replace(plain, batch_bucket=4)
    calls: list[int] = []
    hook = bucketed.model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    lr = _crops(count, seed=count)
    sr_p, labels_p, conf_p = plain.upscale_maps(lr)
    sr_b, labels_b, conf_b = bucketed.upscale_maps(lr)
    hook.remove()
    n_calls = -(-count // 4)
    assert calls == [count] + [4] * n_calls  # unbucketed: one call; bucketed: 4 crops a call
    assert sr_b.shape == sr_p.shape == (count, 288, 288, 3)
    worst, same = _agree(sr_p, sr_b)
    assert worst <= 1 and same > 0.999
    assert labels_p is not None and labels_b is not None and (labels_b == labels_p).mean() > 0.999
    assert conf_p is not None and conf_b is not None and np.allclose(conf_b, conf_p, atol=1e-4)


def test_compile_is_switched_by_config(tmp_path: Path) -> None:
    off = load_pretrained("default", 4, device="cpu", compile="off", batch_bucket=16)
    auto = load_pretrained("default", 4, device="cpu", compile="auto", batch_bucket=16)
    on = load_pretrained("default", 4, device="cpu", compile="on", batch_bucket=16)
    assert not off.compiled and off.batch_bucket == 0  # buckets only where compiled
    assert not auto.compiled  # auto compiles on CUDA only
    assert on.compiled and on.batch_bucket == 16
    assert isinstance(on.model, torch._dynamo.eval_frame.OptimizedModule)
    assert isinstance(off.model, torch.nn.Module) and not isinstance(
        off.model, torch._dynamo.eval_frame.OptimizedModule
    )
    config_file = tmp_path / "c.toml"
    config_file.write_text('[inference]\ncompile = "off"\nbatch_size = 8\n')
    inference = load_config(config_file).inference
    spec = ModelSpec.from_config(inference)
    assert (spec.compile, spec.batch_bucket) == ("off", 8)
    assert describe_model(dataclasses.replace(spec, device="cpu"))["compiled"] is False
    assert ModelSpec.from_config(InferenceConfig()).compile == "off"
    config_file.write_text('[inference]\ncompile = "always"\n')
    with pytest.raises(Exception, match="compile"):
        load_config(config_file)


def test_upscaler_defaults_keep_the_host_path() -> None:
    upscaler = Upscaler("bicubic", 4, "", torch.device("cpu"), "fp32")
    assert not upscaler.colour_on_device and upscaler.batch_bucket == 0 and not upscaler.compiled


@pytest.mark.parametrize(
    "arch, colour_on_device", [("default", False), ("default", True), ("vdsr", False)]
)
def test_trimmed_upscale_equals_the_cut_full_output(arch: str, colour_on_device: bool) -> None:
    """upscale_maps(lr, trim=4) (the pipeline's context margin at x8) gives the full outputs
    with 32 HR px cut per side, for GP-SFT (which skips the margin's HR stages; bf16) and for a
    network that cannot (cut afterwards)."""
    upscaler = dataclasses.replace(
        load_pretrained(arch, 8, device="cpu"), colour_on_device=colour_on_device
    )
    lr = _crops(3)
    sr, labels, confidence = upscaler.upscale_maps(lr)
    sr_t, labels_t, confidence_t = upscaler.upscale_maps(lr, trim=4)
    assert sr_t.shape == (3, 224, 224, 3)
    np.testing.assert_array_equal(sr_t, sr[:, 32:-32, 32:-32])
    if labels is None:
        assert labels_t is None and confidence_t is None
    else:
        np.testing.assert_array_equal(labels_t, labels[:, 32:-32, 32:-32])
        np.testing.assert_array_equal(confidence_t, confidence[:, 32:-32, 32:-32])
    empty, _, _ = upscaler.upscale_maps(lr[:0], trim=4)
    assert empty.shape == (0, 224, 224, 3)
    with pytest.raises(ValueError, match="trim must be"):
        upscaler.upscale_maps(lr, trim=18)
