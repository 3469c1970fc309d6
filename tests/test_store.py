"""The Zarr v3 output store: layout, one writer per chunk, resume checks, reading it back."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch
import zarr

from leukoscreen.model.errors import OutputError, OutputExistsError
from leukoscreen.pipeline import store
from leukoscreen.pipeline.dataset import CellDataset

H, LR = 16, 6  # HR side, LR side (core 2 at x8 + 2 x margin 2)
B = 4

IDENTITY = store.StoreIdentity(
    slide_path="/slides/a.svs",
    slide_size_px=(3000, 2500),
    slide_header_sha256="ab" * 32,
    slide_vendor="aperio",
    mpp=0.5,
    scale=8,
    arch="gp",
    checkpoint_sha256="cd" * 32,
    has_prior=True,
    hr_size_px=H,
    margin_px=2,
    batch_size=B,
)


def make_columns(n: int) -> dict[str, np.ndarray]:
    """What the run hands the store: every column but cell_id and batch, which the store derives."""
    ids = np.arange(n, dtype=np.int64)
    rows = 10.0 * ids + 0.25
    cols = 5.0 * ids + 0.5
    return {
        "row": rows,
        "col": cols,
        "row_um": rows * 0.5,
        "col_um": cols * 0.5,
        "bbox": np.stack([ids, ids + 1, ids + 10, ids + 11], axis=1).astype(np.int64),
        "area_um2": 30.0 + ids,
        "score": np.linspace(0.5, 1.0, n).astype(np.float32),
    }


def make_table(n: int, batch_size: int = B) -> dict[str, np.ndarray]:
    """The table the store must hold."""
    ids = np.arange(n, dtype=np.int64)
    return {"cell_id": ids, **make_columns(n), "batch": ids // batch_size}


def batch_pixels(batch: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Recognisable blocks: every value encodes the batch (and the cell for SR and confidence)."""
    sr = np.zeros((n, H, H, 3), np.uint8) + (10 * (batch + 1) + np.arange(n))[:, None, None, None]
    parsing = np.full((n, H, H), batch % 3, np.uint8)
    lr = np.full((n, LR, LR, 3), 200 + batch, np.uint8)
    confidence = (0.5 + 0.1 * batch + 0.01 * np.arange(n)).astype(np.float32)
    return sr.astype(np.uint8), parsing, lr, confidence


def new_store(tmp_path: Path, n: int, identity: store.StoreIdentity = IDENTITY) -> Path:
    path = tmp_path / "a.leukoscreen.zarr"
    cells = store.CellStore.create(path, identity, config={"inference": {"scale": 8}})
    cells.write_table(make_columns(n))
    return path


def fill(path: Path, n: int, batches: list[int] | None = None) -> None:
    cells = store.CellStore.open(path)
    assert cells.n_cells == n
    for b in batches if batches is not None else range(cells.n_batches):
        start, stop = cells.batch_bounds(b)
        cells.write_batch(b, *batch_pixels(b, stop - start))
        cells.mark_done(b)


