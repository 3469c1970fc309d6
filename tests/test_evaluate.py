"""Evaluation (paper Table 2): values against direct computation, table files, CLI, bad input.

Tiny synthetic folders of 224 x 224 HR images (the size group of a plain folder, so no padding)
with and without 255/128/0 masks, bicubic and a tiny random GP checkpoint. The slow test runs
``leukoscreen evaluate`` with the shipped weights on segmentation_WBC and checks it reproduces the
committed ``docs/results/table2.json``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import skimage.filters
import skimage.io
import torch
import write_card as card_tool
from typer.testing import CliRunner

from leukoscreen.model import evaluate as evaluate_module
from leukoscreen.model import report
from leukoscreen.model.checkpoint import read_manifest, save_weights
from leukoscreen.model.errors import CheckpointError, UsageError
from leukoscreen.model.evaluate import evaluate_methods
from leukoscreen.model.imresize import imresize, rgb2y
from leukoscreen.model.metrics import parsing_scores, psnr, ssim, texture_ratio
from leukoscreen.model.networks import build_network
from leukoscreen.model.report import CSV_COLUMNS, table_markdown, write_results
from leukoscreen.pipeline.cli import app, main
from leukoscreen.pipeline.cli_model import parse_checkpoint_specs

REPO = Path(__file__).resolve().parents[1]
SIZE_PX = 224
TINY_GP = {"num_features": 4, "num_blocks": 1, "unet_widths": (2, 4, 4, 4, 4)}


def _cell(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random 224 x 224 RGB image and a disc-in-disc 0/128/255 mask."""
    rng = np.random.default_rng(seed)
    noise = skimage.filters.gaussian(rng.random((SIZE_PX, SIZE_PX, 3)), sigma=3, channel_axis=-1)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    rgb = (40 + 180 * noise).astype(np.uint8)
    rows, cols = np.mgrid[:SIZE_PX, :SIZE_PX]
    radius = np.hypot(rows - 100 - seed, cols - 120)
    mask = np.where(radius < 40, 255, np.where(radius < 80, 128, 0)).astype(np.uint8)
    return rgb, mask


def _folder(root: Path, *, masks: bool, count: int = 3) -> Path:
    root.mkdir(parents=True)
    for k in range(count):
        rgb, mask = _cell(k)
        skimage.io.imsave(root / f"cell{k}.png", rgb, check_contrast=False)
        if masks:
            skimage.io.imsave(root / f"cell{k}_mask.png", mask, check_contrast=False)
    return root


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    return _folder(tmp_path / "plain", masks=False)


@pytest.fixture
def masked(tmp_path: Path) -> Path:
    return _folder(tmp_path / "masked", masks=True)


