"""The bundled example slide's store is the one the code made before the run/store reshaping.

``tests/data/example_store_x8.json`` holds the sha256 of every array of the store that
``leukoscreen run pipeline/example/bccd_x8.svs --scale 8`` wrote on the code before issue 11
(two runs gave identical bytes), and its attributes without timestamps, timings and the slide
path. The run here must reproduce all of it. The network's arrays depend on the CPU's bf16
kernels (AMX and AVX-512 bf16 round differently), so their digests are kept per kernel family;
everything else is checked on every CPU.
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


def _kernel_family() -> str:
    # 'auto' runs bf16 where oneDNN has bf16 kernels; AMX and AVX-512 bf16 give different bytes.
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "fp32"
    flags = (
        Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").exists() else ""
    )
    return "bf16-amx" if "amx_bf16" in flags else "bf16-avx512"


def test_example_store_matches_the_reference(tmp_path: Path) -> None:
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    if torch.cuda.is_available():
        pytest.skip("the reference was made on a CPU")
    out = tmp_path / "bccd_x8.leukoscreen.zarr"
    assert main(["run", str(EXAMPLE), "--scale", "8", "--out", str(out), "--device", "cpu"]) == 0

    digests = _digests(out)
    network = reference["network_arrays"].get(_kernel_family())
    network_keys = set(reference["network_arrays"]["bf16-amx"])
    shared = {key: value for key, value in digests.items() if key not in network_keys}
    assert shared == reference["arrays"]
    attrs = dict(zarr.open_group(out, mode="r").attrs["leukoscreen"])
    assert set(attrs["timings"]) == {"detect_s", "sr_s", "total_s", "model_s", "batches_skipped"}
    for key in ("timings", "started_at", "finished_at"):
        attrs.pop(key)
    assert attrs["slide"].pop("path") == str(EXAMPLE)
    # --device cpu is the only key that differs from the reference's default config.
    assert attrs["config"]["inference"].pop("device") == "cpu"
    reference["attrs"]["config"]["inference"].pop("device")
    assert attrs == reference["attrs"]
    if network is None:
        pytest.skip(f"no reference for the network's arrays on a {_kernel_family()} CPU")
    assert {k: digests[k] for k in network} == network
