"""``leukoscreen batch`` on a real LocalCluster: inputs, status table, done-means-done, failure
isolation, retries, timeouts, exit status, shards, two processes on one folder, SIGKILL + rerun.

Slides are three crops of the synthetic smear written as .svs (2-3 leukocytes each), run with the
tiny random-weight GP network of ``run_helpers``. The SLURM tests are in ``test_batch_slurm.py``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zarr
from conftest import BATCH_CELLS, BATCH_CROPS, SMEAR_MPP
from run_helpers import assert_same_store, done_batches, kill_when

from leukoscreen.pipeline import store
from leukoscreen.pipeline.cli import main
from leukoscreen.pipeline.config import load_config
from leukoscreen.workflows.batch import plan_jobs, shard_of
from leukoscreen.workflows.inputs import collect_slides
from leukoscreen.workflows.status import COLUMNS, StatusTable

CROPS, CELLS = BATCH_CROPS, BATCH_CELLS


def rows(out: Path) -> dict[str, dict[str, str]]:
    """The status table as read by the csv module: slide file name -> row."""
    with (out / "batch-status.csv").open(newline="") as f:
        return {Path(r["slide"]).name: r for r in csv.DictReader(f)}


def batch(*args: str | Path) -> int:
    return main(["batch", *map(str, args)])


def store_of(out: Path, name: str) -> Path:
    return out / f"{name}.leukoscreen.zarr"


# ----------------------------------------------------------------------------- end to end


def test_batch_runs_every_slide_and_reports(batch_kit, batch_reference) -> None:
    table = rows(batch_reference)
    assert sorted(table) == ["a.svs", "b.svs", "c.svs"]
    for name, n in CELLS.items():
        row = table[f"{name}.svs"]
        assert (row["state"], row["attempts"], row["cells"]) == ("done", "1", str(n))
        assert row["error_class"] == "" and float(row["seconds"]) > 0
        assert Path(row["store"]) == store_of(batch_reference, name).resolve()
        assert store.read_attrs(store_of(batch_reference, name))["status"] == "complete"
        assert len(row["slide_sha256"]) == len(row["model_sha256"]) == 64
    assert list(next(csv.reader((batch_reference / "batch-status.csv").open()))) == list(COLUMNS)
    summary = json.loads((batch_reference / "batch-summary.json").read_text())
    assert summary["by_state"] == {"pending": 0, "running": 0, "done": 3, "skipped": 0, "failed": 0}
    assert summary["cells_done"] == sum(CELLS.values()) and summary["exit_status"] == 0
    page = (batch_reference / "batch-report.html").read_text()
    assert page.count('<a href="a.leukoscreen.zarr">') == 1 and "failed" in page
    pyarrow = pytest.importorskip("pyarrow.parquet")
    table_pq = pyarrow.read_table(batch_reference / "batch-status.parquet").to_pylist()
    assert sorted(r["cells"] for r in table_pq) == sorted(CELLS.values())


def test_batch_stores_equal_single_runs(batch_kit, batch_reference, tmp_path) -> None:
    out = tmp_path / "a.leukoscreen.zarr"
    slide, config = batch_kit["slides"] / "a.svs", batch_kit["x8"]
    assert main(["run", str(slide), "--out", str(out), "--config", str(config)]) == 0
    assert_same_store(store_of(batch_reference, "a"), out)


def test_bad_slides_fail_alone_and_the_rerun_does_no_work(
    batch_kit, batch_reference, tmp_path
) -> None:
    slides = tmp_path / "slides"
    shutil.copytree(batch_kit["slides"], slides)
    data = (slides / "a.svs").read_bytes()
    (slides / "truncated.svs").write_bytes(data[: len(data) // 3])  # opens, cannot be read
    (slides / "notes.svs").write_text("not a slide\n")  # cannot be opened
    out = tmp_path / "out"
    assert batch(slides, "--out", out, "--config", batch_kit["x8"]) == 3
    table = rows(out)
    assert {n: r["state"] for n, r in table.items()} == {
        "a.svs": "done", "b.svs": "done", "c.svs": "done", "truncated.svs": "failed",
        "notes.svs": "failed",
    }  # fmt: skip
    assert table["truncated.svs"]["error_class"] == "SlideReadError"
    assert "decodable tiles" in table["truncated.svs"]["message"]
    assert table["notes.svs"]["error_class"] == "SlideReadError"
    assert "expected a slide" in table["notes.svs"]["message"]
    for name in CROPS:
        assert_same_store(store_of(out, name), store_of(batch_reference, name))
    assert not store_of(out, "notes").exists() and not store_of(out, "truncated").exists()
    stamps = {n: (store_of(out, n) / "zarr.json").stat().st_mtime_ns for n in CROPS}
    first = rows(out)

    assert batch(slides, "--out", out, "--config", batch_kit["x8"]) == 3  # the same command again
    again = rows(out)
    for name in CROPS:  # the rows of the done slides are untouched, their stores too
        assert again[f"{name}.svs"] == first[f"{name}.svs"]
        assert (store_of(out, name) / "zarr.json").stat().st_mtime_ns == stamps[name]
    summary = json.loads((out / "batch-summary.json").read_text())
    assert summary["by_state"]["skipped"] == 3 and summary["by_state"]["failed"] == 2
    assert again["notes.svs"]["attempts"] == "2"  # failed slides are tried again


def test_duplicates_manifest_and_new_scans(batch_kit, batch_reference, tmp_path) -> None:
    slides = tmp_path / "scans"
    slides.mkdir()
    shutil.copy(batch_kit["slides"] / "a.svs", slides / "a.svs")
    shutil.copy(batch_kit["slides"] / "a.svs", slides / "a_copy.svs")  # the same scan twice
    manifest = tmp_path / "list.tsv"
    manifest.write_text(
        f"slide\tmpp\tout\n{batch_kit['slides'] / 'b.svs'}\t{SMEAR_MPP}\tmine/b.zarr\n"
    )
    out = tmp_path / "out"
    assert batch(slides, manifest, "--out", out, "--config", batch_kit["x8"]) == 0
    table = rows(out)
    assert table["a_copy.svs"]["state"] == "skipped"
    assert "same slide as" in table["a_copy.svs"]["message"]
    assert not store_of(out, "a_copy").exists()
    assert table["b.svs"]["state"] == "done"
    assert_same_store(out / "mine" / "b.zarr", store_of(batch_reference, "b"))
    # the next night: one new scan in the folder; only it is run
    shutil.copy(batch_kit["slides"] / "c.svs", slides / "c.svs")
    assert batch(slides, manifest, "--out", out, "--config", batch_kit["x8"]) == 0
    night2 = rows(out)
    assert {n: r["state"] for n, r in night2.items()} == {
        "a.svs": "done", "a_copy.svs": "skipped", "b.svs": "done", "c.svs": "done"
    }  # fmt: skip
    assert [night2[n]["ended_at"] for n in ("a.svs", "b.svs")] == [
        table[n]["ended_at"] for n in ("a.svs", "b.svs")
    ]  # untouched: done on the first night
    summary = json.loads((out / "batch-summary.json").read_text())
    assert (summary["by_state"]["done"], summary["by_state"]["skipped"]) == (1, 3)


def test_store_of_another_model_is_left_alone_unless_overwrite(
    batch_kit, batch_reference, tmp_path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(store_of(batch_reference, "a"), store_of(out, "a"))
    before = (store_of(out, "a") / "zarr.json").read_bytes()
    slide = batch_kit["slides"] / "a.svs"
    assert batch(slide, "--out", out, "--config", batch_kit["x8b"]) == 3
    row = rows(out)["a.svs"]
    assert (row["state"], row["error_class"]) == ("failed", "StoreMismatch")
    assert "checkpoint sha256" in row["message"] and "--overwrite" in row["message"]
    assert (store_of(out, "a") / "zarr.json").read_bytes() == before
    assert batch(slide, "--out", out, "--config", batch_kit["x8b"], "--overwrite") == 0
    assert rows(out)["a.svs"]["state"] == "done"
    assert (
        store.read_attrs(store_of(out, "a"))["model"]["checkpoint_sha256"]
        == (rows(out)["a.svs"]["model_sha256"])
    )


def test_timeout_fails_the_slide(batch_kit, tmp_path) -> None:
    config = tmp_path / "slow.toml"  # one cell per task: many tasks, each a little slower
    config.write_text(batch_kit["x8"].read_text().replace("batch_size = 2", "batch_size = 1"))
    out = tmp_path / "out"
    assert (
        batch(batch_kit["slides"] / "a.svs", "--out", out, "--config", config, "--timeout", "1")
        == 3
    )
    row = rows(out)["a.svs"]
    assert (row["state"], row["error_class"]) == ("failed", "SlideTimeoutError")
    stopped = store_of(out, "a")
    assert not store.is_store(stopped) or store.read_attrs(stopped)["status"] != "complete"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nowhere"], "nowhere: no such file or folder"),
        (["EMPTY"], "no slides found"),
        (["BADMANIFEST"], "expected a manifest with a 'slide' column"),
        (["a.svs", "--shard", "2/2"], "--shard: expected 0 <= I < N"),
        (["a.svs", "--cluster", "kubernetes"], "--cluster: expected one of local, slurm, pbs"),
    ],
)
def test_bad_batch_input_is_one_line_and_exit_2(
    batch_kit, tmp_path, capsys, args, expected
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("file,mpp\nx.svs,0.5\n")
    subst = {"EMPTY": tmp_path / "empty", "BADMANIFEST": tmp_path / "bad.csv",
             "a.svs": batch_kit["slides"] / "a.svs", "nowhere": tmp_path / "nowhere"}  # fmt: skip
    out = tmp_path / "out"
    status = batch(*[subst.get(a, a) for a in args], "--out", out, "--config", batch_kit["x8"])
    assert status == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("leukoscreen: ") and expected in lines[0]
    assert not (out / "batch-status.csv").exists()


# ----------------------------------------------------------------------------- shards, claims


def test_shards_split_the_slides_and_together_do_them_all(
    batch_kit, batch_reference, tmp_path
) -> None:
    config = load_config(batch_kit["x8"])
    jobs = plan_jobs(collect_slides([batch_kit["slides"]], out=tmp_path), config, tmp_path)
    parts = [{j.key for j in shard_of(jobs, (i, 2))} for i in range(2)]
    assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == {j.key for j in jobs}
    assert shard_of(list(reversed(jobs)), (0, 2)) == shard_of(jobs, (0, 2))
    out = tmp_path / "out"
    for i in range(2):
        assert (
            batch(
                batch_kit["slides"], "--out", out, "--config", batch_kit["x8"], "--shard", f"{i}/2"
            )
            == 0
        )
    assert {r["state"] for r in rows(out).values()} == {"done"}
    for name in CROPS:
        assert_same_store(store_of(out, name), store_of(batch_reference, name))


_CLI = (
    "import sys; from leukoscreen.pipeline.cli import entry; sys.argv[0] = 'leukoscreen'; entry()"
)


@pytest.mark.slow
def test_two_batches_on_one_folder_do_each_slide_once(batch_kit, batch_reference, tmp_path) -> None:
    out = tmp_path / "out"
    args = [sys.executable, "-c", _CLI, "batch", str(batch_kit["slides"]), "--out", str(out),
            "--config", str(batch_kit["x8"])]  # fmt: skip
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    done = sum(int(o.split(" done")[0].split()[-1]) if " done" in o else 0 for o in outputs)
    assert done == len(CROPS), outputs  # each slide run by exactly one of them
    assert {r["attempts"] for r in rows(out).values()} == {"1"}
    for name in CROPS:
        assert_same_store(store_of(out, name), store_of(batch_reference, name))


@pytest.mark.slow
@pytest.mark.parametrize("point", ["table-written", "first-slide-half-done", "one-slide-complete"])
def test_sigkill_of_the_batch_then_rerun_gives_the_same_stores(
    point, batch_kit, batch_reference, tmp_path
) -> None:
    out = tmp_path / "out"

    def complete() -> int:
        return sum(
            store.is_store(s) and store.read_attrs(s)["status"] == "complete"
            for s in out.glob("*.leukoscreen.zarr")
        )

    ready = {
        "table-written": lambda: (out / "batch-status.csv").exists(),
        "first-slide-half-done": lambda: any(done_batches(s) >= 1 for s in out.glob("*.zarr")),
        "one-slide-complete": lambda: complete() >= 1,
    }[point]
    args = ["batch", str(batch_kit["slides"]), "--out", str(out), "--config", str(batch_kit["x8"]),
            "--slides-at-once", "1"]  # fmt: skip
    kill_when(args, ready)
    assert complete() < len(CROPS), "the kill came after the last slide: nothing was tested"
    assert main(args) == 0
    assert {r["state"] for r in rows(out).values()} <= {"done", "skipped"}
    for name in CROPS:
        assert_same_store(store_of(out, name), store_of(batch_reference, name))


def test_worker_killed_mid_slide_is_retried(batch_kit, batch_reference, tmp_path) -> None:
    """A worker SIGKILLed under a slide's task: KilledWorker at once (allowed-failures 0), the
    slide is tried again on the restarted worker and resumes its store."""
    out = tmp_path / "out"
    slide = batch_kit["slides"] / "a.svs"
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.update(
        status=batch(slide, "--out", out, "--config", batch_kit["x8"])))  # fmt: skip
    thread.start()
    deadline = time.monotonic() + 120
    killed = False
    while thread.is_alive() and not killed and time.monotonic() < deadline:
        if done_batches(store_of(out, "a")) >= 1:
            for child in _worker_pids():
                os.kill(child, signal.SIGKILL)
                killed = True
        time.sleep(0.01)
    thread.join(timeout=180)
    assert killed and result["status"] == 0
    row = rows(out)["a.svs"]
    assert (row["state"], row["attempts"]) == ("done", "2")
    assert zarr.open_array(store_of(out, "a") / "batches" / "done", mode="r")[:].all()
    assert_same_store(store_of(out, "a"), store_of(batch_reference, "a"))


def _worker_pids() -> list[int]:
    """Dask worker processes of this process's LocalCluster (its nannies run in this process and
    start each worker with multiprocessing's spawn)."""
    import psutil

    return [p.pid for p in psutil.Process().children()
            if "spawn_main" in " ".join(p.cmdline())]  # fmt: skip


