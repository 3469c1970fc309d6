"""Blood-smear fields with leukocyte boxes: readers and each source's fixed split.

Three field sources (``../shared/data``, see its README for terms and known defects):

* **BCCD** (Shenggan/BCCD_Dataset, MIT): 640 x 480 JPEG fields, Pascal-VOC boxes, and the VOC
  split lists ``ImageSets/Main/{train,val,test}.txt``, used as they are. Zero-area boxes dropped.
* **DeepBioNet** (Shams et al., Blood Cells Mol. Dis. 2024): 2,002 fields, Pascal-VOC boxes.
  ``370.xml``-``375.xml`` and ``389.xml`` label red cells as WBC and are dropped; only the name
  ``WBC`` counts. The fields hold colour-shifted copies of the same scene, so the split is by
  *duplicate group*: fields whose grey-image difference hashes (:func:`difference_hash`) are within
  :data:`DUPLICATE_MAX_BITS` bits are one group, and whole groups are dealt to train/val/test.
* **draaslan** (draaslan/blood-cell-detection-dataset, MIT): 100 fields of 256 x 256 px,
  ``annotations.csv`` with boxes normalised to 0-1. A few cells carry both an ``rbc`` and a
  ``wbc`` box (the data README): a ``wbc`` box that coincides with an ``rbc`` box of the same
  field (intersection over union >= 0.9; three boxes, all slivers at a field edge) is dropped.
  Never tuned on: all of it is held out, so its whole set is its ``test`` part (no train part).

Pixel size: no source records it. Following the data README, a source's pixel size is the one
that makes its mean leukocyte box 12 um across (:func:`source_mpp`); each source gets its own,
computed from its own boxes, never a constant of another source.

Boxes are ``(row0, col0, row1, col1)`` in field pixels, end exclusive (VOC's inclusive ``xmax``
plus one).
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leukoscreen.model.data import Sample
from leukoscreen.model.errors import DataError

SOURCES = ("bccd", "deepbionet", "draaslan")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)  # train, val, test (DeepBioNet groups)
LEUKOCYTE_UM = 12.0  # mean leukocyte box side, microns (data README)
DEEPBIONET_BAD = frozenset({"370", "371", "372", "373", "374", "375", "389"})  # RBCs as WBC
DUPLICATE_MAX_BITS = 12  # of 128: difference hashes this close are the same scene
HASH_SIDE = 8


@dataclass(frozen=True)
class Field:
    """One smear field and its leukocyte boxes.

    Attributes:
        field_id: unique id ``<source>-<stem>``.
        source: one of :data:`SOURCES`.
        path: the image file.
        boxes: (M, 4) float64 ``(row0, col0, row1, col1)`` field px, end exclusive.
    """

    field_id: str
    source: str
    path: Path
    boxes: np.ndarray = field(repr=False)

    def read_rgb(self) -> np.ndarray:
        """The field as (H, W, 3) uint8 RGB (an alpha channel is dropped).

        Raises:
            DataError: the file cannot be read as an image.
        """
        import imageio.v3 as iio

        try:
            pixels = np.asarray(iio.imread(self.path))
        except (OSError, ValueError) as err:
            raise DataError(f"{self.path}: cannot read the field image ({err})") from err
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        if pixels.ndim != 3 or pixels.shape[2] < 3 or pixels.dtype != np.uint8:
            raise DataError(
                f"{self.path}: expected an 8-bit RGB image, found {pixels.shape} {pixels.dtype}"
            )
        return np.ascontiguousarray(pixels[:, :, :3])


def voc_wbc_boxes(path: Path) -> np.ndarray:
    """WBC boxes of a Pascal-VOC file, end exclusive, zero-area boxes dropped."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        raise DataError(f"{path}: cannot read the VOC annotation ({err})") from err
    boxes = []
    for obj in root.iter("object"):
        if obj.findtext("name", "").strip() != "WBC":
            continue
        box = obj.find("bndbox")
        if box is None:
            continue
        x0, y0, x1, y1 = (float(box.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax"))
        if x1 > x0 and y1 > y0:
            boxes.append((y0, x0, y1 + 1, x1 + 1))
    return np.array(boxes, np.float64).reshape(-1, 4)


def _read_voc(root: Path, source: str, *, skip: frozenset[str] = frozenset()) -> list[Field]:
    images, notes = root / "JPEGImages", root / "Annotations"
    if not notes.is_dir() or not images.is_dir():
        raise DataError(f"{root}: expected JPEGImages/ and Annotations/ (a Pascal-VOC field set)")
    fields = []
    for xml in sorted(notes.glob("*.xml")):
        image = images / f"{xml.stem}.jpg"
        if xml.stem in skip or not image.is_file():
            continue
        fields.append(Field(f"{source}-{xml.stem}", source, image, voc_wbc_boxes(xml)))
    if not fields:
        raise DataError(f"{root}: expected annotated fields, found none")
    return fields


def read_bccd(root: Path | str) -> list[Field]:
    """Every annotated BCCD field (sorted by id)."""
    return _read_voc(Path(root), "bccd")


def read_deepbionet(root: Path | str) -> list[Field]:
    """Every DeepBioNet field but the seven that label red cells as WBC (sorted by id)."""
    return _read_voc(Path(root), "deepbionet", skip=DEEPBIONET_BAD)


def read_draaslan(root: Path | str) -> list[Field]:
    """Every draaslan field with its ``wbc`` boxes, de-normalised to pixels (sorted by id)."""
    root = Path(root)
    table = root / "annotations.csv"
    try:
        with table.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise DataError(f"{table}: cannot read the draaslan annotations ({err})") from err
    by_image: dict[str, list[tuple[float, ...]]] = {}
    red: dict[str, list[tuple[float, ...]]] = {}
    for row in rows:
        try:
            name, label = row["image"], row["label"].strip()
            x0, y0, x1, y1 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (KeyError, ValueError) as err:
            raise DataError(
                f"{table}: expected columns image,xmin,ymin,xmax,ymax,label, found {row}"
            ) from err
        boxes = by_image.setdefault(name, [])
        if x1 > x0 and y1 > y0:
            (boxes if label == "wbc" else red.setdefault(name, [])).append((y0, x0, y1, x1))
    fields = []
    for name in sorted(by_image, key=lambda n: (len(n), n)):
        path = root / "images" / name
        if not path.is_file():
            raise DataError(f"{path}: listed in {table.name} but missing")
        side = 256.0  # every draaslan field is 256 x 256 px (the boxes are fractions of it)
        wbc = [
            b
            for b in by_image[name]
            if max((_iou(b, r) for r in red.get(name, [])), default=0) < 0.9
        ]
        boxes_px = np.array(wbc, np.float64).reshape(-1, 4) * side
        fields.append(Field(f"draaslan-{Path(name).stem}", "draaslan", path, boxes_px))
    return fields


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two ``(row0, col0, row1, col1)`` boxes."""
    rows = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    cols = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = rows * cols
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def read_fields(source: str, root: Path | str) -> list[Field]:
    """The fields of one named source (see :data:`SOURCES`)."""
    readers = {"bccd": read_bccd, "deepbionet": read_deepbionet, "draaslan": read_draaslan}
    if source not in readers:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    return readers[source](root)


def source_mpp(fields: Sequence[Field]) -> float:
    """Microns per pixel that make the mean leukocyte box side :data:`LEUKOCYTE_UM`."""
    boxes = np.concatenate([f.boxes for f in fields]) if fields else np.zeros((0, 4))
    if not len(boxes):
        raise DataError("no leukocyte boxes: cannot derive a pixel size")
    side = ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1])) / 2.0
    return float(LEUKOCYTE_UM / side.mean())


def difference_hash(rgb: np.ndarray, *, side: int = HASH_SIDE) -> np.ndarray:
    """128-bit difference hash of the grey image: signs of horizontal and vertical steps.

    The grey image is block-averaged to ``(side + 1) x (side + 1)``; colour shifts and
    brightness change the levels but rarely the sign of the step between neighbouring blocks,
    so the colour-shifted copies of one scene hash alike.

    Returns:
        (2 * side * side,) bool.
    """
    grey = rgb.astype(np.float64).mean(axis=2)
    height, width = grey.shape
    rows = np.linspace(0, height, side + 2).astype(int)
    cols = np.linspace(0, width, side + 2).astype(int)
    blocks = np.add.reduceat(np.add.reduceat(grey, rows[:-1], axis=0), cols[:-1], axis=1)
    blocks /= np.outer(np.diff(rows), np.diff(cols))  # (side + 1, side + 1) block means
    across = blocks[:side, 1:] > blocks[:side, :-1]
    down = blocks[1:, :side] > blocks[:-1, :side]
    return np.concatenate([across.ravel(), down.ravel()])


def duplicate_groups(hashes: np.ndarray, *, max_bits: int = DUPLICATE_MAX_BITS) -> np.ndarray:
    """Connected groups of hashes within ``max_bits`` Hamming distance (single linkage).

    Args:
        hashes: (N, B) bool.

    Returns:
        (N,) int64 group label, the smallest index in each group.
    """
    n = len(hashes)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    packed = hashes.astype(np.int16)
    for i in range(n):
        distance = np.abs(packed[i + 1 :] - packed[i]).sum(axis=1)
        for j in np.flatnonzero(distance <= max_bits) + i + 1:
            a, b = find(i), find(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(n)], np.int64)


def _deal(keys: list[str], *, seed: int, source: str) -> dict[str, list[str]]:
    """A seeded permutation of ``keys`` cut 70/15/15."""
    keys = sorted(keys)
    rng = np.random.default_rng([seed, zlib.crc32(source.encode())])
    order = [keys[i] for i in rng.permutation(len(keys))]
    n_train = round(SPLIT_FRACTIONS[0] * len(keys))
    n_val = round(SPLIT_FRACTIONS[1] * len(keys))
    return {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }


def split_fields(
    fields: Sequence[Field], *, root: Path | str | None = None, seed: int = 0
) -> dict[str, list[Field]]:
    """The fixed train/val/test split of one source's fields (see the module docstring).

    Args:
        fields: the fields of one source, from its reader.
        root: the source folder (BCCD: for its VOC split lists).
        seed: the seed of the dealt splits (DeepBioNet groups).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each in field-id order.
    """
    sources = {f.source for f in fields}
    if len(sources) != 1:
        raise ValueError(f"split_fields takes the fields of one source, got {sorted(sources)}")
    source = sources.pop()
    by_id = {f.field_id: f for f in fields}
    if source == "draaslan":
        ids = {"train": [], "val": [], "test": sorted(by_id)}
    elif source == "bccd":
        if root is None:
            raise ValueError("BCCD's split needs root (its ImageSets/Main lists)")
        ids = {}
        for part in ("train", "val", "test"):
            listed = Path(root) / "ImageSets" / "Main" / f"{part}.txt"
            try:
                names = listed.read_text().split()
            except OSError as err:
                raise DataError(f"{listed}: cannot read the BCCD split list ({err})") from err
            ids[part] = [f"bccd-{n}" for n in names if f"bccd-{n}" in by_id]
    else:
        hashes = np.stack([difference_hash(f.read_rgb()) for f in fields])
        groups = duplicate_groups(hashes)
        members: dict[str, list[str]] = {}
        for f, g in zip(fields, groups, strict=True):
            members.setdefault(fields[int(g)].field_id, []).append(f.field_id)
        dealt = _deal(list(members), seed=seed, source=source)
        ids = {part: [m for key in keys for m in members[key]] for part, keys in dealt.items()}
    return {part: [by_id[i] for i in sorted(chosen)] for part, chosen in ids.items()}


def crop_leukocytes(
    source: str, root: Path | str, *, side_px: int = 224, seed: int = 0
) -> list[Sample]:
    """Every boxed leukocyte of a field source as an HR training image (no mask).

    Each crop is ``side_px`` square at the field's full resolution, centred on the box and
    shifted inside the field where the box is near an edge (smaller only when the field is), and
    keeps its field's part of the fixed split (:func:`split_fields`), so a crop from a test field
    never reaches training.

    Returns:
        Samples ``<field_id>-<k>`` with ``labels=None`` and ``split`` set, field-id order.
    """
    fields = read_fields(source, root)
    parts = split_fields(fields, root=root, seed=seed)
    samples = []
    for part, members in parts.items():
        for f in members:
            if not len(f.boxes):
                continue
            rgb = f.read_rgb()
            height, width = rgb.shape[:2]
            for k, (r0, c0, r1, c1) in enumerate(f.boxes):
                h, w = min(side_px, height), min(side_px, width)
                top = int(np.clip(round((r0 + r1 - h) / 2), 0, height - h))
                left = int(np.clip(round((c0 + c1 - w) / 2), 0, width - w))
                crop = np.ascontiguousarray(rgb[top : top + h, left : left + w])
                samples.append(Sample(f"{f.field_id}-{k}", source, crop, None, part))
    return sorted(samples, key=lambda s: s.image_id)
