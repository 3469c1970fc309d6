"""The ``leukoscreen`` command line: one typer command per user task.

Each command body parses, loads the config, applies flag overrides and calls one function.
:func:`main` is the console-script entry point: a :class:`LeukoscreenError` or a usage error
becomes one line on stderr and exit status 2; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from leukoscreen.model import __version__
from leukoscreen.model.errors import LeukoscreenError
from leukoscreen.pipeline import cli_export, cli_model, cli_review
from leukoscreen.pipeline.cli_options import ConfigOption, MppOption
from leukoscreen.pipeline.config import load_config, override_flags, to_toml

app = typer.Typer(
    name="leukoscreen",
    help=(
        "Find every leukocyte in a low-magnification blood-smear scan, super-resolve it x4 or x8 "
        "with the geometry-prior network of Hua et al. (J. Biomed. Opt. 2020), and write the "
        "cells, their nucleus/cytoplasm parsing maps and a cell table into one Zarr store."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"leukoscreen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Leukocyte prescreening: detect, super-resolve and parse leukocytes into Zarr."""


@app.command("config")
def config_cmd(config: ConfigOption = None) -> None:
    """Print the resolved configuration (defaults overlaid with --config) as TOML."""
    typer.echo(to_toml(load_config(config)), nl=False)


@app.command("run")
def run_cmd(
    slides: Annotated[
        list[Path],
        typer.Argument(help="Slide files (.svs and other OpenSlide formats, TIFF, PNG/JPEG)."),
    ],
    scale: Annotated[
        int | None, typer.Option(help="Super-resolution factor, 4 or 8 (config: inference.scale).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output store for one slide; with several slides, the folder for their stores. "
            "Default: <slide stem>.leukoscreen.zarr in the current folder."
        ),
    ] = None,
    mpp: MppOption = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Cells per SR task and per Zarr chunk, >= 1 (inference.batch_size)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes of the embedded Dask cluster (default: auto)."),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Address of an existing Dask scheduler (tcp://host:8786) to run on."),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Where the network runs: auto, cpu or cuda.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run's store.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete an existing store and start over.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Detect, super-resolve and parse every leukocyte of each slide into a Zarr store."""
    from leukoscreen.pipeline.run import run_slides

    cfg = override_flags(
        load_config(config),
        {"--scale": ("inference.scale", scale), "--mpp": ("slide.mpp", mpp),
         "--batch-size": ("inference.batch_size", batch_size),
         "--workers": ("cluster.n_workers", workers),
         "--scheduler": ("cluster.scheduler", scheduler),
         "--device": ("inference.device", device), "--resume": ("output.resume", resume or None),
         "--overwrite": ("output.overwrite", overwrite or None)},
    )  # fmt: skip
    for summary in run_slides(slides, cfg, out=out):
        typer.echo(summary.describe())


@app.command("detect")
def detect_cmd(
    slides: Annotated[
        list[Path],
        typer.Argument(help="Slide files (.svs and other OpenSlide formats, TIFF, PNG/JPEG)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Table file for one slide (.csv or .parquet, by the suffix); with several "
            "slides, the folder for their tables. Default: <slide stem>.cells.csv in the "
            "current folder."
        ),
    ] = None,
    mpp: MppOption = None,
    config: ConfigOption = None,
) -> None:
    """Detect leukocytes only (no super-resolution), in seconds: write each slide's cell table
    (the columns of the store's table) and print its leukocyte count."""
    from leukoscreen.pipeline.tables import detect_slides

    cfg = override_flags(load_config(config), {"--mpp": ("slide.mpp", mpp)})
    for summary in detect_slides(slides, cfg, out=out):
        typer.echo(summary.describe())


cli_model.register(app)
cli_review.register(app)
cli_export.register(app)


def _register_plugins() -> None:
    """Commands of other leukoscreen packages, found through the ``leukoscreen.commands`` entry
    points (``leukoscreen batch`` comes from :mod:`leukoscreen.workflows`, which builds on this
    package: the pipeline never imports it)."""
    from importlib.metadata import entry_points

    for entry_point in entry_points(group="leukoscreen.commands"):
        entry_point.load()(app)


_register_plugins()


CheckpointOption = Annotated[
    Path | None,
    typer.Option(
        help=(
            "Weights file (e.g. a run's best.pt) instead of the shipped weights; its own arch "
            "and scale are used, and --arch/--scale, when given, must match them."
        ),
        dir_okay=False,
        show_default=False,
    ),
]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        help="auto (CUDA when present, else CPU), cpu or cuda. [default: inference.device]",
        show_default=False,
    ),
]


@app.command("upscale")
def upscale_cmd(
    images: Annotated[
        list[Path],
        typer.Argument(
            help="LR image files (PNG, JPEG, BMP, TIFF), grey or RGB, 8-bit.",
            metavar="IMAGE",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder for <stem>_x<s>.png and, for gp, <stem>_x<s>_parsing.png.",
            show_default=False,
        ),
    ],
    scale: Annotated[
        int | None,
        typer.Option(
            help="Super-resolution factor: 4 or 8. [default: inference.scale of the config, 8]",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help=(
                "Network: default, gp or gpsft (with parsing map), np, srcnn, vdsr, srresnet or "
                "bicubic. [default: inference.arch of the config, default]"
            ),
            show_default=False,
        ),
    ] = None,
    checkpoint: CheckpointOption = None,
    device: DeviceOption = None,
    config: ConfigOption = None,
) -> None:
    """Super-resolve single image files and write SR images and coloured parsing maps."""
    from leukoscreen.model.inference import load_upscaler
    from leukoscreen.model.upscale_files import check_image_files, upscale_files

    cfg = override_flags(
        load_config(config),
        {
            "--arch": ("inference.arch", arch),
            "--scale": ("inference.scale", scale),
            "--device": ("inference.device", device),
            "--checkpoint": ("inference.checkpoint", checkpoint and str(checkpoint)),
        },
    ).inference
    check_image_files(images)  # a missing input is reported before any weights are loaded
    upscaler = load_upscaler(
        cfg.arch,
        cfg.scale,
        checkpoint=cfg.checkpoint,
        device=cfg.device,
        precision=cfg.precision,
        expected_arch=arch,
        expected_scale=scale,
    )
    for path in upscale_files(images, out_dir=out, upscaler=upscaler):
        typer.echo(path)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status (also used by tests)."""
    command = typer.main.get_command(app)
    try:
        # Without standalone mode click returns the code of an Exit (typer.Exit(code=1) in a
        # command body) instead of raising it; anything else is the command's return value.
        status = command.main(args=argv, prog_name="leukoscreen", standalone_mode=False)
    except typer.Exit as stop:
        return int(stop.exit_code)
    except typer.Abort:
        typer.echo("leukoscreen: aborted", err=True)
        return 130
    except typer.TyperException as err:
        # Unknown command or option, bad value: one line, exit 2 (click's convention).
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        if message.startswith("Usage:"):  # no command given: show the help as it is
            typer.echo(message, err=True)
        else:
            typer.echo(f"leukoscreen: {message}", err=True)
        return 2
    except LeukoscreenError as err:
        typer.echo(f"leukoscreen: error: {err}", err=True)
        return 2
    return status if isinstance(status, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def entry() -> None:  # pragma: no cover - thin wrapper for the console script
    """Console script: run :func:`main` and exit with its status."""
    sys.exit(main())