def test_create_store_records_identity_and_running_status(tmp_path: Path) -> None:
    path = tmp_path / "a.leukoscreen.zarr"
    store.CellStore.create(path, IDENTITY, config={"inference": {"scale": 8}})
    attrs = store.read_attrs(path)
    assert attrs["status"] == "running"
    assert attrs["format_version"] == store.FORMAT_VERSION
    assert attrs["slide"] == {
        "path": "/slides/a.svs",
        "size_px": [3000, 2500],
        "header_sha256": "ab" * 32,
        "vendor": "aperio",
        "mpp": 0.5,
    }
    assert attrs["model"] == {"arch": "gp", "checkpoint_sha256": "cd" * 32, "has_prior": True}
    assert attrs["scale"] == 8 and attrs["config"] == {"inference": {"scale": 8}}
    assert attrs["geometry"]["lr_size_px"] == LR and attrs["table_written"] is False
    meta = json.loads((path / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["node_type"] == "group"
    assert store.StoreIdentity.from_attrs(attrs) == IDENTITY


def test_cell_arrays_are_chunked_one_batch_per_chunk(tmp_path: Path) -> None:
    path = new_store(tmp_path, 10)
    root = zarr.open_group(path, mode="r")
    expected = {
        "cells/sr": ((10, H, H, 3), (B, H, H, 3)),
        "cells/parsing": ((10, H, H), (B, H, H)),
        "cells/lr": ((10, LR, LR, 3), (B, LR, LR, 3)),
        "batches/done": ((3,), (1,)),
        "cells/table/bbox": ((10, 4), (10, 4)),
        "cells/table/row": ((10,), (10,)),
    }
    for name, (shape, chunks) in expected.items():
        array = root[name]
        assert (array.shape, array.chunks) == (shape, chunks), name
    assert root["cells/sr"].dtype == np.uint8 and root["batches/done"].dtype == np.bool_
    assert store.read_attrs(path)["n_cells"] == 10
    assert store.read_attrs(path)["n_batches"] == 3
    table = store.read_table(path)
    for name, column in make_table(10).items():
        np.testing.assert_array_equal(table[name], column)
        assert table[name].dtype == column.dtype


def test_write_batch_fills_only_its_cells_then_marks_done(tmp_path: Path) -> None:
    path = new_store(tmp_path, 10)
    cells = store.CellStore.open(path)
    assert (cells.n_cells, cells.n_batches, cells.batch_size) == (10, 3, B)
    assert cells.batch_bounds(2) == (8, 10)
    sr, parsing, lr, confidence = batch_pixels(2, 2)  # the short last batch: cells 8, 9
    cells.write_batch(2, sr, parsing, lr, confidence)
    assert not cells.done().any()  # written, not yet marked
    cells.mark_done(2)
    np.testing.assert_array_equal(cells.done(), [False, False, True])
    column = store.read_table(path)["parsing_confidence"]
    np.testing.assert_array_equal(column, np.float32([0] * 8 + [0.7, 0.71]))
    assert column.dtype == np.float32
    root = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(root["cells/sr"][8:10], sr)
    np.testing.assert_array_equal(root["cells/parsing"][8:10], parsing)
    np.testing.assert_array_equal(root["cells/lr"][8:10], lr)
    assert not root["cells/sr"][:8].any()  # untouched cells read as the fill value


@pytest.mark.parametrize(
    ("batch", "n", "message"),
    [(0, 3, r"sr block has shape \(3, 16, 16, 3\)"), (3, 4, r"batch_index 3 out of range")],
)
def test_write_batch_rejects_wrong_blocks(tmp_path: Path, batch: int, n: int, message: str) -> None:
    path = new_store(tmp_path, 10)
    cells = store.CellStore.open(path)
    with pytest.raises(ValueError, match=message):
        cells.write_batch(batch, *batch_pixels(batch, n))
    assert not cells.done().any()


def test_store_without_prior_has_no_confidence_column(tmp_path: Path) -> None:
    path = new_store(tmp_path, 3, replace(IDENTITY, arch="np", has_prior=False))
    assert "parsing_confidence" not in store.read_table(path)


def test_write_batch_needs_parsing_when_the_store_has_it(tmp_path: Path) -> None:
    path = new_store(tmp_path, 4)
    sr, _, lr, confidence = batch_pixels(0, 4)
    cells = store.CellStore.open(path)
    with pytest.raises(ValueError, match="has cells/parsing"):
        cells.write_batch(0, sr, None, lr, confidence)
    with pytest.raises(ValueError, match=r"parsing_confidence column; the batch needs \(4,\)"):
        cells.write_batch(0, *batch_pixels(0, 4)[:3])


def _write_one(args: tuple[str, int]) -> int:
    path, batch = args
    cells = store.CellStore.open(Path(path))
    start, stop = cells.batch_bounds(batch)
    cells.write_batch(batch, *batch_pixels(batch, stop - start))
    cells.mark_done(batch)
    return os.getpid()


def test_concurrent_writers_of_different_batches_lose_nothing(tmp_path: Path) -> None:
    n = 4 * B + 1  # 5 batches, the last of one cell
    path = new_store(tmp_path, n)
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(_write_one, [(str(path), b) for b in (4, 0, 3, 1, 2)]))
    cells = store.CellStore.open(path)
    assert cells.done().all()
    root = zarr.open_group(path, mode="r")
    for b in range(5):
        start, stop = cells.batch_bounds(b)
        sr, _, lr, _ = batch_pixels(b, stop - start)
        np.testing.assert_array_equal(root["cells/sr"][start:stop], sr)
        np.testing.assert_array_equal(root["cells/lr"][start:stop], lr)


def test_finalize_refuses_until_every_batch_is_written(tmp_path: Path) -> None:
    path = new_store(tmp_path, 10)
    fill(path, 10, [0])
    with pytest.raises(OutputError, match=r"2 of 3 batches not written \(first: \[1, 2\]\)"):
        store.CellStore.open(path).finalize(timings={})
    assert store.read_attrs(path)["status"] == "running"
    fill(path, 10, [1, 2])
    store.CellStore.open(path).finalize(timings={"total_s": 1.5})
    attrs = store.read_attrs(path)
    assert attrs["status"] == "complete" and attrs["timings"] == {"total_s": 1.5}


def test_finalize_refuses_a_store_without_table(tmp_path: Path) -> None:
    path = tmp_path / "a.leukoscreen.zarr"
    cells = store.CellStore.create(path, IDENTITY, config={})
    with pytest.raises(OutputError, match="cell table was never written"):
        cells.finalize(timings={})
    with pytest.raises(OutputError, match="has no cell table yet"):
        _ = cells.n_cells


def test_open_cells_is_lazy_and_returns_what_was_written(tmp_path: Path) -> None:
    path = new_store(tmp_path, 10)
    fill(path, 10)
    store.CellStore.open(path).finalize(timings={})
    cells = store.open_cells(path)
    assert isinstance(cells.sr, da.Array) and isinstance(cells.parsing, da.Array)
    assert cells.sr.chunks[0] == (4, 4, 2) and len(cells) == 10
    sr, parsing, lr, confidence = batch_pixels(1, 4)
    np.testing.assert_array_equal(cells.table["parsing_confidence"][4:8], confidence)
    np.testing.assert_array_equal(cells.sr[4:8].compute(), sr)
    np.testing.assert_array_equal(cells.parsing[4:8].compute(), parsing)
    np.testing.assert_array_equal(cells.lr[4:8].compute(), lr)
    np.testing.assert_array_equal(cells.table["score"], make_table(10)["score"])
    assert cells.attrs["status"] == "complete"


def test_open_cells_refuses_an_incomplete_store(tmp_path: Path) -> None:
    path = new_store(tmp_path, 10)
    fill(path, 10, [0])
    with pytest.raises(OutputError, match="status is 'running', expected 'complete'"):
        store.open_cells(path)
    cells = store.open_cells(path, allow_incomplete=True)
    assert not cells.sr[4:].compute().any()


def test_open_cells_refuses_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"not a leukoscreen store"):
        store.open_cells(tmp_path)


