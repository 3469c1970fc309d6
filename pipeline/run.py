"""``leukoscreen run``: the whole-slide pipeline on Dask, from a slide file to a complete store.

This is the only module that picks a scheduler and triggers computation. The flow (DESIGN §4)::

    slide ─► tile plan + stain estimate (driver) ─► detect_tile on CPU tasks ─► cell table
      (gathered: small) ─► ids sorted by (row, col) ─► batches of B cells ─► SR tasks: read LR
      crops, upscale, trim the margin, write the batch's own chunks, return metadata ─► finalize

Rules it keeps:

- Futures carry metadata, never pixels; at most ``max_batches_in_flight`` SR batches per SR
  worker are submitted at a time (``as_completed`` refills as batches finish).
- The model is loaded once per worker process (:func:`_get_upscaler`, cached by the checkpoint
  and device) and never travels in the graph: tasks carry a :class:`ModelSpec`.
- SR tasks ask for ``resources={"GPU": 1}`` only when the cluster has GPU workers. On CPU
  workers a process-wide lock lets one batch run the network at a time with all the worker's
  threads, while other tasks read crops and write chunks.
- A batch owns its Zarr chunks, so a task killed with its worker is simply rerun; resume skips
  batches marked done. The store reads ``complete`` only after every batch is written.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, LocalCluster, as_completed, get_worker
from tqdm import tqdm

from leukoscreen.model.errors import CheckpointError, UsageError
from leukoscreen.pipeline import store as zstore
from leukoscreen.pipeline.config import ClusterConfig, Config, DetectConfig, to_dict
from leukoscreen.pipeline.crops import CropGeometry, read_crops, trim_margin
from leukoscreen.pipeline.detect import CellTable, Tile, detect_tile, plan_detection
from leukoscreen.pipeline.slide import Slide
from leukoscreen.pipeline.stain import StainEstimate

STORE_SUFFIX = ".leukoscreen.zarr"

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- model on workers


@dataclass(frozen=True)
class ModelSpec:
    """Which weights an SR task needs; small, so it travels in the graph instead of the model.

    Attributes:
        arch: network name.
        scale: super-resolution factor.
        checkpoint: absolute path of a checkpoint, or ``""`` for the shipped weights.
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``auto``, ``bf16`` or ``fp32``.
    """

    arch: str
    scale: int
    checkpoint: str
    device: str
    precision: str


_UPSCALERS: dict[ModelSpec, Any] = {}
_LOAD_LOCK = threading.Lock()  # one load per process even when several tasks start together
_CPU_SR_LOCK = threading.Lock()  # one CPU batch in the network at a time, using every thread


def _worker_threads() -> int:
    try:
        return int(get_worker().state.nthreads)
    except ValueError:  # not inside a worker (the model-only benchmark)
        return os.cpu_count() or 1


def _gpu_index() -> int | None:
    """The GPU of this worker: its name modulo the visible GPUs (one worker per GPU)."""
    try:
        name = get_worker().name
    except ValueError:
        return None
    return int(name) if isinstance(name, int) or str(name).isdigit() else None


def _get_upscaler(spec: ModelSpec) -> Any:
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

        from leukoscreen.model.inference import load_checkpoint, load_pretrained

        # Dask sets OMP_NUM_THREADS=1 in workers; give the network the worker's threads instead.
        torch.set_num_threads(max(1, _worker_threads()))
        index = _gpu_index()
        if spec.device != "cpu" and torch.cuda.is_available() and index is not None:
            torch.cuda.set_device(index % torch.cuda.device_count())
        if spec.checkpoint:
            upscaler = load_checkpoint(
                spec.checkpoint,
                device=spec.device,
                precision=spec.precision,
                expected_scale=spec.scale,
            )
        else:
            upscaler = load_pretrained(
                spec.arch, spec.scale, device=spec.device, precision=spec.precision
            )
        _UPSCALERS[spec] = upscaler
        return upscaler


def describe_model(spec: ModelSpec) -> dict[str, Any]:
    """Load the model (into this process's cache) and say what it is: a task run once per run.

    Returns:
        ``{"arch", "scale", "checkpoint_sha256", "has_prior", "device"}``.
    """
    upscaler = _get_upscaler(spec)
    return {
        "arch": str(upscaler.arch),
        "scale": int(upscaler.scale),
        "checkpoint_sha256": str(upscaler.checkpoint_sha256),
        "has_prior": bool(upscaler.has_prior),
        "device": str(upscaler.device),
    }


def super_resolve(
    upscaler: Any, lr: np.ndarray, geometry: CropGeometry, *, cells_per_call: int = 0
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
        sr, parsing, confidence = upscaler.upscale_maps(lr[start : start + step])
        srs.append(trim_margin(sr, geometry.trim_px))
        if parsing is not None and confidence is not None:
            labels = trim_margin(parsing, geometry.trim_px)
            parsings.append(labels)
            confidences.append(cell_confidence(labels, trim_margin(confidence, geometry.trim_px)))
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
    upscaler = _get_upscaler(spec)
    if upscaler.checkpoint_sha256 != checkpoint_sha256:
        raise CheckpointError(
            f"{spec.checkpoint or spec.arch}: this worker loaded weights with sha256 "
            f"{upscaler.checkpoint_sha256[:12]}..., the store records {checkpoint_sha256[:12]}..."
        )
    on_gpu = str(upscaler.device).startswith("cuda")
    with contextlib.nullcontext() if on_gpu else _CPU_SR_LOCK:
        t2 = time.perf_counter()
        per_call = 0 if on_gpu else cpu_cells_per_call
        sr, parsing, confidence = super_resolve(upscaler, lr, geometry, cells_per_call=per_call)
        t3 = time.perf_counter()
    zstore.write_batch(Path(store_path), batch_index, sr, parsing, lr, confidence)
    t4 = time.perf_counter()
    return {
        "batch": batch_index,
        "n_cells": len(rows),
        "read_s": t1 - t0,
        "model_s": t3 - t2,
        "write_s": t4 - t3,
    }


def detect_task(slide: Slide, tile: Tile, cfg: DetectConfig, stain: StainEstimate) -> CellTable:
    """One detection task: :func:`detect_tile` and release the slide file."""
    try:
        return detect_tile(slide, tile, cfg, stain)
    finally:
        slide.close()


# ----------------------------------------------------------------------------- cluster


def count_gpus(device: str) -> int:
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


def _available_cores() -> int:
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
def open_client(cfg: ClusterConfig, *, device: str) -> Iterator[Client]:
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
    n_workers, threads = size_local_cluster(cfg, n_gpus=n_gpus, cores=_available_cores())
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


# ----------------------------------------------------------------------------- run


@dataclass(frozen=True)
class RunSummary:
    """What one slide's run did.

    Attributes:
        slide: the slide file.
        store: the store written.
        n_cells: cells found (and now in the store).
        n_batches: SR batches of the store.
        batches_skipped: batches already done by an earlier, interrupted run.
        cells_super_resolved: cells super-resolved by this invocation.
        detect_s: wall seconds of detection (0 when the table came from the store).
        sr_s: wall seconds of the SR stage.
        total_s: wall seconds of the whole run, cluster start excluded.
        model_s: seconds spent inside the network, summed over tasks.
    """

    slide: Path
    store: Path
    n_cells: int
    n_batches: int
    batches_skipped: int
    cells_super_resolved: int
    detect_s: float
    sr_s: float
    total_s: float
    model_s: float

    def describe(self) -> str:
        """One line for the terminal."""
        if self.n_cells == 0:
            return (
                f"{self.slide}: no leukocytes found; wrote a complete store with zero cells: "
                f"{self.store}"
            )
        resumed = f", {self.batches_skipped} done before" if self.batches_skipped else ""
        return (
            f"{self.slide}: {self.n_cells} cells in {self.n_batches} batches{resumed} -> "
            f"{self.store} ({self.total_s:.1f} s, {self.cells_per_s:.1f} cells/s)"
        )

    @property
    def cells_per_s(self) -> float:
        """End-to-end throughput of this invocation (cells super-resolved per wall second)."""
        return self.cells_super_resolved / self.total_s if self.total_s > 0 else 0.0


def default_output(slide_path: Path, directory: Path | None = None) -> Path:
    """``<directory or cwd>/<slide stem>.leukoscreen.zarr``."""
    return (directory or Path.cwd()) / f"{Path(slide_path).stem}{STORE_SUFFIX}"


def expected_mpp(config: Config) -> float:
    """Microns per LR pixel the model expects at ``config.inference.scale``."""
    return config.slide.expected_mpp * config.inference.scale / 8


def check_mpp(path: Path, mpp: float, config: Config) -> None:
    """Refuse a pixel size so far from the model's that the super-resolution makes no sense.

    Raises:
        UsageError: ``mpp`` differs from :func:`expected_mpp` by more than the tolerance ratio.
    """
    expected = expected_mpp(config)
    ratio = mpp / expected
    tolerance = config.slide.mpp_tolerance
    if ratio > tolerance or ratio < 1 / tolerance:
        raise UsageError(
            f"{path}: pixel size {mpp:g} um/px is {ratio:.3g}x the {expected:g} um/px the "
            f"x{config.inference.scale} model expects (accepted: within {tolerance:g}x); check "
            "the slide's mpp (--mpp) or choose the other --scale"
        )


def open_slide(path: Path, config: Config) -> Slide:
    """Open a slide with the configured mpp and check its pixel size against the model's.

    Raises:
        SlideReadError: not a readable slide.
        MissingMppError: no pixel size in the metadata and none configured.
        UsageError: a pixel size far from the model's expectation.
    """
    slide = Slide.open(path, mpp=config.slide.mpp or None)
    try:
        check_mpp(Path(path), slide.mpp, config)
    except BaseException:
        slide.close()
        raise
    return slide


def check_config(config: Config) -> CropGeometry:
    """Check the inference settings a run needs and return the crop geometry.

    Raises:
        UsageError: a scale other than 4 or 8, a batch size below 1, or an HR size that is not a
            multiple of the scale.
    """
    inference = config.inference
    if inference.scale not in (4, 8):
        raise UsageError(f"--scale: expected 4 or 8, found {inference.scale}")
    if inference.batch_size < 1:
        raise UsageError(f"--batch-size: expected >= 1, found {inference.batch_size}")
    if config.output.resume and config.output.overwrite:
        raise UsageError("--resume and --overwrite: choose one")
    try:
        return CropGeometry(
            scale=inference.scale,
            hr_size_px=inference.hr_size_px,
            margin_px=inference.context_margin_px,
        )
    except ValueError as err:
        raise UsageError(f"inference: {err}") from err


def model_spec(config: Config) -> ModelSpec:
    """The :class:`ModelSpec` of a config (checkpoint path made absolute for remote workers)."""
    inference = config.inference
    checkpoint = str(Path(inference.checkpoint).resolve()) if inference.checkpoint else ""
    if checkpoint and not Path(checkpoint).is_file():
        raise CheckpointError(f"{inference.checkpoint}: checkpoint not found")
    return ModelSpec(
        arch=inference.arch,
        scale=inference.scale,
        checkpoint=checkpoint,
        device=inference.device,
        precision=inference.precision,
    )


def table_columns(cells: CellTable, *, mpp: float, batch_size: int) -> dict[str, np.ndarray]:
    """Order cells by (row, col), number them and put them in batches: the store's table.

    Args:
        cells: the detections, any order.
        mpp: microns per level-0 pixel (for the ``_um`` columns).
        batch_size: cells per batch.

    Returns:
        The ``store.TABLE_COLUMNS`` columns, cell-id order.
    """
    ordered = cells.take(cells.sort_key())
    ids = np.arange(len(ordered), dtype=np.int64)
    return {
        "cell_id": ids,
        "row": ordered.row,
        "col": ordered.col,
        "row_um": ordered.row * mpp,
        "col_um": ordered.col * mpp,
        "bbox": ordered.bbox,
        "area_um2": ordered.area_um2,
        "score": ordered.score,
        "batch": ids // batch_size,
    }


def run_slide(
    path: Path,
    config: Config,
    *,
    out: Path | None = None,
    resume: bool | None = None,
    overwrite: bool | None = None,
    client: Client | None = None,
    progress: bool = True,
    log: Log = _stderr,
) -> RunSummary:
    """Run the whole pipeline on one slide into one store.

    Args:
        path: the slide file.
        config: the resolved config.
        out: the store path; ``<cwd>/<stem>.leukoscreen.zarr`` when omitted.
        resume: continue an existing store (default ``config.output.resume``). With no store
            there, a new one is started.
        overwrite: delete an existing store first (default ``config.output.overwrite``).
        client: a connected Dask client to use; without one, the cluster of ``config.cluster``
            is started (or connected to) and closed at the end.
        progress: show a progress bar on stderr.
        log: where the one-line messages go (dashboard link, zero cells).

    Returns:
        The run's summary.

    Raises:
        SlideReadError, MissingMppError: the slide cannot be read or has no pixel size.
        UsageError: bad settings, or a pixel size far from the model's.
        CheckpointError: no weights for this arch/scale, or a bad checkpoint.
        OutputExistsError: the store exists and neither resume nor overwrite is set.
        OutputError: the output cannot be written, or a resume on another run's store.
    """
    config = _with_flags(config, resume=resume, overwrite=overwrite)
    path = Path(path)
    out = Path(out) if out is not None else default_output(path)
    check_config(config)
    spec = model_spec(config)
    with open_slide(path, config) as slide:
        zstore.check_output_location(
            out, resume=config.output.resume, overwrite=config.output.overwrite
        )
        if client is not None:
            return _run_on(client, slide, config, spec, out, progress=progress, log=log)
        with open_client(config.cluster, device=config.inference.device) as own_client:
            return _run_on(own_client, slide, config, spec, out, progress=progress, log=log)


def check_distinct_outputs(slides: Sequence[Path], outs: Sequence[Path], *, kind: str) -> None:
    """Refuse two slides whose outputs (stores, tables) would be one path.

    Raises:
        UsageError: naming the second slide, the shared path and the first slide.
    """
    first: dict[Path, Path] = {}
    for slide_path, out_path in zip(slides, outs, strict=True):
        if out_path in first:
            raise UsageError(
                f"{slide_path}: its {kind} {out_path} would also hold {first[out_path]}; "
                "expected slides with different file names"
            )
        first[out_path] = Path(slide_path)


def run_slides(
    paths: Sequence[Path],
    config: Config,
    *,
    out: Path | None = None,
    progress: bool = True,
    log: Log = _stderr,
) -> list[RunSummary]:
    """Run several slides on one cluster, one store each; every input is checked first.

    Args:
        paths: slide files.
        config: the resolved config (``output.resume``/``overwrite`` apply to every slide).
        out: with one slide, the store path; with several, the folder for
            ``<stem>.leukoscreen.zarr`` stores (cwd when omitted).
        progress: show progress bars.
        log: one-line messages.

    Raises:
        UsageError: no slides, or two slides whose stores would have the same name.
        The errors of :func:`run_slide`, before any store is created when they come from the
        inputs.
    """
    if not paths:
        raise UsageError("leukoscreen run: expected at least one slide")
    check_config(config)
    model_spec(config)
    if len(paths) == 1:
        outs = [Path(out) if out is not None else default_output(paths[0])]
    else:
        outs = [default_output(p, out) for p in paths]
        check_distinct_outputs(paths, outs, kind="store")
    for slide_path, store_path in zip(paths, outs, strict=True):  # fail fast, before any work
        open_slide(Path(slide_path), config).close()
        zstore.check_output_location(
            store_path, resume=config.output.resume, overwrite=config.output.overwrite
        )
    summaries = []
    with open_client(config.cluster, device=config.inference.device) as client:
        for slide_path, store_path in zip(paths, outs, strict=True):
            summaries.append(
                run_slide(
                    slide_path, config, out=store_path, client=client, progress=progress, log=log
                )
            )
    return summaries


def _with_flags(config: Config, *, resume: bool | None, overwrite: bool | None) -> Config:
    output = config.output
    if resume is not None:
        output = replace(output, resume=resume)
    if overwrite is not None:
        output = replace(output, overwrite=overwrite)
    return replace(config, output=output)


def _run_on(
    client: Client,
    slide: Slide,
    config: Config,
    spec: ModelSpec,
    out: Path,
    *,
    progress: bool,
    log: Log,
) -> RunSummary:
    t_start = time.perf_counter()
    info = inspect_cluster(client)
    if info.dashboard_link and (config.cluster.dashboard or config.cluster.scheduler):
        log(f"leukoscreen: Dask dashboard at {info.dashboard_link}")
    geometry = check_config(config)
    inference = config.inference

    # The model is loaded where SR runs; a missing scale/checkpoint fails here, before any write.
    model = client.submit(describe_model, spec, resources=info.sr_resources, pure=False).result()
    if model["scale"] != inference.scale:
        raise CheckpointError(
            f"{spec.checkpoint or spec.arch}: weights are for x{model['scale']}, the run asks "
            f"for x{inference.scale}"
        )
    height, width = slide.dimensions
    identity = zstore.StoreIdentity(
        slide_path=str(slide.path),
        slide_size_px=(int(height), int(width)),
        slide_header_sha256=slide.header_sha256(),
        slide_vendor=str(slide.vendor),
        mpp=float(slide.mpp),
        scale=inference.scale,
        arch=model["arch"],
        checkpoint_sha256=model["checkpoint_sha256"],
        has_prior=model["has_prior"],
        hr_size_px=geometry.hr_size_px,
        margin_px=geometry.margin_px,
        batch_size=inference.batch_size,
    )

    state: zstore.ResumeState | None = None
    if config.output.resume and zstore.is_store(out):
        state = zstore.open_for_resume(out, identity)
    else:
        # An existing store here was allowed by check_output_location (overwrite, or resume of
        # an empty folder); create_store checks again before deleting anything.
        zstore.create_store(
            out,
            identity,
            config=to_dict(config),
            overwrite=config.output.overwrite or config.output.resume,
        )

    detect_s = 0.0
    if state is None or state.n_cells is None or state.done is None:
        t0 = time.perf_counter()
        cells, stain = _detect(client, slide, config, progress=progress)
        detect_s = time.perf_counter() - t0
        if not stain.has_foreground:
            log(
                f"leukoscreen: warning: {slide.path}: no stained foreground found (blank or "
                "unstained slide?); the store will hold zero cells"
            )
        columns = table_columns(cells, mpp=slide.mpp, batch_size=inference.batch_size)
        zstore.write_cell_table(
            out,
            columns,
            compression_level=config.output.compression_level,
            detection={"stain": stain.to_attrs()},
        )
        done = np.zeros(zstore.n_batches_for(len(cells), inference.batch_size), dtype=bool)
    else:
        columns = zstore.read_table(out)
        done = state.done
    n_cells = len(columns["cell_id"])

    t0 = time.perf_counter()
    cells_now, model_s = _super_resolve_all(
        client, slide, out, columns, done, geometry, spec, model["checkpoint_sha256"], info,
        config.cluster.max_batches_in_flight, inference.batch_size,
        config.cluster.cpu_cells_per_call, progress=progress,
    )  # fmt: skip
    sr_s = time.perf_counter() - t0
    total_s = time.perf_counter() - t_start
    zstore.finalize(
        out,
        timings={
            "detect_s": detect_s,
            "sr_s": sr_s,
            "total_s": total_s,
            "model_s": model_s,
            "batches_skipped": int(done.sum()),
        },
    )
    return RunSummary(
        slide=Path(slide.path),
        store=out,
        n_cells=n_cells,
        n_batches=len(done),
        batches_skipped=int(done.sum()),
        cells_super_resolved=cells_now,
        detect_s=detect_s,
        sr_s=sr_s,
        total_s=total_s,
        model_s=model_s,
    )


def _detect(
    client: Client, slide: Slide, config: Config, *, progress: bool
) -> tuple[CellTable, StainEstimate]:
    """Detection as one CPU task per tile; tables gathered in tile order (deterministic).

    The plan and the slide's stain estimate are made here (a few windows are read), and the
    same estimate goes to every tile task.
    """
    cfg = config.detect
    tiles, stain = plan_detection(slide, cfg)
    if not stain.has_foreground:
        return CellTable.empty(), stain
    run_id = uuid.uuid4().hex[:8]
    futures = [
        client.submit(detect_task, slide, tile, cfg, stain, key=f"leukoscreen-detect-{run_id}-{i}")
        for i, tile in enumerate(tiles)
    ]
    index = {f.key: i for i, f in enumerate(futures)}
    tables: list[CellTable | None] = [None] * len(tiles)
    with tqdm(
        total=len(tiles), unit="tile", desc=f"detect {slide.path.name}", disable=not progress,
        file=sys.stderr,
    ) as bar:  # fmt: skip
        for future in as_completed(futures):
            tables[index[future.key]] = future.result()
            future.release()
            bar.update(1)
            bar.set_postfix(cells=sum(len(t) for t in tables if t is not None))
    return CellTable.concat([t for t in tables if t is not None]), stain


def _super_resolve_all(
    client: Client,
    slide: Slide,
    out: Path,
    columns: dict[str, np.ndarray],
    done: np.ndarray,
    geometry: CropGeometry,
    spec: ModelSpec,
    checkpoint_sha256: str,
    info: ClusterInfo,
    max_batches_in_flight: int,
    spec_batch_size: int,
    cpu_cells_per_call: int,
    *,
    progress: bool,
) -> tuple[int, float]:
    """Submit the unfinished batches, a bounded number at a time.

    Returns:
        ``(cells super-resolved now, seconds inside the network summed over tasks)``.
    """
    n_cells = len(columns["cell_id"])
    batch_size = spec_batch_size
    todo = iter([int(b) for b in np.flatnonzero(~done)])
    limit = max(1, max_batches_in_flight * info.n_sr_workers)
    run_id = uuid.uuid4().hex[:8]
    pending = as_completed()
    model_s = 0.0

    def submit_next() -> None:
        batch = next(todo, None)
        if batch is None:
            return
        start, stop = zstore.batch_bounds(batch, n_cells, batch_size)
        pending.add(
            client.submit(
                sr_batch_task,
                str(out),
                batch,
                slide,
                columns["row"][start:stop],
                columns["col"][start:stop],
                geometry,
                spec,
                checkpoint_sha256,
                cpu_cells_per_call,
                key=f"leukoscreen-sr-{run_id}-{batch}",
                resources=info.sr_resources,
                pure=False,
            )
        )

    starts = np.flatnonzero(done) * batch_size
    skipped = int(np.minimum(batch_size, n_cells - starts).sum())  # the last batch may be short
    cells_now = 0
    with tqdm(
        total=n_cells, initial=skipped, unit="cell", desc=f"super-resolve {slide.path.name}",
        disable=not progress, file=sys.stderr, smoothing=0.1,
    ) as bar:  # fmt: skip
        for _ in range(limit):
            submit_next()
        for future in pending:
            meta = future.result()
            future.release()
            model_s += meta["model_s"]
            cells_now += meta["n_cells"]
            bar.update(meta["n_cells"])
            submit_next()
    return cells_now, model_s
