"""Refresh the model card from the committed results and the training runs.

    python tools/write_card.py

copies the committed ``docs/results/table2.md`` and the training wall times of
``docs/results/training_*.json`` and ``runs/*/last.pt`` into ``docs/model-card.md`` between its
markers (:func:`leukoscreen.model.report.write_card`). The evaluation itself is
``leukoscreen evaluate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from leukoscreen.model.report import write_card


def main(argv: list[str] | None = None) -> None:
    """Update the model card (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--card", type=Path, default=Path("docs/model-card.md"), help="model card")
    parser.add_argument("--results", type=Path, default=Path("docs/results"), help="table2.md dir")
    parser.add_argument(
        "--runs",
        type=Path,
        action="append",
        help="training runs folder or histories JSON; repeatable "
        "(default: docs/results/training_*.json and runs)",
    )
    args = parser.parse_args(argv)
    runs = args.runs or [*sorted(Path("docs/results").glob("training_*.json")), Path("runs")]
    write_card(args.card, args.results, [r for r in runs if r.exists()])
    print(f"updated {args.card}")


if __name__ == "__main__":
    main()
