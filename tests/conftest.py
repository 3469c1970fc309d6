"""Shared fixtures: synthetic slides with leukocytes at known positions, and the real-data folder.

The synthetic smear (:func:`make_smear`) is 3000 x 2500 px at 0.5 um/px: a pink plasma background,
red cells (7-8 um discs with a pale centre) and leukocytes drawn as a lavender cytoplasm disc with
a dark-purple nucleus — round, bean-shaped, or 2-4 touching/near lobes (a neutrophil). A band of
empty glass on the right lets tests check that empty tiles are skipped. Leukocyte centres are the
centroids of the drawn nucleus pixels, so tests can compare detections to them exactly.
Also shared: the shipped-weights folder pointed at a temporary one (:func:`weights_dir`), a slide
over an in-memory image (:class:`ArraySlide`), and ``tools/`` on ``sys.path`` so that tests of the
lab scripts import them as the scripts import each other. Other engineers may append fixtures at
the end of this file.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import skimage.io
import tifffile
from skimage.draw import disk, ellipse

from leukoscreen.model import checkpoint

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))  # the lab scripts import each other by their file names

SMEAR_MPP = 0.5
SMEAR_SHAPE = (3000, 2500)  # (height, width) level-0 px
GLASS_COL = 2200  # columns from here on are empty glass
BACKGROUND_RGB = (236, 205, 208)
GLASS_RGB = (246, 246, 244)
RBC_RGB = (214, 128, 138)
CYTOPLASM_RGB = (212, 190, 222)
NUCLEUS_RGB = (92, 44, 134)


@dataclass(frozen=True)
class Leukocyte:
    """One drawn leukocyte: nucleus centroid (row, col) level-0 px, nucleus area, lobes."""

    row: float
    col: float
    area_um2: float
    lobes: int
    cell_radius_px: float


@dataclass(frozen=True)
class SyntheticSlide:
    """A written synthetic slide and what is on it."""

    path: Path
    rgb: np.ndarray  # (H, W, 3) uint8, the level-0 pixels written
    mpp: float
    cells: tuple[Leukocyte, ...]
    vendor: str
    level_shapes: tuple[tuple[int, int], ...]  # (height, width) per level


# (row, col, cell diameter um, nucleus kind); several sit across multiples of 256, 512 and 333 px
# (tile borders of the tests), two close to the slide edge, sizes span 9 to 20 um.
_LEUKOCYTES = [
    (120, 140, 12.0, "round"),
    (512, 700, 10.0, "round"),
    (700, 1023, 14.0, "lobed3"),
    (1000, 1536, 9.0, "round"),
    (1024, 333, 16.0, "bean"),
    (1536, 1280, 12.0, "lobed2"),
    (1700, 666, 10.5, "round"),  # a small lymphocyte: nucleus ~26 um2, above min_area_um2
    (2048, 2048, 13.0, "lobed4"),
    (2300, 999, 20.0, "bean"),
    (2600, 1800, 11.0, "lobed3"),
    (2985, 400, 9.0, "round"),
    (1400, 14, 10.0, "round"),
]


def _paint(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    rgb[mask] = colour


def make_smear(seed: int = 0) -> tuple[np.ndarray, tuple[Leukocyte, ...]]:
    """Draw the synthetic smear.

    Returns:
        (3000, 2500, 3) uint8 RGB and the leukocytes with their exact nucleus centroids.
    """
    rng = np.random.default_rng(seed)
    height, width = SMEAR_SHAPE
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = BACKGROUND_RGB
    rgb[:, GLASS_COL:] = GLASS_RGB
    um = 1.0 / SMEAR_MPP  # px per micron

    occupied = np.zeros((height, width), bool)
    for row, col, diameter_um, _ in _LEUKOCYTES:
        rr, cc = disk((row, col), diameter_um * um / 2 + 8, shape=(height, width))
        occupied[rr, cc] = True

    # Red cells: ~7.5 um discs with a paler centre covering about a third of the smear (a
    # monolayer), never on a leukocyte or on the glass band.
    for _ in range(15000):
        row, col = rng.uniform(0, height), rng.uniform(0, GLASS_COL - 10)
        radius = rng.uniform(3.5, 4.0) * um
        rr, cc = disk((row, col), radius, shape=(height, width))
        if occupied[rr, cc].any():
            continue
        rgb[rr, cc] = RBC_RGB
        rr2, cc2 = disk((row, col), radius * 0.45, shape=(height, width))
        rgb[rr2, cc2] = (226, 160, 168)

    cells = []
    for row, col, diameter_um, kind in _LEUKOCYTES:
        cell_r = diameter_um * um / 2
        rr, cc = disk((row, col), cell_r, shape=(height, width))
        rgb[rr, cc] = CYTOPLASM_RGB
        nucleus = np.zeros((height, width), bool)
        nuc_r = cell_r * 0.55
        if kind == "round":
            rr, cc = disk((row, col), nuc_r, shape=(height, width))
            nucleus[rr, cc] = True
            lobes = 1
        elif kind == "bean":
            rr, cc = ellipse(
                row, col, nuc_r * 0.7, nuc_r * 1.2, shape=(height, width), rotation=0.6
            )
            nucleus[rr, cc] = True
            rr, cc = disk((row + nuc_r * 0.3, col), nuc_r * 0.35, shape=(height, width))
            nucleus[rr, cc] = False  # the notch
            lobes = 1
        else:
            lobes = int(kind[-1])
            lobe_r = nuc_r * 0.5
            ring = nuc_r * 0.62  # neighbouring lobes 0-2 px apart: one cell
            for k in range(lobes):
                angle = 2 * np.pi * k / lobes + 0.3
                centre = (row + ring * np.sin(angle), col + ring * np.cos(angle))
                rr, cc = disk(centre, lobe_r, shape=(height, width))
                nucleus[rr, cc] = True
        rgb[nucleus] = NUCLEUS_RGB
        rows, cols = np.nonzero(nucleus)
        cells.append(
            Leukocyte(
                row=float(rows.mean()),
                col=float(cols.mean()),
                area_um2=float(len(rows)) * SMEAR_MPP**2,
                lobes=lobes,
                cell_radius_px=cell_r,
            )
        )
    noise = rng.normal(0.0, 3.0, rgb.shape)
    rgb = np.clip(rgb + noise, 0, 255).astype(np.uint8)
    return rgb, tuple(cells)


def downsample(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Block-mean downsample of (H, W, 3) uint8 by an integer factor (edges padded white)."""
    height, width = rgb.shape[:2]
    out_h, out_w = -(-height // factor), -(-width // factor)
    padded = np.full((out_h * factor, out_w * factor, 3), 255, np.float32)
    padded[:height, :width] = rgb
    blocks = padded.reshape(out_h, factor, out_w, factor, 3).mean(axis=(1, 3))
    return (blocks + 0.5).astype(np.uint8)


def write_svs(
    path: Path, rgb: np.ndarray, mpp: float, *, factors: tuple[int, ...] = (4, 16)
) -> None:
    """Write an Aperio-style tiled pyramidal .svs (zlib tiles, lossless) that OpenSlide opens."""
    height, width = rgb.shape[:2]
    head = f"Aperio Image Library v10.0.0\n{width}x{height} [0,0 {width}x{height}] (256x256) "
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            rgb,
            tile=(256, 256),
            compression="zlib",
            photometric="rgb",
            description=head + f"RAW|AppMag = 20|MPP = {mpp}",
            metadata=None,
        )
        for factor in factors:
            level = downsample(rgb, factor)
            tif.write(
                level,
                tile=(256, 256),
                compression="zlib",
                photometric="rgb",
                description=head + f"-> {level.shape[1]}x{level.shape[0]} RAW|",
                metadata=None,
            )


