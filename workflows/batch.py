"""``leukoscreen batch``: many slides, one cluster, one status table; nothing lost, nothing done
twice.

The flow::

    inputs ─► slide list (inputs.py) ─► jobs: store path, per-slide config, header sha256,
      duplicates ─► this shard's jobs ─► state of each store (done / resume / new / mismatch)
      ─► status rows ─► cluster (clusters.py) ─► slides, a few at once, each:
           claim (the store's writer lock) ─► re-check ─► run_locked ─► done | retry | failed
      ─► summary JSON + HTML ─► exit status

Rules it keeps:

- **Done means done.** A slide is skipped only when its store is ``complete`` and was made from
  the same slide (header sha256), scale, model (weights sha256) and result-relevant config
  (:func:`config_sha256` of the ``slide``, ``detect`` and ``inference`` sections). An incomplete
  store of the same identity is resumed; a store of another identity is a failure
  (``StoreMismatch``) left alone unless ``--overwrite``.
- **One claim per slide.** The claim is the store's writer lock
  (:mod:`leukoscreen.pipeline.store_lock`: created atomically, holds host, pid and time, taken
  over when its holder died). A slide claimed by another batch process is waited for, then
  re-checked, so two processes on one folder never do a slide twice, and both end knowing it done.
- **Failures stay with their slide.** An input error fails the slide with its class and first
  line; a worker lost under a task (``KilledWorker``) is retried up to ``retries`` times,
  resuming the store; ``timeout_s`` fails a hung slide. The batch goes on and exits 3.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from distributed import Client
from tqdm import tqdm

from leukoscreen.model.errors import OutputError, StoreLockedError, UsageError
from leukoscreen.pipeline.config import Config, override, to_dict
from leukoscreen.pipeline.plan import (
    STORE_SUFFIX,
    RunPlan,
    check_distinct_outputs,
    checkpoint_sha256,
    plan_run,
)
from leukoscreen.pipeline.run import run_locked
from leukoscreen.pipeline.slide import header_sha256
from leukoscreen.pipeline.sr_task import ModelSpec
from leukoscreen.pipeline.store import is_store, read_attrs
from leukoscreen.pipeline.store_lock import WriterLock
from leukoscreen.workflows.clusters import ClusterKind, job_script, open_batch_client
from leukoscreen.workflows.inputs import SlideEntry, collect_slides
from leukoscreen.workflows.report import summarize, write_reports
from leukoscreen.workflows.status import StatusTable

RESULT_SECTIONS = ("slide", "detect", "inference")
"""Config sections that change a store's content (``output``, ``cluster``, ``train`` do not)."""
EXIT_OK, EXIT_BAD_INPUT, EXIT_FAILED = 0, 2, 3
CLAIM_POLL_S = 2.0

Log = Callable[[str], None]
StoreState = Literal["new", "resume", "done", "mismatch"]


