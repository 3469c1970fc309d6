"""``leukoscreen run`` end to end on the synthetic slides, with a tiny random-weight network.

Every run goes through :func:`leukoscreen.pipeline.cli.main` (or ``run_slide`` for the worker
fault) on a real LocalCluster. Bad inputs: one line naming the file, exit status 2, nothing marked
complete. Faults: SIGKILL of the whole run then ``--resume``, and a worker killed mid-run, give
the same store as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from distributed import Client, LocalCluster
from run_helpers import (
    BATCH,
    HR,
    LR,
    MARGIN,
    assert_same_store,
    done_batches,
    kill_when,
    tiny_checkpoint,
    write_config,
)

from leukoscreen.model.inference import load_checkpoint
from leukoscreen.pipeline import store
from leukoscreen.pipeline.cli import main
from leukoscreen.pipeline.config import load_config
from leukoscreen.pipeline.crops import crop_origins
from leukoscreen.pipeline.run import run_slide


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny GP checkpoints: x8, another x8 (other weights), x4; and a config file for each."""
    folder = tmp_path_factory.mktemp("models")
    out = {
        "x8": tiny_checkpoint(folder / "x8.pt", scale=8, seed=0),
        "x8b": tiny_checkpoint(folder / "x8b.pt", scale=8, seed=1),
        "x4": tiny_checkpoint(folder / "x4.pt", scale=4, seed=0),
    }
    for name in list(out):
        out[f"{name}.toml"] = write_config(folder / f"{name}.toml", out[name])
    return out


