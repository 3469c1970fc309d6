"""Command-line options that more than one ``leukoscreen`` command takes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML config file (see config.toml in the project); built-in defaults without it.",
        dir_okay=False,
    ),
]


MppOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Microns per level-0 pixel, overriding the slide metadata (needed for PNG/JPEG).",
    ),
]