def write_generic_tiff(path: Path, rgb: np.ndarray, mpp: float, *, tiled: bool = True) -> None:
    """Write a generic TIFF (tiled or stripped) with the pixel size in the resolution tags."""
    px_per_cm = 1e4 / mpp
    tifffile.imwrite(
        path,
        rgb,
        tile=(256, 256) if tiled else None,
        rowsperstrip=None if tiled else 64,
        compression="zlib",
        photometric="rgb",
        resolution=(px_per_cm, px_per_cm),
        resolutionunit="CENTIMETER",
        metadata=None,
    )


@pytest.fixture(scope="session")
def smear() -> tuple[np.ndarray, tuple[Leukocyte, ...]]:
    """The synthetic smear pixels and its leukocytes (drawn once per session)."""
    return make_smear()


@pytest.fixture(scope="session")
def svs_slide(
    tmp_path_factory: pytest.TempPathFactory, smear: tuple[np.ndarray, tuple[Leukocyte, ...]]
) -> SyntheticSlide:
    """The synthetic smear as an Aperio .svs: 3 levels (x1, x4, x16), MPP = 0.5."""
    rgb, cells = smear
    path = tmp_path_factory.mktemp("svs") / "smear.svs"
    write_svs(path, rgb, SMEAR_MPP)
    shapes = ((3000, 2500), (750, 625), (188, 157))
    return SyntheticSlide(path, rgb, SMEAR_MPP, cells, "aperio", shapes)


