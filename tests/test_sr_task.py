"""The SR task: the margin trimmed, calls split, the confidence of each cell; the model spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leukoscreen.model.config import InferenceConfig
from leukoscreen.model.errors import CheckpointError
from leukoscreen.pipeline.sr_task import ModelSpec


class FakeUpscaler:
    """Nearest-neighbour x``scale`` with labels = cell index mod 3: known answers, no torch."""

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.calls: list[int] = []

    def upscale_maps(
        self, lr: np.ndarray, *, trim: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SR, labels and a pixel confidence (0.5 + green / 510) that is known per pixel;
        ``trim * scale`` px cut from each side."""
        self.calls.append(len(lr))
        sr = lr.repeat(self.scale, axis=1).repeat(self.scale, axis=2)
        labels = (lr[..., 0] % 3).repeat(self.scale, axis=1).repeat(self.scale, axis=2)
        confidence = (0.5 + sr[..., 1] / 510.0).astype(np.float32)
        cut = trim * self.scale
        kept = (slice(None), slice(cut, sr.shape[1] - cut), slice(cut, sr.shape[2] - cut))
        return sr[kept], labels.astype(np.uint8)[kept], confidence[kept]


def test_super_resolve_trims_and_splits_calls() -> None:
    from leukoscreen.pipeline.crops import CropGeometry
    from leukoscreen.pipeline.sr_task import super_resolve

    geometry = CropGeometry(scale=4, hr_size_px=8, margin_px=1)  # core 2, read 4, trim 4
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    fake = FakeUpscaler(4)
    sr, parsing, confidence = super_resolve(fake, lr, geometry, cells_per_call=2)
    assert fake.calls == [2, 2, 1]
    assert sr.shape == (5, 8, 8, 3) and parsing is not None and parsing.shape == (5, 8, 8)
    # the core LR pixels, each repeated 4x4
    np.testing.assert_array_equal(sr, lr[:, 1:3, 1:3].repeat(4, axis=1).repeat(4, axis=2))
    # each cell's confidence: the mean pixel confidence over its trimmed pixels labelled cell
    assert confidence is not None and confidence.shape == (5,) and confidence.dtype == np.float32
    core = lr[:, 1:3, 1:3]
    for n in range(5):
        cell = core[n, ..., 0] % 3 > 0
        expected = (0.5 + core[n, ..., 1][cell] / 510.0).mean() if cell.any() else 0.0
        assert confidence[n] == pytest.approx(expected, abs=1e-6)
    whole, whole_parsing, whole_confidence = super_resolve(FakeUpscaler(4), lr, geometry)
    np.testing.assert_array_equal(sr, whole)
    np.testing.assert_array_equal(parsing, whole_parsing)
    np.testing.assert_array_equal(confidence, whole_confidence)


def test_model_spec_makes_the_checkpoint_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pt").write_bytes(b"x")
    spec = ModelSpec.from_config(InferenceConfig(checkpoint="w.pt", scale=4, device="cpu"))
    assert spec == ModelSpec("default", 4, str(tmp_path / "w.pt"), "cpu", "auto", "off", 16)
    assert ModelSpec.from_config(InferenceConfig()).checkpoint == ""
    with pytest.raises(CheckpointError, match=r"^missing\.pt: checkpoint not found$"):
        ModelSpec.from_config(InferenceConfig(checkpoint="missing.pt"))