@pytest.fixture
def tiny_gp(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_network("gp", scale=4, **TINY_GP)
    path = tmp_path / "gp_x4.pt"
    save_weights(model, path, arch="gp", scale=4, arch_kwargs=TINY_GP, dtype=torch.float32)
    return path


def _direct(rgb: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """HR Y and the bicubic up-sampling of its MATLAB-bicubic down-sampling."""
    hr = rgb2y(rgb.astype(np.float64) / 255.0)
    up = imresize(imresize(hr, 1.0 / scale), float(scale))
    return hr, up


@pytest.mark.parametrize("scale", [4, 8])
def test_bicubic_equals_imresize_and_psnr_computed_directly(plain: Path, scale: int) -> None:
    table = evaluate_methods(data=plain, scales=(scale,), methods=["bicubic"], figures=False)
    expected_psnr, expected_ssim = [], []
    for k in range(3):
        hr, up = _direct(_cell(k)[0], scale)
        expected_psnr.append(psnr(hr, np.clip(up, 0, 1), shave_px=scale))
        expected_ssim.append(ssim(hr, np.clip(up, 0, 1), shave_px=scale))
    scores = sorted(table.images, key=lambda s: s.image_id)
    assert [s.image_id for s in scores] == ["plain-cell0", "plain-cell1", "plain-cell2"]
    np.testing.assert_allclose([s.psnr for s in scores], expected_psnr, rtol=0, atol=1e-4)
    np.testing.assert_allclose([s.ssim for s in scores], expected_ssim, rtol=0, atol=1e-6)
    assert table.value(scale, "bicubic", "psnr") == pytest.approx(np.mean(expected_psnr), abs=1e-4)
    # A smooth image loses little: bicubic is far above noise level and below identity.
    assert 20.0 < np.mean(expected_psnr) < 60.0
    assert table.meta["split"] == "all"
    assert table.meta["split_sizes"] == {"all": {"all": 3, "plain": 3}}


def test_gp_checkpoint_psnr_and_parsing_equal_direct_computation(
    masked: Path, tiny_gp: Path
) -> None:
    table = evaluate_methods(
        data=masked,
        scales=(4,),
        methods=["bicubic", "gp"],
        checkpoints={"gp_x4": tiny_gp},
        device="cpu",
        figures=False,
    )
    model = build_network("gp", scale=4, **TINY_GP)
    model.load_state_dict(torch.load(tiny_gp, weights_only=True)["state_dict"])
    model.eval()
    psnrs, mious = [], []
    for k in range(3):
        rgb, mask = _cell(k)
        hr, up = _direct(rgb, 4)
        with torch.no_grad():
            sr, logits = model(torch.from_numpy(up[None, None].astype(np.float32)))
        psnrs.append(psnr(hr, sr[0, 0].clamp(0, 1).numpy(), shave_px=4))
        labels = (2 - logits[0].argmax(0)).numpy()
        expert = np.digitize(mask, [64, 192])  # 0 / 128 / 255 -> 0 / 1 / 2
        mious.append(parsing_scores(expert, labels)["miou"])
    assert table.value(4, "gp", "psnr") == pytest.approx(np.mean(psnrs), abs=1e-4)
    assert table.parsing_mean(4)["miou"] == pytest.approx(np.mean(mious), abs=1e-9)
    assert table.parsing_mean(4)["n_masks"] == 3
    assert table.weights["gp_x4"]["file"] == str(tiny_gp)
    assert len(table.weights["gp_x4"]["sha256"]) == 64


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_table_files_with_masks(masked: Path, tiny_gp: Path, tmp_path: Path) -> None:
    table = evaluate_methods(
        data=masked,
        scales=(4,),
        methods=["gp", "bicubic"],
        checkpoints={"gp_x4": tiny_gp},
        device="cpu",
    )
    out = tmp_path / "results"
    written = write_results(table, out)
    assert sorted(p.name for p in written) == [
        "fig_x4.png",
        "table2.csv",
        "table2.json",
        "table2.md",
    ]
    rows = _read_csv(out / "table2.csv")
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["method"], r["name"], r["source"]) for r in rows] == [
        ("bicubic", "Bicubic", "all"),
        ("gp", "Ours (GP)", "all"),
    ]
    assert rows[0]["miou"] == ""
    assert float(rows[1]["miou"]) == pytest.approx(table.parsing_mean(4)["miou"], abs=1e-6)
    assert float(rows[0]["psnr"]) == pytest.approx(table.value(4, "bicubic", "psnr"), abs=1e-6)

    doc = json.loads((out / "table2.json").read_text(encoding="utf-8"))
    assert doc["command"].endswith("--scale 4 --method bicubic --method gp")
    assert doc["weights"]["gp_x4"]["sha256"] == table.weights["gp_x4"]["sha256"]
    assert doc["paper_table2"]["8"]["gp"] == {"psnr": 34.9352, "ssim": 0.9572}
    assert [p["source"] for p in doc["parsing"]] == ["all"]
    assert doc["missing"] == []
    # the mask-free parsing measures, per image of the network with a parsing map
    assert {(p.method, p.scale) for p in table.proxies} == {("gp", 4)}
    assert len(table.proxies) == table.parsing_mean(4)["n_masks"]
    (proxy,) = doc["parsing_proxies"]
    assert proxy["method"] == "gp" and proxy["n_images"] == len(table.proxies)
    assert 0 <= proxy["outer_strip_cell"] <= 1 and 0 <= proxy["nucleus_iou_stain"] <= 1

    markdown = (out / "table2.md").read_text(encoding="utf-8")
    assert "| | | Bicubic | Ours (GP) |" in markdown
    bicubic = table.value(4, "bicubic", "psnr")
    assert bicubic is not None
    assert f"| 4× | PSNR | {bicubic:.4f} |" in markdown
    assert "|  | mIoU | – | " in markdown
    assert "### GP parsing map vs the expert masks" in markdown

    figure = skimage.io.imread(out / "fig_x4.png")
    # header + 3 rows of 224 px; LR, Bicubic, GP, HR, GP parsing, expert with 4 px gaps
    assert figure.shape == (14 + 3 * (4 + SIZE_PX), 6 * SIZE_PX + 5 * 4, 3)


