"""``leukoscreen run``: plan and drive slides, each from its file to a complete store.

This is the only module that picks a scheduler and triggers computation. The flow (DESIGN §4)::

    slide ─► tile plan + stain estimate (driver) ─► detect_tile on CPU tasks ─► cell table
      (gathered: small) ─► ids sorted by (row, col) ─► batches of B cells ─► SR tasks
      (:mod:`leukoscreen.pipeline.sr_task`): read LR crops, upscale, trim the margin, write the
      batch's own chunks, return metadata ─► finalize

Rules it keeps:

- The config was validated when it was loaded; :func:`plan_run` builds the crop geometry and the
  model spec once per invocation and everything below receives them.
- One writer per store: the run holds the store's writer lock
  (:mod:`leukoscreen.pipeline.store_lock`) from before it creates, resumes or overwrites it until
  it ends.
- Futures carry metadata, never pixels; at most ``max_batches_in_flight`` SR batches per SR
  worker are submitted at a time (``as_completed`` refills as batches finish).
- SR tasks ask for ``resources={"GPU": 1}`` only when the cluster has GPU workers.
- A batch owns its Zarr chunks, so a task killed with its worker is simply rerun; resume skips
  batches marked done. The store reads ``complete`` only after every batch is written.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from distributed import Client, Future, as_completed
from tqdm import tqdm

from leukoscreen.model.errors import CheckpointError, SlideTimeoutError, UsageError
from leukoscreen.pipeline.cell_table import CellTable
from leukoscreen.pipeline.cluster import ClusterInfo, inspect_cluster, open_client
from leukoscreen.pipeline.config import Config, DetectConfig, to_dict
from leukoscreen.pipeline.detect import Tile, detect_tile, plan_detection
from leukoscreen.pipeline.plan import (
    STORE_SUFFIX,
    RunPlan,
    RunSummary,
    check_distinct_outputs,
    check_mpp,
    default_output,
    expected_mpp,
    open_slide,
    plan_run,
    table_columns,
)
from leukoscreen.pipeline.slide import Slide
from leukoscreen.pipeline.sr_task import describe_model, sr_batch_task
from leukoscreen.pipeline.stain import StainEstimate
from leukoscreen.pipeline.store import (
    CellStore,
    StoreIdentity,
    check_output_location,
    is_store,
    read_table,
)
from leukoscreen.pipeline.store_lock import WriterLock

__all__ = [
    "STORE_SUFFIX",
    "RunPlan",
    "RunSummary",
    "check_distinct_outputs",
    "check_mpp",
    "default_output",
    "expected_mpp",
    "open_slide",
    "plan_run",
    "run_locked",
    "run_slide",
    "run_slides",
    "table_columns",
]

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    """Run the whole pipeline on one slide into one store: :func:`run_slides` of one slide.

    Args:
        path: the slide file.
        config: the resolved config.
        out: the store path; ``<cwd>/<stem>.leukoscreen.zarr`` when omitted.
        resume: continue an existing store (default ``config.output.resume``); with no store
            there, a new one is started.
        overwrite: delete an existing store first (default ``config.output.overwrite``).
        client, progress, log: as :func:`run_slides`.
    """
    output = config.output
    output = replace(
        output,
        resume=output.resume if resume is None else resume,
        overwrite=output.overwrite if overwrite is None else overwrite,
    )
    config = replace(config, output=output)
    (summary,) = run_slides([path], config, out=out, client=client, progress=progress, log=log)
    return summary


def run_slides(
    paths: Sequence[Path],
    config: Config,
    *,
    out: Path | None = None,
    client: Client | None = None,
    progress: bool = True,
    log: Log = _stderr,
) -> list[RunSummary]:
    """Run several slides on one cluster, one store each; every input is checked first.

    Args:
        paths: slide files.
        config: the resolved config (``output.resume``/``overwrite`` apply to every slide).
        out: with one slide, the store path; with several, the folder for
            ``<stem>.leukoscreen.zarr`` stores (cwd when omitted).
        client: a connected Dask client to use; without one, the cluster of ``config.cluster``
            is started (or connected to) and closed at the end.
        progress: show progress bars.
        log: one-line messages.

    Raises:
        UsageError: no slides, two slides whose stores would have the same name, both resume
            and overwrite, or a pixel size far from the model's.
        SlideReadError, MissingMppError: a slide cannot be read or has no pixel size.
        CheckpointError: no weights for this arch/scale, or a bad checkpoint.
        OutputExistsError: a store exists and neither resume nor overwrite is set.
        OutputError: an output cannot be written, or a resume on another run's store.
        StoreLockedError: another run is writing a store.
        The input errors come before any store is created or any cluster started.
    """
    if not paths:
        raise UsageError("leukoscreen run: expected at least one slide")
    plan = plan_run(config)
    output = plan.config.output
    if len(paths) == 1:
        outs = [Path(out) if out is not None else default_output(paths[0])]
    else:
        outs = [default_output(p, out) for p in paths]
        check_distinct_outputs(paths, outs, kind="store")
    with contextlib.ExitStack() as stack:
        slides = []
        for slide_path, store_path in zip(paths, outs, strict=True):  # fail fast, before work
            slides.append(stack.enter_context(open_slide(Path(slide_path), plan.config)))
            check_output_location(store_path, resume=output.resume, overwrite=output.overwrite)
            stack.enter_context(WriterLock.acquire(store_path))  # held until every slide is done
        if client is None:
            cluster = plan.config.cluster
            client = stack.enter_context(open_client(cluster, device=plan.spec.device))
        return [
            _run_one(client, slide, plan, store_path, progress=progress, log=log)
            for slide, store_path in zip(slides, outs, strict=True)
        ]


def run_locked(
    client: Client,
    path: Path,
    plan: RunPlan,
    out: Path,
    *,
    progress: bool = False,
    log: Log = _stderr,
    timeout_s: float | None = None,
) -> RunSummary:
    """One slide on a connected client, for a caller that holds the store's writer lock
    (``leukoscreen batch``): open and check the slide, then run it into ``out``.

    Args:
        client, plan: the cluster and the plan (its ``output.resume``/``overwrite`` apply).
        path, out: the slide file and its store.
        progress, log: as :func:`run_slides`.
        timeout_s: wall seconds the slide may take; past them its tasks are cancelled.

    Raises:
        SlideTimeoutError: the slide took longer than ``timeout_s``.
        The errors of :func:`run_slides` for one slide.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    output = plan.config.output
    with open_slide(Path(path), plan.config) as slide:
        check_output_location(out, resume=output.resume, overwrite=output.overwrite)
        return _run_one(client, slide, plan, out, progress=progress, log=log, deadline=deadline)


