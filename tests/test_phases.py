"""Sub-pixel phase augmentation (leukoscreen.model.phases): new LR/HR pairs, exactly degraded."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from leukoscreen.model.config import TrainConfig
from leukoscreen.model.data import Sample, SRDataset
from leukoscreen.model.imresize import degrade
from leukoscreen.model.phases import phase_offsets, phase_shift
from leukoscreen.model.train import training_batch


def _dataset(scale: int, side: int = 64) -> SRDataset:
    rng = np.random.default_rng(3)
    samples = []
    for k in range(3):
        rgb = (rng.random((side, side, 3)) * 255).astype(np.uint8)
        labels = rng.integers(0, 3, (side, side)).astype(np.uint8) if k != 1 else None
        samples.append(Sample(f"cell-{k}", "lab", rgb, labels))
    return SRDataset(samples, scale=scale, hr_size_px=side)


@pytest.mark.parametrize("scale", [4, 8])
def test_phase_shift_is_the_degradation_of_the_cut_image(scale: int) -> None:
    dataset = _dataset(scale)
    batch = dataset.collate([0, 1, 2])
    offsets = [(0, 0), (scale - 1, 1), (2, scale - 1)]
    out = phase_shift(batch, offsets, scale=scale)
    side = 64 - scale
    assert out["hr"].shape == (3, 1, side, side)
    assert out["lr_ycbcr"].shape == (3, 3, side // scale, side // scale)
    for n, (dy, dx) in enumerate(offsets):
        hr = batch["hr_ycbcr"][n].double().numpy().transpose(1, 2, 0)
        cut = hr[dy : dy + side, dx : dx + side]
        lr, up = degrade(cut, scale)
        np.testing.assert_allclose(out["hr_ycbcr"][n].numpy(), cut.transpose(2, 0, 1), atol=1e-6)
        np.testing.assert_allclose(out["lr_ycbcr"][n].numpy(), lr.transpose(2, 0, 1), atol=1e-6)
        np.testing.assert_allclose(out["lr"][n, 0].numpy(), lr[..., 0], atol=1e-6)
        np.testing.assert_allclose(out["up_ycbcr"][n].numpy(), up.transpose(2, 0, 1), atol=1e-6)
        np.testing.assert_allclose(out["up"][n, 0].numpy(), up[..., 0], atol=1e-6)
        expected = batch["onehot"][n][:, dy : dy + side, dx : dx + side]
        assert torch.equal(out["onehot"][n], expected)
    # an offset off the grid gives an LR image the data set never held
    assert not np.allclose(out["lr"][1].numpy(), batch["lr"][1, :, :-1, :-1].numpy(), atol=1e-3)
    assert out["valid"].tolist() == [[side, side]] * 3
    assert torch.equal(out["has_mask"], batch["has_mask"])


def test_valid_follows_the_original_pixels() -> None:
    batch = _dataset(4).collate([0, 1])
    batch["valid"] = torch.tensor([[50, 64], [2, 30]])  # padded bottom / right by fit_to_size
    out = phase_shift(batch, [(3, 1), (3, 2)], scale=4)
    assert out["valid"].tolist() == [[47, 60], [0, 28]]


def test_too_small_an_image_is_refused() -> None:
    batch = _dataset(8, side=8).collate([0])
    with pytest.raises(ValueError, match="8 x 8 px are too small to shift at x8"):
        phase_shift(batch, [(0, 0)], scale=8)


def test_offsets_depend_on_seed_epoch_and_image_only_and_reach_every_phase() -> None:
    offsets = phase_offsets([4, 9, 2], seed=1, epoch=5, scale=8)
    assert phase_offsets([2], seed=1, epoch=5, scale=8) == [offsets[2]]  # batching does not matter
    assert phase_offsets([4, 9, 2], seed=1, epoch=5, scale=8) == offsets
    assert phase_offsets([4, 9, 2], seed=1, epoch=6, scale=8) != offsets
    seen = {o for epoch in range(200) for o in phase_offsets([0], seed=0, epoch=epoch, scale=4)}
    assert seen == {(dy, dx) for dy in range(4) for dx in range(4)}


def test_training_batch_shifts_when_the_config_asks() -> None:
    dataset = _dataset(4)
    cfg = TrainConfig(arch="gpsft", scale=4, seed=2)
    plain = training_batch(dataset, [0, 2], cfg, 3, torch.device("cpu"))
    shifted = training_batch(
        dataset, [0, 2], replace(cfg, phase_augment=True), 3, torch.device("cpu")
    )
    assert plain["hr"].shape == (2, 1, 64, 64) and shifted["hr"].shape == (2, 1, 60, 60)
    (dy, dx), _ = phase_offsets([0, 2], seed=2, epoch=3, scale=4)
    assert torch.equal(shifted["onehot"][0], plain["onehot"][0][:, dy : dy + 60, dx : dx + 60])