def test_without_masks_no_parsing_scores(plain: Path, tiny_gp: Path, tmp_path: Path) -> None:
    table = evaluate_methods(
        data=plain, scales=(4,), methods=["gp"], checkpoints={"gp_x4": tiny_gp}, figures=False
    )
    assert table.parsing == []
    assert table.parsing_mean(4) == {}
    write_results(table, tmp_path)
    rows = _read_csv(tmp_path / "table2.csv")
    assert [r["miou"] for r in rows] == [""]
    assert json.loads((tmp_path / "table2.json").read_text(encoding="utf-8"))["parsing"] == []
    markdown = (tmp_path / "table2.md").read_text(encoding="utf-8")
    assert "|  | mIoU | n/a |" in markdown
    assert "GP parsing map" not in markdown
    assert not (tmp_path / "fig_x4.png").exists()


def test_methods_without_weights_are_missing_unless_requested(
    plain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluate_module, "read_manifest", lambda: {})
    table = evaluate_methods(data=plain, scales=(8,), figures=False)
    assert table.methods == (
        "bicubic", "srcnn", "vdsr", "srresnet", "srgan", "sftgan", "np", "gp", "gpsft"
    )  # fmt: skip
    assert table.missing == [
        f"{m}_x8" for m in ("srcnn", "vdsr", "srresnet", "srgan", "sftgan", "np", "gp", "gpsft")
    ]
    assert {s.method for s in table.images} == {"bicubic"}
    assert table.value(8, "gp", "psnr") is None
    assert "n/a: no weights yet for srcnn_x8, vdsr_x8" in table_markdown(table)
    with pytest.raises(CheckpointError, match="no shipped weights for np_x8"):
        evaluate_methods(data=plain, scales=(8,), methods=["np"], figures=False)


def test_texture_is_the_gradient_energy_ratio_inside_the_expert_nucleus(masked: Path) -> None:
    table = evaluate_methods(data=masked, scales=(4,), methods=["bicubic"], figures=False)
    for score in table.images:
        k = int(score.image_id.rsplit("cell", 1)[-1])
        rgb, mask = _cell(k)
        hr, up = _direct(rgb, 4)
        expected = texture_ratio(hr, up, mask == 255)
        assert score.texture == pytest.approx(expected, rel=1e-4)
        assert 0.2 < score.texture < 1  # bicubic is smoother than the HR image
    assert table.value(4, "bicubic", "texture") == pytest.approx(
        np.mean([s.texture for s in table.images])
    )


