"""Super-resolve image files: what ``leukoscreen upscale`` does, as a function.

Each input is read as an 8-bit RGB image (grey is repeated to three channels, an alpha channel is
dropped), super-resolved as a batch of one by an :class:`~leukoscreen.model.inference.Upscaler`,
and written as ``<stem>_x<s>.png`` (the SR image) and, for networks with a prior,
``<stem>_x<s>_parsing.png`` (the parsing map coloured as in the paper's Fig. 2: background black,
cytoplasm red, nucleus blue). Every input is read and checked before the first output is
written, so a bad file in the list leaves no half-finished output folder behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import skimage.io
from numpy.typing import NDArray

from leukoscreen.model.errors import DataError, OutputError, UsageError
from leukoscreen.model.inference import MIN_LR_SIDE_PX, Upscaler, colour_parsing


def check_image_files(paths: Sequence[Path | str]) -> list[Path]:
    """The inputs as paths, after checking that each is an existing file with its own stem.

    Raises:
        UsageError: no inputs, or two inputs with one stem (their outputs would collide).
        DataError: a path that does not exist or is a folder.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise UsageError("upscale: expected at least one image file, got none")
    seen: dict[str, Path] = {}
    for path in files:
        if not path.exists():
            raise DataError(f"{path}: no such image file")
        if not path.is_file():
            raise DataError(f"{path}: expected an image file, found a folder")
        if path.stem in seen:
            raise UsageError(
                f"{path}: has the same name as {seen[path.stem]}; their outputs would overwrite "
                "each other"
            )
        seen[path.stem] = path
    return files


def read_lr_image(path: Path | str) -> NDArray[np.uint8]:
    """An 8-bit image file as (h, w, 3) uint8 RGB, at least ``MIN_LR_SIDE_PX`` a side.

    Raises:
        DataError: not an image, not 8-bit, not grey/RGB(A), or too small to super-resolve.
    """
    path = Path(path)
    try:
        image = skimage.io.imread(path)
    except Exception as err:  # imageio/PIL raise many types for files that are not images
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(
            f"{path}: not an image file leukoscreen can read ({err.__class__.__name__}"
            + (f": {reason})" if reason else ")")
        ) from err
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise DataError(f"{path}: expected an 8-bit image, found {image.dtype}")
    if image.ndim == 3 and image.shape[-1] in (2, 4):  # grey + alpha, RGB + alpha
        image = image[..., : image.shape[-1] - 1]
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise DataError(f"{path}: expected a grey or RGB image, found shape {image.shape}")
    rows, cols = image.shape[:2]
    if min(rows, cols) < MIN_LR_SIDE_PX:
        raise DataError(
            f"{path}: image is {rows}x{cols} px, expected at least {MIN_LR_SIDE_PX} px a side "
            "to super-resolve"
        )
    return np.ascontiguousarray(image)


def upscale_files(
    paths: Sequence[Path | str], *, out_dir: Path | str, upscaler: Upscaler
) -> list[Path]:
    """Super-resolve each image file and write the results into ``out_dir``.

    Args:
        paths: LR image files (PNG, JPEG, BMP, TIFF, ...), grey or RGB, 8-bit.
        out_dir: output folder, created if missing; existing outputs are replaced.
        upscaler: the network (``load_pretrained`` or ``load_checkpoint``).

    Returns:
        The written files in input order: ``<stem>_x<s>.png`` and, when the upscaler has a
        prior, ``<stem>_x<s>_parsing.png`` after it.

    Raises:
        UsageError, DataError: see :func:`check_image_files` and :func:`read_lr_image`.
        OutputError: ``out_dir`` cannot be created or written.
    """
    files = check_image_files(paths)
    images = [read_lr_image(path) for path in files]  # all checked before anything is written
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out_dir}: cannot create the output folder ({err.strerror})") from err
    scale = upscaler.scale
    written: list[Path] = []
    for path, lr in zip(files, images, strict=True):
        sr, parsing = upscaler.upscale(lr[None])  # a batch of one: (1, h*s, w*s, 3)
        outputs = [(out_dir / f"{path.stem}_x{scale}.png", sr[0])]
        if parsing is not None:
            outputs.append(
                (out_dir / f"{path.stem}_x{scale}_parsing.png", colour_parsing(parsing[0]))
            )
        for target, image in outputs:
            try:
                skimage.io.imsave(target, image, check_contrast=False)
            except OSError as err:
                raise OutputError(f"{target}: cannot write ({err.strerror or err})") from err
            written.append(target)
    return written
