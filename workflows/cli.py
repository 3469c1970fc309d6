"""``leukoscreen batch``: the command line of :mod:`leukoscreen.workflows.batch`.

Registered on the ``leukoscreen`` app by :func:`register`. Exit status: 0 when every slide is
done or skipped as done, 3 when at least one slide failed (the status table says which and why;
written before the process exits), 2 for bad input to the batch itself, as every command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leukoscreen.model.errors import UsageError
from leukoscreen.pipeline.cli_options import ConfigOption, MppOption
from leukoscreen.pipeline.config import load_config, override_flags


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``.

    Raises:
        UsageError: anything else.
    """
    if text is None:
        return None
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError as err:
        raise UsageError(f"--shard: expected I/N (e.g. 0/4), found {text!r}") from err
    if not 0 <= i < n:
        raise UsageError(f"--shard: expected 0 <= I < N, found {text!r}")
    return i, n


_Inputs = Annotated[
    list[Path],
    typer.Argument(
        help="Slide files, folders (searched recursively for slides) or .csv/.tsv manifests "
        "(column 'slide'; optional 'mpp', 'scale', 'out').",
        metavar="INPUT...",
        show_default=False,
    ),
]

_Out = Annotated[
    Path,
    typer.Option(
        help="Output folder: one <stem>.leukoscreen.zarr per slide, batch-status.csv, "
        "batch-summary.json and batch-report.html.",
        show_default=False,
    ),
]

_Cluster = Annotated[
    str,
    typer.Option(
        help="local (embedded Dask LocalCluster), slurm or pbs (dask-jobqueue jobs from "
        "[cluster.slurm] / [cluster.pbs] of the config)."
    ),
]

_Scheduler = Annotated[
    str | None,
    typer.Option(help="Address of an existing Dask scheduler (tcp://host:8786) to run on."),
]

_SchedulerFile = Annotated[
    Path | None,
    typer.Option(
        help="Scheduler file of an existing Dask cluster (dask scheduler --scheduler-file).",
        dir_okay=False,
    ),
]

_Scale = Annotated[
    int | None, typer.Option(help="Super-resolution factor, 4 or 8 (config: inference.scale).")
]

_Retries = Annotated[
    int, typer.Option(min=0, help="Retries of a slide whose worker died under it.")
]

_Timeout = Annotated[
    float | None,
    typer.Option(min=1.0, help="Seconds a slide may take before it is marked failed."),
]

_Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Redo stores made with another slide, scale, model or config (left alone and "
        "reported as failed without it).",
    ),
]

_Shard = Annotated[
    str | None,
    typer.Option(
        help="I/N: run only shard I of N of the slide list on a local cluster, e.g. "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT in an array job.",
        show_default=False,
    ),
]

_SlidesAtOnce = Annotated[
    int, typer.Option(min=1, help="Slides in flight together (overlaps their stages).")
]

_Workers = Annotated[
    int | None,
    typer.Option(min=1, help="Worker processes of the embedded Dask cluster (default: auto)."),
]

_DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Print the job script and the slide plan; run and submit nothing."
    ),
]

_Progress = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show the batch progress bar.")
]


def batch_cmd(
    inputs: _Inputs,
    out: _Out,
    cluster: _Cluster = "local",
    scheduler: _Scheduler = None,
    scheduler_file: _SchedulerFile = None,
    scale: _Scale = None,
    mpp: MppOption = None,
    retries: _Retries = 2,
    timeout: _Timeout = None,
    overwrite: _Overwrite = False,
    shard: _Shard = None,
    slides_at_once: _SlidesAtOnce = 2,
    workers: _Workers = None,
    dry_run: _DryRun = False,
    progress: _Progress = True,
    config: ConfigOption = None,
) -> None:
    """Run many slides into one folder of stores, with a status table, retries and resume:
    rerunning the same command processes exactly the slides that are not done."""
    from leukoscreen.workflows.batch import BatchOptions, run_batch
    from leukoscreen.workflows.clusters import CLUSTER_KINDS

    if cluster not in CLUSTER_KINDS:
        raise UsageError(
            f"--cluster: expected one of {', '.join(CLUSTER_KINDS)}, found {cluster!r}"
        )
    cfg = override_flags(
        load_config(config),
        {"--scale": ("inference.scale", scale), "--mpp": ("slide.mpp", mpp),
         "--workers": ("cluster.n_workers", workers),
         "--scheduler": ("cluster.scheduler", scheduler)},
    )  # fmt: skip
    options = BatchOptions(
        out=out, cluster=cluster,
        scheduler_file=scheduler_file, retries=retries, timeout_s=timeout, overwrite=overwrite,
        shard=parse_shard(shard), slides_at_once=slides_at_once, dry_run=dry_run,
        progress=progress,
    )  # fmt: skip
    result = run_batch(inputs, cfg, options)
    if not dry_run:
        counts: dict[str, int] = {}
        for row in result.rows:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        typer.echo(f"{len(result.rows)} slides: {states} -> {out / 'batch-status.csv'}")
    raise typer.Exit(code=result.exit_status)


def register(app: typer.Typer) -> None:
    """Add the ``batch`` command to the ``leukoscreen`` app."""
    app.command("batch")(batch_cmd)
