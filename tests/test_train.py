"""Training on a tiny synthetic folder: exact resume, checkpoint round trip, schedule, bad input."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from leukoscreen.model.checkpoint import load_weights
from leukoscreen.model.config import TrainConfig
from leukoscreen.model.errors import CheckpointError, DataError, UsageError
from leukoscreen.model.networks import build_network
from leukoscreen.model.train import (
    TrainResult,
    charbonnier,
    lr_at,
    prior_loss_per_image,
    train,
    training_sets,
)

CellWriter = Callable[..., Path]
TINY_GP: dict[str, Any] = {"num_features": 4, "num_blocks": 1, "unet_widths": (4, 8)}
CFG = TrainConfig(
    arch="gp",
    scale=4,
    epochs=2,
    batch_size=4,
    hr_size_px=32,
    precision="fp32",
    num_threads=1,
    seed=3,
)


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory, write_cells: CellWriter) -> Path:
    return write_cells(tmp_path_factory.mktemp("data") / "cells")


def _train(cfg: TrainConfig, data: Path, run_dir: Path, **kwargs: Any) -> TrainResult:
    return train(
        cfg, data=data, run_dir=run_dir, arch_kwargs=TINY_GP, device="cpu", progress=False, **kwargs
    )


@pytest.fixture(scope="module")
def straight(cells: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """Two epochs in one call."""
    return _train(CFG, cells, tmp_path_factory.mktemp("straight"))


@pytest.fixture
def interrupted(cells: Path, tmp_path: Path) -> Path:
    """A run 'killed' after its first epoch."""
    result = _train(CFG, cells, tmp_path, stop_after_epochs=1)
    assert result.epochs_done == 1
    assert [r["epoch"] for r in result.history] == [1]
    return tmp_path


def _without_time(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


# ---------------------------------------------------------------------------------------------
# exact resume and checkpoints


def test_resume_after_a_kill_is_bit_identical(
    cells: Path, straight: TrainResult, interrupted: Path
) -> None:
    run_dir = interrupted
    resumed = _train(CFG, cells, run_dir, resume=True)
    assert resumed.epochs_done == straight.epochs_done == 2
    assert _without_time(resumed.history) == _without_time(straight.history)
    a = torch.load(straight.run_dir / "last.pt", weights_only=True)
    b = torch.load(run_dir / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for key in ("exp_avg", "exp_avg_sq", "step"):
        for index in a["optimizer"]["state"]:
            assert torch.equal(
                a["optimizer"]["state"][index][key], b["optimizer"]["state"][index][key]
            )
    # a finished run resumed again does nothing more
    again = _train(CFG, cells, run_dir, resume=True)
    assert again.epochs_done == 2


def test_augmented_training_resumes_exactly_and_differs_from_plain(
    cells: Path, straight: TrainResult, tmp_path: Path
) -> None:
    cfg = replace(CFG, augment=True)
    whole = _train(cfg, cells, tmp_path / "whole")
    _train(cfg, cells, tmp_path / "killed", stop_after_epochs=1)
    resumed = _train(cfg, cells, tmp_path / "killed", resume=True)
    assert _without_time(resumed.history) == _without_time(whole.history)
    a = torch.load(whole.run_dir / "last.pt", weights_only=True)["model"]
    b = torch.load(resumed.run_dir / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)
    # the flips change what was learnt: not the plain run's weights
    plain = torch.load(straight.run_dir / "last.pt", weights_only=True)["model"]
    assert not all(torch.equal(a[name], plain[name]) for name in a)
    with pytest.raises(CheckpointError, match="another config"):
        _train(CFG, cells, tmp_path / "whole", resume=True)  # augment is part of the config


def test_checkpoints_from_before_augment_resume(cells: Path, tmp_path: Path) -> None:
    _train(CFG, cells, tmp_path, stop_after_epochs=1)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    del state["config"]["augment"]  # a run saved before the field existed
    torch.save(state, tmp_path / "last.pt")
    assert _train(CFG, cells, tmp_path, resume=True).epochs_done == 2


def test_history_records_each_epoch(straight: TrainResult) -> None:
    assert [r["epoch"] for r in straight.history] == [1, 2]
    for record in straight.history:
        assert record["lr"] == CFG.lr
        assert math.isfinite(record["train_loss"])
        assert math.isfinite(record["val_psnr"])
        assert 0.0 <= record["val_miou"] <= 1.0


def test_last_checkpoint_holds_the_resolved_config(straight: TrainResult) -> None:
    state = torch.load(straight.run_dir / "last.pt", weights_only=True)
    assert state["config"] == asdict(CFG)
    assert state["arch_kwargs"] == TINY_GP
    assert {"model", "optimizer", "epoch", "history", "best_psnr"} <= set(state)


def test_best_weights_round_trip(interrupted: Path) -> None:
    # After one epoch best.pt holds the same weights as last.pt.
    run_dir = interrupted
    state = torch.load(run_dir / "last.pt", weights_only=True)
    loaded = load_weights(run_dir / "best.pt")
    assert (loaded.arch, loaded.scale) == ("gp", 4)
    assert loaded.meta["config"] == asdict(CFG)
    assert loaded.meta["metrics"]["epoch"] == 1
    assert not loaded.model.training
    reference = build_network("gp", scale=4, **TINY_GP)
    reference.load_state_dict(state["model"])
    reference.eval()
    x = torch.rand(2, 1, 20, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sr_loaded, logits_loaded = loaded.model(x)
        sr_ref, logits_ref = reference(x)
    assert torch.equal(sr_loaded, sr_ref)
    assert logits_loaded is not None and logits_ref is not None
    assert torch.equal(logits_loaded, logits_ref)


def test_resume_may_extend_the_epochs(cells: Path, tmp_path: Path) -> None:
    cfg = replace(CFG, arch="np", epochs=1)
    kwargs = {"num_features": 4, "num_blocks": 1}
    train(cfg, data=cells, run_dir=tmp_path, arch_kwargs=kwargs, device="cpu", progress=False)
    more = train(
        replace(cfg, epochs=2),
        data=cells,
        run_dir=tmp_path,
        arch_kwargs=kwargs,
        device="cpu",
        progress=False,
        resume=True,
    )
    assert [r["epoch"] for r in more.history] == [1, 2]
    assert "val_miou" not in more.history[0]  # NP has no parsing map


# ---------------------------------------------------------------------------------------------
# schedule and loss


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(0, 1e-4), (9, 1e-4), (10, 5e-5), (19, 5e-5), (20, 2.5e-5), (99, 1e-4 / 512)],
)
def test_lr_is_halved_every_ten_epochs(epoch: int, expected: float) -> None:
    assert lr_at(epoch, TrainConfig()) == pytest.approx(expected, rel=1e-12)


def test_lr_constant_without_halving() -> None:
    cfg = TrainConfig(lr=3e-4, lr_halve_every_epochs=0)
    assert [lr_at(e, cfg) for e in (0, 10, 50)] == [3e-4, 3e-4, 3e-4]


def test_charbonnier() -> None:
    zeros = torch.zeros(2, 1, 4, 4)
    assert float(charbonnier(zeros, zeros, 1e-3)) == pytest.approx(1e-3, rel=1e-6)
    # sqrt(4^2 + 3^2) = 5 (in units of 1e-3)
    assert float(charbonnier(zeros + 4e-3, zeros, 3e-3)) == pytest.approx(5e-3, rel=1e-6)
    # robust L1: far from zero it is |d|
    assert float(charbonnier(zeros + 0.5, zeros, 1e-3)) == pytest.approx(0.5, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0}, r"^epochs: expected >= 1, found 0$"),
        ({"mask_repeat": 0}, r"^mask_repeat: expected >= 1, found 0$"),
        ({"batch_size": 0}, r"^batch_size: expected >= 1, found 0$"),
    ],
)
def test_train_config_refuses_counts_below_one(change: dict[str, Any], message: str) -> None:
    # The config checks itself when it is made (and the loader names the file and the key).
    with pytest.raises(ValueError, match=message):
        replace(CFG, **change)


def test_existing_run_without_resume(cells: Path, straight: TrainResult) -> None:
    last = straight.run_dir / "last.pt"
    with pytest.raises(CheckpointError) as info:
        _train(CFG, cells, straight.run_dir)
    assert str(info.value) == (
        f"{last}: a training run exists here; pass --resume or another --out"
    )


@pytest.mark.parametrize(
    ("change", "arch_kwargs"),
    [({"lr": 1e-3}, TINY_GP), ({"seed": 4}, TINY_GP), ({}, {**TINY_GP, "num_features": 8})],
    ids=["lr", "seed", "arch-kwargs"],
)
def test_resume_with_another_config(
    cells: Path, straight: TrainResult, change: dict[str, Any], arch_kwargs: dict[str, Any]
) -> None:
    last = straight.run_dir / "last.pt"
    with pytest.raises(CheckpointError, match=r"was trained with another config") as info:
        train(
            replace(CFG, **change),
            data=cells,
            run_dir=straight.run_dir,
            arch_kwargs=arch_kwargs,
            device="cpu",
            progress=False,
            resume=True,
        )
    assert str(info.value).startswith(f"{last}: ")


def test_gp_needs_masks(tmp_path: Path, write_cells: CellWriter) -> None:
    data = write_cells(tmp_path / "no_masks", masks=False)
    with pytest.raises(DataError) as info:
        _train(CFG, data, tmp_path / "run")
    assert str(info.value) == (
        f"{data}: arch 'gp' needs parsing masks to train from scratch; none found "
        "(fine-tuning with --init works without masks)"
    )


def test_too_few_images(tmp_path: Path, write_cells: CellWriter) -> None:
    data = write_cells(tmp_path / "two", count=2)
    with pytest.raises(DataError, match=r"too few images for a train/val split \(2\)"):
        _train(CFG, data, tmp_path / "run")


def test_missing_data_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"expected a folder of images, found no such folder"):
        _train(CFG, tmp_path / "absent", tmp_path / "run")


def test_prior_loss_by_hand() -> None:
    # one pixel, logits (2, 0, 0), target nucleus (channel 0)
    logits = torch.tensor([2.0, 0.0, 0.0]).reshape(1, 3, 1, 1)
    onehot = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1)
    bce = (math.log1p(math.exp(-2.0)) + 2 * math.log(2.0)) / 3
    assert prior_loss_per_image(logits, onehot, "sigmoid").item() == pytest.approx(bce, rel=1e-6)
    ce = -math.log(math.exp(2.0) / (math.exp(2.0) + 2.0))
    assert prior_loss_per_image(logits, onehot, "softmax").item() == pytest.approx(ce, rel=1e-6)


@pytest.mark.parametrize(
    "variant", [{"prior_input": "ycbcr"}, {"prior_activation": "softmax"}], ids=str
)
def test_gp_variants_train_and_resume(cells: Path, tmp_path: Path, variant: dict[str, str]) -> None:
    cfg = replace(CFG, epochs=2)
    kwargs = {**TINY_GP, **variant}
    first = train(
        cfg,
        data=cells,
        run_dir=tmp_path,
        arch_kwargs=kwargs,
        device="cpu",
        progress=False,
        stop_after_epochs=1,
    )
    resumed = train(
        cfg,
        data=cells,
        run_dir=tmp_path,
        arch_kwargs=kwargs,
        device="cpu",
        progress=False,
        resume=True,
    )
    assert first.epochs_done == 1 and resumed.epochs_done == 2
    assert all(
        math.isfinite(h["train_loss"]) and 0.0 <= h["val_miou"] <= 1.0 for h in resumed.history
    )
    loaded = load_weights(resumed.best_weights)
    assert loaded.meta["arch_kwargs"] == kwargs
    for key, value in variant.items():
        expected = "upsampled_ycbcr" if value == "ycbcr" else "upsampled"
        assert loaded.model.input_kind == expected, key


# ---------------------------------------------------------------------------------------------
# several sources, with and without masks


def _bccd_like(folder: Path, n_fields: int = 10) -> Path:
    """A BCCD-layout field set: 96 x 96 fields with one boxed dark cell each, VOC split lists."""
    import numpy as np
    import skimage.io

    (folder / "JPEGImages").mkdir(parents=True)
    (folder / "Annotations").mkdir()
    (folder / "ImageSets" / "Main").mkdir(parents=True)
    rng = np.random.default_rng(5)
    rows, cols = np.mgrid[0:96, 0:96]
    names = [f"BloodImage_{i:05d}" for i in range(n_fields)]
    for name in names:
        r, c = rng.uniform(30, 66, 2)
        inside = np.hypot(rows - r, cols - c) < 12
        rgb = np.where(inside[..., None], 70, 215) + rng.normal(0, 8, (96, 96, 3))
        skimage.io.imsave(folder / "JPEGImages" / f"{name}.jpg", np.clip(rgb, 0, 255).astype(
            np.uint8))  # fmt: skip
        box = f"<xmin>{int(c) - 14}</xmin><ymin>{int(r) - 14}</ymin><xmax>{int(c) + 14}</xmax>"
        box += f"<ymax>{int(r) + 14}</ymax>"
        (folder / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><object><name>WBC</name><bndbox>{box}</bndbox></object></annotation>"
        )
    lists = {"train": names[:6], "val": names[6:8], "test": names[8:]}
    for part, members in lists.items():
        (folder / "ImageSets" / "Main" / f"{part}.txt").write_text("\n".join(members) + "\n")
    return folder


def test_field_source_crops_keep_the_source_split(tmp_path: Path, cells: Path) -> None:
    from leukoscreen.model.sources import read_sources, split_samples

    bccd = _bccd_like(tmp_path / "BCCD")
    samples = read_sources([cells, bccd])
    crops = [s for s in samples if s.source == "bccd"]
    assert len(crops) == 10 and all(s.labels is None for s in crops)
    assert all(s.rgb.shape == (96, 96, 3) for s in crops)  # the whole small field
    parts = split_samples(samples, seed=0)
    test_ids = {s.image_id for s in parts["test"] if s.source == "bccd"}
    assert test_ids == {"bccd-BloodImage_00008-0", "bccd-BloodImage_00009-0"}
    assert sum(s.source == "bccd" for s in parts["train"]) == 6
    with pytest.raises(DataError, match="also comes from"):
        read_sources([bccd, bccd])


def test_mixed_sources_train_the_prior_on_masked_images_only(tmp_path: Path, cells: Path) -> None:
    bccd = _bccd_like(tmp_path / "BCCD")
    cfg = replace(CFG, epochs=1, hr_size_px=32)
    mixed = train(cfg, data=[cells, bccd], run_dir=tmp_path / "mixed", arch_kwargs=TINY_GP,
                  device="cpu", progress=False)  # fmt: skip
    alone = train(cfg, data=[cells], run_dir=tmp_path / "alone", arch_kwargs=TINY_GP,
                  device="cpu", progress=False)  # fmt: skip
    assert mixed.epochs_done == alone.epochs_done == 1
    assert math.isfinite(mixed.history[0]["train_loss"])
    assert mixed.history[0]["train_loss"] != alone.history[0]["train_loss"]  # more data seen
    # a mask-less source alone cannot train the prior, whatever the number of images
    with pytest.raises(DataError, match="arch 'gp' needs parsing masks to train from scratch"):
        train(cfg, data=[bccd], run_dir=tmp_path / "none", arch_kwargs=TINY_GP, device="cpu",
              progress=False)  # fmt: skip


def test_field_set_with_an_unknown_name_is_refused(tmp_path: Path) -> None:
    from leukoscreen.model.sources import read_samples

    other = _bccd_like(tmp_path / "MyLab")
    with pytest.raises(DataError, match=r"MyLab: a boxed field set must be one of bccd"):
        read_samples(other)


# ---------------------------------------------------------------------------------------------
# GP-SFT, mask-less sources and fine-tuning (--init)

TINY_SFT: dict[str, Any] = {
    "num_features": 4,
    "num_blocks": 1,
    "unet_widths": (4, 8),
    "condition_features": 4,
    "head_width": 2,
}
SFT_CFG = replace(CFG, arch="gpsft", epochs=1, colour_augment=True, augment=True)


def _train_sft(cfg: TrainConfig, data: Any, run_dir: Path, **kwargs: Any) -> TrainResult:
    return train(
        cfg, data=data, run_dir=run_dir, arch_kwargs=TINY_SFT, device="cpu", progress=False,
        **kwargs,
    )  # fmt: skip


def test_prior_loss_is_zero_for_images_without_masks() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    onehot = torch.zeros(2, 3, 8, 8)
    onehot[0, 0] = 1.0
    per_image = prior_loss_per_image(logits, onehot, "sigmoid")
    weight = torch.tensor([1.0, 0.0])  # image 1 has no mask
    loss = (per_image * weight).sum() / weight.sum()
    assert torch.isclose(loss, per_image[0])
    logits.requires_grad_(True)
    per_image = prior_loss_per_image(logits, onehot, "sigmoid")
    ((per_image * weight).sum() / weight.sum()).backward()
    assert logits.grad is not None
    assert logits.grad[1].abs().max() == 0 and logits.grad[0].abs().max() > 0


@pytest.fixture(scope="module")
def sft_start(cells: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GP-SFT trained one epoch on masked cells: the weights fine-tuning starts from."""
    result = _train_sft(SFT_CFG, cells, tmp_path_factory.mktemp("sft"))
    assert result.epochs_done == 1 and "val_miou" in result.history[0]
    return result.best_weights