def test_zero_cells_make_a_complete_store_of_empty_arrays(tmp_path: Path) -> None:
    path = new_store(tmp_path, 0)
    assert store.CellStore.open(path).done().shape == (0,)
    store.CellStore.open(path).finalize(timings={})
    cells = store.open_cells(path)
    assert cells.sr.shape == (0, H, H, 3) and cells.lr.shape == (0, LR, LR, 3)
    assert cells.sr.compute().shape == (0, H, H, 3)
    assert all(len(column) == 0 for column in cells.table.values())
    assert cells.table["bbox"].shape == (0, 4)
    assert len(CellDataset(path)) == 0


def test_network_without_prior_has_no_parsing_array(tmp_path: Path) -> None:
    identity = replace(IDENTITY, arch="np", has_prior=False)
    path = new_store(tmp_path, 3, identity)
    sr, _, lr, _ = batch_pixels(0, 3)
    writer = store.CellStore.open(path)
    writer.write_batch(0, sr, None, lr)
    writer.mark_done(0)
    writer.finalize(timings={})
    cells = store.open_cells(path)
    assert cells.parsing is None
    np.testing.assert_array_equal(cells.sr.compute(), sr)
    assert "parsing" not in CellDataset(path)[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scale": 4}, "made with scale 8, this run has 4"),
        ({"slide_header_sha256": "ef" * 32}, "slide header sha256 'abab"),
        ({"checkpoint_sha256": "00" * 32}, "checkpoint sha256 'cdcd"),
        ({"arch": "np"}, "made with model 'gp', this run has 'np'"),
        ({"batch_size": 8}, "batch size 4, this run has 8"),
    ],
)
def test_resume_refuses_another_run(tmp_path: Path, change: dict, message: str) -> None:
    path = new_store(tmp_path, 10)
    with pytest.raises(OutputError, match=message) as info:
        store.CellStore.open(path).check_same_run(replace(IDENTITY, **change))
    assert str(info.value).startswith(str(path))
    assert "--overwrite" in str(info.value)


