"""The Dask cluster of a run: sizing the embedded one, connecting, and finding GPU workers.

Only :mod:`leukoscreen.pipeline.run` starts or connects to a cluster (:func:`open_client`); the
worker-side helpers below tell a task how many threads and which GPU its worker has.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dask
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster, get_worker

from leukoscreen.model.config import Device
from leukoscreen.model.errors import UsageError
from leukoscreen.pipeline.config import ClusterConfig

GPU_WORKER_THREADS = 2
"""Threads of a GPU worker: one batch in the network while the next one reads its crops."""
CPU_WORKER_THREADS = 2
"""Threads of each CPU worker beside GPU workers (detection is numpy, so processes, not
threads, are what scale it)."""
HEAP_BYTES = str(256 << 20)
WORKER_ENV = {"MALLOC_TRIM_THRESHOLD_": HEAP_BYTES, "MALLOC_MMAP_THRESHOLD_": HEAP_BYTES}
"""glibc heap settings of the embedded cluster's workers. Dask's nannies set
``MALLOC_TRIM_THRESHOLD_=65536``, which also turns off glibc's adaptive mmap threshold, so every
array over 128 KiB is mapped and unmapped afresh and its pages faulted in again: the SR network
ran at about half its speed in a worker (2-core CPU, GP-SFT x8, 12.8 against 22.1 cells/s
outside Dask; 24.4 with these settings; ``docs/benchmarks.md``). Arrays up to 256 MiB come from
the heap instead, and at most 256 MiB of freed heap stays with a worker. glibc reads them when a
process starts, so they go in as Dask's ``distributed.nanny.pre-spawn-environ`` (variables
already set in the environment win)."""


def visible_gpus(device: Device) -> list[str]:
    """Ids of the GPUs this machine offers to ``device``, found without importing torch.

    ``cpu`` gives none; otherwise the entries of ``CUDA_VISIBLE_DEVICES`` when it is set (``-1``
    or empty hides every GPU), else ``0 .. n-1`` for the NVIDIA driver's
    ``/proc/driver/nvidia/gpus`` entries.
    """
    if device == "cpu":
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        return [] if any(v.startswith("-") for v in ids[:1]) else ids
    gpus = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(gpus.iterdir())))] if gpus.is_dir() else []


def count_gpus(device: Device) -> int:
    """How many GPUs :func:`visible_gpus` finds."""
    return len(visible_gpus(device))


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class WorkerPlan:
    """One worker process of the embedded cluster.

    Attributes:
        name: the worker's name (``gpu-<id>`` or ``cpu-<k>``; plain numbers on a CPU machine).
        nthreads: its threads.
        gpu: the CUDA device id it is pinned to (its ``CUDA_VISIBLE_DEVICES``), or ``None``.
    """

    name: str
    nthreads: int
    gpu: str | None = None


def plan_local_workers(cfg: ClusterConfig, *, gpus: list[str], cores: int) -> list[WorkerPlan]:
    """The worker processes of the embedded cluster.

    Without GPUs: one worker per 4 cores (the network runs multi-threaded inside each), at least
    one. With GPUs: one worker per GPU, pinned to it and offering the resource ``GPU=1`` (the SR
    tasks ask for it, so each GPU runs one model), plus CPU workers of
    :data:`CPU_WORKER_THREADS` on the remaining cores for detection. ``cfg.n_workers`` and
    ``cfg.threads_per_worker`` override the counts (with GPUs, ``n_workers`` counts the GPU
    workers too).
    """
    if not gpus:
        n_workers = cfg.n_workers if cfg.n_workers > 0 else max(1, cores // 4)
        threads = cfg.threads_per_worker or max(1, cores // n_workers)
        return [WorkerPlan(str(k), threads) for k in range(n_workers)]
    gpu_threads = cfg.threads_per_worker or GPU_WORKER_THREADS
    cpu_threads = cfg.threads_per_worker or CPU_WORKER_THREADS
    plans = [WorkerPlan(f"gpu-{gpu}", gpu_threads, gpu) for gpu in gpus]
    if cfg.n_workers > 0:
        n_cpu = max(0, cfg.n_workers - len(gpus))
    else:
        n_cpu = max(0, (cores - gpu_threads * len(gpus)) // cpu_threads)
    return plans + [WorkerPlan(f"cpu-{k}", cpu_threads) for k in range(n_cpu)]


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
    cluster = start_local_cluster(cfg, device=device)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def start_local_cluster(cfg: ClusterConfig, *, device: Device) -> SpecCluster:
    """The embedded cluster of :func:`plan_local_workers`: a ``LocalCluster`` on a CPU machine;
    with GPUs a ``SpecCluster`` of nannies whose GPU workers each see one device through their
    own ``CUDA_VISIBLE_DEVICES``."""
    plans = plan_local_workers(cfg, gpus=visible_gpus(device), cores=available_cores())
    heap = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENV.items()}
    with dask.config.set(heap):
        return _start(cfg, plans)


def _start(cfg: ClusterConfig, plans: list[WorkerPlan]) -> SpecCluster:

    dashboard = ":8787" if cfg.dashboard else None  # a busy port falls back to any
    if all(plan.gpu is None for plan in plans):
        return LocalCluster(
            n_workers=len(plans),
            threads_per_worker=plans[0].nthreads,
            processes=True,
            memory_limit=cfg.memory_limit,
            dashboard_address=dashboard,
            silence_logs=logging.ERROR,
        )
    workers = {
        plan.name: {
            "cls": Nanny,
            "options": {
                "name": plan.name,
                "nthreads": plan.nthreads,
                "host": "127.0.0.1",
                "memory_limit": cfg.memory_limit,  # "auto": the machine's share of its threads
                "resources": {"GPU": 1} if plan.gpu is not None else None,
                "env": {"CUDA_VISIBLE_DEVICES": plan.gpu or ""},
                "silence_logs": logging.ERROR,
            },
        }
        for plan in plans
    }
    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "dashboard": dashboard is not None,
                    "dashboard_address": dashboard},
    }  # fmt: skip
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR)


def worker_threads() -> int:
    """Threads of the Dask worker this runs in (all cores outside a worker)."""
    try:
        return int(get_worker().state.nthreads)
    except ValueError:  # not inside a worker (the model-only benchmark)
        return os.cpu_count() or 1


def worker_gpu_index() -> int | None:
    """The GPU of a worker of an external cluster named by number (its name modulo the visible
    GPUs); ``None`` for the embedded cluster's workers, which each see only their own GPU."""
    try:
        name = get_worker().name
    except ValueError:
        return None
    return int(name) if isinstance(name, int) or str(name).isdigit() else None
