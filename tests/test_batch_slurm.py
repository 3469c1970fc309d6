"""``leukoscreen batch`` through a real single-node SLURM cluster (``tests/slurm_cluster.py``):
dask-jobqueue worker jobs, a worker job cancelled mid-batch, and the shipped array template.
PBS has no server here: its job script and directives are checked with ``--dry-run``.
All SLURM tests skip, saying why, where SLURM cannot start.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import BATCH_CROPS
from run_helpers import assert_same_store, done_batches

from leukoscreen.pipeline.cli import main

TEMPLATES = Path(__file__).resolve().parents[1] / "workflows" / "templates"


def slurm_config(base: Path, path: Path, partition: str, *, gpus: int = 0) -> Path:
    """The tiny-network config plus a ``[cluster.slurm]`` section for one 1-core worker job."""
    path.write_text(
        base.read_text()
        + f"""
[cluster.slurm]
queue = "{partition}"
cores = 1
processes = 1
memory = "2GiB"
walltime = "00:10:00"
lifetime = "8m"
lifetime_stagger = "1m"
interface = "lo"
python = "{sys.executable}"
local_directory = "{path.parent / "scratch"}"
log_directory = "{path.parent / "logs"}"
gpus = {gpus}
minimum_jobs = 1
maximum_jobs = 1
job_extra_directives = ["--comment=leukoscreen-test"]
"""
    )
    return path


def rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "batch-status.csv").open(newline="") as f:
        return {Path(r["slide"]).name: r for r in csv.DictReader(f)}


def assert_equal_to_reference(out: Path, reference: Path) -> None:
    assert {r["state"] for r in rows(out).values()} == {"done"}
    for name in BATCH_CROPS:
        assert_same_store(out / f"{name}.leukoscreen.zarr", reference / f"{name}.leukoscreen.zarr")


def test_batch_on_slurm_worker_jobs(slurm_env, batch_kit, batch_reference, tmp_path) -> None:
    config = slurm_config(batch_kit["x8"], tmp_path / "slurm.toml", slurm_env.partition)
    out = tmp_path / "out"
    status = main(["batch", str(batch_kit["slides"]), "--out", str(out), "--config", str(config),
                   "--cluster", "slurm"])  # fmt: skip
    assert status == 0
    assert_equal_to_reference(out, batch_reference)
    assert {r["worker"].split("://")[0] for r in rows(out).values()} == {"tcp"}
    assert list((tmp_path / "logs").glob("*.err")), "no worker job wrote its log"


def test_worker_job_cancelled_mid_batch(slurm_env, batch_kit, batch_reference, tmp_path) -> None:
    config = slurm_config(batch_kit["x8"], tmp_path / "slurm.toml", slurm_env.partition)
    out = tmp_path / "out"
    args = ["batch", str(batch_kit["slides"]), "--out", str(out), "--config", str(config),
            "--cluster", "slurm", "--slides-at-once", "1"]  # fmt: skip
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.update(status=main(args)))
    thread.start()
    cancelled: list[str] = []
    deadline = time.monotonic() + 240
    while thread.is_alive() and not cancelled and time.monotonic() < deadline:
        if any(done_batches(s) >= 1 for s in out.glob("*.leukoscreen.zarr")):
            cancelled = slurm_env.job_ids()
            for job in cancelled:
                slurm_env.run("scancel", job)
        time.sleep(0.02)
    thread.join(timeout=300)
    assert cancelled, "the batch ended before a worker job could be cancelled"
    assert not thread.is_alive() and result["status"] == 0
    assert_equal_to_reference(out, batch_reference)
    assert set(slurm_env.job_ids()).isdisjoint(cancelled)


def test_array_job_of_shards_gives_the_same_stores(
    slurm, batch_kit, batch_reference, tmp_path
) -> None:
    out = tmp_path / "out"
    env = {**slurm.client_env(), "LEUKOSCREEN": f"{sys.executable} -m leukoscreen.pipeline.cli",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    job = subprocess.run(
        ["sbatch", "--array=0-1", "--wait", f"--chdir={tmp_path}", "--cpus-per-task=1",
         "--mem=0", "--time=00:10:00", f"--output={tmp_path}/shard-%a.out",
         str(TEMPLATES / "batch-array.sbatch"), str(batch_kit["slides"]), "--out", str(out),
         "--config", str(batch_kit["x8"])],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("shard-*.out")))
    assert job.returncode == 0, job.stderr + logs
    assert_equal_to_reference(out, batch_reference)
    hosts = {r["host"] for r in rows(out).values()}
    assert len(hosts) == 2, hosts  # two array tasks, each its own process


def test_dry_run_prints_the_slurm_job_script(batch_kit, tmp_path, capsys) -> None:
    config = slurm_config(batch_kit["x8"], tmp_path / "slurm.toml", "gpu", gpus=1)
    out = tmp_path / "out"
    status = main(["batch", str(batch_kit["slides"]), "--out", str(out), "--config", str(config),
                   "--cluster", "slurm", "--dry-run"])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    for line in ("#SBATCH -p gpu", "#SBATCH --gres=gpu:1", "#SBATCH -t 00:10:00",
                 "#SBATCH --comment=leukoscreen-test", "--resources GPU=1", "--lifetime 8m",
                 "--lifetime-stagger 1m", "export MALLOC_TRIM_THRESHOLD_=268435456",
                 "export MALLOC_MMAP_THRESHOLD_=268435456"):  # fmt: skip
        assert line in printed, line
    assert printed.count("run ") == len(BATCH_CROPS)  # the plan: every slide would run
    assert not out.exists()  # nothing written, nothing submitted


def test_dry_run_prints_the_pbs_job_script(batch_kit, tmp_path, capsys) -> None:
    config = tmp_path / "pbs.toml"
    config.write_text(
        batch_kit["x8"].read_text()
        + '\n[cluster.pbs]\nqueue = "workq"\naccount = "hem"\ncores = 8\nmemory = "32GiB"\n'
        'gpus = 1\nwalltime = "02:00:00"\njob_extra_directives = ["-m n"]\n'
    )
    status = main(["batch", str(batch_kit["slides"]), "--out", str(tmp_path / "out"),
                   "--config", str(config), "--cluster", "pbs", "--dry-run"])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    for line in ("#PBS -q workq", "#PBS -A hem", "#PBS -l select=1:ncpus=8:ngpus=1:mem=32GB",
                 "#PBS -l walltime=02:00:00", "#PBS -m n", "--resources GPU=1"):  # fmt: skip
        assert line in printed, line


def test_templates_are_valid_shell() -> None:
    for name in ("batch-array.sbatch", "batch-array.pbs"):
        script = TEMPLATES / name
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        assert os.access(script, os.R_OK) and "--shard" in script.read_text()