def test_open_reports_progress(tmp_path: Path) -> None:
    path = tmp_path / "a.leukoscreen.zarr"
    store.CellStore.create(path, IDENTITY, config={})
    moved = replace(IDENTITY, slide_path="/elsewhere/a.svs", slide_vendor="other")
    state = store.CellStore.open(path)
    state.check_same_run(moved)  # a moved slide is the same slide
    assert not state.table_written and not state.complete
    state.write_table(make_columns(10))
    fill(path, 10, [1])
    state = store.CellStore.open(path)
    assert state.n_cells == 10 and not state.complete
    np.testing.assert_array_equal(state.done(), [False, True, False])


def test_open_refuses_another_format_version(tmp_path: Path) -> None:
    path = new_store(tmp_path, 2)
    root = zarr.open_group(path, mode="r+")
    attrs = dict(root.attrs["leukoscreen"])
    root.attrs["leukoscreen"] = {**attrs, "format_version": 2}
    with pytest.raises(OutputError, match=r"store format version 2, this leukoscreen writes 1"):
        store.CellStore.open(path)


def test_write_table_refuses_a_missing_column(tmp_path: Path) -> None:
    cells = store.CellStore.create(tmp_path / "a.leukoscreen.zarr", IDENTITY, config={})
    columns = make_columns(3)
    del columns["score"]
    with pytest.raises(ValueError, match=r"cell table lacks columns \['score'\]"):
        cells.write_table(columns)


