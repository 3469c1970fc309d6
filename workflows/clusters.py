"""The cluster a batch runs on: the embedded LocalCluster, an existing scheduler, or SLURM/PBS
jobs through dask-jobqueue.

One cluster serves the whole batch. Before a scheduler is created here,
``distributed.scheduler.allowed-failures`` is set to 0: a task whose worker dies (killed,
walltime, out of memory) fails its slide's attempt at once with ``KilledWorker``, and the batch
retries the slide itself (``--retries``), resuming its store. So one poisonous slide kills at most
``1 + retries`` workers, and every retry is counted in the status table. An existing scheduler
keeps its own setting.

SLURM and PBS jobs are described by ``[cluster.slurm]`` / ``[cluster.pbs]``
(:class:`~leukoscreen.pipeline.config.JobqueueConfig`): each job starts ``processes`` Dask workers
with ``--lifetime``/``--lifetime-stagger`` (workers leave before the walltime kills them, so no
task dies with its job: dask-jobqueue issue #122), and with GPUs, ``--gres=gpu:N`` or
``ngpus=N`` plus ``--resources GPU=1`` on each worker so SR tasks run only where a GPU is.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import dask
from distributed import Client

from leukoscreen.model.config import Device
from leukoscreen.model.errors import UsageError
from leukoscreen.pipeline.cluster import WORKER_ENV, open_client
from leukoscreen.pipeline.config import ClusterConfig, JobqueueConfig

ClusterKind = Literal["local", "slurm", "pbs"]
CLUSTER_KINDS: tuple[ClusterKind, ...] = ("local", "slurm", "pbs")
ALLOWED_FAILURES = 0


def jobqueue_kwargs(kind: ClusterKind, cfg: JobqueueConfig) -> dict[str, Any]:
    """The dask-jobqueue constructor arguments of ``[cluster.<kind>]``."""
    worker_args = []
    if cfg.lifetime:
        worker_args += ["--lifetime", cfg.lifetime, "--lifetime-stagger", cfg.lifetime_stagger]
    if cfg.gpus:
        worker_args += ["--resources", "GPU=1"]
    directives = list(cfg.job_extra_directives)
    kwargs: dict[str, Any] = {
        "cores": cfg.cores,
        "memory": cfg.memory,
        "processes": cfg.processes,
        "walltime": cfg.walltime,
        "python": cfg.python or sys.executable,
        "worker_extra_args": worker_args,
        "scheduler_options": {"dashboard_address": ":0"},
        # the embedded cluster's glibc heap settings, for the job's nanny and worker too
        "job_script_prologue": [f"export {k}={v}" for k, v in WORKER_ENV.items()],
    }
    for key in ("queue", "account", "local_directory", "log_directory", "interface"):
        if getattr(cfg, key):
            kwargs[key] = getattr(cfg, key)
    if kind == "slurm":
        if cfg.gpus:
            directives.append(f"--gres=gpu:{cfg.gpus}")
    elif cfg.gpus:
        from dask.utils import parse_bytes
        from dask_jobqueue.pbs import pbs_format_bytes_ceil

        memory = pbs_format_bytes_ceil(parse_bytes(cfg.memory))
        kwargs["resource_spec"] = f"select=1:ncpus={cfg.cores}:ngpus={cfg.gpus}:mem={memory}"
    kwargs["job_extra_directives"] = directives
    return kwargs


def _jobqueue_class(kind: ClusterKind) -> Any:
    try:
        import dask_jobqueue
    except ImportError as err:
        raise UsageError(
            f"--cluster {kind}: dask-jobqueue is not installed; pip install 'leukoscreen[cluster]'"
        ) from err
    return dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster


def job_script(kind: ClusterKind, cfg: ClusterConfig) -> str:
    """The job script ``--cluster slurm|pbs`` would submit (nothing is submitted)."""
    section = cfg.slurm if kind == "slurm" else cfg.pbs
    cls = _jobqueue_class(kind)
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        cluster = cls(**jobqueue_kwargs(kind, section))
    try:
        return str(cluster.job_script())
    finally:
        cluster.close()


@contextlib.contextmanager
def open_batch_client(
    kind: ClusterKind,
    cfg: ClusterConfig,
    *,
    device: Device,
    scheduler_file: Path | None = None,
) -> Iterator[Client]:
    """Start or connect to the batch's cluster and close it afterwards.

    Args:
        kind: ``local`` (embedded LocalCluster, or ``cfg.scheduler`` when set), ``slurm``, ``pbs``.
        cfg: the ``[cluster]`` config.
        device: where the network runs (sizes the LocalCluster).
        scheduler_file: a Dask scheduler file of an existing cluster (wins over ``kind``).

    Raises:
        UsageError: the scheduler cannot be reached, or dask-jobqueue is missing.
    """
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        if scheduler_file is not None:
            try:
                client = Client(scheduler_file=str(scheduler_file), timeout="10s")
            except (OSError, TimeoutError, ValueError) as err:
                raise UsageError(
                    f"{scheduler_file}: cannot connect to the Dask scheduler it names "
                    f"({err.__class__.__name__}: {err})"
                ) from err
            with client:
                yield client
            return
        if kind == "local":
            with open_client(cfg, device=device) as client:
                yield client
            return
        section = cfg.slurm if kind == "slurm" else cfg.pbs
        cls = _jobqueue_class(kind)
        logging.getLogger("distributed").setLevel(logging.ERROR)
        cluster = cls(**jobqueue_kwargs(kind, section))
        try:
            cluster.adapt(
                minimum_jobs=max(1, section.minimum_jobs), maximum_jobs=section.maximum_jobs
            )
            with Client(cluster) as client:
                # The run sizes itself (GPU resources, batches in flight) from the workers it
                # sees: wait for the first job to start, however long the queue holds it.
                client.wait_for_workers(1)
                yield client
        finally:
            cluster.close()
