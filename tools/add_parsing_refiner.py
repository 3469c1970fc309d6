"""Carry GP-SFT weights into a network with more HR parsing modules, starting at zero.

The first shipped GP-SFT weights predate :class:`leukoscreen.model.gpsft.ParsingRefiner`. This
script loads them into today's GP-SFT (refiner included, its last convolution at zero, so the
network computes exactly what the old weights did) and saves a weights file that
``leukoscreen train --init FILE --parsing-only`` can start from. ``--hr-parser W...`` adds the
HR parser (``GeometryPriorSFT(hr_parser_widths=...)``, its head at zero) to weights that have
a refiner already; ``--parsing-prior`` gives the parsing map a prior of its own
(``GeometryPriorSFT(parsing_prior=True)``), a copy of the SR path's prior and condition layer,
so the network again computes exactly what the old weights did. Run from the project root:

    python tools/add_parsing_refiner.py --scale 8 --old OLD.pt --out runs/gpsft_x8_refiner_init.pt
    python tools/add_parsing_refiner.py --scale 8 --old model/weights/gpsft_x8.pt \
        --hr-parser 16 32 64 128 --out runs/hrparser/init_x8.pt
    python tools/add_parsing_refiner.py --scale 8 --old model/weights/gpsft_x8.pt \
        --parsing-prior --out runs/pprior/init_x8.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from leukoscreen.model.checkpoint import save_weights
from leukoscreen.model.gpsft import with_parsing_prior
from leukoscreen.model.networks import build_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, required=True)
    parser.add_argument("--old", type=Path, required=True, help="GP-SFT weights without refiner")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--widths", type=int, nargs="+", default=[16, 32, 48], help="refiner channels per x2 step"
    )
    parser.add_argument(
        "--hr-parser", type=int, nargs="+", default=None, help="add the HR parser, level widths"
    )
    parser.add_argument(
        "--parsing-prior", action="store_true", help="a copy of the prior for the parsing map"
    )
    args = parser.parse_args()
    state = torch.load(args.old, map_location="cpu", weights_only=True)
    arch_kwargs = dict(state.get("arch_kwargs", {}))
    arch_kwargs.setdefault("refine_widths", tuple(args.widths))
    new = "refiner."
    if args.hr_parser:
        arch_kwargs["hr_parser_widths"] = tuple(args.hr_parser)
        new = "hr_parser."
    weights = dict(state["state_dict"])
    if args.parsing_prior:
        arch_kwargs["parsing_prior"] = True
        new = "parsing_"  # parsing_prior. and parsing_condition.: copies of the shared ones
        weights = with_parsing_prior(weights)
    model = build_network("gpsft", scale=args.scale, **arch_kwargs)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or any(not key.startswith(new) for key in missing):
        raise SystemExit(f"{args.old}: not GP-SFT weights without {new[:-1]} ({unexpected})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(
        model,
        args.out,
        arch="gpsft",
        scale=args.scale,
        arch_kwargs=arch_kwargs,
        config=state.get("config", {}),
        metrics=state.get("metrics", {}),
        dtype=torch.float32,
    )
    added = len(weights) - len(state["state_dict"]) + len(missing)
    print(f"{args.out}: {added} {new[:-1]} tensors added (zero heads or copies of the prior)")


if __name__ == "__main__":
    main()