def _stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def config_sha256(tree: Mapping[str, Any]) -> str:
    """sha256 of the :data:`RESULT_SECTIONS` of a config tree (as saved in a store's attrs)."""
    relevant = {k: tree.get(k) for k in RESULT_SECTIONS}
    text = json.dumps(json.loads(json.dumps(relevant)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class BatchOptions:
    """How ``leukoscreen batch`` runs (the command-line flags).

    Attributes:
        out: the output folder (stores, status table, reports).
        cluster: ``local``, ``slurm`` or ``pbs``.
        scheduler_file: a Dask scheduler file of an existing cluster.
        retries: retries of a slide whose worker was lost under it.
        timeout_s: wall seconds a slide may take (``None``: no limit).
        overwrite: redo stores made with another slide, scale, model or config.
        shard: ``(i, n)``: run only the slides of shard ``i`` of ``n`` on a LocalCluster.
        slides_at_once: slides in flight together (detection of one overlaps SR of another).
        dry_run: print the plan (and the job script) and do nothing.
        progress: show the batch progress bar.
    """

    out: Path
    cluster: ClusterKind = "local"
    scheduler_file: Path | None = None
    retries: int = 2
    timeout_s: float | None = None
    overwrite: bool = False
    shard: tuple[int, int] | None = None
    slides_at_once: int = 2
    dry_run: bool = False
    progress: bool = True


@dataclass(frozen=True)
class SlideJob:
    """One slide of the batch.

    Attributes:
        slide: the slide file (absolute; the status table's key).
        store: its store.
        config: its resolved config (manifest ``mpp``/``scale`` applied).
        sha256: the slide's header sha256 (``""`` when the file cannot be read).
        duplicate_of: an earlier slide of the batch with the same header sha256.
    """

    slide: Path
    store: Path
    config: Config
    sha256: str
    duplicate_of: Path | None = None

    @property
    def key(self) -> str:
        return str(self.slide)

    @property
    def config_sha256(self) -> str:
        return config_sha256(to_dict(self.config))


@dataclass
class BatchResult:
    """What a batch did: the rows of its slides and its exit status."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    exit_status: int = EXIT_OK
    wall_s: float = 0.0


def plan_jobs(entries: Sequence[SlideEntry], config: Config, out: Path) -> list[SlideJob]:
    """Jobs for the slides: stores under ``out`` (a manifest's ``out`` wins), per-slide config,
    duplicates by header sha256 (the first mention runs).

    Raises:
        UsageError: two slides would write one store; a manifest value the config refuses.
    """
    jobs: list[SlideJob] = []
    first: dict[str, Path] = {}
    for entry in entries:
        store = entry.store or (Path(out).resolve() / entry.subfolder /
                                f"{entry.slide.stem}{STORE_SUFFIX}")  # fmt: skip
        cfg = override(config, **{"slide.mpp": entry.mpp, "inference.scale": entry.scale})
        try:
            sha = header_sha256(entry.slide)
        except OSError:
            sha = ""  # the run reports why the file cannot be read
        duplicate = first.get(sha) if sha else None
        if sha and duplicate is None:
            first[sha] = entry.slide
        jobs.append(SlideJob(entry.slide, store, cfg, sha, duplicate))
    check_distinct_outputs([j.slide for j in jobs], [j.store for j in jobs], kind="store")
    return jobs


def shard_of(jobs: Sequence[SlideJob], shard: tuple[int, int] | None) -> list[SlideJob]:
    """Shard ``i`` of ``n``: every ``n``-th slide in sorted path order from the ``i``-th; shards
    are disjoint and together hold every slide, whatever order the inputs came in."""
    if shard is None:
        return list(jobs)
    i, n = shard
    ordered = sorted(jobs, key=lambda j: j.key)
    return [job for k, job in enumerate(ordered) if k % n == i]


def store_state(job: SlideJob, model_sha256: str) -> tuple[StoreState, str]:
    """Whether ``job``'s store is done, to resume, new, or another run's; with the reason."""
    if not is_store(job.store):
        return "new", ""
    try:
        attrs = read_attrs(job.store)
    except OutputError as err:
        return "mismatch", str(err)
    expected = {
        "slide header sha256": (attrs.get("slide", {}).get("header_sha256"), job.sha256),
        "scale": (attrs.get("scale"), job.config.inference.scale),
        "checkpoint sha256": (attrs.get("model", {}).get("checkpoint_sha256"), model_sha256),
        "config sha256": (config_sha256(attrs.get("config", {})), job.config_sha256),
    }
    for words, (stored, wanted) in expected.items():
        if stored != wanted:
            return "mismatch", (
                f"{job.store}: made with {words} {str(stored)[:16]!r}, this batch has "
                f"{str(wanted)[:16]!r}; --overwrite to redo it"
            )
    return ("done" if attrs.get("status") == "complete" else "resume"), ""


class _ModelShas:
    """The weights sha256 of each model spec, loaded once in this process."""

    def __init__(self) -> None:
        self._shas: dict[ModelSpec, str] = {}
        self._lock = threading.Lock()

    def __call__(self, plan: RunPlan) -> str:
        with self._lock:
            if plan.spec not in self._shas:
                self._shas[plan.spec] = checkpoint_sha256(plan)
            return self._shas[plan.spec]


def _plan_for(job: SlideJob, *, overwrite: bool) -> RunPlan:
    output = replace(job.config.output, resume=not overwrite, overwrite=overwrite)
    return plan_run(replace(job.config, output=output))


def _retryable() -> tuple[type[BaseException], ...]:
    """Errors of a lost worker or connection, not of the slide: the slide is tried again."""
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    return (KilledWorker, CommClosedError)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else err.__class__.__name__)[:300]


class _SlideRunner:
    """Runs the slides of one batch on one client (shared by the batch's threads)."""

    def __init__(self, client: Client, table: StatusTable, options: BatchOptions, log: Log) -> None:
        self.client = client
        self.table = table
        self.options = options
        self.log = log
        self.model_sha = _ModelShas()
        self.host = f"{socket.gethostname()}:{os.getpid()}"
        self.worker = str(getattr(client.scheduler, "address", ""))

    def claim(self, job: SlideJob) -> WriterLock:
        """The slide's claim; waits while another live process holds it."""
        waiting = False
        while True:
            try:
                return WriterLock.acquire(job.store)
            except StoreLockedError as err:
                if not waiting:
                    self.log(f"leukoscreen: {job.slide.name}: waiting: {_one_line(err)}")
                    waiting = True
                time.sleep(CLAIM_POLL_S)

    def run(self, job: SlideJob) -> dict[str, Any]:
        """Claim, re-check and run one slide; returns its final row."""
        try:
            job.store.parent.mkdir(parents=True, exist_ok=True)
            lock = self.claim(job)
        except (OutputError, OSError) as err:  # e.g. the store's folder cannot be written
            return self._failed(job, err, attempts=0)
        with lock:
            plan = _plan_for(job, overwrite=False)
            model_sha = self.model_sha(plan)
            state, reason = store_state(job, model_sha)
            if state == "done":
                return self.skip_done(job, model_sha)
            if state == "mismatch" and not self.options.overwrite:
                return self.table.update(
                    job.key, state="failed", error_class="StoreMismatch", message=reason,
                    ended_at=_now(),
                )  # fmt: skip
            return self._attempts(job, _plan_for(job, overwrite=state == "mismatch"), model_sha)

    def skip_done(self, job: SlideJob, model_sha: str) -> dict[str, Any]:
        """The row of a slide found complete: a row that already says so (``done`` by the
        batch that did it, or ``skipped``) keeps its timings; this batch's outcome is
        ``skipped``."""
        row = self.table.read().get(job.key)
        if row is None or row["state"] not in ("done", "skipped"):
            row = self.table.update(job.key, **_skipped_done(job, model_sha))
        return {**row, "state": "skipped"}

    def _attempts(self, job: SlideJob, plan: RunPlan, model_sha: str) -> dict[str, Any]:
        attempts = int(self.table.read().get(job.key, {}).get("attempts") or 0)
        last: BaseException | None = None
        for _ in range(1 + self.options.retries):
            attempts += 1
            started = time.perf_counter()
            self.table.update(
                job.key, state="running", attempts=attempts, error_class=None, message=None,
                store=str(job.store), scale=job.config.inference.scale, slide_sha256=job.sha256,
                config_sha256=job.config_sha256, model_sha256=model_sha, host=self.host,
                worker=self.worker, started_at=_now(), ended_at=None,
            )  # fmt: skip
            try:
                summary = run_locked(
                    self.client, job.slide, plan, job.store, progress=False, log=self.log,
                    timeout_s=self.options.timeout_s,
                )  # fmt: skip
            except _retryable() as err:
                last = err
                plan = _plan_for(job, overwrite=False)  # the next attempt resumes the store
                self.log(
                    f"leukoscreen: {job.slide.name}: attempt {attempts} lost: {_one_line(err)}"
                )
                continue
            except Exception as err:  # the slide fails alone; the batch goes on
                return self._failed(job, err, attempts=attempts)
            return self.table.update(
                job.key, state="done", cells=summary.n_cells,
                seconds=time.perf_counter() - started, ended_at=_now(),
            )  # fmt: skip
        assert last is not None
        return self._failed(job, last, attempts=attempts)

    def _failed(self, job: SlideJob, err: BaseException, *, attempts: int) -> dict[str, Any]:
        self.log(f"leukoscreen: {job.slide}: failed: {err.__class__.__name__}: {_one_line(err)}")
        return self.table.update(
            job.key, state="failed", attempts=attempts, error_class=err.__class__.__name__,
            message=_one_line(err), store=str(job.store), ended_at=_now(),
        )  # fmt: skip


def _skipped_done(job: SlideJob, model_sha: str) -> dict[str, Any]:
    """Row fields of a slide whose store a previous batch completed."""
    attrs = read_attrs(job.store)
    return {
        "state": "skipped", "message": "store complete (done by an earlier batch)",
        "error_class": None, "cells": attrs.get("n_cells"), "store": str(job.store),
        "scale": job.config.inference.scale, "slide_sha256": job.sha256,
        "config_sha256": job.config_sha256, "model_sha256": model_sha,
    }  # fmt: skip


def run_batch(
    inputs: Sequence[Path], config: Config, options: BatchOptions, *, log: Log = _stderr
) -> BatchResult:
    """Run a batch (see the module docstring); returns the rows of its slides and exit status.

    Raises:
        UsageError, ConfigError, CheckpointError: bad input to the batch itself (exit 2),
            raised before any slide is touched.
    """
    t0 = time.perf_counter()
    started_at = _now()
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: --out must be a folder, found a file")
    jobs = shard_of(plan_jobs(collect_slides(inputs, out=out), config, out), options.shard)
    for job in jobs:  # bad weights or config fail the batch before any slide is touched
        plan_run(job.config)
    model_sha = _ModelShas()
    shas = {job.key: model_sha(_plan_for(job, overwrite=False)) for job in jobs}
    states = {
        job.key: ("duplicate", f"same slide as {job.duplicate_of}") if job.duplicate_of
        else store_state(job, shas[job.key])
        for job in jobs
    }  # fmt: skip
    if options.dry_run:
        _print_plan(jobs, states, config, options)
        return BatchResult(exit_status=EXIT_OK)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{out}: cannot create the output folder ({err.strerror})") from err
    table = StatusTable(out)
    table.update_many(_initial_rows(jobs, states, shas, table.read()), keep_running=True)
    todo = [j for j in jobs if states[j.key][0] not in ("done", "duplicate")]
    outcome = _run_jobs(todo, config, options, table, log) if todo else {}
    on_disk = table.read()
    # This batch's own outcome of each slide (the table may already show another process's).
    rows = [outcome.get(j.key) or {**on_disk[j.key], "state": "skipped"} for j in jobs]
    failed = any(r["state"] == "failed" for r in rows)
    result = BatchResult(rows, EXIT_FAILED if failed else EXIT_OK, time.perf_counter() - t0)
    summary = summarize(rows, wall_s=result.wall_s, started_at=started_at,
                        exit_status=result.exit_status)  # fmt: skip
    write_reports(out, summary)
    return result


def _initial_rows(
    jobs: Sequence[SlideJob],
    states: Mapping[str, tuple[str, str]],
    shas: Mapping[str, str],
    existing: Mapping[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Status rows before any slide runs: ``pending`` for the work, ``skipped`` for duplicates
    and for complete stores whose row does not already say so."""
    rows: dict[str, dict[str, Any]] = {}
    for job in jobs:
        state, reason = states[job.key]
        if state == "duplicate":
            rows[job.key] = {"state": "skipped", "message": reason, "error_class": None,
                             "slide_sha256": job.sha256}  # fmt: skip
        elif state == "done":
            if existing.get(job.key, {}).get("state") not in ("done", "skipped"):
                rows[job.key] = _skipped_done(job, shas[job.key])
        else:
            rows[job.key] = {"state": "pending", "store": str(job.store), "error_class": None,
                             "message": reason or None}  # fmt: skip
    return rows


def _run_jobs(
    todo: Sequence[SlideJob],
    config: Config,
    options: BatchOptions,
    table: StatusTable,
    log: Log,
) -> dict[str, dict[str, Any]]:
    """The slides that need work, ``slides_at_once`` at a time, on one cluster; returns the
    outcome row of each."""
    device = todo[0].config.inference.device
    cluster_cfg = config.cluster
    kind: ClusterKind = "local" if options.shard is not None else options.cluster
    with (
        open_batch_client(kind, cluster_cfg, device=device,
                          scheduler_file=options.scheduler_file) as client,
        ThreadPoolExecutor(max_workers=max(1, options.slides_at_once)) as pool,
        tqdm(total=len(todo), unit="slide", desc="batch", disable=not options.progress,
             file=sys.stderr) as bar,
    ):  # fmt: skip
        runner = _SlideRunner(client, table, options, log)
        futures: list[Future] = [pool.submit(runner.run, job) for job in todo]
        done = failed = cells = 0
        t0 = time.perf_counter()
        outcome: dict[str, dict[str, Any]] = {}
        for future in as_completed(futures):
            row = future.result()
            outcome[str(row["slide"])] = row
            done += row["state"] in ("done", "skipped")
            failed += row["state"] == "failed"
            cells += int(row["cells"] or 0) if row["state"] == "done" else 0
            rate = cells / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(done=done, failed=failed, cells_per_s=f"{rate:.1f}")
            bar.update(1)
    return outcome


def _print_plan(
    jobs: Sequence[SlideJob],
    states: Mapping[str, tuple[str, str]],
    config: Config,
    options: BatchOptions,
) -> None:
    """``--dry-run``: the job script of a SLURM/PBS batch and what each slide would get."""
    if options.cluster != "local" and options.shard is None and options.scheduler_file is None:
        print(f"# job script of each {options.cluster} job (not submitted):")
        print(job_script(options.cluster, config.cluster))
    actions = {"new": "run", "resume": "resume", "done": "skip (done)",
               "mismatch": "overwrite" if options.overwrite else "fail (store mismatch)",
               "duplicate": "skip (duplicate)"}  # fmt: skip
    print(f"# {len(jobs)} slides -> {options.out}")
    for job in jobs:
        state, reason = states[job.key]
        note = f"  # {reason}" if reason else ""
        print(f"{actions[state]:<22} {job.slide} -> {job.store}{note}")
