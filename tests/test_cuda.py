"""The CUDA paths: inference with the shipped weights and a short training run on the GPU.

Skipped on machines without CUDA (CI has none); run on a GPU machine with
``python -m pytest tests/test_cuda.py``. The CPU fp32 result is the reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from leukoscreen.model.checkpoint import load_weights
from leukoscreen.model.config import TrainConfig
from leukoscreen.model.imresize import imresize
from leukoscreen.model.inference import load_pretrained
from leukoscreen.model.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _lr_cells(count: int, side: int, scale: int) -> np.ndarray:
    """Smooth synthetic cells (a dark disk in a lighter ring), bicubic-downscaled, RGB uint8."""
    yy, xx = np.mgrid[:side, :side] - side / 2
    radius = np.hypot(yy, xx)
    cells = []
    for k in range(count):
        hr = np.full((side, side, 3), 0.85)
        hr[radius < side * (0.30 + 0.02 * k)] = (0.75, 0.6, 0.7)
        hr[radius < side * (0.15 + 0.02 * k)] = (0.35, 0.2, 0.45)
        cells.append(imresize(hr, 1.0 / scale))
    return (np.clip(np.stack(cells), 0, 1) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("arch", ["gp", "np", "vdsr"])
def test_shipped_weights_on_cuda_match_cpu_fp32(arch: str) -> None:
    lr = _lr_cells(4, 224, 8)
    cpu = load_pretrained(arch, 8, device="cpu", precision="fp32")
    gpu = load_pretrained(arch, 8, device="auto", precision="auto")
    assert gpu.device.type == "cuda"
    sr_cpu, parsing_cpu = cpu.upscale(lr)
    sr_gpu, parsing_gpu = gpu.upscale(lr)
    assert sr_gpu.shape == sr_cpu.shape == (4, 224, 224, 3) and sr_gpu.dtype == np.uint8
    # bf16 on the GPU vs fp32 on the CPU: the same image within rounding of a few grey levels
    mse = np.mean((sr_cpu.astype(np.float64) - sr_gpu) ** 2)
    assert 10 * np.log10(255.0**2 / max(mse, 1e-12)) > 40.0
    if arch == "gp":
        assert parsing_cpu is not None and parsing_gpu is not None
        assert (parsing_cpu == parsing_gpu).mean() > 0.99
        assert set(np.unique(parsing_gpu)) >= {0, 2}  # background and nucleus are found
    else:
        assert parsing_cpu is None and parsing_gpu is None


def test_training_on_cuda_learns_and_saves_loadable_weights(
    tmp_path: Path, write_cells: Any
) -> None:
    cells = write_cells(tmp_path / "cells", count=24, size=48)
    cfg = TrainConfig(arch="gp", scale=4, epochs=3, batch_size=4, hr_size_px=48, lr=1e-3, seed=1)
    tiny = {"num_features": 8, "num_blocks": 1, "unet_widths": (8, 16)}
    result = train(cfg, data=cells, run_dir=tmp_path / "run", arch_kwargs=tiny, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    best = load_weights(result.best_weights)  # saved from CUDA, loaded on the CPU
    assert best.arch == "gp" and best.meta["config"]["epochs"] == 3
    assert all(t.device.type == "cpu" for t in best.model.state_dict().values())
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 3


def test_compiled_bucketed_network_on_cuda_matches_cpu_fp32() -> None:
    """The GPU path as the pipeline runs it: torch.compile, batches padded to a fixed bucket,
    colour handling on the device; against the CPU's fp32 host path."""
    lr = _lr_cells(5, 224 + 64, 8)  # 36 px LR crops with their context margin, as in a run
    cpu = load_pretrained("default", 8, device="cpu", precision="fp32")
    gpu = load_pretrained("default", 8, device="cuda", compile="auto", batch_bucket=4)
    assert gpu.compiled and gpu.colour_on_device and gpu.batch_bucket == 4
    sr_cpu, parsing_cpu, conf_cpu = cpu.upscale_maps(lr)
    sr_gpu, parsing_gpu, conf_gpu = gpu.upscale_maps(lr)  # 4 + 1 padded to 4
    assert sr_gpu.shape == sr_cpu.shape == (5, 288, 288, 3)
    mse = np.mean((sr_cpu.astype(np.float64) - sr_gpu) ** 2)
    assert 10 * np.log10(255.0**2 / max(mse, 1e-12)) > 40.0
    assert parsing_cpu is not None and parsing_gpu is not None and conf_gpu is not None
    assert (parsing_cpu == parsing_gpu).mean() > 0.99
    assert conf_cpu is not None and np.abs(conf_cpu - conf_gpu).mean() < 0.02


def test_pipeline_on_cuda_writes_the_cells_the_cpu_writes(tmp_path: Path) -> None:
    """``leukoscreen run`` end to end on the GPU (embedded cluster: a worker pinned to the GPU,
    CPU workers for detection) against the same run on the CPU, on the bundled example."""
    from importlib.resources import files

    from leukoscreen.pipeline.config import Config, override
    from leukoscreen.pipeline.run import run_slide
    from leukoscreen.pipeline.store import open_cells

    example = Path(str(files("leukoscreen.pipeline.example") / "bccd_x8.svs"))
    stores = {}
    for device in ("cpu", "cuda"):
        config = override(Config(), **{"inference.device": device})
        out = tmp_path / f"{device}.leukoscreen.zarr"
        summary = run_slide(example, config, out=out, progress=False)
        assert summary.n_cells > 50
        stores[device] = open_cells(out)
    cpu, gpu = stores["cpu"], stores["cuda"]
    np.testing.assert_array_equal(np.asarray(cpu.table["row"]), np.asarray(gpu.table["row"]))
    np.testing.assert_array_equal(np.asarray(cpu.lr), np.asarray(gpu.lr))
    sr_cpu, sr_gpu = np.asarray(cpu.sr, np.float64), np.asarray(gpu.sr, np.float64)
    assert 10 * np.log10(255.0**2 / max(np.mean((sr_cpu - sr_gpu) ** 2), 1e-12)) > 40.0
    assert (np.asarray(cpu.parsing) == np.asarray(gpu.parsing)).mean() > 0.99