def _remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (a ``time.monotonic`` value), ``None`` without one."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _cancel_on_timeout(client: Client, futures: Sequence[Future], slide: Path) -> None:
    """Cancel a slide's unfinished tasks and raise :class:`SlideTimeoutError`."""
    client.cancel([f for f in futures if not f.done()])
    raise SlideTimeoutError(f"{slide}: the slide did not finish within its time limit")


def _run_one(
    client: Client,
    slide: Slide,
    plan: RunPlan,
    out: Path,
    *,
    progress: bool,
    log: Log,
    deadline: float | None = None,
) -> RunSummary:
    """One slide into its store (the caller holds the store's writer lock)."""
    t_start = time.perf_counter()
    info = inspect_cluster(client)
    cluster = plan.config.cluster
    if info.dashboard_link and (cluster.dashboard or cluster.scheduler):
        log(f"leukoscreen: Dask dashboard at {info.dashboard_link}")
    store, done = _open_store(client, slide, plan, out, info, deadline)
    detect_s = 0.0
    if done is None:
        t0 = time.perf_counter()
        done = _detect_into(
            store, client, slide, plan.config, progress=progress, log=log, deadline=deadline
        )
        detect_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cells_now, task_s = _super_resolve_all(
        client, slide, store, done, plan, info, progress=progress, deadline=deadline
    )
    model_s = task_s["model_s"]
    sr_s = time.perf_counter() - t0
    total_s = time.perf_counter() - t_start
    skipped = int(done.sum())
    store.finalize(
        timings={"detect_s": detect_s, "sr_s": sr_s, "total_s": total_s,
                 "model_s": model_s, "batches_skipped": skipped}
    )  # fmt: skip
    return RunSummary(
        slide=Path(slide.path), store=out, n_cells=store.n_cells, n_batches=len(done),
        batches_skipped=skipped, cells_super_resolved=cells_now, detect_s=detect_s, sr_s=sr_s,
        total_s=total_s, model_s=model_s, read_s=task_s["read_s"], write_s=task_s["write_s"],
    )  # fmt: skip


def _open_store(
    client: Client,
    slide: Slide,
    plan: RunPlan,
    out: Path,
    info: ClusterInfo,
    deadline: float | None = None,
) -> tuple[CellStore, np.ndarray | None]:
    """Create the store, or open it to resume; with the batches already done when the table
    survives (``None``: detect first).

    The model is loaded where SR runs first: a missing scale or checkpoint fails here, before
    any write.
    """
    spec, geometry, config = plan.spec, plan.geometry, plan.config
    future = client.submit(describe_model, spec, resources=info.sr_resources, pure=False)
    try:
        model = future.result(timeout=_remaining(deadline))
    except TimeoutError:
        _cancel_on_timeout(client, [future], Path(slide.path))
    if model["scale"] != spec.scale:
        raise CheckpointError(
            f"{spec.checkpoint or spec.arch}: weights are for x{model['scale']}, the run asks "
            f"for x{spec.scale}"
        )
    height, width = slide.dimensions
    identity = StoreIdentity(
        slide_path=str(slide.path), slide_size_px=(int(height), int(width)),
        slide_header_sha256=slide.header_sha256(), slide_vendor=str(slide.vendor),
        mpp=float(slide.mpp), scale=spec.scale, arch=model["arch"],
        checkpoint_sha256=model["checkpoint_sha256"], has_prior=model["has_prior"],
        hr_size_px=geometry.hr_size_px, margin_px=geometry.margin_px,
        batch_size=config.inference.batch_size,
    )  # fmt: skip
    output = config.output
    if output.resume and is_store(out):
        store = CellStore.open(out)
        store.check_same_run(identity)
        return store, store.done() if store.table_written else None
    # An existing store here was allowed by check_output_location (overwrite, or resume of an
    # empty folder); create checks again before deleting anything.
    store = CellStore.create(
        out, identity, config=to_dict(config), overwrite=output.overwrite or output.resume
    )
    return store, None


