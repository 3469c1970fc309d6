"""Leukocyte images with parsing maps: readers, the fixed split, and the SR training set.

Readers return :class:`Sample` objects (RGB uint8 + optional parsing labels) from

* segmentation_WBC (Zheng et al., Micron 2018): ``Dataset 1`` and ``Dataset 2`` folders of
  ``NNN.bmp`` images with ``NNN.png`` masks, 255 nucleus / 128 cytoplasm / 0 background (a few
  Dataset 2 masks hold stray values; every pixel is snapped to the nearest of the three);
* any folder of HR images with optional masks in the same layout (``<stem>.png`` beside a
  non-PNG image, or ``<stem>_mask.png``);
* LabelMe JSON files (the paper's annotation tool, §3.1): polygons labelled ``nucleus`` and
  ``cytoplasm`` rasterised into a parsing map (nucleus drawn over cytoplasm).

Training size (paper §2.4 trains on whole cells, not patches): each image is cropped centrally
when larger than the target and padded by symmetric reflection at the bottom/right when smaller,
so the original pixels keep their place and ``valid`` records their extent; metrics are computed
on the valid part only. With ``hr_size_px=0`` each source keeps its own size group: 120 px for
segmentation_WBC Dataset 1 (images of 88-120 px, cells about 74 px) and 224 px for Dataset 2 and
other folders (the paper's 224 x 224; Dataset 2's 300 px images are centre-cropped, its cells are
about 160 px). Batches are drawn within one size group.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import skimage.draw
import skimage.io
import torch
from numpy.typing import NDArray

from leukoscreen.model.errors import DataError
from leukoscreen.model.imresize import YCBCR_MATRIX, YCBCR_OFFSET, degrade, rgb2ycbcr
from leukoscreen.model.phases import with_hr

ScalarT = TypeVar("ScalarT", bound=np.generic)

BACKGROUND, CYTOPLASM, NUCLEUS = 0, 1, 2  # parsing labels, as stored everywhere
IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)  # train, val, test, per source
LAB_SPLIT_FRACTIONS = (0.9, 0.1, 0.0)  # a lab's own folder when fine-tuning (TrainConfig.lab_split)
SIZE_GROUPS = {"wbc1": 120, "wbc2": 224}
DEFAULT_SIZE_PX = 224


@dataclass(frozen=True)
class Sample:
    """One leukocyte image.

    Attributes:
        image_id: unique id, ``<source>-<stem>`` (e.g. ``wbc2-034``).
        source: group name used for the split and size groups (``wbc1``, ``wbc2``, folder name).
        rgb: (H, W, 3) uint8.
        labels: (H, W) uint8 parsing labels (0 background, 1 cytoplasm, 2 nucleus) or None.
        split: the part (``train``/``val``/``test``) fixed by the source itself (a field
            source's split, by duplicate group), or None to be dealt by :func:`split_ids`.
    """

    image_id: str
    source: str
    rgb: NDArray[np.uint8]
    labels: NDArray[np.uint8] | None
    split: str | None = None


def mask_to_labels(mask: NDArray[np.integer], *, path: Path | str = "<mask>") -> NDArray[np.uint8]:
    """Snap a 255/128/0 mask to labels 2/1/0 (nearest level; stray values are rounded)."""
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise DataError(f"{path}: expected a one-channel mask, found shape {mask.shape}")
    levels = np.array([0, 128, 255], dtype=np.int32)
    nearest = np.abs(mask.astype(np.int32)[..., None] - levels).argmin(axis=-1)
    return nearest.astype(np.uint8)  # 0 -> background, 1 -> cytoplasm, 2 -> nucleus


def _read_rgb(path: Path) -> NDArray[np.uint8]:
    try:
        image = skimage.io.imread(path)
    except Exception as err:  # imageio raises many types for unreadable files
        raise DataError(f"{path}: cannot read image ({err.__class__.__name__}: {err})") from err
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or image.dtype != np.uint8:
        raise DataError(
            f"{path}: expected an 8-bit RGB image, found shape {image.shape} {image.dtype}"
        )
    return np.ascontiguousarray(image[..., :3])


def read_image_folder(folder: Path | str, *, source: str | None = None) -> list[Sample]:
    """Every image in ``folder`` (not recursive) with its mask where one exists.

    Masks: ``<stem>.png`` beside a non-PNG image, or ``<stem>_mask.png``.

    Raises:
        DataError: the folder is missing or holds no images, or a mask's size differs from its
            image's.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: expected a folder of images, found no such folder")
    source = source or folder.name
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    mask_files = {p for p in files if p.stem.endswith("_mask")}
    stems_with_other = {p.stem for p in files if p.suffix.lower() != ".png"}
    mask_files |= {p for p in files if p.suffix.lower() == ".png" and p.stem in stems_with_other}
    samples = []
    for path in files:
        if path in mask_files:
            continue
        rgb = _read_rgb(path)
        mask_path = next(
            (
                m
                for m in (path.with_name(f"{path.stem}_mask.png"), path.with_suffix(".png"))
                if m in mask_files
            ),
            None,
        )
        labels = None
        if mask_path is not None:
            try:
                mask = skimage.io.imread(mask_path)
            except Exception as err:  # imageio raises many types for unreadable files
                raise DataError(
                    f"{mask_path}: cannot read mask ({err.__class__.__name__}: {err})"
                ) from err
            labels = mask_to_labels(mask, path=mask_path)
            if labels.shape != rgb.shape[:2]:
                raise DataError(
                    f"{mask_path}: mask is {labels.shape[0]}x{labels.shape[1]}, expected the "
                    f"image's {rgb.shape[0]}x{rgb.shape[1]}"
                )
        samples.append(Sample(f"{source}-{path.stem}", source, rgb, labels))
    if not samples:
        raise DataError(f"{folder}: no images found (expected {', '.join(IMAGE_SUFFIXES)} files)")
    return samples


def read_segmentation_wbc(root: Path | str) -> list[Sample]:
    """Both segmentation_WBC data sets (sources ``wbc1`` and ``wbc2``), 400 samples."""
    root = Path(root)
    samples: list[Sample] = []
    for number in (1, 2):
        samples += read_image_folder(root / f"Dataset {number}", source=f"wbc{number}")
    return samples


def read_labelme(path: Path | str) -> Sample:
    """A LabelMe JSON file with ``nucleus`` and ``cytoplasm`` polygons -> Sample.

    The image is read from ``imagePath`` relative to the JSON file. Polygon points are (x, y);
    cytoplasm is drawn first and nucleus over it, the rest is background.

    Raises:
        DataError: unreadable JSON, a missing image, or an unknown label.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        image_path = path.parent / doc["imagePath"]
        shapes = doc["shapes"]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path}: expected a LabelMe JSON file ({err})") from err
    rgb = _read_rgb(image_path)
    labels = np.zeros(rgb.shape[:2], dtype=np.uint8)
    order = {"cytoplasm": CYTOPLASM, "nucleus": NUCLEUS}
    for name in ("cytoplasm", "nucleus"):
        for shape in shapes:
            label = str(shape.get("label", "")).lower()
            if label not in order:
                raise DataError(
                    f"{path}: unknown label {label!r}; expected 'nucleus' or 'cytoplasm'"
                )
            if label != name:
                continue
            try:
                points = np.asarray(shape["points"], dtype=np.float64)  # (K, 2) as (x, y)
            except (KeyError, TypeError, ValueError) as err:
                raise DataError(f"{path}: a {name} shape without valid points ({err!r})") from err
            if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
                raise DataError(
                    f"{path}: a {name} polygon needs >= 3 (x, y) points, found shape {points.shape}"
                )
            rr, cc = skimage.draw.polygon(points[:, 1], points[:, 0], shape=labels.shape)
            labels[rr, cc] = order[name]
    return Sample(f"labelme-{path.stem}", "labelme", rgb, labels)


def split_ids(
    samples: Sequence[Sample], *, seed: int = 0, lab_sources: Collection[str] = ()
) -> dict[str, list[str]]:
    """The fixed train/val/test split: per source, a seeded permutation cut 70/15/15.

    The permutation depends only on ``seed``, the source name and the sorted ids, so adding a
    new source never moves the images of another. A sample whose source fixes its part
    (``Sample.split``, e.g. leukocytes cropped from a field source split by duplicate group)
    keeps that part. The sources in ``lab_sources`` are cut by :data:`LAB_SPLIT_FRACTIONS`.
    """
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    by_source: dict[str, list[str]] = {}
    for sample in samples:
        if sample.split is not None:
            split[sample.split].append(sample.image_id)
            continue
        by_source.setdefault(sample.source, []).append(sample.image_id)
    for source, ids in sorted(by_source.items()):
        ids = sorted(ids)
        rng = np.random.default_rng([seed, zlib.crc32(source.encode())])
        order = [ids[i] for i in rng.permutation(len(ids))]
        if source in lab_sources:  # no test part: at least one validation image, the rest train
            n_val = max(round(LAB_SPLIT_FRACTIONS[1] * len(ids)), 1)
            n_train = len(ids) - n_val
        else:
            n_train = round(SPLIT_FRACTIONS[0] * len(ids))
            n_val = round(SPLIT_FRACTIONS[1] * len(ids))
        split["train"] += order[:n_train]
        split["val"] += order[n_train : n_train + n_val]
        split["test"] += order[n_train + n_val :]
    return split


def fit_to_size(image: NDArray[ScalarT], size_px: int) -> tuple[NDArray[ScalarT], tuple[int, int]]:
    """Centre-crop to at most ``size_px`` per side, then pad bottom/right by symmetric reflection.

    Returns:
        the (size_px, size_px, ...) image and the (rows, cols) extent of original pixels.
    """
    height, width = image.shape[:2]
    top = max(0, (height - size_px) // 2)
    left = max(0, (width - size_px) // 2)
    image = image[top : top + size_px, left : left + size_px]
    valid = image.shape[:2]
    pad = [(0, size_px - valid[0]), (0, size_px - valid[1])] + [(0, 0)] * (image.ndim - 2)
    padded: NDArray[ScalarT] = np.pad(image, pad, mode="symmetric")
    return padded, (int(valid[0]), int(valid[1]))


def size_for(source: str, hr_size_px: int) -> int:
    """Training side length of a source (see the module docstring)."""
    return hr_size_px if hr_size_px > 0 else SIZE_GROUPS.get(source, DEFAULT_SIZE_PX)


class SRDataset(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """HR/LR luminance pairs at one scale, computed once with the MATLAB-style bicubic.

    Each item is a dict of float32 tensors in [0, 1]: ``hr`` (1, H, W) and ``hr_ycbcr`` (3, H, W)
    (read by :func:`colour_augment`), ``up`` (1, H, W) the
    bicubic up-sampling of ``lr`` (1, H/s, W/s), ``up_ycbcr`` (3, H, W) the same for all of Y,
    Cb and Cr (channel 0 equals ``up``; read by a prior with ``prior_input="ycbcr"``),
    ``lr_ycbcr`` (3, H/s, W/s) the LR Y, Cb and Cr (read by GP-SFT),
    ``onehot`` (3, H, W) parsing target in the prior's channel order (nucleus, cytoplasm,
    background; zeros without a mask), ``has_mask`` () and ``valid`` (2,) int64, the extent of
    original pixels.

    Args:
        samples: the images (any size; fitted with :func:`fit_to_size`).
        scale: 4 or 8; the fitted size must be divisible by it.
        hr_size_px: 0 for per-source size groups, else one size for all.
    """

    def __init__(self, samples: Sequence[Sample], *, scale: int, hr_size_px: int = 0) -> None:
        self.scale = scale
        self.ids = [s.image_id for s in samples]
        self.sizes = [size_for(s.source, hr_size_px) for s in samples]
        self.items = [self._prepare(s, size) for s, size in zip(samples, self.sizes, strict=True)]

    def _prepare(self, sample: Sample, size_px: int) -> dict[str, torch.Tensor]:
        if size_px % self.scale:
            raise DataError(
                f"{sample.image_id}: training size {size_px} is not divisible by scale {self.scale}"
            )
        rgb, valid = fit_to_size(sample.rgb, size_px)
        ycc = rgb2ycbcr(rgb.astype(np.float64) / 255.0)  # (H, W, 3)
        hr = ycc[..., 0]  # (H, W)
        lr_ycc, up_ycc = degrade(ycc, self.scale)  # (H/s, W/s, 3), (H, W, 3)
        lr, up = lr_ycc[..., 0], up_ycc[..., 0]
        onehot = np.zeros((3, size_px, size_px), dtype=np.float32)
        if sample.labels is not None:
            labels, _ = fit_to_size(sample.labels, size_px)
            for channel, label in enumerate((NUCLEUS, CYTOPLASM, BACKGROUND)):
                onehot[channel] = labels == label
        return {
            "hr": torch.from_numpy(hr[None].astype(np.float32)),
            "up": torch.from_numpy(up[None].astype(np.float32)),
            "up_ycbcr": torch.from_numpy(up_ycc.transpose(2, 0, 1).astype(np.float32)),
            "lr": torch.from_numpy(lr[None].astype(np.float32)),
            "lr_ycbcr": torch.from_numpy(lr_ycc.transpose(2, 0, 1).astype(np.float32)),
            "hr_ycbcr": torch.from_numpy(ycc.transpose(2, 0, 1).astype(np.float32)),
            "onehot": torch.from_numpy(onehot),
            "has_mask": torch.tensor(float(sample.labels is not None)),
            "valid": torch.tensor(valid, dtype=torch.int64),
        }

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index]

    def batches(
        self, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True
    ) -> Iterator[list[int]]:
        """Index batches within size groups; the order depends only on (seed, epoch)."""
        rng = np.random.default_rng([seed, epoch])
        groups: dict[int, list[int]] = {}
        for index, size in enumerate(self.sizes):
            groups.setdefault(size, []).append(index)
        batches: list[list[int]] = []
        for size in sorted(groups):
            members = np.asarray(groups[size])
            if shuffle:
                members = members[rng.permutation(len(members))]
            batches += [
                members[i : i + batch_size].tolist() for i in range(0, len(members), batch_size)
            ]
        if shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        yield from batches

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Stack the items at ``indices`` into a batch (all of one size group)."""
        return {key: torch.stack([self.items[i][key] for i in indices]) for key in self.items[0]}


