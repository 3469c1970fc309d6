"""Weights files: fp16 round trip, sha256 check, foreign and mismatched files, the manifest."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from train_schedule import register_shipped

from leukoscreen.model import checkpoint
from leukoscreen.model.checkpoint import (
    WEIGHTS_FORMAT,
    load_weights,
    save_weights,
    sha256_file,
    shipped_weights_path,
)
from leukoscreen.model.errors import CheckpointError
from leukoscreen.model.networks import build_network

TINY_GP: dict[str, Any] = {"num_features": 4, "num_blocks": 1, "unet_widths": (4, 8)}


def _tiny_gp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_network("gp", scale=4, **TINY_GP).eval()


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "gp_x4.pt"
    save_weights(_tiny_gp(), path, arch="gp", scale=4, arch_kwargs=TINY_GP)
    return path


def _rewrite(path: Path, **changes: Any) -> None:
    """Load a weights file, change top-level entries (None deletes), save it back."""
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    torch.save(payload, path)


def _message(path: Path, text: str) -> str:
    return "^" + re.escape(f"{path}: {text}")


def test_fp16_round_trip(tmp_path: Path) -> None:
    model = _tiny_gp()
    path = tmp_path / "w.pt"
    digest = save_weights(
        model,
        path,
        arch="gp",
        scale=4,
        arch_kwargs=TINY_GP,
        config={"seed": 0},
        metrics={"psnr": 30.5},
    )
    assert digest == sha256_file(path)
    assert not path.with_name("w.pt.tmp").exists()
    stored = torch.load(path, weights_only=True)
    assert stored["format"] == WEIGHTS_FORMAT
    assert all(t.dtype == torch.float16 for t in stored["state_dict"].values())

    loaded = load_weights(path, expected_sha256=digest)
    assert (loaded.arch, loaded.scale, loaded.sha256) == ("gp", 4, digest)
    assert loaded.meta["arch_kwargs"] == TINY_GP
    assert loaded.meta["config"] == {"seed": 0}
    assert loaded.meta["metrics"] == {"psnr": 30.5}
    assert "state_dict" not in loaded.meta
    assert not loaded.model.training
    for name, tensor in model.state_dict().items():
        restored = loaded.model.state_dict()[name]
        assert restored.dtype == torch.float32
        assert torch.equal(restored, tensor.half().float()), name


def test_fp32_round_trip_reproduces_outputs(tmp_path: Path) -> None:
    model = _tiny_gp(seed=1)
    path = tmp_path / "w32.pt"
    save_weights(model, path, arch="gp", scale=4, arch_kwargs=TINY_GP, dtype=torch.float32)
    loaded = load_weights(path)
    x = torch.rand(1, 1, 12, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.model(x)[0], model(x)[0])


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.pt"
    with pytest.raises(CheckpointError, match=_message(path, "checkpoint not found")):
        load_weights(path)


def test_sha_mismatch(weights: Path) -> None:
    digest = sha256_file(weights)
    wrong = "0" * 64
    expected = f"sha256 {digest[:12]}... does not match the recorded {wrong[:12]}..."
    with pytest.raises(CheckpointError, match=_message(weights, expected)):
        load_weights(weights, expected_sha256=wrong)


def test_a_text_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(CheckpointError, match=_message(path, "not a leukoscreen weights file (")):
        load_weights(path)


def test_a_foreign_torch_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    text = f"not a leukoscreen weights file (expected {WEIGHTS_FORMAT})"
    with pytest.raises(CheckpointError, match=_message(path, text)):
        load_weights(path)


def test_a_pickled_object_is_refused_without_running_it(tmp_path: Path) -> None:
    # weights_only=True refuses arbitrary classes instead of unpickling (executing) them.
    path = tmp_path / "pickled.pt"
    torch.save({"format": WEIGHTS_FORMAT, "arch": "gp", "object": Path("x")}, path)
    with pytest.raises(CheckpointError, match=_message(path, "not a leukoscreen weights file (")):
        load_weights(path)


def test_weights_that_do_not_fit_the_arch(weights: Path) -> None:
    _rewrite(weights, arch_kwargs={**TINY_GP, "num_features": 8})
    with pytest.raises(
        CheckpointError, match=_message(weights, "weights do not fit arch 'gp': Error(s)")
    ) as info:
        load_weights(weights)
    assert "size mismatch" in str(info.value)
    assert "\n" not in str(info.value)


def test_weights_of_another_arch(weights: Path) -> None:
    _rewrite(weights, arch="np")
    with pytest.raises(CheckpointError, match=_message(weights, "weights do not fit arch 'np'")):
        load_weights(weights)


def test_arch_kwargs_that_the_network_does_not_take(weights: Path) -> None:
    _rewrite(weights, arch_kwargs={"num_filters": 4})
    with pytest.raises(
        CheckpointError, match=_message(weights, "arch_kwargs {'num_filters': 4} do not fit arch")
    ):
        load_weights(weights)
    _rewrite(weights, arch_kwargs={"num_features": 0})
    with pytest.raises(CheckpointError, match="must be >= 1, got 0"):
        load_weights(weights)


def test_unknown_arch_or_scale_in_the_file(weights: Path) -> None:
    _rewrite(weights, arch="edsr")
    with pytest.raises(CheckpointError, match=_message(weights, "unknown arch 'edsr' or scale 4")):
        load_weights(weights)
    _rewrite(weights, arch="gp", scale=3)
    with pytest.raises(CheckpointError, match=_message(weights, "unknown arch 'gp' or scale 3")):
        load_weights(weights)


def test_damaged_file_missing_its_state_dict(weights: Path) -> None:
    _rewrite(weights, state_dict=None)
    text = "damaged leukoscreen weights file (KeyError: 'state_dict')"
    with pytest.raises(CheckpointError, match=_message(weights, text)):
        load_weights(weights)


# ---------------------------------------------------------------------------------------------
# the shipped-weights manifest (pointed at a temporary folder)


def test_register_and_find_shipped_weights(weights_dir: Path) -> None:
    path = weights_dir / "gp_x4.pt"
    digest = save_weights(_tiny_gp(), path, arch="gp", scale=4, arch_kwargs=TINY_GP)
    register_shipped(weights_dir, "gp", 4, path, metrics={"psnr": 31.0})
    manifest = checkpoint.read_manifest()
    assert manifest == {
        "gp_x4": {
            "file": "gp_x4.pt",
            "sha256": digest,
            "arch": "gp",
            "scale": 4,
            "metrics": {"psnr": 31.0},
        }
    }
    assert shipped_weights_path("gp", 4) == (path, digest)


def test_no_shipped_weights_for_that_scale(weights_dir: Path) -> None:
    manifest = weights_dir / "manifest.json"
    with pytest.raises(CheckpointError) as info:
        shipped_weights_path("gp", 4)
    assert str(info.value) == (
        f"{manifest}: no shipped weights for arch 'gp' at scale 4 (available: none)"
    )
    path = weights_dir / "np_x8.pt"
    save_weights(
        build_network("np", scale=8, num_features=4, num_blocks=1), path, arch="np", scale=8
    )
    register_shipped(weights_dir, "np", 8, path)
    with pytest.raises(CheckpointError, match=r"at scale 4 \(available: np_x8\)$"):
        shipped_weights_path("np", 4)
