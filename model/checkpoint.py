"""Weights files: saved as plain tensors and metadata, loaded without executing code.

A weights file is a ``torch.save`` of a dict holding only tensors, strings, numbers, lists and
dicts, so ``torch.load(weights_only=True)`` reads it without unpickling code:

``{"format": WEIGHTS_FORMAT, "arch": "gp", "scale": 8, "arch_kwargs": {...},
"state_dict": {name: tensor}, "config": {...}, "metrics": {...}}``.

Shipped weights are stored in fp16 and listed with their sha256 in
``leukoscreen/model/weights/manifest.json``; loading checks the hash before reading.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leukoscreen.model.config import ARCHS, DEFAULT_ARCH, SCALES
from leukoscreen.model.errors import CheckpointError
from leukoscreen.model.networks import build_network

WEIGHTS_FORMAT = "leukoscreen-weights/1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"


@dataclass(frozen=True)
class LoadedWeights:
    """A network rebuilt from a weights file, in eval mode on the CPU, fp32."""

    model: nn.Module
    arch: str
    scale: int
    sha256: str
    meta: dict[str, Any]


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(
    model: nn.Module,
    path: Path | str,
    *,
    arch: str,
    scale: int,
    arch_kwargs: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float16,
) -> str:
    """Write ``model``'s weights (floating tensors cast to ``dtype``) and return the sha256."""
    state = {
        name: (t.detach().to("cpu", dtype) if t.is_floating_point() else t.detach().cpu())
        for name, t in model.state_dict().items()
    }
    payload = {
        "format": WEIGHTS_FORMAT,
        "arch": arch,
        "scale": int(scale),
        "arch_kwargs": dict(arch_kwargs or {}),
        "state_dict": state,
        "config": config or {},
        "metrics": metrics or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return sha256_file(path)


def load_weights(path: Path | str, *, expected_sha256: str | None = None) -> LoadedWeights:
    """Rebuild the network stored in ``path``.

    Raises:
        CheckpointError: missing file, a sha256 other than ``expected_sha256``, not a weights
            file, or weights that do not fit the recorded architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise CheckpointError(
            f"{path}: sha256 {digest[:12]}... does not match the recorded {expected_sha256[:12]}..."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle/zip/runtime errors for foreign files
        raise CheckpointError(
            f"{path}: not a leukoscreen weights file ({err.__class__.__name__})"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{path}: not a leukoscreen weights file (expected {WEIGHTS_FORMAT})")
    try:
        arch, scale = payload["arch"], int(payload["scale"])
        arch_kwargs = dict(payload["arch_kwargs"])
        state = {
            k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(
            f"{path}: damaged leukoscreen weights file ({err.__class__.__name__}: {err})"
        ) from err
    if arch not in ARCHS or scale not in SCALES:
        raise CheckpointError(f"{path}: unknown arch {arch!r} or scale {scale!r}")
    try:
        model = build_network(arch, scale=scale, **arch_kwargs)
    except (TypeError, ValueError) as err:  # an unknown or invalid constructor argument
        raise CheckpointError(
            f"{path}: arch_kwargs {arch_kwargs!r} do not fit arch {arch!r}: {err}"
        ) from err
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        # torch's first line only names the class; the second says which tensor is wrong.
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        raise CheckpointError(
            f"{path}: weights do not fit arch {arch!r}: {' '.join(lines[:2])}"
        ) from err
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return LoadedWeights(model=model, arch=arch, scale=scale, sha256=digest, meta=meta)


def read_manifest() -> dict[str, Any]:
    """The shipped-weights manifest: ``{"gp_x8": {"file": ..., "sha256": ..., ...}, ...}``."""
    if not MANIFEST.is_file():
        return {}
    data: dict[str, Any] = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return data


def shipped_weights_path(arch: str, scale: int) -> tuple[Path, str]:
    """Path and recorded sha256 of the shipped weights for ``arch`` at ``scale``.

    Raises:
        CheckpointError: no shipped weights for that arch and scale.
    """
    entry = read_manifest().get(f"{arch}_x{scale}")
    if entry is None:
        available = ", ".join(sorted(read_manifest())) or "none"
        raise CheckpointError(
            f"{MANIFEST}: no shipped weights for arch {arch!r} at scale {scale} "
            f"(available: {available})"
        )
    return WEIGHTS_DIR / entry["file"], str(entry["sha256"])


def resolve_arch(arch: str) -> str:
    """``default`` -> :data:`~leukoscreen.model.config.DEFAULT_ARCH`; other names unchanged."""
    return DEFAULT_ARCH if arch == "default" else arch


def load_init(spec: str, scale: int) -> LoadedWeights:
    """The weights a fine-tuning run starts from: ``default``, a network name (its shipped
    weights at ``scale``) or a weights file.

    Raises:
        CheckpointError: no such shipped network or file, or a file for another scale.
    """
    name = resolve_arch(spec)
    if name in ARCHS:
        path, sha = shipped_weights_path(name, scale)
        return load_weights(path, expected_sha256=sha)
    loaded = load_weights(spec)
    if loaded.scale != scale:
        raise CheckpointError(f"{spec}: holds scale x{loaded.scale}, expected x{scale}")
    return loaded