def dihedral_codes(indices: Sequence[int], *, seed: int, epoch: int) -> list[int]:
    """One of the 8 flips/rotations per image, a function of (seed, epoch, image index) only,
    so shuffling, batching and resuming do not change which image gets which."""
    return [int(np.random.default_rng([seed, epoch, int(i), 8]).integers(8)) for i in indices]


def augment(batch: dict[str, torch.Tensor], codes: Sequence[int]) -> dict[str, torch.Tensor]:
    """``batch`` with image ``n`` of every (N, C, H, W) tensor flipped / transposed by
    ``codes[n]``: bit 0 transposes H and W, bit 1 flips H, bit 2 flips W (code 0: unchanged).

    The MATLAB bicubic degradation commutes with these for square images whose side is divisible
    by the scale (a symmetric kernel on a symmetric index mapping), so transforming HR, LR and
    the bicubic input together equals degrading the transformed HR
    (``tests/test_data.py::test_augment_commutes_with_the_degradation``). ``valid`` is left as
    is: it is only read by evaluation, which does not augment.
    """
    out = dict(batch)
    for key, tensor in batch.items():
        if tensor.ndim != 4:
            continue
        images = []
        for n, code in enumerate(codes):
            image = tensor[n]
            if code & 1:
                image = image.transpose(1, 2)
            if code & 2:
                image = image.flip(1)
            if code & 4:
                image = image.flip(2)
            images.append(image)
        out[key] = torch.stack(images).contiguous()
    return out


