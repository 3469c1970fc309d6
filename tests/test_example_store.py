"""The bundled example slide's store is the one the code made before the run/store reshaping.

``tests/data/example_store_x8.json`` holds the sha256 of every array of the store that
``leukoscreen run pipeline/example/bccd_x8.svs --scale 8`` wrote on the code before issue 11
(two runs gave identical bytes), and its attributes without timestamps, timings and the slide
path. The run here must reproduce all of it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr

from leukoscreen.pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "pipeline" / "example" / "bccd_x8.svs"
REFERENCE = Path(__file__).with_name("data") / "example_store_x8.json"


def _digests(path: Path) -> dict[str, dict[str, Any]]:
    digests: dict[str, dict[str, Any]] = {}

    def walk(group: zarr.Group, prefix: str) -> None:
        for name, node in sorted(group.members()):
            if isinstance(node, zarr.Array):
                values = np.ascontiguousarray(node[...])
                digests[prefix + name] = {
                    "shape": list(values.shape),
                    "dtype": str(values.dtype),
                    "chunks": list(node.chunks),
                    "sha256": hashlib.sha256(values.tobytes()).hexdigest(),
                }
            else:
                walk(node, f"{prefix}{name}/")

    walk(zarr.open_group(path, mode="r"), "")
    return digests


def _cpu_precision() -> str:
    # bf16 results depend on the CPU's bf16 instructions: the reference holds for the same choice.
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def test_example_store_matches_the_reference(tmp_path: Path) -> None:
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    if _cpu_precision() != reference["precision"] or torch.cuda.is_available():
        pytest.skip(f"the reference was made with {reference['precision']} on a CPU")
    out = tmp_path / "bccd_x8.leukoscreen.zarr"
    assert main(["run", str(EXAMPLE), "--scale", "8", "--out", str(out), "--device", "cpu"]) == 0

    assert _digests(out) == reference["arrays"]
    attrs = dict(zarr.open_group(out, mode="r").attrs["leukoscreen"])
    assert set(attrs["timings"]) == {"detect_s", "sr_s", "total_s", "model_s", "batches_skipped"}
    for key in ("timings", "started_at", "finished_at"):
        attrs.pop(key)
    assert attrs["slide"].pop("path") == str(EXAMPLE)
    # --device cpu is the only key that differs from the reference's default config.
    assert attrs["config"]["inference"].pop("device") == "cpu"
    reference["attrs"]["config"]["inference"].pop("device")
    assert attrs == reference["attrs"]
