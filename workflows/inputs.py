"""What a batch is asked to do: slide files, folders and manifests turned into one slide list.

``leukoscreen batch INPUT...`` takes any mix of

- slide files (any format :class:`~leukoscreen.pipeline.slide.Slide` reads);
- folders, searched recursively for files with a slide suffix (:data:`SLIDE_SUFFIXES`); Zarr
  stores and hidden folders are not entered;
- manifests (``.csv`` or ``.tsv``) with a ``slide`` column and optional ``mpp``, ``scale`` and
  ``out`` columns; relative slide paths are relative to the manifest's folder, relative ``out``
  paths to the batch's output folder.

A path given on the command line that does not exist, a manifest that cannot be read or has a bad
value, and an input that yields no slide at all are errors of the batch itself
(:class:`~leukoscreen.model.errors.UsageError`, exit status 2). A slide named by a manifest but
missing is the failure of that one slide, reported in the status table.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from leukoscreen.model.config import SCALES
from leukoscreen.model.errors import UsageError

SLIDE_SUFFIXES = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif"}
    | {".png", ".jpg", ".jpeg"}
)
MANIFEST_SUFFIXES = {".csv": ",", ".tsv": "\t"}
MANIFEST_COLUMNS = ("slide", "mpp", "scale", "out")


@dataclass(frozen=True)
class SlideEntry:
    """One slide as the input names it.

    Attributes:
        slide: the slide file, absolute.
        store: the store path the input asks for (a manifest's ``out``), absolute; ``None`` for
            the default under the batch's output folder.
        subfolder: for a slide found in a folder, its folder relative to the searched one (its
            store goes to the same relative folder under the output folder); else ``Path()``.
        mpp: the slide's pixel size from a manifest, or ``None``.
        scale: the slide's super-resolution factor from a manifest, or ``None``.
    """

    slide: Path
    store: Path | None = None
    subfolder: Path = Path()
    mpp: float | None = None
    scale: int | None = None


def collect_slides(inputs: Sequence[Path], *, out: Path) -> list[SlideEntry]:
    """Every slide the inputs name, in input order, each once (the first mention wins).

    Args:
        inputs: slide files, folders and manifests.
        out: the batch's output folder (never searched, and the base of manifest ``out`` paths).

    Raises:
        UsageError: an input does not exist, a manifest is bad, or no slide was found.
    """
    entries: list[SlideEntry] = []
    seen: set[Path] = set()
    out = Path(out).resolve()
    for raw in inputs:
        path = Path(raw).resolve()
        if path.is_dir():
            found = [
                SlideEntry(slide, subfolder=slide.parent.relative_to(path))
                for slide in _search(path, skip=out)
            ]
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            found = read_manifest(path, out=out)
        elif path.is_file():
            found = [SlideEntry(path)]
        else:
            raise UsageError(f"{raw}: no such file or folder; expected a slide, folder or manifest")
        for entry in found:
            if entry.slide not in seen:
                seen.add(entry.slide)
                entries.append(entry)
    if not entries:
        names = ", ".join(str(p) for p in inputs) or "(none)"
        raise UsageError(
            f"{names}: no slides found; expected slide files ({', '.join(sorted(SLIDE_SUFFIXES))}),"
            " folders holding them, or a .csv/.tsv manifest with a 'slide' column"
        )
    return entries


def _search(folder: Path, *, skip: Path) -> Iterator[Path]:
    """Slide files below ``folder`` in sorted order; stores, hidden folders and ``skip`` are
    not entered."""
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            if child.suffix.lower() != ".zarr" and child.resolve() != skip:
                yield from _search(child, skip=skip)
        elif child.suffix.lower() in SLIDE_SUFFIXES and child.is_file():
            yield child


def read_manifest(path: Path, *, out: Path) -> list[SlideEntry]:
    """The slides of a ``.csv``/``.tsv`` manifest.

    Raises:
        UsageError: unreadable file, no ``slide`` column, an unknown column, or a bad ``mpp``/
            ``scale`` value (naming the line).
    """
    delimiter = MANIFEST_SUFFIXES[path.suffix.lower()]
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f, delimiter=delimiter))
            header = [h.strip() for h in ((rows and rows[0].keys()) or _header(path, delimiter))]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UsageError(
            f"{path}: cannot read the manifest ({err.__class__.__name__}: {err})"
        ) from err
    if "slide" not in header:
        raise UsageError(f"{path}: expected a manifest with a 'slide' column, found {header}")
    unknown = [h for h in header if h not in MANIFEST_COLUMNS]
    if unknown:
        raise UsageError(
            f"{path}: unknown manifest column(s) {unknown}; expected {', '.join(MANIFEST_COLUMNS)}"
        )
    entries = []
    for line, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not row.get("slide"):
            continue  # a blank line
        slide = (path.parent / row["slide"]).resolve()
        store = (out / row["out"]).resolve() if row.get("out") else None
        mpp = _number(row.get("mpp"), float, path, line, "mpp")
        scale_value = _number(row.get("scale"), int, path, line, "scale")
        scale = None if scale_value is None else int(scale_value)
        if scale is not None and scale not in SCALES:
            allowed = " or ".join(map(str, SCALES))
            raise UsageError(f"{path}: line {line}: scale: expected {allowed}, found {scale}")
        if mpp is not None and mpp <= 0:
            raise UsageError(f"{path}: line {line}: mpp: expected > 0, found {mpp}")
        entries.append(SlideEntry(slide, store=store, mpp=mpp, scale=scale))
    return entries


def _header(path: Path, delimiter: str) -> list[str]:
    """The header of a manifest without data rows."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f, delimiter=delimiter), [])


def _number(text: str | None, kind: type, path: Path, line: int, column: str) -> float | int | None:
    """A manifest cell as ``kind``, ``None`` when empty."""
    if not text:
        return None
    try:
        return kind(text)
    except ValueError as err:
        raise UsageError(
            f"{path}: line {line}: {column}: expected a number, found {text!r}"
        ) from err