def test_gpsft_trains_on_a_mix_of_masked_and_mask_less_sources(tmp_path: Path, cells: Path) -> None:
    bccd = _bccd_like(tmp_path / "BCCD")
    result = _train_sft(replace(SFT_CFG, hr_size_px=32), [cells, bccd], tmp_path / "run")
    assert result.epochs_done == 1 and math.isfinite(result.history[0]["train_loss"])
    assert load_weights(result.best_weights).arch == "gpsft"


def test_fine_tuning_without_masks_keeps_the_parsing_part_and_moves_the_rest(
    tmp_path: Path, sft_start: Path, write_cells: CellWriter
) -> None:
    lab = write_cells(tmp_path / "lab", masks=False)
    before = load_weights(sft_start).model.state_dict()
    cfg = replace(SFT_CFG, init=str(sft_start), lr=1e-2, lr_halve_every_epochs=0)
    result = _train_sft(cfg, lab, tmp_path / "tuned")
    after = load_weights(result.best_weights).model.state_dict()
    prior = [k for k in before if k.split(".")[0] in ("prior", "condition", "parsing_head")]
    rest = [k for k in before if k not in prior]
    assert prior and rest
    assert all(torch.equal(before[k], after[k]) for k in prior)
    assert any(not torch.equal(before[k], after[k]) for k in rest)
    # from scratch, the same mask-less folder cannot train a prior network
    with pytest.raises(DataError, match="needs parsing masks to train from scratch"):
        _train_sft(SFT_CFG, lab, tmp_path / "scratch")


