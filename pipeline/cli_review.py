"""``leukoscreen review``: static HTML pages to look through a store's cells (``docs/review.md``).

Registered on the one ``app`` by :func:`register`; the body parses and calls
:func:`leukoscreen.pipeline.review.review_stores`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ReviewStores = Annotated[
    list[Path],
    typer.Argument(
        help="Stores written by leukoscreen run (<slide stem>.leukoscreen.zarr), complete.",
        metavar="STORE",
        show_default=False,
    ),
]
ReviewOut = Annotated[
    Path | None,
    typer.Option(
        help=(
            "A .html file: the page of one store; otherwise the folder for the pages and, "
            "with several stores, their index.html (created if missing). [default: "
            "<store stem>.review.html beside each store, index.html in the current folder]"
        ),
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``review`` to the ``leukoscreen`` app."""

    @app.command("review")
    def review_cmd(stores: ReviewStores, out: ReviewOut = None) -> None:
        """Write a static HTML page per store to review its cells: SR beside bicubic, parsing
        overlay, table values, sorting and filtering, a flag per cell exported as CSV, and the
        slide with the cells marked; with several stores also an index.html. Open the page in
        any browser; no server is needed."""
        from leukoscreen.pipeline.review import review_stores

        for path in review_stores(stores, out=out, progress=True):
            typer.echo(path)
