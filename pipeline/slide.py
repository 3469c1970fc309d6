"""Reading a blood-smear scan: one :class:`Slide` over OpenSlide, tifffile and plain PNG/JPEG.

Three back ends, chosen at :meth:`Slide.open`:

* **OpenSlide** reads every format it knows (Aperio ``.svs``, generic tiled TIFF, DICOM, MIRAX,
  Hamamatsu, ...). OME-TIFF is routed to tifffile instead, which reads its pixel size.
* **tifffile** reads OME-TIFF and the TIFFs OpenSlide refuses (stripped, planar, 16-bit). Regions
  are read lazily through tifffile's Zarr store, which decodes only the tiles or strips a window
  touches: a level is never read whole.
* **PNG/JPEG** files are small, carry no pixel size, and are read into memory once.

Coordinates are (row, col) in level-0 pixels everywhere in leukoscreen; OpenSlide's (x, y)
appears only inside this module. Pixels outside the slide read as white (255, 255, 255), and
transparent pixels are composited over white: that is the documented border padding.

A :class:`Slide` pickles by path and microns per pixel only, and reopens its back end lazily on
first use in each Dask worker process; :meth:`Slide.open` validates the file once (format, pixel
size, one decoded tile) so that workers can skip the checks.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from leukoscreen.model.errors import MissingMppError, SlideReadError

PLAIN_IMAGE_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
HEADER_BYTES = 1 << 20  # bytes hashed by header_sha256
_UM_PER_UNIT = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "nm": 1e-3}


class _Backend(Protocol):
    vendor: str
    level_dimensions: list[tuple[int, int]]  # (height, width) per level

    def metadata_mpp(self) -> float | None: ...

    def read(self, level: int, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Read a window fully inside the level, in level pixels, as (h, w, 3) uint8 RGB."""
        ...

    def close(self) -> None: ...


def _over_white(values: np.ndarray) -> np.ndarray:
    """uint8 (h, w, c + alpha) composited over white: (h, w, c) uint8.

    Only rows holding a pixel that is not opaque are composited: a slide's tissue is opaque, so
    most windows are copied as they are (OpenSlide returns RGBA for every read).
    """
    colour = values[:, :, :-1]
    partial = np.flatnonzero((values[:, :, -1] < 255).any(axis=1))
    if partial.size == 0:
        return colour
    out = np.array(colour)
    alpha = values[partial, :, -1:].astype(np.float32) / 255.0
    blended = colour[partial].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5
    out[partial] = blended.astype(np.uint8)
    return out