def _detect_into(
    store: CellStore,
    client: Client,
    slide: Slide,
    config: Config,
    *,
    progress: bool,
    log: Log,
    deadline: float | None = None,
) -> np.ndarray:
    """Detect the slide's cells and write the store's table; returns the (all False) done flags."""
    cells, stain = _detect(client, slide, config, progress=progress, deadline=deadline)
    if not stain.has_foreground:
        log(
            f"leukoscreen: warning: {slide.path}: no stained foreground found (blank or "
            "unstained slide?); the store will hold zero cells"
        )
    elif stain.leukocyte_rich:
        log(
            f"leukoscreen: {slide.path}: leukocytes are a large share of the stain here (a slide "
            "of single-cell images?): its red cells were estimated beneath the nuclei "
            "(detection.stain.leukocyte_rich)"
        )
    store.write_table(
        table_columns(cells, mpp=slide.mpp),
        compression_level=config.output.compression_level,
        detection={"stain": stain.to_attrs()},
    )
    return np.zeros(store.n_batches, dtype=bool)


def _detect(
    client: Client, slide: Slide, config: Config, *, progress: bool, deadline: float | None = None
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
        try:
            for future in as_completed(futures, timeout=_remaining(deadline)):
                tables[index[future.key]] = future.result()
                future.release()
                bar.update(1)
                bar.set_postfix(cells=sum(len(t) for t in tables if t is not None))
        except TimeoutError:
            _cancel_on_timeout(client, futures, Path(slide.path))
    return CellTable.concat([t for t in tables if t is not None]), stain


def detect_task(slide: Slide, tile: Tile, cfg: DetectConfig, stain: StainEstimate) -> CellTable:
    """One detection task: :func:`detect_tile` and release the slide file."""
    try:
        return detect_tile(slide, tile, cfg, stain)
    finally:
        slide.close()


def _super_resolve_all(
    client: Client,
    slide: Slide,
    store: CellStore,
    done: np.ndarray,
    plan: RunPlan,
    info: ClusterInfo,
    *,
    progress: bool,
    deadline: float | None = None,
) -> tuple[int, dict[str, float]]:
    """Submit the unfinished batches, a bounded number at a time.

    Returns:
        ``(cells super-resolved now, {"read_s", "model_s", "write_s"} summed over tasks)``.
    """
    cluster = plan.config.cluster
    columns = read_table(store.path)
    sha256 = store.identity.checkpoint_sha256
    todo = iter([int(b) for b in np.flatnonzero(~done)])
    limit = max(1, cluster.max_batches_in_flight * info.n_sr_workers)
    run_id = uuid.uuid4().hex[:8]
    pending = as_completed(timeout=_remaining(deadline))
    task_s = {"read_s": 0.0, "model_s": 0.0, "write_s": 0.0}

    def submit_next() -> None:
        batch = next(todo, None)
        if batch is None:
            return
        start, stop = store.batch_bounds(batch)
        pending.add(
            client.submit(
                sr_batch_task, str(store.path), batch, slide, columns["row"][start:stop],
                columns["col"][start:stop], plan.geometry, plan.spec, sha256,
                cluster.cpu_cells_per_call, key=f"leukoscreen-sr-{run_id}-{batch}",
                resources=info.sr_resources, pure=False,
            )
        )  # fmt: skip

    bounds = [store.batch_bounds(int(b)) for b in np.flatnonzero(done)]
    skipped = sum((stop - start for start, stop in bounds), 0)
    cells_now = 0
    with tqdm(
        total=store.n_cells, initial=int(skipped), unit="cell", smoothing=0.1,
        desc=f"super-resolve {slide.path.name}", disable=not progress, file=sys.stderr,
    ) as bar:  # fmt: skip
        for _ in range(limit):
            submit_next()
        try:
            for future in pending:
                meta = future.result()
                future.release()
                for name in task_s:
                    task_s[name] += meta[name]
                cells_now += meta["n_cells"]
                bar.update(meta["n_cells"])
                submit_next()
        except TimeoutError:
            _cancel_on_timeout(client, list(pending.futures), Path(slide.path))
    return cells_now, task_s