def test_fine_tuning_without_masks_adapts_the_sr_prior_when_the_parsing_map_has_its_own(
    tmp_path: Path, cells: Path, write_cells: CellWriter
) -> None:
    # GP-SFT with parsing_prior=True (the shipped design): the SR path's prior and condition
    # layer feed the SR image alone, so a mask-less fine-tuning moves them and the parsing map
    # stays exactly as it was.
    own = {**TINY_SFT, "parsing_prior": True}
    start = train(
        SFT_CFG, data=cells, run_dir=tmp_path / "start", arch_kwargs=own, device="cpu",
        progress=False,
    ).best_weights  # fmt: skip
    lab = write_cells(tmp_path / "lab", masks=False)
    cfg = replace(SFT_CFG, init=str(start), lr=1e-2, lr_halve_every_epochs=0)
    tuned = train(
        cfg, data=lab, run_dir=tmp_path / "tuned", arch_kwargs=own, device="cpu", progress=False
    ).best_weights  # fmt: skip
    before, after = load_weights(start).model.eval(), load_weights(tuned).model.eval()
    a, b = before.state_dict(), after.state_dict()
    moved = {k.split(".")[0] for k in a if not torch.equal(a[k], b[k])}
    assert {"prior", "condition", "extract"} <= moved
    assert not moved & {"parsing_prior", "parsing_condition", "parsing_head", "refiner"}
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        (sr_a, logits_a), (sr_b, logits_b) = before(x), after(x)
    assert torch.equal(logits_a, logits_b) and not torch.equal(sr_a, sr_b)


