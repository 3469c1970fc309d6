"""Sub-pixel phase augmentation: new LR / HR pairs from the same cells.

The degradation (MATLAB ``imresize`` down by ``s``) averages each ``s x s`` block of HR pixels
into one LR pixel, so where a cell sits relative to that grid decides its LR image. A training
set of 224 px crops only ever shows the network one of the ``s**2`` grid phases of each cell
(``s**2 = 64`` at x8). :func:`phase_shift` cuts each HR image at an offset ``(dy, dx)`` in
``[0, s)**2`` to a side one ``s`` smaller and degrades the cut again, so every epoch can show
each cell at another phase: an LR image the data set never held, with its exact HR. Flips and
rotations (:func:`leukoscreen.model.data.augment`) cannot do this: they keep the grid.

It matters most where there are few images: fine-tuning on a lab's own 20-50 cells
(``docs/model-card.md``, fine-tuning), where it is on by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from leukoscreen.model.imresize import resize_matrix


def degrade_batch(ycc: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`leukoscreen.model.imresize.degrade` on a (N, C, H, W) float64 batch: MATLAB's
    ``imresize`` down by ``scale`` and back up, written as matrix products. Returns the LR
    (N, C, H/s, W/s) and the bicubic up-sampling (N, C, H, W)."""
    height, width = ycc.shape[-2:]
    down_rows = torch.from_numpy(resize_matrix(height, 1.0 / scale))
    down_cols = torch.from_numpy(resize_matrix(width, 1.0 / scale))
    up_rows = torch.from_numpy(resize_matrix(height // scale, float(scale)))
    up_cols = torch.from_numpy(resize_matrix(width // scale, float(scale)))
    lr_ycc = torch.einsum("Hh,nchw,Ww->ncHW", down_rows, ycc, down_cols)
    up_ycc = torch.einsum("Hh,nchw,Ww->ncHW", up_rows, lr_ycc, up_cols)
    return lr_ycc, up_ycc


def with_hr(
    batch: dict[str, torch.Tensor], ycc: torch.Tensor, scale: int
) -> dict[str, torch.Tensor]:
    """``batch`` with the HR YCbCr ``ycc`` (N, 3, H, W) and everything degraded from it
    (``hr``, ``hr_ycbcr``, ``lr``, ``lr_ycbcr``, ``up``, ``up_ycbcr``) replaced."""
    lr_ycc, up_ycc = degrade_batch(ycc.double(), scale)
    out = dict(batch)
    out["hr_ycbcr"] = ycc.float()
    out["hr"] = ycc[:, :1].float()
    out["lr_ycbcr"] = lr_ycc.float()
    out["lr"] = lr_ycc[:, :1].float()
    out["up_ycbcr"] = up_ycc.float()
    out["up"] = up_ycc[:, :1].float()
    return out


def phase_offsets(
    indices: Sequence[int], *, seed: int, epoch: int, scale: int
) -> list[tuple[int, int]]:
    """One HR offset ``(dy, dx)`` in ``[0, scale)**2`` per image, uniform over the grid phases,
    a function of (seed, epoch, image index) only (like the flips), so shuffling, batching and
    resuming do not change which image gets which."""
    offsets = []
    for index in indices:
        dy, dx = np.random.default_rng([seed, epoch, int(index), 10]).integers(scale, size=2)
        offsets.append((int(dy), int(dx)))
    return offsets


def phase_shift(
    batch: dict[str, torch.Tensor], offsets: Sequence[tuple[int, int]], *, scale: int
) -> dict[str, torch.Tensor]:
    """``batch`` with image ``n`` cut at ``offsets[n]`` to a side ``scale`` px smaller and degraded
    again: exactly the pair the data set makes from the cut HR image
    (``tests/test_phases.py``). ``onehot`` is cut with its image and ``valid`` follows the original
    pixels."""
    ycc = batch["hr_ycbcr"]
    height, width = ycc.shape[-2:]
    if height <= scale or width <= scale:
        raise ValueError(f"images of {height} x {width} px are too small to shift at x{scale}")
    out_h, out_w = height - scale, width - scale

    def cut(tensor: torch.Tensor) -> torch.Tensor:
        pairs = zip(tensor, offsets, strict=True)
        return torch.stack([t[:, dy : dy + out_h, dx : dx + out_w] for t, (dy, dx) in pairs])

    out = with_hr(batch, cut(ycc), scale)
    out["onehot"] = cut(batch["onehot"])
    shift = torch.tensor(offsets, dtype=batch["valid"].dtype)
    limit = torch.tensor([out_h, out_w], dtype=batch["valid"].dtype)
    out["valid"] = torch.minimum((batch["valid"] - shift).clamp(min=0), limit)
    return out
