"""``leukoscreen export``: a finished store as QuPath GeoJSON, a Parquet table or OME-Zarr.

Registered on the one ``app`` by :func:`register`; the body calls
:func:`leukoscreen.pipeline.export.export_store` (formats: ``docs/exports.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leukoscreen.pipeline.export import ExportFormat


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to the ``leukoscreen`` app."""
    app.command("export")(export_cmd)


def export_cmd(
    store: Annotated[
        Path,
        typer.Argument(
            help="A complete store written by leukoscreen run (<stem>.leukoscreen.zarr).",
            metavar="STORE",
            show_default=False,
        ),
    ],
    to: Annotated[
        ExportFormat,
        typer.Option(
            help=(
                "geojson: QuPath cell objects (outline, nucleus, measurements) in level-0 "
                "pixels; parquet: the cell table with slide and store columns; ome-zarr: the "
                "slide as an NGFF 0.5 image pyramid with labels/cells and labels/parsing."
            ),
            case_sensitive=False,
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Output file or folder. [default: beside the store: <stem>.geojson, "
                "<stem>.cells.parquet or <stem>.ome.zarr]"
            ),
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output of the same kind.")
    ] = False,
    slide: Annotated[
        Path | None,
        typer.Option(
            help=(
                "The slide file, for --to ome-zarr when it has moved since the run (it must be "
                "the same file: its header sha256 is checked). [default: the path in the store]"
            ),
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Export a store's cells for QuPath (GeoJSON), pandas/Arrow (Parquet) or napari (OME-Zarr)."""
    from leukoscreen.pipeline.export import export_store

    summary = export_store(store, to=to, out=out, overwrite=overwrite, slide=slide)
    typer.echo(summary.describe())
