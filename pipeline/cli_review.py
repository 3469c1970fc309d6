"""``leukoscreen review``: scaffolding, being written (see issue 13)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the command to the ``leukoscreen`` app (nothing yet)."""