@pytest.fixture(scope="module")
def reference(svs_slide, models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run on the synthetic .svs."""
    out = tmp_path_factory.mktemp("ref") / "smear.leukoscreen.zarr"
    status = main(["run", str(svs_slide.path), "--out", str(out), "--config",
                   str(models["x8.toml"])])  # fmt: skip
    assert status == 0
    return out


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("leukoscreen")]
    assert len(errors) == 1, lines
    return errors[0]


def assert_not_complete(path: Path) -> None:
    assert not path.exists() or store.read_attrs(path)["status"] != "complete"


# ----------------------------------------------------------------------------- end to end


def test_run_writes_every_cell(reference: Path, svs_slide, models) -> None:
    attrs = store.read_attrs(reference)
    assert attrs["status"] == "complete" and attrs["scale"] == 8
    assert attrs["slide"]["vendor"] == "aperio" and attrs["slide"]["mpp"] == 0.5
    assert attrs["slide"]["size_px"] == [3000, 2500]
    assert attrs["config"]["inference"]["batch_size"] == BATCH
    assert attrs["model"]["checkpoint_sha256"] == load_checkpoint(models["x8"]).checkpoint_sha256
    assert set(attrs["timings"]) >= {"detect_s", "sr_s", "total_s", "model_s"}

    cells = store.open_cells(reference)
    n = len(svs_slide.cells)
    assert len(cells) == n == 12
    table = cells.table
    np.testing.assert_array_equal(table["cell_id"], np.arange(n))
    np.testing.assert_array_equal(table["batch"], np.arange(n) // BATCH)
    order = np.lexsort((table["col"], table["row"]))
    np.testing.assert_array_equal(order, np.arange(n))  # ids follow (row, col)
    np.testing.assert_allclose(table["row_um"], table["row"] * 0.5)
    np.testing.assert_allclose(table["col_um"], table["col"] * 0.5)
    truth = np.array(sorted((c.row, c.col) for c in svs_slide.cells))
    np.testing.assert_allclose(np.stack([table["row"], table["col"]], 1), truth, atol=2.0)

    assert cells.sr.shape == (n, HR, HR, 3) and cells.sr.chunks[0] == (BATCH,) * (n // BATCH)
    assert cells.lr.shape == (n, LR, LR, 3) and cells.parsing.shape == (n, HR, HR)
    # the LR crops are the drawn pixels around each detected centre (white past the border)
    padded = np.pad(svs_slide.rgb, ((20, 20), (20, 20), (0, 0)), constant_values=255)
    row0, col0 = crop_origins(table["row"], table["col"], size_px=HR // 8, margin_px=MARGIN)
    lr = cells.lr.compute()
    for i in range(n):
        r, c = row0[i] + 20, col0[i] + 20
        np.testing.assert_array_equal(lr[i], padded[r : r + LR, c : c + LR])
    # the SR cells are the network's output on those crops, margin trimmed
    upscaler = load_checkpoint(models["x8"], device="cpu", precision="fp32")
    torch.set_num_threads(1)
    sr, parsing = upscaler.upscale(lr)
    trim = MARGIN * 8
    expected_sr = sr[:, trim:-trim, trim:-trim]
    np.testing.assert_allclose(cells.sr.compute(), expected_sr, atol=1)
    np.testing.assert_array_equal(cells.parsing.compute(), parsing[:, trim:-trim, trim:-trim])


def test_run_several_slides_one_store_each(
    svs_slide, tiff_slide, models, tmp_path, capsys, reference
):
    tiff = tmp_path / "other.tif"
    shutil.copy(tiff_slide.path, tiff)
    status = main(["run", str(svs_slide.path), str(tiff), "--out", str(tmp_path),
                   "--config", str(models["x8.toml"])])  # fmt: skip
    assert status == 0
    out = capsys.readouterr().out
    assert out.count("12 cells in 6 batches") == 2
    svs_store = tmp_path / "smear.leukoscreen.zarr"
    tiff_store = tmp_path / "other.leukoscreen.zarr"
    assert store.read_attrs(tiff_store)["slide"]["vendor"] != "aperio"
    # same pixels, same cells: the two formats give the same store contents
    assert_same_store(tiff_store, reference)
    assert_same_store(svs_store, reference)


def test_run_refuses_two_slides_with_one_store_name(svs_slide, tiff_slide, models, capsys) -> None:
    assert main(["run", str(svs_slide.path), str(tiff_slide.path),
                 "--config", str(models["x8.toml"])]) == 2  # fmt: skip
    line = error_line(capsys)
    assert line.startswith(f"leukoscreen: error: {tiff_slide.path}: its store ")
    assert line.endswith(
        f"would also hold {svs_slide.path}; expected slides with different file names"
    )


def test_run_slide_without_leukocytes_is_a_complete_empty_store(models, tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal((236, 205, 208), 3.0, (600, 500, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "empty.tif"
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")  # fmt: skip
    out = tmp_path / "empty.leukoscreen.zarr"
    status = main(["run", str(path), "--out", str(out), "--config", str(models["x8.toml"])])
    assert status == 0
    captured = capsys.readouterr()
    assert "no leukocytes found; wrote a complete store with zero cells" in captured.out
    assert f"warning: {path}: no stained foreground found" in captured.err
    cells = store.open_cells(out)
    assert cells.sr.shape == (0, HR, HR, 3) and len(cells.table["cell_id"]) == 0
    assert store.read_attrs(out)["detection"]["stain"]["red_cell_density"] == 0.0


def test_store_records_the_stain_it_detected_with(reference: Path, svs_slide) -> None:
    stain = store.read_attrs(reference)["detection"]["stain"]
    # The brightest part sampled is the glass band (246, 246, 244 drawn, plus noise); the red
    # cells' optical density is taken against it. Colours from conftest.
    np.testing.assert_allclose(stain["background_rgb"], [246, 246, 244], atol=2)
    drawn_red = -np.log(np.array([214, 128, 138]) / np.array([246, 246, 244]))
    cos = np.dot(stain["red_cell_od"], drawn_red) / np.linalg.norm(drawn_red)
    assert cos > 0.999 and 0.0 < stain["foreground_fraction"] < 1.0


# ----------------------------------------------------------------------------- detect only


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_detect_table_equals_the_store_table(
    reference: Path, svs_slide, models, tmp_path, capsys, suffix
) -> None:
    table = tmp_path / f"cells{suffix}"
    status = main(["detect", str(svs_slide.path), "--out", str(table),
                   "--config", str(models["x8.toml"])])  # fmt: skip
    assert status == 0
    assert f"{svs_slide.path}: 12 leukocytes -> {table}" in capsys.readouterr().out
    if suffix == ".csv":
        import csv

        with table.open() as handle:
            rows = list(csv.DictReader(handle))
        got = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    else:
        import pyarrow.parquet as pq

        got = {k: np.asarray(v) for k, v in pq.read_table(table).to_pydict().items()}
    expected = store.read_table(reference)
    assert list(got) == [
        "cell_id", "row", "col", "row_um", "col_um", "bbox_row0", "bbox_col0", "bbox_row1",
        "bbox_col1", "area_um2", "score", "batch",
    ]  # fmt: skip
    for name in ("cell_id", "row", "col", "row_um", "col_um", "area_um2", "batch"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-6)
    bbox = np.stack([got[f"bbox_{k}"] for k in ("row0", "col0", "row1", "col1")], axis=1)
    np.testing.assert_array_equal(bbox, expected["bbox"])


def test_detect_several_slides_into_a_folder(svs_slide, tiff_slide, tmp_path, capsys) -> None:
    folder = tmp_path / "tables"
    # Both fixtures are named smear.*: one table name for two slides is refused, before work.
    assert main(["detect", str(svs_slide.path), str(tiff_slide.path), "--out", str(folder)]) == 2
    assert "would also hold" in error_line(capsys) and not folder.exists()
    other = tmp_path / "other.tif"
    shutil.copy(tiff_slide.path, other)
    assert main(["detect", str(svs_slide.path), str(other), "--out", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(": 12 leukocytes -> " in line for line in lines)
    assert sorted(p.name for p in folder.iterdir()) == ["other.cells.csv", "smear.cells.csv"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["{missing}"], "{missing}: no such file"),
        (["{svs}", "--out", "{tmp}/cells.txt"], "{tmp}/cells.txt: expected a .csv or .parquet"),
        (["{svs}", "{svs}", "--out", "{tmp}/t.csv"], "{tmp}/t.csv: with several slides, --out is"),
        (["{png}"], "{png}: no microns-per-pixel"),
    ],
)
def test_detect_bad_input(svs_slide, tmp_path, capsys, args, expected) -> None:
    png = tmp_path / "field.png"
    import skimage.io

    skimage.io.imsave(png, svs_slide.rgb[:64, :64], check_contrast=False)
    names = {"missing": tmp_path / "none.svs", "svs": svs_slide.path, "tmp": tmp_path, "png": png}
    status = main(["detect", *(a.format(**names) for a in args)])
    assert status == 2
    assert error_line(capsys).startswith("leukoscreen: error: " + expected.format(**names))
    assert not list(tmp_path.glob("*.csv")) and not list(tmp_path.glob(".*tmp*"))


def test_run_default_output_is_in_the_current_folder(
    svs_slide, models, tmp_path, monkeypatch, reference
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(reference, tmp_path / "smear.leukoscreen.zarr")
    # an existing default store is refused without flags; --resume finds it complete
    assert main(["run", str(svs_slide.path), "--config", str(models["x8.toml"])]) == 2
    assert main(["run", str(svs_slide.path), "--resume", "--config", str(models["x8.toml"])]) == 0
    assert_same_store(tmp_path / "smear.leukoscreen.zarr", reference)


EXAMPLE = Path(__file__).resolve().parents[1] / "pipeline" / "example" / "bccd_x8.svs"


def _example_recall(out: Path) -> tuple[int, int]:
    """(WBC boxes holding a detected centre, boxes) of the example slide's ground truth."""
    import json

    truth = json.loads(EXAMPLE.with_suffix(".json").read_text())["wbc_boxes"]
    table = store.read_table(out)
    hit = sum(
        bool(np.any((table["row"] >= b["row0"]) & (table["row"] < b["row1"])
                    & (table["col"] >= b["col0"]) & (table["col"] < b["col1"])))
        for b in truth
    )  # fmt: skip
    return hit, len(truth)


@pytest.mark.skipif(not EXAMPLE.is_file(), reason="the example slide is not built")
def test_run_example_slide_with_a_tiny_network(models, tmp_path) -> None:
    out = tmp_path / "bccd_x8.leukoscreen.zarr"
    assert main(["run", str(EXAMPLE), "--scale", "8", "--out", str(out),
                 "--config", str(models["x8.toml"])]) == 0  # fmt: skip
    cells = store.open_cells(out)
    assert cells.attrs["slide"]["mpp"] == 0.52 and cells.attrs["slide"]["vendor"] == "aperio"
    hit, total = _example_recall(out)
    assert hit >= 0.95 * total
    assert cells.sr.shape == (len(cells), HR, HR, 3)
    # each cell's parsing confidence: the winning class's share over its cell pixels
    confidence = cells.table["parsing_confidence"]
    assert confidence.shape == (len(cells),) and confidence.dtype == np.float32
    parsing = cells.parsing.compute()
    has_cell = (parsing > 0).any(axis=(1, 2))
    assert np.all(confidence[~has_cell] == 0)
    assert np.all((confidence[has_cell] >= 1 / 3 - 1e-6) & (confidence[has_cell] <= 1))


@pytest.mark.slow
@pytest.mark.skipif(not EXAMPLE.is_file(), reason="the example slide is not built")
def test_run_example_slide_with_shipped_weights(tmp_path, capsys) -> None:
    from leukoscreen.model.config import DEFAULT_ARCH
    from leukoscreen.model.errors import CheckpointError
    from leukoscreen.model.inference import load_pretrained

    try:
        load_pretrained(scale=8, device="cpu")
    except CheckpointError as err:
        pytest.skip(f"no shipped x8 weights: {err}")
    out = tmp_path / "bccd_x8.leukoscreen.zarr"
    assert main(["run", str(EXAMPLE), "--scale", "8", "--out", str(out)]) == 0  # README command
    assert f"-> {out}" in capsys.readouterr().out
    cells = store.open_cells(out)
    assert cells.sr.shape[1:] == (224, 224, 3) and cells.lr.shape[1:] == (36, 36, 3)
    assert cells.attrs["model"]["arch"] == DEFAULT_ARCH and cells.parsing is not None
    hit, total = _example_recall(out)
    assert hit >= 0.95 * total
    # The default network's parsing map finds the cells' nuclei: the centre of every cell is cell
    # (not background) and at least 10 % of it nucleus in most cells (measured with the shipped
    # GP-SFT: 67 of 75 cells, median 76 %; the paper's GP: 73 of 75), the 16 px border strip is
    # almost never nucleus (measured 0.06 %) and mostly not cell (measured 35 % labelled cell,
    # GP 66 %: docs/model-card.md, parsing on other labs' cells).
    parsing = cells.parsing.compute()
    centre = parsing[:, 80:144, 80:144]
    assert ((centre > 0).mean(axis=(1, 2)) > 0.5).all()
    nucleus = (centre == 2).mean(axis=(1, 2))
    assert (nucleus > 0.1).mean() >= 0.85
    border = np.ones(parsing.shape[1:], dtype=bool)
    border[16:-16, 16:-16] = False
    assert (parsing[:, border] == 2).mean() < 0.02
    assert (parsing[:, border] > 0).mean() < 0.45
    assert (cells.table["parsing_confidence"] > 0.5).all()


def test_run_on_an_existing_scheduler(svs_slide, models, reference, tmp_path, capsys) -> None:
    out = tmp_path / "remote.leukoscreen.zarr"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:  # fmt: skip
        status = main(["run", str(svs_slide.path), "--out", str(out), "--scheduler",
                       cluster.scheduler_address, "--config", str(models["x8.toml"])])  # fmt: skip
        assert status == 0
        assert len(cluster.workers) == 1  # the run used this cluster and left it running
    assert "leukoscreen: Dask dashboard at http" in capsys.readouterr().err
    assert_same_store(out, reference)


def test_bad_scheduler_address(svs_slide, models, tmp_path, capsys) -> None:
    out = tmp_path / "x.leukoscreen.zarr"
    status = main(["run", str(svs_slide.path), "--out", str(out), "--scheduler",
                   "tcp://127.0.0.1:9", "--config", str(models["x8.toml"])])  # fmt: skip
    assert status == 2
    line = error_line(capsys)
    assert line.startswith("leukoscreen: error: tcp://127.0.0.1:9: cannot connect to the Dask")
    assert not out.exists()


# ----------------------------------------------------------------------------- bad input


def test_bad_missing_path(tmp_path, models, capsys) -> None:
    missing = tmp_path / "nope.svs"
    assert main(["run", str(missing), "--config", str(models["x8.toml"])]) == 2
    assert error_line(capsys) == f"leukoscreen: error: {missing}: no such file"


def test_bad_directory(tmp_path, models, capsys) -> None:
    assert main(["run", str(tmp_path), "--config", str(models["x8.toml"])]) == 2
    assert f"{tmp_path}: expected a slide file, found a directory" in error_line(capsys)


def test_bad_text_file(tmp_path, models, capsys) -> None:
    text = tmp_path / "notes.svs"
    text.write_text("not a slide\n")
    out = tmp_path / "notes.leukoscreen.zarr"
    assert main(["run", str(text), "--out", str(out), "--config", str(models["x8.toml"])]) == 2
    line = error_line(capsys)
    assert line.startswith(f"leukoscreen: error: {text}: expected a slide")
    assert not out.exists()


def test_bad_truncated_tiff(tmp_path, svs_slide, models, capsys) -> None:
    cut = tmp_path / "cut.svs"
    data = svs_slide.path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "cut.leukoscreen.zarr"
    assert main(["run", str(cut), "--out", str(out), "--config", str(models["x8.toml"])]) == 2
    assert error_line(capsys).startswith(f"leukoscreen: error: {cut}: ")
    assert not out.exists()


def test_bad_png_without_mpp(tmp_path, svs_slide, models, capsys) -> None:
    from PIL import Image

    png = tmp_path / "field.png"
    Image.fromarray(svs_slide.rgb[:400, :400]).save(png)
    assert main(["run", str(png), "--config", str(models["x8.toml"])]) == 2
    assert error_line(capsys) == (
        f"leukoscreen: error: {png}: no microns-per-pixel in the slide metadata; pass --mpp"
    )


def test_bad_mpp_far_from_the_model(svs_slide, models, tmp_path, capsys) -> None:
    out = tmp_path / "x.leukoscreen.zarr"
    status = main(["run", str(svs_slide.path), "--mpp", "5", "--out", str(out),
                   "--config", str(models["x8.toml"])])  # fmt: skip
    assert status == 2
    assert error_line(capsys) == (
        f"leukoscreen: error: {svs_slide.path}: pixel size 5 um/px is 9.62x the 0.52 um/px the "
        "x8 model expects (accepted: within 2.5x); check the slide's mpp (--mpp) or choose the "
        "other --scale"
    )
    assert not out.exists()


def test_bad_scale_without_weights(svs_slide, models, tmp_path, capsys) -> None:
    out = tmp_path / "x.leukoscreen.zarr"
    status = main(["run", str(svs_slide.path), "--scale", "4", "--out", str(out),
                   "--config", str(models["x8.toml"])])  # fmt: skip
    assert status == 2
    assert error_line(capsys) == f"leukoscreen: error: {models['x8']}: holds scale x8, expected x4"
    assert not out.exists()


def test_bad_scale_not_offered(svs_slide, models, capsys) -> None:
    assert main(["run", str(svs_slide.path), "--scale", "3",
                 "--config", str(models["x8.toml"])]) == 2  # fmt: skip
    assert error_line(capsys) == "leukoscreen: error: --scale: expected one of 4, 8, found int 3"


def test_bad_batch_size_is_refused_where_it_enters(svs_slide, models, tmp_path, capsys) -> None:
    out = tmp_path / "a.leukoscreen.zarr"
    assert main(["run", str(svs_slide.path), "--batch-size", "0", "--out", str(out),
                 "--config", str(models["x8.toml"])]) == 2  # fmt: skip
    assert error_line(capsys) == "leukoscreen: error: --batch-size: expected >= 1, found 0"
    bad = tmp_path / "bad.toml"
    bad.write_text("[inference]\nbatch_size = -3\n")
    assert main(["run", str(svs_slide.path), "--out", str(out), "--config", str(bad)]) == 2
    assert error_line(capsys) == (
        f"leukoscreen: error: {bad}: key 'inference.batch_size': expected >= 1, found -3"
    )
    assert not out.exists()


def test_bad_existing_output(svs_slide, models, reference, capsys) -> None:
    before = (reference / "zarr.json").read_bytes()
    status = main(["run", str(svs_slide.path), "--out", str(reference),
                   "--config", str(models["x8.toml"])])  # fmt: skip
    assert status == 2
    assert error_line(capsys) == (
        f"leukoscreen: error: {reference}: output store already exists; pass --resume to "
        "continue it or --overwrite to start over"
    )
    assert (reference / "zarr.json").read_bytes() == before


def test_bad_unwritable_output_folder(svs_slide, models, tmp_path, capsys) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder should be")
    out = blocker / "smear.leukoscreen.zarr"
    status = main(["run", str(svs_slide.path), "--out", str(out),
                   "--config", str(models["x8.toml"])])  # fmt: skip
    assert status == 2
    assert error_line(capsys) == (
        f"leukoscreen: error: {out}: output folder {blocker} does not exist or is not a folder"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_bad_read_only_output_folder(svs_slide, models, tmp_path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    out = locked / "smear.leukoscreen.zarr"
    status = main(["run", str(svs_slide.path), "--out", str(out),
                   "--config", str(models["x8.toml"])])  # fmt: skip
    assert status == 2
    assert error_line(capsys).startswith(f"leukoscreen: error: {out}: cannot write into")


def test_bad_resume_and_overwrite_together(svs_slide, models, capsys) -> None:
    assert main(["run", str(svs_slide.path), "--resume", "--overwrite",
                 "--config", str(models["x8.toml"])]) == 2  # fmt: skip
    assert error_line(capsys) == "leukoscreen: error: --resume and --overwrite: choose one"


@pytest.mark.parametrize(
    ("which", "model", "message"),
    [
        ("slide", "x8", "slide header sha256"),
        ("scale", "x4", "scale 8, this run has 4"),
        ("model", "x8b", "checkpoint sha256"),
    ],
)
def test_bad_resume_of_another_run(
    which, model, message, svs_slide, tiff_slide, models, reference, tmp_path, capsys
) -> None:
    copy = tmp_path / "copy.leukoscreen.zarr"
    shutil.copytree(reference, copy)
    store.CellStore.open(copy).write_batch(0, *_zeros_batch())  # any write would show
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    slide = tiff_slide.path if which == "slide" else svs_slide.path
    args = [
        "run",
        str(slide),
        "--out",
        str(copy),
        "--resume",
        "--config",
        str(models[f"{model}.toml"]),
    ]
    if which == "scale":
        args += ["--scale", "4"]
    assert main(args) == 2
    line = error_line(capsys)
    assert line.startswith(f"leukoscreen: error: {copy}: cannot resume: the store was made with")
    assert message in line and line.endswith("use --overwrite to start over")
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


def _zeros_batch() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.zeros((BATCH, HR, HR, 3), np.uint8), np.zeros((BATCH, HR, HR), np.uint8),
            np.zeros((BATCH, LR, LR, 3), np.uint8), np.zeros(BATCH, np.float32))  # fmt: skip


def test_overwrite_starts_over(svs_slide, models, reference, tmp_path) -> None:
    copy = tmp_path / "copy.leukoscreen.zarr"
    shutil.copytree(reference, copy)
    store.CellStore.open(copy).write_batch(0, *_zeros_batch())  # damage a batch
    assert main(["run", str(svs_slide.path), "--out", str(copy), "--overwrite",
                 "--config", str(models["x8.toml"])]) == 0  # fmt: skip
    assert_same_store(copy, reference)


# ----------------------------------------------------------------------------- one writer


def test_a_second_writer_is_refused_while_a_run_holds_the_store(
    svs_slide, models, reference, tmp_path, capsys, lock_held
) -> None:
    # Another process holds the writer lock of a complete store and of a new path, as a run in
    # progress would: run, --resume and --overwrite are refused and nothing is touched.
    copy, new = tmp_path / "copy.leukoscreen.zarr", tmp_path / "new.leukoscreen.zarr"
    shutil.copytree(reference, copy)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    with lock_held(copy) as holds_copy, lock_held(new) as holds_new:
        cases = [(copy, ["--resume"], holds_copy), (copy, ["--overwrite"], holds_copy),
                 (new, [], holds_new)]  # fmt: skip
        for out, flags, holder in cases:
            args = ["run", str(svs_slide.path), "--out", str(out), *flags]
            assert main([*args, "--config", str(models["x8.toml"])]) == 2
            assert error_line(capsys).startswith(
                f"leukoscreen: error: {out}: another leukoscreen run is writing this store "
                f"(pid {holder.pid} on host "
            )
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before
    assert not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.leukoscreen.zarr"]


def test_run_takes_over_the_lock_of_a_dead_run(svs_slide, models, reference, tmp_path) -> None:
    out = tmp_path / "a.leukoscreen.zarr"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "a.leukoscreen.zarr.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started_at": 0}))
    assert main(["run", str(svs_slide.path), "--out", str(out),
                 "--config", str(models["x8.toml"])]) == 0  # fmt: skip
    assert_same_store(out, reference)
    assert not lock.exists()  # released at the end


