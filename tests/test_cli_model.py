"""``leukoscreen train`` and ``leukoscreen upscale`` through main(): outputs, exit codes, messages.

Also ``upscale_files``, the function behind ``leukoscreen upscale``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.io
import torch
import typer

from leukoscreen.model.checkpoint import load_weights, save_weights
from leukoscreen.model.errors import DataError, UsageError
from leukoscreen.model.inference import PARSING_COLOURS, load_checkpoint, load_pretrained
from leukoscreen.model.networks import build_network
from leukoscreen.model.upscale_files import check_image_files, read_lr_image, upscale_files
from leukoscreen.pipeline.cli import app, main

TINY_GP: dict[str, Any] = {"num_features": 4, "num_blocks": 1, "unet_widths": (4, 8)}
# 32 px training images (the default size group would pad them to 224) on one thread, fp32.
TRAIN_TOML = '[train]\nhr_size_px = 32\nnum_threads = 1\nprecision = "fp32"\n'


def _rgb(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (rows, cols, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 seeded 32 x 32 images with 255/128/0 masks."""
    folder = tmp_path_factory.mktemp("data") / "cells"
    folder.mkdir()
    rows, cols = np.mgrid[0:32, 0:32]
    for i in range(12):
        radius = np.hypot(rows - 16 - i % 3, cols - 15 + i % 4)
        mask = np.where(radius < 5, 255, np.where(radius < 10, 128, 0)).astype(np.uint8)
        rgb = np.clip(220 - 0.6 * mask[..., None] + _rgb(32, 32, i) * 0.1, 0, 255)
        skimage.io.imsave(folder / f"{i:02d}.bmp", rgb.astype(np.uint8), check_contrast=False)
        skimage.io.imsave(folder / f"{i:02d}.png", mask, check_contrast=False)
    return folder


