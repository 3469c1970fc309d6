"""Sizing the embedded cluster and counting GPUs."""

from __future__ import annotations

import pytest


def test_size_local_cluster() -> None:
    from leukoscreen.pipeline.cluster import size_local_cluster
    from leukoscreen.pipeline.config import ClusterConfig

    assert size_local_cluster(ClusterConfig(), n_gpus=0, cores=2) == (1, 2)
    assert size_local_cluster(ClusterConfig(), n_gpus=0, cores=16) == (4, 4)
    assert size_local_cluster(ClusterConfig(), n_gpus=2, cores=16) == (2, 8)
    assert size_local_cluster(ClusterConfig(n_workers=3, threads_per_worker=1), n_gpus=0,
                              cores=16) == (3, 1)  # fmt: skip


def test_count_gpus_follows_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    from leukoscreen.pipeline.cluster import count_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert count_gpus("auto") == 2
    assert count_gpus("cpu") == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert count_gpus("cuda") == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert count_gpus("auto") == 0