def test_fine_tuning_resumes_bit_identically(
    tmp_path: Path, sft_start: Path, write_cells: CellWriter
) -> None:
    lab = write_cells(tmp_path / "lab", masks=False)
    cfg = replace(SFT_CFG, init=str(sft_start), epochs=2, lr=1e-3)
    straight = _train_sft(cfg, lab, tmp_path / "straight")
    first = _train_sft(cfg, lab, tmp_path / "killed", stop_after_epochs=1)
    assert first.epochs_done == 1
    resumed = _train_sft(cfg, lab, tmp_path / "killed", resume=True)
    assert _without_time(resumed.history) == _without_time(straight.history)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_labs_folder_trains_on_90_percent_with_lab_split(
    tmp_path: Path, write_cells: CellWriter
) -> None:
    """``lab_split`` (what ``leukoscreen train --init`` sets): 18 of a lab's 20 cells train."""
    lab = write_cells(tmp_path / "lab", count=20)  # masks or not, the split is the same
    sizes = {}
    for lab_split in (False, True):
        train_set, val_set, _ = training_sets(replace(SFT_CFG, lab_split=lab_split), lab)
        sizes[lab_split] = (len(train_set), len(val_set))
    assert sizes == {False: (14, 3), True: (18, 2)}


def test_init_of_another_arch_is_refused(tmp_path: Path, cells: Path, sft_start: Path) -> None:
    with pytest.raises(UsageError, match=r"^--init .*: holds gpsft .*expected gp "):
        _train(replace(CFG, init=str(sft_start)), cells, tmp_path / "run")