@dataclass(frozen=True)
class ColourJitter:
    """One image's stain / lamp / camera change (:func:`colour_augment`); identity by default.

    Attributes:
        density: scale of the optical density (stain amount, section thickness).
        mixing: (3, 3) matrix applied to each pixel's optical density (stain hue); identity
            keeps the hue.
        tint: (3,) per-channel gain of the transmitted light (lamp colour, white balance).
        brightness: overall gain (exposure).
    """

    density: float = 1.0
    mixing: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    brightness: float = 1.0


@dataclass(frozen=True)
class ColourRanges:
    """Ranges :func:`colour_jitters` draws from, uniformly: ``density``, each entry of the
    ``mixing`` offset from the identity (+-), each channel's ``tint`` and ``brightness``.
    Generic ranges chosen before training, not fitted to any source."""

    density: tuple[float, float] = (0.7, 1.35)
    mixing: float = 0.08
    tint: tuple[float, float] = (0.9, 1.05)
    brightness: tuple[float, float] = (0.88, 1.06)


COLOUR_RANGES = ColourRanges()


def colour_jitters(
    indices: Sequence[int], *, seed: int, epoch: int, identity_share: float = 0.2
) -> list[ColourJitter]:
    """One jitter per image, a function of (seed, epoch, image index) only (like
    :func:`dihedral_codes`); ``identity_share`` of the images keep their colours."""
    jitters = []
    for index in indices:
        rng = np.random.default_rng([seed, epoch, int(index), 9])
        if rng.random() < identity_share:
            jitters.append(ColourJitter())
            continue
        ranges = COLOUR_RANGES
        mixing = np.eye(3) + rng.uniform(-1, 1, (3, 3)) * ranges.mixing
        red, green, blue = (float(v) for v in rng.uniform(*ranges.tint, 3))
        jitters.append(
            ColourJitter(
                density=float(rng.uniform(*ranges.density)),
                mixing=tuple(tuple(float(v) for v in row) for row in mixing),
                tint=(red, green, blue),
                brightness=float(rng.uniform(*ranges.brightness)),
            )
        )
    return jitters