# ----------------------------------------------------------------------------- faults


def _table_written(out: Path) -> bool:
    try:
        return bool(store.read_attrs(out)["table_written"])
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    ["store-created", "table-written", "first-batch", "half-the-batches"],
)
def test_sigkill_then_resume_gives_the_same_store(
    point, svs_slide, models, reference, tmp_path
) -> None:
    out = tmp_path / "killed.leukoscreen.zarr"
    ready = {
        "store-created": lambda: store.is_store(out),
        "table-written": lambda: _table_written(out),
        "first-batch": lambda: done_batches(out) >= 1,
        "half-the-batches": lambda: done_batches(out) >= 3,
    }[point]
    args = ["run", str(svs_slide.path), "--out", str(out), "--config", str(models["x8.toml"])]
    kill_when(args, ready)
    assert store.read_attrs(out)["status"] == "running"
    assert main([*args, "--resume"]) == 0
    assert_same_store(out, reference)


@pytest.mark.slow
def test_worker_killed_mid_run_loses_no_cell(svs_slide, models, reference, tmp_path) -> None:
    config = load_config(models["x8.toml"])
    out = tmp_path / "worker.leukoscreen.zarr"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        result: dict[str, object] = {}

        def go() -> None:
            try:
                result["summary"] = run_slide(svs_slide.path, config, out=out, client=client,
                                              progress=False)  # fmt: skip
            except BaseException as err:  # surfaced below
                result["error"] = err

        thread = threading.Thread(target=go)
        thread.start()
        deadline = time.monotonic() + 120
        busy: list[str] = []
        while not busy:
            assert thread.is_alive() and time.monotonic() < deadline, result
            if done_batches(out) >= 1:
                processing = client.processing()
                busy = [w for w, keys in processing.items()
                        if any("leukoscreen-sr" in str(k) for k in keys)]  # fmt: skip
            time.sleep(0.005)
        pids = client.run(os.getpid)
        done_before = done_batches(out)
        os.kill(pids[busy[0]], signal.SIGKILL)
        thread.join(timeout=180)
        assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    assert done_before < 6, "the kill came after the last batch: nothing was tested"
    summary = result["summary"]
    assert summary.n_cells == 12
    assert store.read_attrs(out)["status"] == "complete"
    assert zarr.open_array(out / "batches" / "done", mode="r")[:].all()
    assert_same_store(out, reference)