TINY_GPSFT: dict[str, Any] = {
    "num_features": 4,
    "num_blocks": 1,
    "unet_widths": (4, 8),
    "condition_features": 4,
    "refine_widths": (4, 4),
}


def test_parsing_only_trains_the_parsing_modules_and_keeps_the_sr_image(
    cells: Path, tmp_path: Path
) -> None:
    """From GP-SFT weights with a refiner: only the parsing head and the refiner change, so the
    SR image and its validation PSNR stay exactly as initialised; best.pt follows the mIoU."""

    def run(cfg: TrainConfig, folder: str) -> TrainResult:
        return train(cfg, data=cells, run_dir=tmp_path / folder, arch_kwargs=TINY_GPSFT,
                     device="cpu", progress=False)  # fmt: skip

    base = replace(CFG, arch="gpsft", epochs=1)
    first = run(base, "base")
    initial = load_weights(first.best_weights).model.state_dict()
    result = run(
        replace(base, epochs=3, lr=1e-2, init=str(first.best_weights), parsing_only=True),
        "parsing",
    )
    state = torch.load(tmp_path / "parsing" / "last.pt", weights_only=True)["model"]
    moved = {name for name in initial if not torch.equal(initial[name], state[name].float())}
    assert moved and all(name.startswith(("parsing_head.", "refiner.")) for name in moved)
    assert any(name.startswith("refiner.") for name in moved)
    psnrs = {record["val_psnr"] for record in result.history}
    assert psnrs == {first.history[0]["val_psnr"]}
    best = max(result.history, key=lambda record: record["val_miou"])
    assert load_weights(result.best_weights).meta["metrics"]["epoch"] == best["epoch"]


def test_parsing_only_needs_gpsft_weights(cells: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="parsing_only"):
        _train(replace(CFG, parsing_only=True), cells, tmp_path)
