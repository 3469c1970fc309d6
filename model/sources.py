"""Where training and evaluation images come from: the layout of a data folder, reading one or
several sources as samples, and their fixed split.

A folder is segmentation_WBC (``Dataset 1`` / ``Dataset 2``, masks), a boxed field set (BCCD,
DeepBioNet, draaslan: each leukocyte cropped, no masks, in its source's fixed split), LabelMe
JSONs, or a plain image folder (a lab's own cells, masks optional).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from leukoscreen.model.data import (
    Sample,
    read_image_folder,
    read_labelme,
    read_segmentation_wbc,
    split_ids,
)
from leukoscreen.model.errors import DataError
from leukoscreen.model.fields import SOURCES as FIELD_SOURCES
from leukoscreen.model.fields import crop_leukocytes


def folder_layout(data: Path | str) -> str:
    """How :func:`read_samples` reads ``data``: ``segmentation_wbc`` (``Dataset 1`` or
    ``Dataset 2`` inside), ``fields`` (a boxed field set), ``labelme`` (JSONs) or ``plain``."""
    data = Path(data)
    if (data / "Dataset 1").is_dir() or (data / "Dataset 2").is_dir():
        return "segmentation_wbc"
    if (data / "Annotations").is_dir() or (data / "annotations.csv").is_file():
        return "fields"
    return "labelme" if data.is_dir() and any(data.glob("*.json")) else "plain"


def plain_folders(data: Path | str | Sequence[Path | str]) -> set[str]:
    """The names (= sources) of the folders of ``data`` read as plain image folders."""
    folders = [data] if isinstance(data, (str, Path)) else list(data)
    return {Path(f).name for f in folders if folder_layout(f) == "plain"}


def read_samples(data: Path) -> list[Sample]:
    """segmentation_WBC (a folder with ``Dataset 1``), a field source (BCCD, DeepBioNet or
    draaslan: its boxed leukocytes cropped, no masks, in their fixed split), LabelMe JSONs, or a
    plain image folder."""
    data = Path(data)
    layout = folder_layout(data)
    if layout == "segmentation_wbc":
        return read_segmentation_wbc(data)
    if layout == "fields":
        source = data.name.lower()
        if source not in FIELD_SOURCES:
            raise DataError(
                f"{data}: a boxed field set must be one of {', '.join(FIELD_SOURCES)} (by its "
                f"folder name), found {data.name!r}"
            )
        return crop_leukocytes(source, data)
    if layout == "labelme":
        return [read_labelme(p) for p in sorted(data.glob("*.json"))]
    return read_image_folder(data)


def read_sources(data: Path | Sequence[Path]) -> list[Sample]:
    """The samples of one or several sources (:func:`read_samples` each), ids unique.

    Raises:
        DataError: a source is unreadable, or two sources share image ids (the same folder
            twice).
    """
    folders = [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]
    samples: list[Sample] = []
    seen: dict[str, Path] = {}
    for folder in folders:
        for sample in read_samples(folder):
            if sample.image_id in seen:
                raise DataError(
                    f"{folder}: image {sample.image_id} also comes from {seen[sample.image_id]}; "
                    "expected each source once"
                )
            seen[sample.image_id] = folder
            samples.append(sample)
    return samples


def split_samples(
    samples: list[Sample], seed: int, labs: Collection[str] = ()
) -> dict[str, list[Sample]]:
    """``split_ids`` applied to samples (``labs``: its ``lab_sources``)."""
    by_id, parts = {s.image_id: s for s in samples}, split_ids(samples, seed=seed, lab_sources=labs)
    return {part: [by_id[i] for i in ids] for part, ids in parts.items()}
