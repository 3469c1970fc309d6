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
from leukoscreen.model.errors import LeukoscreenError, NotBuiltError
from leukoscreen.pipeline.config import Config, load_config, override, to_toml

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

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML config file (see config.toml in the project); built-in defaults without it.",
        dir_okay=False,
    ),
]


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


def _load(config_path: Path | None) -> Config:
    return load_config(config_path)


@app.command("config")
def config_cmd(config: ConfigOption = None) -> None:
    """Print the resolved configuration (defaults overlaid with --config) as TOML."""
    typer.echo(to_toml(_load(config)), nl=False)


@app.command("run")
def run_cmd(
    slides: Annotated[list[Path], typer.Argument(help="Slide files (.svs, TIFF, PNG/JPEG, ...).")],
    scale: Annotated[int | None, typer.Option(help="Super-resolution factor: 4 or 8.")] = None,
    config: ConfigOption = None,
) -> None:
    """Detect, super-resolve and parse every leukocyte of each slide into a Zarr store."""
    override(_load(config), **{"inference.scale": scale})
    raise NotBuiltError("leukoscreen run: the whole-slide pipeline is not built yet (issue 4)")


@app.command("train")
def train_cmd(config: ConfigOption = None) -> None:
    """Train a super-resolution network on leukocyte images with expert parsing masks."""
    _load(config)
    raise NotBuiltError("leukoscreen train: training is not built yet (issue 3)")


@app.command("evaluate")
def evaluate_cmd(config: ConfigOption = None) -> None:
    """Benchmark every method on the test split and write the paper's Table 2."""
    _load(config)
    raise NotBuiltError("leukoscreen evaluate: evaluation is not built yet (issue 3)")


@app.command("upscale")
def upscale_cmd(config: ConfigOption = None) -> None:
    """Super-resolve single image files and write SR images and coloured parsing maps."""
    _load(config)
    raise NotBuiltError("leukoscreen upscale: inference is not built yet (issue 3)")


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