def _ycbcr_torch(rgb: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """(N, 3, H, W) RGB <-> MATLAB YCbCr in [0, 1] units, in torch (float64 matrices)."""
    matrix = torch.as_tensor(YCBCR_MATRIX, dtype=rgb.dtype)
    offset = torch.as_tensor(YCBCR_OFFSET, dtype=rgb.dtype)[:, None, None]
    if inverse:
        return torch.einsum("ck,nkhw->nchw", torch.linalg.inv(matrix), rgb - offset)
    return torch.einsum("ck,nkhw->nchw", matrix, rgb) + offset


def colour_augment(
    batch: dict[str, torch.Tensor], jitters: Sequence[ColourJitter], *, scale: int
) -> dict[str, torch.Tensor]:
    """``batch`` with each HR image recoloured by its :class:`ColourJitter` in optical-density
    space (Beer-Lambert: ``rgb' = brightness * tint * exp(-density * mixing @ OD(rgb))``) and
    degraded again.

    A colour change is not linear in the pixel values, so it does not commute with the bicubic
    degradation the way flips do; instead ``hr``, ``hr_ycbcr``, ``lr``, ``lr_ycbcr``, ``up`` and
    ``up_ycbcr`` are recomputed from the recoloured HR with MATLAB's ``imresize`` written as
    matrices (:func:`leukoscreen.model.phases.with_hr`), so the pair is exactly what the
    dataset would have made from the recoloured image
    (``tests/test_data.py::test_colour_augment_degrades_the_recoloured_image``).
    """
    hr_ycc = batch["hr_ycbcr"].double()  # (N, 3, H, W)
    rgb = _ycbcr_torch(hr_ycc, inverse=True).clamp(1 / 255, 1.0)
    od = -torch.log(rgb)
    mixing = torch.tensor([j.mixing for j in jitters], dtype=torch.float64)  # (N, 3, 3)
    density = torch.tensor([j.density for j in jitters], dtype=torch.float64)[:, None, None, None]
    gain = torch.tensor([[t * j.brightness for t in j.tint] for j in jitters], dtype=torch.float64)[
        :, :, None, None
    ]
    recoloured = (gain * torch.exp(-density * torch.einsum("nck,nkhw->nchw", mixing, od))).clamp(
        0, 1
    )
    identity = torch.tensor([j == ColourJitter() for j in jitters])[:, None, None, None]
    ycc = torch.where(identity, hr_ycc, _ycbcr_torch(recoloured))
    return with_hr(batch, ycc, scale)