def test_status_table_updates_from_many_threads_never_tear(tmp_path) -> None:
    table = StatusTable(tmp_path)

    def work(k: int) -> None:
        for i in range(20):
            table.update(f"/s/{k}.svs", state="running", attempts=i, cells=k * 100 + i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = table.read()
    assert sorted(final) == [f"/s/{k}.svs" for k in range(4)]
    assert [final[f"/s/{k}.svs"]["cells"] for k in range(4)] == [19, 119, 219, 319]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".batch-status.csv.")]


def test_a_running_row_of_a_complete_store_becomes_skipped(
    batch_kit, batch_reference, tmp_path
) -> None:
    """A batch killed after completing a slide's store but before writing ``done`` leaves the
    row ``running``: the rerun finds the store complete and says so (it used to leave the stale
    claim, and the report counted a slide as running forever)."""
    out = tmp_path / "out"
    shutil.copytree(batch_reference, out)
    key = rows(out)["a.svs"]["slide"]
    StatusTable(out).update(key, state="running", ended_at=None)
    assert rows(out)["a.svs"]["state"] == "running"
    assert batch(batch_kit["slides"], "--out", out, "--config", batch_kit["x8"]) == 0
    table = rows(out)
    assert table["a.svs"]["state"] == "skipped"
    assert {table[n]["state"] for n in ("b.svs", "c.svs")} == {"done"}