def test_check_output_location(tmp_path: Path) -> None:
    path = new_store(tmp_path, 2)
    with pytest.raises(OutputExistsError, match=r"already exists; pass --resume .* --overwrite"):
        store.check_output_location(path, resume=False, overwrite=False)
    store.check_output_location(path, resume=True, overwrite=False)
    other = tmp_path / "photos"
    (other / "x").mkdir(parents=True)
    with pytest.raises(OutputError, match=r"not a leukoscreen store .*; refusing to resume"):
        store.check_output_location(other, resume=False, overwrite=True)
    with pytest.raises(OutputError, match="does not exist or is not a folder"):
        store.check_output_location(tmp_path / "no" / "a.zarr", resume=False, overwrite=False)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputError, match="does not exist or is not a folder"):
        store.check_output_location(tmp_path / "file.txt" / "a.zarr", resume=False, overwrite=False)
    assert not list(tmp_path.glob(".leukoscreen-probe-*"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_output_location_unwritable_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputError, match="cannot write into output folder"):
        store.check_output_location(locked / "a.zarr", resume=False, overwrite=False)


def test_create_store_overwrite_replaces_an_old_store(tmp_path: Path) -> None:
    path = new_store(tmp_path, 10)
    fill(path, 10)
    with pytest.raises(OutputExistsError):
        store.CellStore.create(path, IDENTITY, config={})
    store.CellStore.create(path, IDENTITY, config={}, overwrite=True)
    assert store.read_attrs(path)["table_written"] is False
    assert not (path / "cells").exists()


def test_cell_dataset_items(tmp_path: Path) -> None:
    path = new_store(tmp_path, 10)
    fill(path, 10)
    store.CellStore.open(path).finalize(timings={})
    dataset = CellDataset(path)
    assert len(dataset) == 10
    item = dataset[5]  # batch 1, offset 1
    sr, parsing, lr, _ = batch_pixels(1, 4)
    assert item["sr"].shape == (3, H, H) and item["sr"].dtype == torch.uint8
    np.testing.assert_array_equal(item["sr"].numpy(), sr[1].transpose(2, 0, 1))
    np.testing.assert_array_equal(item["parsing"].numpy(), parsing[1])
    np.testing.assert_array_equal(item["lr"].numpy(), lr[1].transpose(2, 0, 1))
    assert int(item["cell_id"]) == 5 and item["bbox"].tolist() == [5, 6, 15, 16]
    assert int(dataset[-1]["cell_id"]) == 9
    with pytest.raises(IndexError, match="out of range for 10 cells"):
        dataset[10]
    clone = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(clone[9]["sr"].numpy(), dataset[9]["sr"].numpy())
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    first = next(iter(loader))
    assert first["sr"].shape == (4, 3, H, H) and first["cell_id"].tolist() == [0, 1, 2, 3]


def _three_stores(tmp_path: Path) -> list[Path]:
    """Complete stores of 10, 3 and 7 cells for slides a.svs, b.svs, c.svs."""
    paths = []
    for name, n in (("a", 10), ("b", 3), ("c", 7)):
        identity = dataclasses.replace(IDENTITY, slide_path=f"/slides/{name}.svs")
        (tmp_path / name).mkdir()
        path = new_store(tmp_path / name, n, identity)
        fill(path, n)
        store.CellStore.open(path).finalize(timings={})
        paths.append(path)
    return paths


def test_cell_dataset_over_several_stores(tmp_path: Path) -> None:
    dataset = CellDataset(_three_stores(tmp_path))
    assert len(dataset) == 20
    assert [dataset.locate(i) for i in (0, 9, 10, 12, 13, 19, -1)] == [
        (0, 0), (0, 9), (1, 0), (1, 2), (2, 0), (2, 6), (2, 6)
    ]  # fmt: skip
    item = dataset[11]  # store b, its cell 1 (batch 0, offset 1)
    assert (item["slide"], int(item["store"]), int(item["cell_id"])) == ("b.svs", 1, 1)
    np.testing.assert_array_equal(item["sr"].numpy(), batch_pixels(0, 3)[0][1].transpose(2, 0, 1))
    with pytest.raises(IndexError, match="out of range for 20 cells"):
        dataset[20]


def _flip(item: dict) -> dict:
    """A transform (module level: picklable for spawn workers)."""
    item["sr"] = item["sr"].flip(-1)
    return item


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_cell_dataset_in_dataloader_workers(tmp_path: Path, start_method: str) -> None:
    dataset = CellDataset(_three_stores(tmp_path), transform=_flip)
    next(iter(dataset.stores[0][0].values()))  # readers opened in the parent before forking
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=3, num_workers=2, multiprocessing_context=start_method,
        timeout=60,  # a deadlocked worker fails the test instead of hanging it
    )  # fmt: skip
    seen = [(s, int(c)) for batch in loader for s, c in zip(batch["slide"], batch["cell_id"],
                                                           strict=True)]  # fmt: skip
    expected = [("a.svs", i) for i in range(10)] + [("b.svs", i) for i in range(3)]
    assert seen == expected + [("c.svs", i) for i in range(7)]
    first = next(iter(loader))["sr"][0].numpy()
    np.testing.assert_array_equal(first, dataset.stores[0][0]["sr"].flip(-1).numpy())


def test_cell_dataset_reopens_readers_in_a_new_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers opened in the parent are not reused after a fork (a new process id)."""
    from leukoscreen.pipeline import dataset as dataset_module

    cells = CellDataset(_three_stores(tmp_path)).stores[0]
    before = cells[3]["sr"]
    parent = dict(cells._open())
    assert all(cells._open()[name] is parent[name] for name in parent)  # same process: kept
    pid = os.getpid()
    monkeypatch.setattr(dataset_module.os, "getpid", lambda: pid + 1)  # as in a forked worker
    child = cells._open()
    assert child.keys() == parent.keys()
    assert all(child[name] is not parent[name] for name in parent)
    np.testing.assert_array_equal(cells[3]["sr"].numpy(), before.numpy())


def test_cell_dataset_refuses_an_incomplete_store(tmp_path: Path) -> None:
    path = new_store(tmp_path, 10)
    with pytest.raises(OutputError, match="expected 'complete'"):
        CellDataset(path)
