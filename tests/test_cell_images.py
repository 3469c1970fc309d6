"""A slide made of single-cell images through `leukoscreen detect`: every leukocyte found, and the
terminal says why the red cells were estimated beneath the nuclei."""

from __future__ import annotations

import csv

import numpy as np
from conftest import write_svs
from test_stain import MPP, synthesise_cell_images

from leukoscreen.pipeline.cli import main


def test_detect_finds_every_cell_of_a_slide_of_single_cell_images(tmp_path, capsys) -> None:
    rgb, centres = synthesise_cell_images(side=6)
    slide = tmp_path / "cells.svs"
    write_svs(slide, rgb, MPP, factors=(4,))
    table = tmp_path / "cells.csv"
    assert main(["detect", str(slide), "--out", str(table)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{slide}: 36 leukocytes (rich in leukocytes: red cells estimated")
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    found = np.array([[float(r["row"]), float(r["col"])] for r in rows])
    expected = np.array(centres, np.float64)
    nearest = np.min(np.hypot(*(found[:, None, :] - expected[None, :, :]).transpose(2, 0, 1)),
                     axis=0)  # fmt: skip
    assert len(found) == 36 and float(nearest.max()) < 2.0
