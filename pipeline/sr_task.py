"""The super-resolution task: which model, its per-worker cache, and one batch of cells.

Rules it keeps (``docs/architecture.md``):

- The model is loaded once per worker process (:func:`get_upscaler`, cached by its
  :class:`ModelSpec`) and never travels in the graph: tasks carry the small spec.
- A process-wide lock lets one batch run the network at a time (on a CPU with all the
  worker's threads; on a GPU, which runs one batch at a time anyway, it also keeps a compiled
  network's first call, which compiles it, to one thread), while the worker's other tasks read
  the crops of the next batch and write the chunks of the last one.
- A batch writes its own chunks and returns metadata, never pixels.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leukoscreen.model.config import (
    CompileMode,
    Device,
    InferenceArch,
    InferenceConfig,
    Precision,
    Scale,
)
from leukoscreen.model.errors import CheckpointError
from leukoscreen.pipeline.cluster import worker_gpu_index, worker_threads
from leukoscreen.pipeline.crops import CropGeometry, read_crops
from leukoscreen.pipeline.slide import Slide
from leukoscreen.pipeline.store import CellStore

if TYPE_CHECKING:  # torch is imported by the workers only, when they load a model
    from leukoscreen.model.inference import Upscaler


@dataclass(frozen=True)
class ModelSpec:
    """Which weights an SR task needs; small, so it travels in the graph instead of the model.

    Attributes:
        arch: network name.
        scale: super-resolution factor.
        checkpoint: absolute path of a checkpoint, or ``""`` for the shipped weights.
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``auto``, ``bf16`` or ``fp32``.
        compile: ``auto`` (``torch.compile`` on CUDA), ``on`` or ``off``.
        batch_bucket: the fixed batch a compiled network is fed (the run's batch size).
    """

    arch: InferenceArch
    scale: Scale
    checkpoint: str
    device: Device
    precision: Precision
    compile: CompileMode = "off"
    batch_bucket: int = 0

    @classmethod
    def from_config(cls, inference: InferenceConfig) -> ModelSpec:
        """The spec of a run's inference settings; the checkpoint path made absolute for remote
        workers.

        Raises:
            CheckpointError: the checkpoint file does not exist.
        """
        checkpoint = str(Path(inference.checkpoint).resolve()) if inference.checkpoint else ""
        if checkpoint and not Path(checkpoint).is_file():
            raise CheckpointError(f"{inference.checkpoint}: checkpoint not found")
        return cls(
            arch=inference.arch,
            scale=inference.scale,
            checkpoint=checkpoint,
            device=inference.device,
            precision=inference.precision,
            compile=inference.compile,
            batch_bucket=inference.batch_size,
        )


_UPSCALERS: dict[ModelSpec, Upscaler] = {}
_LOAD_LOCK = threading.Lock()  # one load per process even when several tasks start together
_SR_LOCK = threading.Lock()  # one batch in the network at a time per worker process


def get_upscaler(spec: ModelSpec) -> Upscaler:
    """The worker process's upscaler for ``spec``, loaded on first use and kept.

    Raises:
        CheckpointError: no weights for this arch/scale, or a checkpoint that does not load or
            holds another scale.
    """
    cached = _UPSCALERS.get(spec)
    if cached is not None:
        return cached
    with _LOAD_LOCK:
        cached = _UPSCALERS.get(spec)
        if cached is not None:
            return cached
        import torch

        from leukoscreen.model.inference import load_upscaler

        # Dask sets OMP_NUM_THREADS=1 in workers; give the network the worker's threads instead.
        torch.set_num_threads(max(1, worker_threads()))
        index = worker_gpu_index()
        if spec.device != "cpu" and torch.cuda.is_available() and index is not None:
            torch.cuda.set_device(index % torch.cuda.device_count())
        upscaler = load_upscaler(
            spec.arch,
            spec.scale,
            checkpoint=spec.checkpoint,
            device=spec.device,
            precision=spec.precision,
            expected_scale=spec.scale,
            compile=spec.compile,
            batch_bucket=spec.batch_bucket,
        )
        _UPSCALERS[spec] = upscaler
        return upscaler


def describe_model(spec: ModelSpec) -> dict[str, Any]:
    """Load the model (into this process's cache) and say what it is: a task run once per run.

    Returns:
        ``{"arch", "scale", "checkpoint_sha256", "has_prior", "device", "compiled"}``.
    """
    upscaler = get_upscaler(spec)
    return {
        "arch": str(upscaler.arch),
        "scale": int(upscaler.scale),
        "checkpoint_sha256": str(upscaler.checkpoint_sha256),
        "has_prior": bool(upscaler.has_prior),
        "device": str(upscaler.device),
        "compiled": bool(upscaler.compiled),
    }


def super_resolve(
    upscaler: Upscaler, lr: np.ndarray, geometry: CropGeometry, *, cells_per_call: int = 0
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Super-resolve LR crops and trim the context margin.

    Args:
        upscaler: a loaded ``leukoscreen.model.inference.Upscaler``.
        lr: (N, h, w, 3) uint8 crops, ``h = w = geometry.read_px``.
        geometry: the crop geometry.
        cells_per_call: feed the network this many crops at a time (bounds activation memory);
            0 feeds all N at once.

    Returns:
        SR (N, H, W, 3) uint8, parsing labels (N, H, W) uint8 and the parsing confidence (N,)
        float32 of each cell (:func:`cell_confidence`), the last two ``None`` without a prior;
        ``H = W = geometry.hr_size_px``.
    """
    step = cells_per_call if cells_per_call > 0 else max(len(lr), 1)
    srs, parsings, confidences = [], [], []
    for start in range(0, max(len(lr), 1), step):
        sr, labels, confidence = upscaler.upscale_maps(
            lr[start : start + step], trim=geometry.margin_px
        )  # the context margin trimmed (GP-SFT never runs its HR stages on it)
        srs.append(sr)
        if labels is not None and confidence is not None:
            parsings.append(labels)
            confidences.append(cell_confidence(labels, confidence))
    sr_all = np.ascontiguousarray(np.concatenate(srs))  # (N, H, W, 3)
    if not parsings:
        return sr_all, None, None
    return sr_all, np.ascontiguousarray(np.concatenate(parsings)), np.concatenate(confidences)


def cell_confidence(labels: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """(N,) float32 parsing confidence of each cell: the mean pixel confidence (the winning
    class's share of the sigmoid probabilities, 1/3 to 1) over the pixels labelled cytoplasm or
    nucleus; 0 where no pixel is labelled cell.

    Args:
        labels: (N, H, W) uint8 parsing labels.
        confidence: (N, H, W) float32 pixel confidence.
    """
    cell = labels > 0
    counts = cell.sum(axis=(1, 2))
    sums = np.where(cell, confidence, 0.0).sum(axis=(1, 2))
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).astype(np.float32)


def sr_batch_task(
    store_path: str,
    batch_index: int,
    slide: Slide,
    rows: np.ndarray,
    cols: np.ndarray,
    geometry: CropGeometry,
    spec: ModelSpec,
    checkpoint_sha256: str,
    cpu_cells_per_call: int = 0,
) -> dict[str, Any]:
    """One SR task: read the batch's crops, upscale, write its chunks, return timings.

    Args:
        store_path: the store.
        batch_index: the batch (it owns its chunks).
        slide: the slide (pickled by path; reopened here).
        rows: (n,) float64 cell-centre rows of the batch, level-0 px.
        cols: (n,) float64 cell-centre columns.
        geometry: crop geometry.
        spec: which model.
        checkpoint_sha256: the hash the run's store records; another one is an error.
        cpu_cells_per_call: cells per network call on a CPU device (0: the whole batch).

    Returns:
        ``{"batch", "n_cells", "read_s", "model_s", "write_s"}``: metadata only, no pixels.
    """
    t0 = time.perf_counter()
    try:
        lr = read_crops(slide, rows, cols, size_px=geometry.core_px, margin_px=geometry.margin_px)
    finally:
        slide.close()
    t1 = time.perf_counter()
    upscaler = get_upscaler(spec)
    if upscaler.checkpoint_sha256 != checkpoint_sha256:
        raise CheckpointError(
            f"{spec.checkpoint or spec.arch}: this worker loaded weights with sha256 "
            f"{upscaler.checkpoint_sha256[:12]}..., the store records {checkpoint_sha256[:12]}..."
        )
    on_gpu = str(upscaler.device).startswith("cuda")
    with _SR_LOCK:
        t2 = time.perf_counter()
        per_call = 0 if on_gpu else cpu_cells_per_call
        sr, parsing, confidence = super_resolve(upscaler, lr, geometry, cells_per_call=per_call)
        t3 = time.perf_counter()
    store = CellStore.open(Path(store_path))
    store.write_batch(batch_index, sr, parsing, lr, confidence)
    store.mark_done(batch_index)  # last: the batch is done only once its data is on disk
    t4 = time.perf_counter()
    return {
        "batch": batch_index,
        "n_cells": len(rows),
        "read_s": t1 - t0,
        "model_s": t3 - t2,
        "write_s": t4 - t3,
    }