@pytest.fixture(scope="session")
def tiff_slide(
    tmp_path_factory: pytest.TempPathFactory, smear: tuple[np.ndarray, tuple[Leukocyte, ...]]
) -> SyntheticSlide:
    """The synthetic smear as a generic single-level tiled TIFF with resolution tags."""
    rgb, cells = smear
    path = tmp_path_factory.mktemp("tiff") / "smear.tif"
    write_generic_tiff(path, rgb, SMEAR_MPP)
    return SyntheticSlide(path, rgb, SMEAR_MPP, cells, "generic-tiff", ((3000, 2500),))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout or ``$LEUKOSCREEN_SHARED[/data]``; skip if absent."""
    env = os.environ.get("LEUKOSCREEN_SHARED")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    if (path / "data").is_dir():
        path = path / "data"
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set LEUKOSCREEN_SHARED)")
    return path


# ---------------------------------------------------------------------------------------------
# tiny SR training folders


def _write_cells(folder: Path, count: int = 12, *, masks: bool = True, size: int = 32) -> Path:
    """``count`` seeded random cells (a dark disc on a light background) with 255/128/0 masks."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:size, 0:size]
    for i in range(count):
        centre = rng.uniform(size * 0.35, size * 0.65, 2)
        radius = np.hypot(rows - centre[0], cols - centre[1])
        mask = np.where(radius < size * 0.15, 255, np.where(radius < size * 0.3, 128, 0))
        base = np.select([mask == 255, mask == 128], [60, 150], 220).astype(np.float64)
        noise = rng.normal(0, 12, (size, size, 3))
        rgb = np.clip(base[..., None] + noise, 0, 255).astype(np.uint8)
        skimage.io.imsave(folder / f"{i:02d}.bmp", rgb, check_contrast=False)
        if masks:
            skimage.io.imsave(folder / f"{i:02d}.png", mask.astype(np.uint8), check_contrast=False)
    return folder


@pytest.fixture(scope="session")
def write_cells() -> Callable[..., Path]:
    """:func:`_write_cells`: a folder of seeded synthetic cells with 255/128/0 masks."""
    return _write_cells


# ---------------------------------------------------------------------------------------------
# shipped weights and in-memory slides


@pytest.fixture
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped-weights folder and its manifest, pointed at an empty temporary folder."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(checkpoint, "MANIFEST", folder / "manifest.json")
    return folder