def _to_rgb_uint8(pixels: np.ndarray) -> np.ndarray:
    """Convert (h, w), (h, w, 1..4) pixels of any integer or float type to (h, w, 3) uint8 RGB.

    Alpha is composited over white; 16-bit data is scaled by 1/257; floats are taken as 0..1.
    """
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.dtype == np.uint8:
        values = pixels
    elif pixels.dtype == np.uint16:
        values = (pixels.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(pixels.dtype, np.floating):
        values = (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ValueError(f"expected 8- or 16-bit or float pixels, found {pixels.dtype}")
    channels = values.shape[2]
    if channels in (2, 4):  # grey + alpha or RGB + alpha
        values = _over_white(values)
        channels -= 1
    if channels == 1:
        values = np.repeat(values, 3, axis=2)
    elif channels != 3:
        raise ValueError(f"expected 1 to 4 channels, found {channels}")
    return np.ascontiguousarray(values)


class _OpenSlideBackend:
    def __init__(self, path: Path) -> None:
        import openslide

        self._slide = openslide.OpenSlide(str(path))
        self.vendor = str(self._slide.properties.get("openslide.vendor", "openslide"))
        self.level_dimensions = [(h, w) for w, h in self._slide.level_dimensions]
        self._downsamples = list(self._slide.level_downsamples)

    def metadata_mpp(self) -> float | None:
        value = self._slide.properties.get("openslide.mpp-x")
        return float(value) if value else None

    def read(self, level: int, row: int, col: int, height: int, width: int) -> np.ndarray:
        # OpenSlide takes the location in level-0 (x, y) and the size in level pixels.
        ds = self._downsamples[level]
        location = (round(col * ds), round(row * ds))
        image = self._slide.read_region(location, level, (width, height))
        return _to_rgb_uint8(np.asarray(image))

    def close(self) -> None:
        self._slide.close()


class _TiffBackend:
    """Lazy tifffile reader: windows are cut from the Zarr store of series 0, tile by tile."""

    def __init__(self, path: Path) -> None:
        import tifffile
        import zarr

        self._tif = tifffile.TiffFile(str(path))
        series = self._tif.series[0]
        self.vendor = "ome-tiff" if self._tif.is_ome else "tiff"
        self._axes = series.axes
        if "Y" not in self._axes or "X" not in self._axes:
            raise ValueError(f"expected an image with Y and X axes, found axes {self._axes!r}")
        root = zarr.open(series.aszarr(), mode="r")
        levels = series.levels
        if hasattr(root, "shape"):
            self._arrays: list[Any] = [root]
        else:
            self._arrays = [root[str(i)] for i in range(len(levels))]
        y, x = self._axes.index("Y"), self._axes.index("X")
        self.level_dimensions = [(int(a.shape[y]), int(a.shape[x])) for a in self._arrays]
        self._lock = threading.Lock()

    def metadata_mpp(self) -> float | None:
        return _ome_mpp(self._tif) or _aperio_mpp(self._tif) or _resolution_mpp(self._tif)

    def read(self, level: int, row: int, col: int, height: int, width: int) -> np.ndarray:
        index: list[Any] = []
        for axis in self._axes:
            if axis == "Y":
                index.append(slice(row, row + height))
            elif axis == "X":
                index.append(slice(col, col + width))
            elif axis in "SC":
                index.append(slice(None))
            else:  # time, z, ...: the first plane
                index.append(0)
        # tifffile's file handle is shared by the store; serialise reads from threads.
        with self._lock:
            window = np.asarray(self._arrays[level][tuple(index)])
        kept = [axis for axis in self._axes if axis in "YXSC"]
        order = [kept.index("Y"), kept.index("X")] + [
            i for i, axis in enumerate(kept) if axis in "SC"
        ]
        return _to_rgb_uint8(window.transpose(order).reshape(height, width, -1))

    def close(self) -> None:
        self._tif.close()


def _ome_mpp(tif: Any) -> float | None:
    if not tif.is_ome or not tif.ome_metadata:
        return None
    root = ET.fromstring(tif.ome_metadata)
    for element in root.iter():
        if element.tag.endswith("}Pixels") or element.tag == "Pixels":
            size = element.get("PhysicalSizeX")
            if size is None:
                return None
            unit = element.get("PhysicalSizeXUnit", "µm")
            return float(size) * _UM_PER_UNIT.get(unit, float("nan"))
    return None


def _aperio_mpp(tif: Any) -> float | None:
    description = tif.pages[0].description or ""
    match = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", description)
    return float(match.group(1)) if match else None


def _resolution_mpp(tif: Any) -> float | None:
    tags = tif.pages[0].tags
    unit_tag, res_tag = tags.get("ResolutionUnit"), tags.get("XResolution")
    if unit_tag is None or res_tag is None or int(unit_tag.value) not in (2, 3):
        return None  # no unit: the resolution is an aspect ratio only
    numerator, denominator = res_tag.value
    if numerator == 0 or denominator == 0:
        return None
    um_per_unit = 25400.0 if int(unit_tag.value) == 2 else 10000.0
    return um_per_unit * denominator / numerator


class _ImageBackend:
    """A plain PNG/JPEG: small, read once into memory."""

    def __init__(self, path: Path, vendor: str) -> None:
        import imageio.v3 as iio

        self.vendor = vendor
        self._pixels = _to_rgb_uint8(np.asarray(iio.imread(path)))
        self.level_dimensions = [self._pixels.shape[:2]]

    def metadata_mpp(self) -> float | None:
        return None

    def read(self, level: int, row: int, col: int, height: int, width: int) -> np.ndarray:
        return self._pixels[row : row + height, col : col + width].copy()

    def close(self) -> None:
        self._pixels = np.zeros((0, 0, 3), np.uint8)


def _is_ome_tiff(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            return bool(tif.is_ome)
    except Exception:  # not a TIFF at all: let OpenSlide have a go and report
        return False


def _open_backend(path: Path) -> _Backend:
    """Open the right back end for ``path``, or raise SlideReadError naming the file."""
    suffix = path.suffix.lower()
    if suffix in PLAIN_IMAGE_SUFFIXES:
        try:
            return _ImageBackend(path, PLAIN_IMAGE_SUFFIXES[suffix])
        except Exception as err:
            raise SlideReadError(
                f"{path}: expected a readable {suffix[1:].upper()} image, found {_why(err)}"
            ) from err
    if not _is_ome_tiff(path):
        import openslide

        try:
            return _OpenSlideBackend(path)
        except openslide.OpenSlideUnsupportedFormatError:
            pass  # maybe a TIFF that tifffile reads (stripped, planar, ...)
        except openslide.OpenSlideError as err:
            raise SlideReadError(f"{path}: expected a readable slide, found {_why(err)}") from err
    try:
        return _TiffBackend(path)
    except Exception as err:
        raise SlideReadError(
            f"{path}: expected a slide (a format OpenSlide reads, a TIFF, PNG or JPEG), "
            f"found {_why(err)}"
        ) from err


def _why(err: BaseException) -> str:
    """One line describing a library error, for messages that start with the path."""
    text = " ".join(str(err).split()) or err.__class__.__name__
    return f"{err.__class__.__name__}: {text}"[:300]


class Slide:
    """A whole-slide scan read lazily by region.

    Attributes:
        path: the slide file.
        mpp: microns per level-0 pixel (from ``--mpp`` or the slide metadata).
        vendor: the format, e.g. ``"aperio"``, ``"generic-tiff"`` (OpenSlide), ``"ome-tiff"``,
            ``"tiff"`` (tifffile), ``"png"``, ``"jpeg"``.
    """

    path: Path
    mpp: float
    vendor: str

    def __init__(self, path: Path, mpp: float, vendor: str, backend: _Backend | None) -> None:
        """Use :meth:`open`; this constructor does not validate."""
        self.path = path
        self.mpp = mpp
        self.vendor = vendor
        self._backend = backend
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path, *, mpp: float | None = None) -> Slide:
        """Open and validate a slide.

        Args:
            path: an OpenSlide format, a TIFF/OME-TIFF, or a PNG/JPEG.
            mpp: microns per level-0 pixel; overrides the metadata. ``None`` (or 0) reads it from
                the slide; PNG/JPEG carry none and need it.

        Raises:
            SlideReadError: missing path, a directory, not a slide, or a tile that cannot be
                decoded (one tile at each end of the pyramid is decoded here).
            MissingMppError: neither ``mpp`` nor the metadata gives the pixel size.
            ValueError: ``mpp`` is negative or not finite.
        """
        path = Path(path)
        if mpp is not None and not (math.isfinite(mpp) and mpp >= 0):
            raise ValueError(f"mpp must be a positive number of microns per pixel, got {mpp!r}")
        if not path.exists():
            raise SlideReadError(f"{path}: no such file")
        if path.is_dir():
            raise SlideReadError(f"{path}: expected a slide file, found a directory")
        backend = _open_backend(path)
        try:
            resolved = mpp or backend.metadata_mpp()
            if resolved is None or not (math.isfinite(resolved) and resolved > 0):
                raise MissingMppError(
                    f"{path}: no microns-per-pixel in the slide metadata; pass --mpp"
                )
            slide = cls(path, float(resolved), backend.vendor, backend)
            slide._validate()
        except BaseException:
            backend.close()
            raise
        return slide

    def _validate(self) -> None:
        """Decode the last tile of level 0 and of the smallest level (truncated files end there)."""
        for level in (0, self.level_count - 1):
            height, width = self.level_dimensions[level]
            if height < 1 or width < 1:
                raise SlideReadError(f"{self.path}: expected a non-empty image, found {width}x0")
            try:
                self._get_backend().read(level, height - 1, width - 1, 1, 1)
            except Exception as err:
                raise SlideReadError(
                    f"{self.path}: expected decodable tiles, found level {level} unreadable "
                    f"({_why(err)})"
                ) from err

    def _get_backend(self) -> _Backend:
        with self._lock:
            if self._backend is None:
                self._backend = _open_backend(self.path)
            return self._backend

    # Pickling: by path and pixel size only; each worker process reopens on first read.
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "mpp": self.mpp, "vendor": self.vendor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["mpp"], state["vendor"], None)  # type: ignore[misc]

    def __dask_tokenize__(self) -> tuple[str, float, int, int]:
        stat = self.path.stat()
        return (str(self.path), self.mpp, stat.st_size, stat.st_mtime_ns)

    def __repr__(self) -> str:
        height, width = self.dimensions
        return (
            f"Slide({str(self.path)!r}, vendor={self.vendor!r}, mpp={self.mpp}, {height}x{width})"
        )

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (height, width) in pixels."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels (1 for PNG/JPEG and flat TIFFs)."""
        return len(self.level_dimensions)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        """(height, width) of every level, level 0 first."""
        return list(self._get_backend().level_dimensions)

    @property
    def level_downsamples(self) -> list[float]:
        """Level-0 pixels per level pixel, per level (mean of the row and column ratios)."""
        height0, width0 = self.dimensions
        return [(height0 / h + width0 / w) / 2.0 for h, w in self.level_dimensions]

    def read_region(
        self, row: int, col: int, height: int, width: int, *, level: int = 0
    ) -> np.ndarray:
        """Read a window of the slide.

        Args:
            row: top edge, level-0 pixels (may be negative or past the slide).
            col: left edge, level-0 pixels.
            height: window height in pixels of ``level``.
            width: window width in pixels of ``level``.
            level: pyramid level to read from.

        Returns:
            (height, width, 3) uint8 RGB; pixels outside the slide are white (255).

        Raises:
            ValueError: a negative size or a level that does not exist.
            SlideReadError: a tile in the window cannot be decoded.
        """
        if height < 0 or width < 0:
            raise ValueError(f"height and width must be >= 0, got {height}x{width}")
        if not 0 <= level < self.level_count:
            raise ValueError(f"level must be in [0, {self.level_count}), got {level}")
        out = np.full((height, width, 3), 255, np.uint8)
        ds = self.level_downsamples[level]
        level_height, level_width = self.level_dimensions[level]
        row_l, col_l = math.floor(row / ds), math.floor(col / ds)
        r0, c0 = max(row_l, 0), max(col_l, 0)
        r1, c1 = min(row_l + height, level_height), min(col_l + width, level_width)
        if r1 <= r0 or c1 <= c0:
            return out
        try:
            pixels = self._get_backend().read(level, r0, c0, r1 - r0, c1 - c0)
        except Exception as err:
            raise SlideReadError(
                f"{self.path}: cannot decode region rows {r0}:{r1}, cols {c0}:{c1} of level "
                f"{level} ({_why(err)})"
            ) from err
        out[r0 - row_l : r1 - row_l, c0 - col_l : c1 - col_l] = pixels
        return out

    def header_sha256(self) -> str:
        """sha256 of the file size and its first MiB: the slide's identity for resume checks."""
        return header_sha256(self.path)

    def close(self) -> None:
        """Release the file; a later read reopens it."""
        with self._lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def header_sha256(path: Path) -> str:
    """sha256 of a file's size and its first MiB (the slide's identity), without opening it as a
    slide.

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    digest = hashlib.sha256()
    digest.update(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        digest.update(f.read(HEADER_BYTES))
    return digest.hexdigest()
