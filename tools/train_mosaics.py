"""DeepBioNet train mosaics the tuning never saw: the colour shifts and pixel sizes of
``docs/detection.md`` checked without touching a test part.

The tuning and the renditions work used every third DeepBioNet train field
(``evaluate_detection.TRAIN_EVERY``, offset 0). The other two thirds (offsets 1 and 2) make two
more mosaics of the same kind, so a weakness seen on the test mosaic can be looked for, and
diagnosed, on train data::

    python tools/train_mosaics.py --data ../shared/data --offsets 1 2 --mpp 0.4164 --shifts
    python tools/train_mosaics.py --data ../shared/data --offsets 1 2 --mpp 0.35 0.5
    python tools/train_mosaics.py --data ../shared/data --offsets 0 1 --mpp 0.5 --misfit-limit 0.08

Prints recall / precision per mosaic (match: detection centre inside a WBC box, one-to-one),
unshifted and, with ``--shifts``, under each colour shift of ``mosaic.COLOUR_SHIFTS``.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

from build_example import write_svs
from detection_scores import score_slide
from evaluate_detection import FOLDERS, TRAIN_EVERY, Source
from mosaic import COLOUR_SHIFTS, build_mosaic, shift_colours

from leukoscreen.pipeline import detect, renditions
from leukoscreen.pipeline.config import DetectConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument(
        "--offsets", type=int, nargs="+", default=[1, 2],
        help=f"which train fields: every {TRAIN_EVERY}th from this offset",
    )  # fmt: skip
    parser.add_argument("--mpp", type=float, nargs="+", default=[0.4164], help="pixel sizes")
    parser.add_argument("--shifts", action="store_true", help="also under each colour shift")
    parser.add_argument(
        "--misfit-limit", type=float, default=renditions.MISFIT_LIMIT,
        help="probe: renditions.search_renditions' misfit_limit for this run",
    )  # fmt: skip
    parser.add_argument(
        "--exclusive-share", type=float, default=renditions.EXCLUSIVE_SHARE,
        help="probe: renditions.search_renditions' exclusive_share for this run",
    )  # fmt: skip
    args = parser.parse_args()
    detect.search_renditions = functools.partial(  # type: ignore[assignment]
        renditions.search_renditions,
        misfit_limit=args.misfit_limit,
        exclusive_share=args.exclusive_share,
    )
    source = Source("deepbionet", args.data / FOLDERS["deepbionet"])
    fields = source.split["train"]
    with tempfile.TemporaryDirectory() as work:
        for offset in args.offsets:
            for mpp in args.mpp:
                mosaic = build_mosaic(fields[offset::TRAIN_EVERY], source_mpp=source.mpp, mpp=mpp)
                shifts = [None, *COLOUR_SHIFTS] if args.shifts else [None]
                line = []
                for shift in shifts:
                    rgb = mosaic.rgb if shift is None else shift_colours(mosaic.rgb, shift)
                    path = Path(work) / "mosaic.svs"
                    write_svs(path, rgb, mosaic.mpp)
                    counts = score_slide(path, mosaic.boxes, DetectConfig())
                    name = "unshifted" if shift is None else shift.name
                    line.append(f"{name} {counts.recall:.3f}/{counts.precision:.3f}")
                head = f"offset {offset}, {mpp} um/px, {len(mosaic.boxes)} boxes: "
                print(head + " | ".join(line), flush=True)


if __name__ == "__main__":
    main()
