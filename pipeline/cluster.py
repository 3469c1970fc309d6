"""The Dask cluster of a run: sizing the embedded one, connecting, and finding GPU workers.

Only :mod:`leukoscreen.pipeline.run` starts or connects to a cluster (:func:`open_client`); the
worker-side helpers below tell a task how many threads and which GPU its worker has.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from distributed import Client, LocalCluster, get_worker

from leukoscreen.model.config import Device
from leukoscreen.model.errors import UsageError
from leukoscreen.pipeline.config import ClusterConfig


def count_gpus(device: Device) -> int:
    """GPUs this machine offers to ``device``, found without importing torch.

    ``cpu`` gives 0; otherwise ``CUDA_VISIBLE_DEVICES`` when set, else the NVIDIA driver's
    ``/proc/driver/nvidia/gpus`` entries.
    """
    if device == "cpu":
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and not v.strip().startswith("-")]
        return len(ids)
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def size_local_cluster(cfg: ClusterConfig, *, n_gpus: int, cores: int) -> tuple[int, int]:
    """Worker processes and threads per worker for the embedded LocalCluster.

    With GPUs: one worker per GPU (each takes one SR task at a time through its ``GPU``
    resource) sharing the cores for detection. On CPU: one worker per 4 cores (the network runs
    multi-threaded inside each), at least one.

    Returns:
        ``(n_workers, threads_per_worker)``.
    """
    if cfg.n_workers > 0:
        n_workers = cfg.n_workers
    elif n_gpus > 0:
        n_workers = n_gpus
    else:
        n_workers = max(1, cores // 4)
    threads = cfg.threads_per_worker or max(1, cores // n_workers)
    return n_workers, threads


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster a run uses.

    Attributes:
        sr_resources: ``{"GPU": 1}`` when GPU workers exist, else ``None``.
        n_sr_workers: workers that can run SR tasks.
        dashboard_link: the dashboard's URL, or ``""``.
    """

    sr_resources: dict[str, float] | None
    n_sr_workers: int
    dashboard_link: str


def inspect_cluster(client: Client) -> ClusterInfo:
    """Find the GPU workers and the dashboard of a connected cluster."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    gpu_workers = [w for w in workers if w.get("resources", {}).get("GPU", 0) >= 1]
    link = ""
    with contextlib.suppress(Exception):
        link = str(client.dashboard_link or "")
    if gpu_workers:
        return ClusterInfo({"GPU": 1}, len(gpu_workers), link)
    return ClusterInfo(None, max(1, len(workers)), link)


@contextlib.contextmanager
def open_client(cfg: ClusterConfig, *, device: Device) -> Iterator[Client]:
    """Connect to ``cfg.scheduler`` or start an embedded LocalCluster; close it afterwards.

    Raises:
        UsageError: the scheduler address cannot be reached.
    """
    if cfg.scheduler:
        try:
            client = Client(cfg.scheduler, timeout="10s")
        except (OSError, TimeoutError) as err:
            raise UsageError(
                f"{cfg.scheduler}: cannot connect to the Dask scheduler ({err.__class__.__name__}:"
                f" {err})"
            ) from err
        try:
            yield client
        finally:
            client.close()
        return
    import logging

    n_gpus = count_gpus(device)
    n_workers, threads = size_local_cluster(cfg, n_gpus=n_gpus, cores=available_cores())
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads,
        processes=True,
        memory_limit=cfg.memory_limit,
        dashboard_address=":8787" if cfg.dashboard else None,  # a busy port falls back to any
        resources={"GPU": 1} if n_gpus else None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def worker_threads() -> int:
    """Threads of the Dask worker this runs in (all cores outside a worker)."""
    try:
        return int(get_worker().state.nthreads)
    except ValueError:  # not inside a worker (the model-only benchmark)
        return os.cpu_count() or 1


def worker_gpu_index() -> int | None:
    """The GPU of this worker: its name modulo the visible GPUs (one worker per GPU)."""
    try:
        name = get_worker().name
    except ValueError:
        return None
    return int(name) if isinstance(name, int) or str(name).isdigit() else None
