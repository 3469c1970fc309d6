"""The test SLURM cluster (tests/slurm_cluster.py): array jobs, scancel, dask-jobqueue workers."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from slurm_cluster import SlurmCluster


def _wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what} not within {timeout:.0f} s"
        time.sleep(0.2)


def _job_processes(job_id: str) -> list[int]:
    """Pids of the processes still running for a job (by SLURM_JOB_ID in their environment)."""
    needle = f"SLURM_JOB_ID={job_id}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and needle in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_sbatch_array_runs_every_task(slurm: SlurmCluster, tmp_path: Path) -> None:
    script = tmp_path / "task.sh"
    script.write_text('#!/bin/sh\necho "$SLURM_ARRAY_TASK_ID" > "task_$SLURM_ARRAY_TASK_ID.txt"\n')
    slurm.run("sbatch", "--array=0-2", "--wait", "--time=2", f"--chdir={tmp_path}",
              f"--output={tmp_path}/%A_%a.out", str(script), timeout=120)  # fmt: skip
    written = {p.name: p.read_text().strip() for p in tmp_path.glob("task_*.txt")}
    assert written == {"task_0.txt": "0", "task_1.txt": "1", "task_2.txt": "2"}


def test_scancel_ends_a_running_job(slurm: SlurmCluster, tmp_path: Path) -> None:
    submitted = slurm.run("sbatch", "--parsable", "--time=2", f"--chdir={tmp_path}",
                          "--output=/dev/null", "--wrap=sleep 60")  # fmt: skip
    job = submitted.stdout.strip().split(";")[0]  # "id" or "id;cluster"

    def state() -> str:
        return slurm.run("squeue", "--noheader", f"--jobs={job}", "--format=%T",
                         check=False).stdout.strip()  # fmt: skip

    _wait_until(lambda: state() == "RUNNING", 30, f"job {job} running")
    _wait_until(lambda: bool(_job_processes(job)), 10, f"job {job} processes")
    slurm.run("scancel", job)
    _wait_until(lambda: job not in slurm.job_ids(), 20, f"job {job} gone from squeue")
    _wait_until(lambda: not _job_processes(job), 10, f"job {job} processes ended")


def test_dask_jobqueue_worker_runs_in_a_slurm_job(slurm_env: SlurmCluster, tmp_path: Path) -> None:
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    with SLURMCluster(
        cores=1, processes=1, memory="1GiB", queue=slurm_env.partition, walltime="00:05:00",
        python=sys.executable, local_directory=str(tmp_path), log_directory=str(tmp_path / "logs"),
        interface="lo", scheduler_options={"dashboard_address": ":0"},
    ) as cluster:  # fmt: skip
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=90)
            assert client.submit(pow, 2, 10).result() == 1024
            job_ids = set(client.run(lambda: os.environ.get("SLURM_JOB_ID")).values())
            assert job_ids == {job.job_id for job in cluster.workers.values()}
            assert job_ids <= set(slurm_env.job_ids())
    _wait_until(lambda: not job_ids & set(slurm_env.job_ids()), 30, "worker job gone")