# ----------------------------------------------------------------------------- pure helpers


def test_check_mpp_accepts_within_tolerance_and_scales_with_x4() -> None:
    from leukoscreen.model.errors import UsageError
    from leukoscreen.pipeline.config import Config, override
    from leukoscreen.pipeline.run import check_mpp, expected_mpp

    x8 = Config()
    x4 = override(Config(), **{"inference.scale": 4})
    assert expected_mpp(x8) == 0.52 and expected_mpp(x4) == 0.26
    check_mpp(Path("s.svs"), 0.52 * 2.5, x8)
    check_mpp(Path("s.svs"), 0.52 / 2.5, x8)
    with pytest.raises(UsageError, match=r"^s.svs: pixel size 0.1 um/px is 0.385x the 0.26 um/px"):
        check_mpp(Path("s.svs"), 0.1, x4)


def test_table_columns_orders_cells_by_row_then_col() -> None:
    from leukoscreen.pipeline.detect import CellTable
    from leukoscreen.pipeline.run import table_columns
    from leukoscreen.pipeline.store_layout import TABLE_COLUMNS, number_cells

    cells = CellTable(
        row=np.array([50.0, 10.0, 10.0]),
        col=np.array([5.0, 30.0, 20.0]),
        bbox=np.array([[40, 0, 60, 10], [0, 20, 20, 40], [0, 10, 20, 30]]),
        area_um2=np.array([1.0, 2.0, 3.0]),
        score=np.array([0.1, 0.2, 0.3]),
    )
    columns = table_columns(cells, mpp=0.5)
    assert "cell_id" not in columns and "batch" not in columns  # the store numbers the cells
    table = number_cells(columns, batch_size=2)
    assert list(table) == list(TABLE_COLUMNS)
    np.testing.assert_array_equal(table["cell_id"], [0, 1, 2])
    np.testing.assert_array_equal(table["row"], [10.0, 10.0, 50.0])
    np.testing.assert_array_equal(table["col"], [20.0, 30.0, 5.0])
    np.testing.assert_array_equal(table["col_um"], [10.0, 15.0, 2.5])
    np.testing.assert_array_equal(table["area_um2"], [3.0, 2.0, 1.0])
    np.testing.assert_array_equal(table["bbox"][0], [0, 10, 20, 30])
    np.testing.assert_array_equal(table["batch"], [0, 0, 1])


def test_plan_run_builds_geometry_and_spec_once_and_refuses_resume_with_overwrite() -> None:
    from leukoscreen.model.errors import UsageError
    from leukoscreen.pipeline.config import Config, override
    from leukoscreen.pipeline.crops import CropGeometry
    from leukoscreen.pipeline.run import plan_run

    plan = plan_run(override(Config(), **{"inference.scale": 4}))
    assert plan.geometry == CropGeometry(scale=4, hr_size_px=224, margin_px=4)
    assert (plan.spec.scale, plan.spec.arch, plan.spec.checkpoint) == (4, "default", "")
    both = override(Config(), **{"output.resume": True, "output.overwrite": True})
    with pytest.raises(UsageError, match=r"^--resume and --overwrite: choose one$"):
        plan_run(both)


def test_default_output_is_the_stem_in_the_current_folder(monkeypatch, tmp_path) -> None:
    from leukoscreen.pipeline.run import default_output

    monkeypatch.chdir(tmp_path)
    assert default_output(Path("/data/scan.1.svs")) == tmp_path / "scan.1.leukoscreen.zarr"
    assert default_output(Path("a.tif"), Path("/o")) == Path("/o/a.leukoscreen.zarr")