@pytest.fixture(scope="module")
def train_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "train.toml"
    path.write_text(TRAIN_TOML, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gp_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "gp_x4.pt"
    model = build_network("gp", scale=4, **TINY_GP)
    save_weights(model, path, arch="gp", scale=4, arch_kwargs=TINY_GP)
    return path


@pytest.fixture
def cell_png(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "cell.png"
    path.parent.mkdir()
    skimage.io.imsave(path, _rgb(6, 5), check_contrast=False)
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("leukoscreen: ")
    return err.rstrip("\n")


# ---------------------------------------------------------------------------------------------
# help


@pytest.mark.parametrize("command", ["train", "upscale"])
def test_every_option_has_help(command: str) -> None:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    for param in click_command.params:
        assert getattr(param, "help", None), f"{command} {param.name} has no help"


# ---------------------------------------------------------------------------------------------
# train


def test_train_two_epochs_with_resume(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cells: Path, train_toml: Path
) -> None:
    run = tmp_path / "run"
    common = ["--arch", "srcnn", "--scale", "4", "--data", str(cells), "--out", str(run)]
    common += ["--batch-size", "4", "--seed", "1", "--device", "cpu", "--config", str(train_toml)]
    assert main(["train", *common, "--epochs", "1"]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert first.startswith(f"srcnn x4: 1/1 epochs in {run}; best val PSNR ")
    assert first.endswith(f"dB at epoch 1 -> {run / 'best.pt'}")

    assert main(["train", *common, "--epochs", "2", "--resume"]) == 0
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert second.startswith(f"srcnn x4: 2/2 epochs in {run}; best val PSNR ")
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 2
    assert state["config"]["arch"] == "srcnn"
    assert state["config"]["batch_size"] == 4
    assert state["config"]["seed"] == 1
    assert state["config"]["hr_size_px"] == 32  # from --config
    assert state["config"]["augment"] is False  # the default
    assert load_weights(run / "best.pt").arch == "srcnn"

    # the same folder again without --resume: one line, exit 2
    assert main(["train", *common, "--epochs", "2"]) == 2
    assert _one_line_error(capsys) == (
        f"leukoscreen: error: {run / 'last.pt'}: a training run exists here; "
        "pass --resume or another --out"
    )


def test_train_a_gan_from_a_weights_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cells: Path, train_toml: Path
) -> None:
    """``--arch srgan --init FILE``: the file is the generator's start (no fine-tuning
    defaults), the run keeps its last epoch in generator.pt, and resumes."""
    tiny = {"num_features": 4, "num_blocks": 1}
    start = tmp_path / "srresnet.pt"
    save_weights(build_network("srresnet", scale=4, **tiny), start, arch="srresnet", scale=4,
                 arch_kwargs=tiny)  # fmt: skip
    run = tmp_path / "gan"
    common = ["--arch", "srgan", "--scale", "4", "--data", str(cells), "--out", str(run)]
    common += ["--init", str(start), "--pixel-epochs", "1", "--adversarial-weight", "0.01"]
    common += ["--batch-size", "4", "--device", "cpu", "--config", str(train_toml)]
    assert main(["train", *common, "--epochs", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"srgan x4: 2/2 epochs in {run}; last val PSNR ")
    assert line.endswith(f"dB at epoch 2 -> {run / 'generator.pt'}")
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["config"]["lr"] == 1e-4 and state["config"]["epochs"] == 2  # not FINE_TUNE's
    assert state["config"]["pixel_epochs"] == 1 and state["config"]["adversarial_weight"] == 0.01
    assert "train_d_loss" not in state["history"][0] and "train_d_loss" in state["history"][1]
    assert main(["train", *common, "--epochs", "3", "--resume"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 3


def test_fine_tuning_defaults_of_train_init(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cells: Path, train_toml: Path
) -> None:
    """``--init FILE`` on a lab's folder: the arch follows the weights and the fine-tuning
    defaults apply (``docs/model-card.md``, fine-tuning); an explicit flag still wins."""
    tiny = {"num_features": 4, "num_blocks": 1, "unet_widths": (4, 8), "condition_features": 4}
    start = tmp_path / "gpsft.pt"
    save_weights(build_network("gpsft", scale=4, **tiny), start, arch="gpsft", scale=4,
                 arch_kwargs=tiny)  # fmt: skip
    common = ["--init", str(start), "--scale", "4", "--data", str(cells), "--epochs", "1"]
    common += ["--device", "cpu", "--config", str(train_toml)]
    assert main(["train", *common, "--out", str(tmp_path / "a")]) == 0
    config = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["config"]
    assert config["arch"] == "gpsft" and config["lr"] == 1e-4
    assert config["lr_halve_every_epochs"] == 25
    assert config["augment"] is True and config["phase_augment"] is True
    assert config["lab_split"] is True
    args = ["--no-phase-augment", "--lr-halve-every", "0", "--out", str(tmp_path / "b")]
    assert main(["train", *common, *args]) == 0
    config = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["config"]
    assert config["phase_augment"] is False and config["lr_halve_every_epochs"] == 0
    # only the parsing map: the schedule of before, no phase shift, the data set's own split
    assert main(["train", *common, "--parsing-only", "--out", str(tmp_path / "c")]) == 0
    config = torch.load(tmp_path / "c" / "last.pt", weights_only=True)["config"]
    assert config["parsing_only"] is True and config["lr"] == 1e-4
    assert config["lr_halve_every_epochs"] == 0 and config["phase_augment"] is False
    assert config["augment"] is False and config["lab_split"] is False
    capsys.readouterr()


def test_train_default_run_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cells: Path, train_toml: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["train", "--arch", "srcnn", "--scale", "8", "--data", str(cells), "--epochs", "1"]
    assert main([*args, "--device", "cpu", "--config", str(train_toml), "--augment"]) == 0
    state = torch.load(tmp_path / "runs" / "srcnn_x8" / "last.pt", weights_only=True)
    assert state["config"]["augment"] is True


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--arch", "nope"],
            "leukoscreen: error: --arch: expected one of gp, np, srcnn, vdsr, srresnet, gpsft, "
            "srgan, sftgan, found str 'nope'",
        ),
        (["--scale", "3"], "leukoscreen: error: --scale: expected one of 4, 8, found int 3"),
        (["--scale", "four"], "leukoscreen: Invalid value for '--scale': "),
        (
            ["--epochs", "0"],
            "leukoscreen: error: --epochs: expected >= 1, found 0",
        ),
    ],
    ids=["arch", "scale", "scale-not-int", "epochs"],
)
def test_train_bad_arguments_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], line: str
) -> None:
    assert main(["train", *args, "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert _one_line_error(capsys).startswith(line)
    assert not (tmp_path / "r").exists()


def test_train_on_a_folder_without_images(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--data", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert _one_line_error(capsys).startswith(f"leukoscreen: error: {empty}: no images found")


# ---------------------------------------------------------------------------------------------
# upscale


def test_upscale_with_a_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, gp_weights: Path, cell_png: Path
) -> None:
    out = tmp_path / "out"
    args = ["upscale", str(cell_png), "--checkpoint", str(gp_weights), "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    sr_path, parsing_path = out / "cell_x4.png", out / "cell_x4_parsing.png"
    assert capsys.readouterr().out.splitlines() == [str(sr_path), str(parsing_path)]
    sr = skimage.io.imread(sr_path)
    assert sr.shape == (24, 20, 3)
    assert sr.dtype == np.uint8
    parsing = skimage.io.imread(parsing_path)
    assert parsing.shape == (24, 20, 3)
    palette = {tuple(c) for c in PARSING_COLOURS.tolist()}
    assert {tuple(c) for c in parsing.reshape(-1, 3).tolist()} <= palette

    # the same as the API on a batch of one
    upscaler = load_checkpoint(gp_weights, device="cpu")
    expected_sr, expected_parsing = upscaler.upscale(skimage.io.imread(cell_png)[None])
    assert expected_parsing is not None
    np.testing.assert_array_equal(sr, expected_sr[0])
    np.testing.assert_array_equal(parsing, PARSING_COLOURS[expected_parsing[0]])


def test_upscale_bicubic_without_weights(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cell_png: Path
) -> None:
    grey = tmp_path / "in" / "grey.bmp"
    skimage.io.imsave(grey, np.full((5, 4), 90, dtype=np.uint8), check_contrast=False)
    out = tmp_path / "out"
    args = ["upscale", str(cell_png), str(grey), "--arch", "bicubic", "--scale", "8"]
    assert main([*args, "--out", str(out), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        str(out / "cell_x8.png"),
        str(out / "grey_x8.png"),
    ]
    assert skimage.io.imread(out / "cell_x8.png").shape == (48, 40, 3)
    assert (skimage.io.imread(out / "grey_x8.png") == 90).all()  # a constant stays constant


def test_upscale_checkpoint_of_another_scale(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, gp_weights: Path, cell_png: Path
) -> None:
    args = ["upscale", str(cell_png), "--checkpoint", str(gp_weights), "--scale", "8"]
    assert main([*args, "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert _one_line_error(capsys) == (
        f"leukoscreen: error: {gp_weights}: holds scale x4, expected x8"
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--arch", "nope"],
            "leukoscreen: error: --arch: expected one of default, bicubic, gp, np, srcnn, vdsr, "
            "srresnet, gpsft, srgan, sftgan, found str 'nope'",
        ),
        (
            ["--arch", "bicubic", "--scale", "3"],
            "leukoscreen: error: --scale: expected one of 4, 8, found int 3",
        ),
    ],
    ids=["arch", "scale"],
)
def test_upscale_bad_arguments_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    cell_png: Path,
    args: list[str],
    line: str,
) -> None:
    out = tmp_path / "out"
    assert main(["upscale", str(cell_png), *args, "--out", str(out), "--device", "cpu"]) == 2
    assert _one_line_error(capsys) == line
    assert not out.exists()


def test_upscale_missing_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cell_png: Path
) -> None:
    missing = tmp_path / "in" / "absent.png"
    args = ["upscale", str(cell_png), str(missing), "--out", str(tmp_path / "out")]
    assert main(args) == 2  # reported before any weights are looked for
    assert _one_line_error(capsys) == f"leukoscreen: error: {missing}: no such image file"
    assert not (tmp_path / "out").exists()


def test_upscale_too_small_image(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cell_png: Path
) -> None:
    small = tmp_path / "in" / "small.png"
    skimage.io.imsave(small, _rgb(3, 8), check_contrast=False)
    out = tmp_path / "out"
    args = ["upscale", str(cell_png), str(small), "--arch", "bicubic", "--out", str(out)]
    assert main(args) == 2
    assert _one_line_error(capsys) == (
        f"leukoscreen: error: {small}: image is 3x8 px, expected at least 4 px a side "
        "to super-resolve"
    )
    assert not out.exists()  # nothing written, not even for the good first image


def test_upscale_not_an_image(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture", encoding="utf-8")
    args = ["upscale", str(fake), "--arch", "bicubic", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert _one_line_error(capsys).startswith(
        f"leukoscreen: error: {fake}: not an image file leukoscreen can read ("
    )


def test_upscale_needs_out_and_an_image(capsys: pytest.CaptureFixture[str], cell_png: Path) -> None:
    assert main(["upscale", str(cell_png)]) == 2
    assert "Missing option '--out'" in _one_line_error(capsys)
    assert main(["upscale", "--out", "x"]) == 2
    assert "Missing argument" in _one_line_error(capsys)


# ---------------------------------------------------------------------------------------------
# upscale_files and its readers


def test_upscale_files_returns_what_it_wrote(tmp_path: Path) -> None:
    paths = []
    for name, image in [("a.png", _rgb(4, 4)), ("b.tif", _rgb(5, 7, 1))]:
        paths.append(tmp_path / name)
        skimage.io.imsave(paths[-1], image, check_contrast=False)
    upscaler = load_pretrained("bicubic", 4, device="cpu")
    written = upscale_files(paths, out_dir=tmp_path / "deep" / "out", upscaler=upscaler)
    assert written == [
        tmp_path / "deep" / "out" / "a_x4.png",
        tmp_path / "deep" / "out" / "b_x4.png",
    ]
    assert skimage.io.imread(written[1]).shape == (20, 28, 3)


def test_read_lr_image_converts_grey_and_rgba(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    skimage.io.imsave(grey, np.full((4, 6), 7, dtype=np.uint8), check_contrast=False)
    assert read_lr_image(grey).shape == (4, 6, 3)
    rgba = tmp_path / "rgba.png"
    image = np.concatenate([_rgb(5, 4), np.full((5, 4, 1), 128, dtype=np.uint8)], axis=-1)
    skimage.io.imsave(rgba, image, check_contrast=False)
    np.testing.assert_array_equal(read_lr_image(rgba), image[..., :3])


def test_read_lr_image_refuses_16_bit(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    skimage.io.imsave(path, np.full((6, 6), 1000, dtype=np.uint16), check_contrast=False)
    with pytest.raises(DataError, match=r"deep\.png: expected an 8-bit image, found uint16$"):
        read_lr_image(path)


def test_check_image_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for name in ("x.png", "a/x.bmp"):
        skimage.io.imsave(tmp_path / name, _rgb(4, 4), check_contrast=False)
    assert check_image_files([str(tmp_path / "x.png")]) == [tmp_path / "x.png"]
    with pytest.raises(UsageError, match=r"x\.bmp: has the same name as .*x\.png"):
        check_image_files([tmp_path / "x.png", tmp_path / "a" / "x.bmp"])
    with pytest.raises(DataError, match=r": expected an image file, found a folder$"):
        check_image_files([tmp_path / "a"])
    with pytest.raises(UsageError, match=r"expected at least one image file"):
        check_image_files([])


def test_train_gp_uses_the_shipped_design(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cells: Path, train_toml: Path
) -> None:
    run = tmp_path / "run"
    args = ["train", "--arch", "gp", "--scale", "4", "--data", str(cells), "--out", str(run)]
    args += ["--epochs", "1", "--batch-size", "4", "--device", "cpu", "--config", str(train_toml)]
    assert main(args) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("gp x4: 1/1 epochs")
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["arch_kwargs"] == {"prior_input": "ycbcr"}
    best = load_weights(run / "best.pt")
    assert best.model.input_kind == "upsampled_ycbcr"
    assert best.model.prior.down[0][0].in_channels == 3


def test_train_mixes_repeated_data_sources(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cells: Path, train_toml: Path
) -> None:
    other = tmp_path / "more"
    shutil.copytree(cells, other)  # another folder source: other ids, masks too
    args = ["train", "--arch", "srcnn", "--scale", "4", "--data", str(cells), "--data", str(other)]
    args += ["--epochs", "1", "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main([*args, "--config", str(train_toml)]) == 0
    assert "srcnn x4: 1/1 epochs" in capsys.readouterr().out
    # the same source twice is one line naming it, exit 2
    twice = ["train", "--data", str(cells), "--data", str(cells), "--out", str(tmp_path / "r2")]
    assert main([*twice, "--device", "cpu", "--config", str(train_toml)]) == 2
    assert "also comes from" in _one_line_error(capsys)
