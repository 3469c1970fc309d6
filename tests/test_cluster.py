"""Laying out the embedded cluster: CPU workers, and one pinned worker per GPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from distributed import Client

from leukoscreen.pipeline import cluster as cluster_module
from leukoscreen.pipeline.cluster import (
    WORKER_ENV,
    WorkerPlan,
    count_gpus,
    inspect_cluster,
    plan_local_workers,
    start_local_cluster,
    visible_gpus,
)
from leukoscreen.pipeline.config import ClusterConfig


def test_cpu_machine_gets_one_worker_per_four_cores() -> None:
    assert plan_local_workers(ClusterConfig(), gpus=[], cores=2) == [WorkerPlan("0", 2)]
    assert plan_local_workers(ClusterConfig(), gpus=[], cores=16) == [
        WorkerPlan(str(k), 4) for k in range(4)
    ]
    given = ClusterConfig(n_workers=3, threads_per_worker=1)
    assert [p.nthreads for p in plan_local_workers(given, gpus=[], cores=16)] == [1, 1, 1]


def test_each_gpu_gets_its_own_worker_and_the_rest_of_the_cores_detect() -> None:
    plans = plan_local_workers(ClusterConfig(), gpus=["0", "1"], cores=16)
    assert plans[:2] == [WorkerPlan("gpu-0", 2, "0"), WorkerPlan("gpu-1", 2, "1")]
    assert plans[2:] == [WorkerPlan(f"cpu-{k}", 2) for k in range(6)]  # 12 cores left
    # a 2-core machine with a GPU: the GPU worker alone
    assert plan_local_workers(ClusterConfig(), gpus=["3"], cores=2) == [WorkerPlan("gpu-3", 2, "3")]
    # n_workers counts the GPU workers too
    plans = plan_local_workers(ClusterConfig(n_workers=3), gpus=["0", "1"], cores=16)
    assert [p.name for p in plans] == ["gpu-0", "gpu-1", "cpu-0"]


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert visible_gpus("auto") == ["2", "5"] and count_gpus("auto") == 2
    assert visible_gpus("cpu") == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert count_gpus("cuda") == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert count_gpus("auto") == 0


def _visible() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")


def test_fake_gpus_give_pinned_gpu_workers_in_a_real_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two GPUs that this machine does not have (the layout needs no CUDA): a real cluster with
    a worker pinned to each and a CPU worker that sees none; SR-like tasks land on GPU workers."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setattr(cluster_module, "available_cores", lambda: 6)
    cluster = start_local_cluster(ClusterConfig(memory_limit="1GiB"), device="auto")
    try:
        with Client(cluster) as client:
            client.wait_for_workers(3, timeout=60)
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
            by_name = {w["name"]: w for w in workers}
            assert sorted(by_name) == ["cpu-0", "gpu-3", "gpu-5"]
            assert by_name["gpu-3"]["resources"] == {"GPU": 1}
            assert not by_name["cpu-0"]["resources"]
            seen = {by_name_of(client, addr): value for addr, value in client.run(_visible).items()}
            assert seen == {"gpu-3": "3", "gpu-5": "5", "cpu-0": ""}
            heap = client.run(lambda: os.environ.get("MALLOC_MMAP_THRESHOLD_"))
            assert set(heap.values()) == {str(256 << 20)}
            info = inspect_cluster(client)
            assert info.sr_resources == {"GPU": 1} and info.n_sr_workers == 2
            pinned = client.gather(
                [client.submit(_visible, resources={"GPU": 1}, pure=False) for _ in range(6)]
            )
            assert set(pinned) <= {"3", "5"}
    finally:
        cluster.close()


def by_name_of(client: Client, address: str) -> str:
    return str(client.scheduler_info(n_workers=-1)["workers"][address]["name"])


def _startup_environ() -> dict[str, str]:
    """The environment this process was started with (what glibc read), not ``os.environ``."""
    pairs = Path("/proc/self/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def test_cpu_workers_get_the_heap_settings() -> None:
    """Dask's own MALLOC_TRIM_THRESHOLD_ (65536) is replaced in the embedded cluster's workers
    from their start, where glibc reads it."""
    cluster = start_local_cluster(ClusterConfig(n_workers=1, memory_limit="1GiB"), device="cpu")
    try:
        with Client(cluster) as client:
            (started,) = client.run(_startup_environ).values()
            env = {k: started.get(k) for k in WORKER_ENV}
            assert env == WORKER_ENV == {"MALLOC_TRIM_THRESHOLD_": "268435456",
                                         "MALLOC_MMAP_THRESHOLD_": "268435456"}  # fmt: skip
    finally:
        cluster.close()