def test_gan_weights_are_evaluated_under_their_names(plain: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    tiny = {"num_features": 4, "num_blocks": 1}
    path = tmp_path / "srgan_x4.pt"
    save_weights(build_network("srgan", scale=4, **tiny), path, arch="srgan", scale=4,
                 arch_kwargs=tiny, dtype=torch.float32)  # fmt: skip
    table = evaluate_methods(
        data=plain, scales=(4,), methods=["srgan"], checkpoints={"srgan_x4": path}, figures=False
    )
    assert [s.method for s in table.images] == ["srgan"] * 3
    assert math.isfinite(table.value(4, "srgan", "psnr") or math.nan)
    assert "| SRGAN |" in table_markdown(table)


def test_checkpoint_of_another_arch_or_scale_is_refused(plain: Path, tiny_gp: Path) -> None:
    with pytest.raises(CheckpointError, match=r"gp_x4.pt: holds gp_x4, expected np_x4"):
        evaluate_methods(
            data=plain, scales=(4,), methods=["np"], checkpoints={"np_x4": tiny_gp}, figures=False
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scales": (3,)}, "--scale: expected one of 4, 8, got 3"),
        ({"methods": ["esrgan"]}, "--method: expected one of bicubic, srcnn, vdsr, srresnet, srg"),
        ({"methods": []}, "--method: no method given"),
        ({"split": "holdout"}, "--split: expected train, val or test, got 'holdout'"),
    ],
)
def test_bad_arguments(plain: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        evaluate_methods(data=plain, **kwargs)  # type: ignore[arg-type]


def test_parse_checkpoint_specs() -> None:
    assert parse_checkpoint_specs(["gp_x8=runs/a.pt"]) == {"gp_x8": Path("runs/a.pt")}
    with pytest.raises(UsageError, match=r"got 'bicubic_x4=a\.pt'"):
        parse_checkpoint_specs(["bicubic_x4=a.pt"])
    with pytest.raises(UsageError, match="got 'gp_x8'"):
        parse_checkpoint_specs(["gp_x8"])


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_prints_the_table_and_writes_files(plain: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["evaluate", "--data", str(plain), "--scale", "4", "--method", "bicubic"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--no-figures"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "table2.json").read_text(encoding="utf-8"))
    psnr_4 = doc["results"][0]["psnr"]
    assert f"| 4× | PSNR | {psnr_4:.4f} |" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["table2.csv", "table2.json", "table2.md"]


def test_cli_missing_folder_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert main(["evaluate", "--data", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (
        f"leukoscreen: error: {missing}: expected a folder of images, found no such folder\n"
    )
    assert not (tmp_path / "o").exists()


def test_cli_folder_without_images_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("no images here", encoding="utf-8")
    assert main(["evaluate", "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"leukoscreen: error: {tmp_path}: no images found")


def test_cli_mask_of_another_size_exit_2(plain: Path, capsys: pytest.CaptureFixture[str]) -> None:
    skimage.io.imsave(plain / "cell1_mask.png", np.zeros((100, 90), np.uint8), check_contrast=False)
    assert main(["evaluate", "--data", str(plain), "--method", "bicubic"]) == 2
    assert capsys.readouterr().err == (
        f"leukoscreen: error: {plain / 'cell1_mask.png'}: mask is 100x90, expected the "
        "image's 224x224\n"
    )


def test_cli_bad_checkpoint_spec_exit_2(plain: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--data", str(plain), "--checkpoint", "gp_x9=a.pt"]) == 2
    assert "--checkpoint: expected <method>_x<scale>=PATH" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the committed table, reproduced with the shipped weights on the real data


@pytest.mark.slow
def test_shipped_weights_reproduce_the_committed_table(shared_data: Path, tmp_path: Path) -> None:
    data = shared_data / "segmentation_WBC"
    committed_path = REPO / "docs" / "results" / "table2.json"
    if not data.is_dir():
        pytest.skip(f"segmentation_WBC not found at {data}")
    if not read_manifest():
        pytest.skip("no shipped weights yet")
    committed = json.loads(committed_path.read_text(encoding="utf-8"))
    manifest = read_manifest()
    stale = [
        key
        for key, entry in committed["weights"].items()
        if manifest.get(key, {}).get("sha256") != entry["sha256"]
    ]
    stale += [key for key in committed["missing"] if key in manifest]
    assert not stale, f"{committed_path} is stale for {stale}; re-run `leukoscreen evaluate`"
    args = ["evaluate", "--data", str(data), "--out", str(tmp_path), "--no-figures"]
    for scale in committed["scales"]:
        args += ["--scale", str(scale)]
    assert main(args) == 0
    fresh = json.loads((tmp_path / "table2.json").read_text(encoding="utf-8"))
    assert fresh["evaluated_ids"] == committed["evaluated_ids"]
    assert fresh["split_sizes"] == committed["split_sizes"]

    def key(row: dict[str, object]) -> tuple[object, ...]:
        return (row["scale"], row["method"], row["source"])

    assert sorted(map(key, fresh["results"])) == sorted(map(key, committed["results"]))
    by_key = {key(row): row for row in fresh["results"]}
    for row in committed["results"]:
        for metric in ("psnr", "ssim", "miou"):
            if metric in row:
                assert by_key[key(row)][metric] == pytest.approx(row[metric], abs=1e-3), key(row)


def test_write_card_copies_the_table_and_wall_times(
    plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    table = evaluate_methods(data=plain, scales=(4,), methods=["bicubic"], figures=False)
    write_results(table, results)
    run = tmp_path / "runs" / "gp_x8"
    run.mkdir(parents=True)
    history = [
        {"epoch": 1, "seconds": 60.0, "val_psnr": 27.5, "val_miou": 0.5},
        {"epoch": 2, "seconds": 90.0, "val_psnr": 28.25, "val_miou": 0.75},
    ]
    torch.save({"history": history}, run / "last.pt")
    gpu = tmp_path / "gpu.json"
    gpu_history = [{"epoch": e, "seconds": 3.0, "val_psnr": 30.0 + e} for e in (1, 2, 3)]
    gpu.write_text(
        json.dumps({"hardware": "GPU X", "runs": {"np_x4": {"history": gpu_history}}}),
        encoding="utf-8",
    )
    # the shipped np_x4 came from the GPU run's epoch 3; gp_x8 from neither run
    manifest = {
        "np_x4": {"metrics": {"epoch": 3, "val_psnr": 33.0}},
        "gp_x8": {"metrics": {"epoch": 2, "val_psnr": 28.0}},
    }
    monkeypatch.setattr(report, "read_manifest", lambda: manifest)
    card = tmp_path / "card.md"
    card.write_text(
        "# Card\n\n## Training\n<!-- walltime:begin -->\n| run | trained on |\n|---|---|\n"
        f"| gp_x8 | CPU ({run.parent}) | 1 | 9.9 min | 1.000 | – | – |\n"
        "| old_x4 | CPU (gone) | 10 | 8.0 min | 39.332 | – | – |\nTODO\n<!-- walltime:end -->\n\n"
        "## Evaluation\n<!-- table2:begin -->\nTODO\n<!-- table2:end -->\nend\n",
        encoding="utf-8",
    )
    runs = ["--runs", str(gpu), "--runs", str(run.parent)]
    card_tool.main(["--card", str(card), "--results", str(results), *runs])
    text = card.read_text(encoding="utf-8")
    assert "TODO" not in text
    rows = [
        line for line in text.splitlines() if line.startswith("| np_x4 |") or "| gp_x8 |" in line
    ]
    assert rows == [
        "| np_x4 | GPU X | 3 | 0.1 min | 33.000 | – | epoch 3 |",
        f"| gp_x8 | CPU ({run.parent}) | 2 | 2.5 min | 28.250 | 0.750 | – |",
    ]
    # the run folder a checkout lacks keeps its row; the run it has is written anew, once
    assert "| old_x4 | CPU (gone) | 10 | 8.0 min | 39.332 | – | – |\n<!-- walltime:end -->" in text
    assert "9.9 min" not in text
    assert "### Table 2: SR benchmark" in text
    psnr_4 = table.value(4, "bicubic", "psnr")
    assert psnr_4 is not None
    assert f"| 4× | PSNR | {psnr_4:.4f} |" in text
    assert text.endswith("<!-- table2:end -->\nend\n")
    card.write_text("# no markers\n", encoding="utf-8")
    with pytest.raises(UsageError, match="markers <!-- table2:begin -->"):
        report.write_card(card, results, run.parent)
