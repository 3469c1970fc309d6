"""The training schedule (resume, export only when better) and the ablation runner, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ablation
import numpy as np
import pytest
import torch
import train_schedule as schedule

from leukoscreen.model.checkpoint import load_weights, read_manifest
from leukoscreen.model.data import SRDataset
from leukoscreen.model.errors import UsageError
from leukoscreen.model.metrics import psnr as psnr_db
from leukoscreen.model.networks import DESIGN_KWARGS, design_kwargs
from leukoscreen.model.sources import read_samples, split_samples

TINY_GP: dict[str, Any] = {"num_features": 4, "num_blocks": 1, "unet_widths": (4, 8)}


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory, write_cells: Any) -> Path:
    return write_cells(tmp_path_factory.mktemp("data") / "cells", count=10, size=16)


@pytest.fixture
def weights_dir(weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared temporary weights folder, also as the schedule's export target."""
    monkeypatch.setattr(schedule, "WEIGHTS_DIR", weights_dir)
    return weights_dir


def test_design_kwargs_are_copies() -> None:
    assert design_kwargs("gp") == {"prior_input": "ycbcr"}
    assert design_kwargs("srcnn") == {}
    design_kwargs("gp")["prior_input"] = "y"
    assert DESIGN_KWARGS["gp"] == {"prior_input": "ycbcr"}


def test_schedule_trains_resumes_and_ships_only_better_weights(
    cells: Path, weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    torch.set_num_threads(1)
    monkeypatch.setattr(schedule, "CPU_SCHEDULE", (("srcnn", 4, 1),))
    runs = tmp_path / "runs"
    schedule.main(["--data", str(cells), "--runs", str(runs)])
    assert capsys.readouterr().out.strip().endswith("shipped=True")
    entry = read_manifest()["srcnn_x4"]
    shipped = load_weights(weights_dir / entry["file"], expected_sha256=entry["sha256"])
    assert shipped.arch == "srcnn" and shipped.scale == 4
    assert next(iter(shipped.model.state_dict().values())).dtype == torch.float32  # loaded
    assert entry["metrics"]["epoch"] == 1

    # called again: the run is finished, nothing better to ship
    schedule.main(["--data", str(cells), "--runs", str(runs)])
    assert capsys.readouterr().out.strip().endswith("1 epochs, " + _best(runs) + ", shipped=False")
    # one more epoch resumes the same run; it ships only if validation PSNR improved
    schedule.main(["--data", str(cells), "--runs", str(runs), "--epochs-scale", "2"])
    state = torch.load(runs / "srcnn_x4" / "last.pt", weights_only=True)
    assert state["epoch"] == 2
    improved = state["history"][1]["val_psnr"] > state["history"][0]["val_psnr"]
    assert capsys.readouterr().out.strip().endswith(f"shipped={improved}")
    assert read_manifest()["srcnn_x4"]["metrics"]["epoch"] == (2 if improved else 1)


def test_plan_keeps_the_only_order_and_rejects_unknown_names() -> None:
    assert schedule._plan("srcnn_x4,gp_x8", paper=False, epochs_scale=1.0) == [
        ("srcnn", 4, 100),
        ("gp", 8, 24),
    ]
    assert schedule._plan("np_x4", paper=True, epochs_scale=0.5) == [("np", 4, 50)]
    assert len(schedule._plan("", paper=False, epochs_scale=1.0)) == len(schedule.CPU_SCHEDULE)
    with pytest.raises(UsageError, match="unknown run 'gp_x2'"):
        schedule._plan("gp_x8,gp_x2", paper=False, epochs_scale=1.0)


def test_no_export_then_export_only_ships_the_best_weights(
    cells: Path, weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    torch.set_num_threads(1)
    monkeypatch.setattr(schedule, "CPU_SCHEDULE", (("srcnn", 4, 1), ("srcnn", 8, 1)))
    runs = tmp_path / "runs"
    args = ["--data", str(cells), "--runs", str(runs), "--only", "srcnn_x4", "--threads", "1"]
    schedule.main([*args, "--no-export"])
    assert capsys.readouterr().out.strip().endswith("shipped=False")
    assert "srcnn_x4" not in read_manifest()
    state = torch.load(runs / "srcnn_x4" / "last.pt", weights_only=True)
    assert state["config"]["num_threads"] == 1
    # srcnn_x8 never ran: export-only skips it and ships srcnn_x4
    schedule.main(["--data", str(cells), "--runs", str(runs), "--export-only"])
    assert capsys.readouterr().out.strip() == "srcnn_x4: shipped=True"
    assert set(read_manifest()) == {"srcnn_x4"}
    best = load_weights(runs / "srcnn_x4" / "best.pt")
    assert read_manifest()["srcnn_x4"]["metrics"] == best.meta["metrics"]


def _best(runs: Path) -> str:
    state = torch.load(runs / "srcnn_x4" / "last.pt", weights_only=True)
    return f"best val PSNR {max(h['val_psnr'] for h in state['history']):.3f} dB"


def test_ablation_writes_one_row_per_variant(
    cells: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    variants = {
        "base": ("gp", TINY_GP),
        "ycbcr": ("gp", {**TINY_GP, "prior_input": "ycbcr"}),
        "none": ("np", {"num_features": 4, "num_blocks": 1}),
    }
    monkeypatch.setattr(ablation, "VARIANTS", variants)
    out = tmp_path / "results"
    args = ["--data", str(cells), "--scale", "4", "--epochs", "1", "--runs", str(tmp_path)]
    ablation.main([*args, "--out", str(out), "--only", "ycbcr,base"])
    ablation.main([*args, "--out", str(out), "--only", "none"])  # merges with the first call
    saved = json.loads((out / "ablation_x4.json").read_text())
    assert saved["scale"] == 4 and saved["epochs"] == 1
    assert list(saved["variants"]) == ["base", "ycbcr", "none"]  # the order of VARIANTS
    for name, (arch, kwargs) in variants.items():
        history = saved["variants"][name]
        assert [h["epoch"] for h in history] == [1]
        best = load_weights(tmp_path / "ablation_x4" / name / "best.pt")
        assert best.arch == arch and best.meta["arch_kwargs"] == kwargs
        assert best.meta["metrics"]["val_psnr"] == pytest.approx(history[0]["val_psnr"])
    rows = (out / "ablation_x4.md").read_text().strip().splitlines()
    assert rows[0].startswith("| Variant (x4) | epochs |")
    assert [row.split("|")[1].strip() for row in rows[2:]] == ["bicubic", "base", "ycbcr", "none"]
    assert rows[-1].split("|")[5].strip() == "–"  # NP has no parsing map
    psnr = saved["variants"]["ycbcr"][0]["val_psnr"]
    assert rows[4].split("|")[3].strip() == f"{psnr:.3f}"
    # the bicubic reference: the val split of the same seed, scored like the epochs
    val = split_samples(read_samples(cells), 0)["val"]
    dataset = SRDataset(val, scale=4)
    expected = np.mean(
        [
            psnr_db(
                item["hr"][0].numpy()[:r, :c],
                item["up"][0].numpy().clip(0, 1)[:r, :c],
                shave_px=4,
            )
            for item in dataset.items
            for r, c in [item["valid"].tolist()]
        ]
    )
    assert saved["bicubic_val_psnr"] == pytest.approx(expected, abs=1e-4)
    assert rows[2].split("|")[3].strip() == f"{expected:.3f}"
