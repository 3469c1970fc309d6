"""Helpers of the end-to-end tests (``test_run``, ``test_batch``): a tiny random-weight GP
network, a config that runs it fast on small cells, and store equality.

Imported by file name (``tests/`` is on ``sys.path``, see ``conftest.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from leukoscreen.model.checkpoint import save_weights
from leukoscreen.model.networks import build_network
from leukoscreen.pipeline import store

# Small cells keep the tiny network fast: x8, 64 px HR = 8 px LR core + 2 px margin per side.
HR, MARGIN, BATCH = 64, 2, 2
LR = HR // 8 + 2 * MARGIN
TINY = {"num_features": 8, "num_blocks": 1, "unet_widths": (4, 8, 16, 32, 64)}


def tiny_checkpoint(path: Path, *, scale: int, seed: int) -> Path:
    """A random-weight tiny GP checkpoint for ``scale``."""
    torch.manual_seed(seed)
    save_weights(build_network("gp", scale=scale, **TINY), path, arch="gp", scale=scale,
                 arch_kwargs=TINY)  # fmt: skip
    return path


def write_config(path: Path, checkpoint: Path, *, precision: str = "fp32") -> Path:
    """A config running ``checkpoint`` on CPU with small cells, one single-thread worker."""
    path.write_text(
        f"""
[inference]
checkpoint = "{checkpoint}"
hr_size_px = {HR}
context_margin_px = {MARGIN}
batch_size = {BATCH}
device = "cpu"
precision = "{precision}"

[detect]
tile_size_px = 1024

[cluster]
n_workers = 1
threads_per_worker = 1
"""
    )
    return path


def assert_same_store(actual: Path, expected: Path) -> None:
    """Equal cell arrays and table; both complete."""
    a, e = store.open_cells(actual), store.open_cells(expected)
    assert set(a.table) == set(e.table)
    for name in e.table:
        np.testing.assert_array_equal(a.table[name], e.table[name], err_msg=name)
    for name in ("sr", "parsing", "lr"):
        np.testing.assert_array_equal(
            getattr(a, name).compute(), getattr(e, name).compute(), err_msg=name
        )


_CLI = (
    "import sys; from leukoscreen.pipeline.cli import entry; sys.argv[0] = 'leukoscreen'; entry()"
)


def kill_when(args: list[str], ready: Callable[[], bool], timeout_s: float = 120.0) -> None:
    """Start the CLI in its own process group and SIGKILL the whole group once ``ready()``."""
    proc = subprocess.Popen([sys.executable, "-c", _CLI, *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the run ended (status {proc.returncode}) before the kill point")
            if time.monotonic() > deadline:
                pytest.fail("kill point not reached in time")
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def done_batches(out: Path) -> int:
    """SR batches of a store marked done (chunk files of ``batches/done``)."""
    folder = out / "batches" / "done" / "c"
    return len(list(folder.iterdir())) if folder.is_dir() else 0