class ArraySlide:
    """A slide over an in-memory (H, W, 3) uint8 image, white outside, as ``Slide.read_region``."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb

    def read_region(
        self, row: int, col: int, height: int, width: int, *, level: int = 0
    ) -> np.ndarray:
        out = np.full((height, width, 3), 255, np.uint8)
        h, w = self.rgb.shape[:2]
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, h), min(col + width, w)
        if r1 > r0 and c1 > c0:
            out[r0 - row : r1 - row, c0 - col : c1 - col] = self.rgb[r0:r1, c0:c1]
        return out


@pytest.fixture(scope="session")
def array_slide() -> type[ArraySlide]:
    """:class:`ArraySlide`, for tests that read crops from an in-memory image."""
    return ArraySlide


# ---------------------------------------------------------------------------------------------
# a run in progress, as another process holding a store's writer lock

_HOLD_LOCK = (
    "import sys\n"
    "from pathlib import Path\n"
    "from leukoscreen.pipeline.store_lock import WriterLock\n"
    "with WriterLock.acquire(Path(sys.argv[1])):\n"
    "    print('locked', flush=True)\n"
    "    sys.stdin.read()\n"
)


@contextlib.contextmanager
def _lock_held(store: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the writer lock of ``store`` inside the block (it releases the lock
    and exits at the end)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(store)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield holder
    finally:
        holder.communicate("")
    assert holder.returncode == 0


@pytest.fixture(scope="session")
def lock_held() -> Callable[[Path], contextlib.AbstractContextManager[subprocess.Popen[str]]]:
    """:func:`_lock_held`: ``with lock_held(store) as holder:`` a live writer in another process."""
    return _lock_held


# ---------------------------------------------------------------------------------------------
# a real single-node SLURM cluster on this machine (tests/slurm_cluster.py)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests: `from slurm_cluster import ...`
from slurm_cluster import SlurmCluster, SlurmUnavailableError, start_slurm  # noqa: E402


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running cluster for the session (munged, slurmctld, slurmd); skips, saying why, where
    SLURM cannot start. Clients need ``slurm.env`` (or :meth:`SlurmCluster.run`)."""
    try:
        cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    except SlurmUnavailableError as exc:
        pytest.skip(f"SLURM cannot start here: {exc}")
    with cluster:
        yield cluster


@pytest.fixture
def slurm_env(slurm: SlurmCluster) -> Iterator[SlurmCluster]:
    """:func:`slurm` with its variables in ``os.environ`` for the test (as dask-jobqueue needs)."""
    with slurm.activated():
        yield slurm


# ---------------------------------------------------------------------------------------------
# leukoscreen batch: three small slides, tiny networks and a reference batch (test_batch*.py)

from run_helpers import tiny_checkpoint, write_config  # noqa: E402

from leukoscreen.pipeline.cli import main  # noqa: E402

BATCH_CROPS = {"a": (0, 1000, 0, 1100), "b": (1000, 2000, 0, 1100), "c": (2000, 3000, 1100, 2200)}
BATCH_CELLS = {"a": 3, "b": 3, "c": 2}


@pytest.fixture(scope="session")
def batch_kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three good slides in ``slides/``, tiny x8 checkpoints (two weights) with their configs."""
    root = tmp_path_factory.mktemp("batch")
    slides = root / "slides"
    slides.mkdir()
    rgb, _ = make_smear()
    for name, (r0, r1, c0, c1) in BATCH_CROPS.items():
        write_svs(slides / f"{name}.svs", rgb[r0:r1, c0:c1].copy(), SMEAR_MPP, factors=(4,))
    kit = {"root": root, "slides": slides}
    for name, seed in (("x8", 0), ("x8b", 1)):
        checkpoint = tiny_checkpoint(root / f"{name}.pt", scale=8, seed=seed)
        kit[name] = write_config(root / f"{name}.toml", checkpoint)
    return kit


@pytest.fixture(scope="session")
def batch_reference(batch_kit: dict[str, Path]) -> Path:
    """An uninterrupted batch over the three good slides."""
    out = batch_kit["root"] / "reference"
    assert (
        main(
            ["batch", str(batch_kit["slides"]), "--out", str(out), "--config", str(batch_kit["x8"])]
        )
        == 0
    )
    return out
