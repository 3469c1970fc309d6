"""The whole configuration tree: frozen dataclasses, loaded from TOML, overridden by flags.

Defaults live in code (the dataclasses below); ``config.toml`` at the top of the project holds the
deployed choices with every key commented; command-line flags override single keys. Loading is
strict: an unknown section or key, a wrong type or invalid TOML is a :class:`ConfigError` naming
the file and the dotted key, with what was expected and what was found. The resolved config is
saved into every output store and checkpoint (``to_dict``).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from leukoscreen.model.config import InferenceConfig, TrainConfig
from leukoscreen.model.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class SlideConfig:
    """Reading the scan.

    Attributes:
        mpp: microns per level-0 pixel; 0 reads it from the slide metadata (``--mpp`` overrides).
        expected_mpp: the pixel size the model expects at ``scale``x8 (BCCD-derived example:
            0.52 um/px at x8, 0.26 um/px at x4 after dividing by the scale ratio); a slide whose mpp
            differs from this by more than ``mpp_tolerance`` (as a ratio) is refused.
        mpp_tolerance: largest accepted ratio between the slide mpp and the expected one.
    """

    mpp: float = 0.0
    expected_mpp: float = 0.52
    mpp_tolerance: float = 2.5


@dataclass(frozen=True)
class DetectConfig:
    """Finding leukocytes at the scan's own resolution.

    Attributes:
        tile_size_px: side of a detection tile's core, level-0 pixels.
        halo_px: pixels read around each core so cells on a core edge are seen whole.
        min_area_um2: smallest nucleus area kept, square microns.
        max_area_um2: largest nucleus area kept (bigger blobs are clumps or debris).
        merge_distance_um: nucleus fragments closer than this are one cell (lobes of one nucleus).
        max_span_um: a merged group wider than this is not one nucleus (two touching cells, or
            a cell and a speck): it is split into clusters no wider, nearest fragments first;
            0 keeps every merge.
        nucleus_threshold: nucleus contrast a nucleus pixel exceeds, in the slide's own units
            (see ``leukoscreen.pipeline.stain``).
        seed_threshold: contrast at least one pixel of every nucleus exceeds (hysteresis).
        residual_scale: density of another hue than the red cells, in the slide's red-cell
            densities, that counts as contrast 1.
        darkness_scale: density beyond the red cells' along their hue, in red-cell densities,
            that counts as contrast 1.
        smoothing_um: sigma of the Gaussian smoothing of the density, microns.
        cell_margin_um: margin added around a nucleus box to estimate the whole cell, microns.
        tint_block_um: side of the blocks whose own plasma tint (off the red-cell hue) is undone
            before detection, microns; 0 trusts the slide's one background everywhere.
        max_renditions: most colour renditions (regions stained or lit apart, each with its own
            background and red-cell colour) one slide may be split into; 1 keeps one stain
            estimate per slide (``leukoscreen.pipeline.renditions.search_renditions``).
        verify_window_um: on a slide of several renditions, a cell found under one of them is
            kept only where a detection with the stain of the square of this side around it,
            alone, finds it too (``leukoscreen.pipeline.renditions.confirm_locally``), microns.
        foreground_level_mpp: pixel size of the low pyramid level used to skip empty glass.
        stain_sample_windows: windows read, spread evenly over the planned tiles, to estimate
            the slide's stain (one per tile on big slides, a grid per tile on small ones).
        stain_window_px: side of each of those windows (at least), in the pixels detection
            works on (``working_mpp``): level-0 px times the block side.
        stain_window_um: ... and at least this many microns (a window must hold red cells and
            plasma around any leukocyte in it to tell one rendition from another).
        rendition_sample_windows: where those windows show several renditions (or a few
            unexplained ones that look like another rendition, too few to make one), the stain
            is estimated again from this many, so that a rendition covering a small part of
            the slide still fills the windows it needs; not more than
            ``stain_sample_windows`` turns this off.
        working_mpp: detection works on the scan's pixels averaged in the largest whole
            blocks that keep a working pixel at or under this size, microns (0.52 um/px: 2 x 2;
            0.25: 4 x 4; 0.7: none); 0 keeps the scan's own pixels
            (``leukoscreen.pipeline.binning``).
    """

    tile_size_px: int = 2048
    halo_px: int = 64
    min_area_um2: float = 20.0
    max_area_um2: float = 400.0
    merge_distance_um: float = 3.0
    max_span_um: float = 16.0
    nucleus_threshold: float = 1.0
    seed_threshold: float = 1.4
    residual_scale: float = 0.4
    darkness_scale: float = 2.0
    smoothing_um: float = 0.5
    cell_margin_um: float = 3.0
    tint_block_um: float = 20.0
    max_renditions: int = 4
    verify_window_um: float = 60.0
    stain_window_um: float = 32.0
    foreground_level_mpp: float = 8.0
    stain_sample_windows: int = 256
    stain_window_px: int = 64
    rendition_sample_windows: int = 1024
    working_mpp: float = 1.05

    def __post_init__(self) -> None:
        if not 0 <= self.working_mpp < float("inf"):  # NaN fails too
            raise ValueError(f"working_mpp: expected a number >= 0, found {self.working_mpp}")


@dataclass(frozen=True)
class OutputConfig:
    """The Zarr store.

    Attributes:
        compression_level: zstd level of the cell arrays (1 fast ... 9 small).
        resume: continue an existing store made by the same slide, scale and model.
        overwrite: delete an existing store and start over.
    """

    compression_level: int = 3
    resume: bool = False
    overwrite: bool = False


def _seconds(text: str) -> float:
    """A Dask duration ("55m", "1h", "30s") in seconds, 0 for an empty one."""
    from dask.utils import parse_timedelta

    try:
        return float(parse_timedelta(text, default="s") or 0) if text else 0.0
    except (ValueError, KeyError) as err:
        raise ValueError(f"lifetime: expected a duration like 55m, found {text!r}") from err


def _walltime_seconds(text: str) -> float:
    """A batch walltime ``[D-]HH:MM:SS`` / ``HH:MM`` in seconds."""
    days, _, clock = text.rpartition("-")
    try:
        parts = [int(p) for p in clock.split(":")]
        seconds = sum(p * 60**k for k, p in enumerate(reversed(parts))) if len(parts) <= 3 else -1
        seconds += 86400 * int(days or 0)
    except ValueError:
        seconds = -1
    if seconds <= 0:
        raise ValueError(f"walltime: expected HH:MM:SS, found {text!r}")
    return float(seconds)


@dataclass(frozen=True)
class JobqueueConfig:
    """One batch-scheduler kind (``[cluster.slurm]`` or ``[cluster.pbs]``) for dask-jobqueue.

    Each job is one ``sbatch``/``qsub`` submission running ``processes`` Dask workers.

    Attributes:
        queue: partition (SLURM) or queue (PBS); empty uses the site default.
        account: account/project to charge; empty for none.
        walltime: job time limit, ``HH:MM:SS``.
        cores: cores per job.
        memory: memory per job (Dask syntax, e.g. ``"16GiB"``).
        processes: Dask worker processes per job (each gets ``cores / processes`` threads).
        gpus: GPUs per job: ``--gres=gpu:N`` (SLURM) or ``ngpus=N`` (PBS), and each worker
            advertises ``--resources GPU=1`` so SR tasks go to GPU workers only; 0 for CPU jobs.
        job_extra_directives: more ``#SBATCH``/``#PBS`` lines, without the prefix
            (e.g. ``["--qos=low"]``).
        python: the workers' Python; empty uses the Python running the batch.
        local_directory: the workers' scratch folder; empty uses the job's default.
        log_directory: where job stdout/stderr go; empty leaves the scheduler's default.
        interface: network interface the scheduler and workers use (e.g. ``"ib0"``); empty lets
            Dask choose.
        lifetime: workers stop after this long (Dask ``--lifetime``), before the walltime kills
            them mid-task; their tasks move to other workers. Empty: no lifetime.
        lifetime_stagger: random spread of ``lifetime`` so workers do not all stop together.
        minimum_jobs: adaptive scaling: jobs kept running while slides remain.
        maximum_jobs: adaptive scaling: most jobs at once.
    """

    queue: str = ""
    account: str = ""
    walltime: str = "01:00:00"
    cores: int = 4
    memory: str = "16GiB"
    processes: int = 1
    gpus: int = 0
    job_extra_directives: tuple[str, ...] = ()
    python: str = ""
    local_directory: str = ""
    log_directory: str = ""
    interface: str = ""
    lifetime: str = "55m"
    lifetime_stagger: str = "4m"
    minimum_jobs: int = 1
    maximum_jobs: int = 4

    def __post_init__(self) -> None:
        for name in ("cores", "processes", "maximum_jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, found {getattr(self, name)}")
        if self.gpus < 0 or self.minimum_jobs < 0:
            raise ValueError(
                "gpus: expected >= 0" if self.gpus < 0 else "minimum_jobs: expected >= 0"
            )
        if self.minimum_jobs > self.maximum_jobs:
            raise ValueError(
                f"minimum_jobs: expected <= maximum_jobs ({self.maximum_jobs}), found "
                f"{self.minimum_jobs}"
            )
        if self.processes > self.cores:
            raise ValueError(f"processes: expected <= cores ({self.cores}), found {self.processes}")
        if self.gpus > 1 or (self.gpus and self.processes != 1):
            raise ValueError(
                f"gpus: expected 0, or 1 with processes = 1 (one GPU worker per job; ask for more "
                f"jobs for more GPUs), found gpus = {self.gpus}, processes = {self.processes}"
            )
        if self.lifetime and _seconds(self.lifetime) + _seconds(self.lifetime_stagger) >= (
            _walltime_seconds(self.walltime)
        ):
            raise ValueError(
                f"lifetime: expected lifetime + lifetime_stagger < walltime ({self.walltime}), so "
                f"workers leave before the walltime kills them; found {self.lifetime} + "
                f"{self.lifetime_stagger}"
            )


@dataclass(frozen=True)
class ClusterConfig:
    """Where the Dask graph runs.

    Attributes:
        scheduler: address of an existing Dask scheduler; empty starts an embedded LocalCluster.
        n_workers: LocalCluster worker processes; 0 sizes them to the machine.
        threads_per_worker: threads per worker process; 0 lets leukoscreen choose.
        memory_limit: per-worker memory limit for the LocalCluster (Dask syntax, e.g. "4GiB").
        max_batches_in_flight: SR batches submitted but not yet finished, per worker.
        dashboard: start the Dask dashboard of the embedded cluster and print its link.
        cpu_cells_per_call: cells fed to the network in one call on a CPU worker; bounds the
            worker's memory (GP x8 at 224 px: about 100 MiB per cell) at little cost in speed.
            0 feeds the whole batch. GPU workers always take the whole batch.
        slurm, pbs: the job settings of ``leukoscreen batch --cluster slurm|pbs``.
    """

    scheduler: str = ""
    n_workers: int = 0
    threads_per_worker: int = 0
    memory_limit: str = "auto"
    max_batches_in_flight: int = 2
    dashboard: bool = False
    cpu_cells_per_call: int = 4
    slurm: JobqueueConfig = field(default_factory=JobqueueConfig)
    pbs: JobqueueConfig = field(default_factory=JobqueueConfig)


@dataclass(frozen=True)
class Config:
    """The resolved configuration of one leukoscreen invocation."""

    slide: SlideConfig = field(default_factory=SlideConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin is tuple:  # tuple[str, ...]: a TOML array
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected an array, found {type(value).__name__} {value!r}")
        (item, _) = typing.get_args(tp)
        return tuple(_coerce(v, item, where) for v in value)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        # bool is an int: True must not pass for 1, nor 1 for True
        if any(type(value) is type(c) and value == c for c in choices):
            return value
        raise ConfigError(
            f"{where}: expected one of {', '.join(map(str, choices))}, found "
            f"{type(value).__name__} {value!r}"
        )
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {tp}, found {type(value).__name__} {value!r}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected bool, found {type(value).__name__} {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, found bool {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(
            f"{where}: expected {_type_name(tp)}, found {type(value).__name__} {value!r}"
        )
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any], *, source: str, prefix: str = "") -> T:
    """Build the dataclass ``cls`` from nested ``data``, strictly.

    Args:
        cls: a frozen dataclass type whose fields are scalars or nested dataclasses.
        data: the parsed TOML table.
        source: file name (or ``"--set"``) used at the start of error messages.
        prefix: dotted key of ``data`` inside the whole tree.

    Raises:
        ConfigError: on an unknown key or a value of the wrong type.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key {dotted!r}; expected one of {', '.join(sorted(known))}"
            )
        tp = hints[key]
        if is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{source}: {dotted!r} must be a table [{dotted}], found {value!r}"
                )
            kwargs[key] = from_mapping(tp, value, source=source, prefix=dotted + ".")  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(value, tp, f"{source}: key {dotted!r}")
    return _build(cls, kwargs, source=source, prefix=prefix)


def _build(cls: type[T], kwargs: Mapping[str, Any], *, source: str, prefix: str) -> T:
    """``cls(**kwargs)``, with the section's own checks (its ``__post_init__`` raises
    ``ValueError("<field>: ...")``) reported as a ConfigError naming the dotted key."""
    try:
        return cls(**kwargs)
    except ValueError as err:
        name, _, problem = str(err).partition(": ")
        raise ConfigError(f"{source}: key {prefix + name!r}: {problem}") from err


def load_config(path: Path | None = None) -> Config:
    """Load the config tree from ``path`` (defaults in code for keys it omits).

    Args:
        path: a TOML file; ``None`` gives the built-in defaults.

    Raises:
        ConfigError: the file is missing, is not valid TOML, or has an unknown key or wrong type.
    """
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: config file not found") from err
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config file ({err.__class__.__name__})") from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from err
    return from_mapping(Config, data, source=str(path))


def override(config: T, **changes: Any) -> T:
    """Return ``config`` with dotted keys replaced, e.g. ``override(c, **{"inference.scale": 4})``.

    ``None`` values are skipped, so optional CLI flags can be passed straight through.

    Raises:
        ConfigError: a key that does not exist, a value of the wrong type or outside the key's
            values (``override: key 'inference.scale': expected one of 4, 8, found int 3``).
    """
    for dotted, value in changes.items():
        if value is not None:
            config = _override_one(config, dotted.split("."), value, f"override: key {dotted!r}")
    return config


def override_flags(config: T, flags: Mapping[str, tuple[str, Any]]) -> T:
    """:func:`override` for command-line flags: errors name the flag instead of the key.

    Args:
        config: the config tree.
        flags: flag (``--scale``) -> (dotted key, value); ``None`` values are skipped.

    Raises:
        ConfigError: as :func:`override`, starting with the flag
            (``--scale: expected one of 4, 8, found int 3``).
    """
    for flag, (dotted, value) in flags.items():
        if value is not None:
            config = _override_one(config, dotted.split("."), value, flag)
    return config


def _override_one(obj: Any, parts: list[str], value: Any, where: str, prefix: str = "") -> Any:
    """Replace the key ``prefix + ".".join(parts)`` below ``obj``; errors start with ``where``."""
    dotted = prefix + ".".join(parts)
    head = parts[0]
    if not hasattr(obj, "__dataclass_fields__") or head not in {f.name for f in fields(obj)}:
        # also a key below a leaf, e.g. "inference.scale.x"
        raise ConfigError(f"override: unknown key {dotted!r}")
    if len(parts) == 1:
        value = _coerce(value, typing.get_type_hints(type(obj))[head], where)
    else:
        value = _override_one(getattr(obj, head), parts[1:], value, where, f"{prefix}{head}.")
    changed = {**{f.name: getattr(obj, f.name) for f in fields(obj)}, head: value}
    try:
        return type(obj)(**changed)
    except ValueError as err:  # the section's own checks: "<field>: expected ..., found ..."
        name, _, problem = str(err).partition(": ")
        if prefix + name == dotted:
            raise ConfigError(f"{where}: {problem}") from err
        source = "override" if where.startswith("override: ") else where
        raise ConfigError(f"{source}: key {prefix + name!r}: {problem}") from err


def to_dict(config: Any) -> dict[str, Any]:
    """The config tree as plain nested dicts and lists, as JSON and TOML hold it (for TOML output,
    store attributes, checkpoints)."""
    return dict(json.loads(json.dumps(dataclasses.asdict(config))))


def to_toml(config: Any) -> str:
    """Render a config tree as TOML (scalars, arrays of scalars and nested tables)."""
    lines: list[str] = []
    _toml_tables(to_dict(config), "", lines)
    return "\n".join(lines)


def _toml_tables(tree: Mapping[str, Any], prefix: str, lines: list[str]) -> None:
    """Append ``tree``'s tables (``[prefix.name]``, scalars first, then nested tables)."""
    for section, table in tree.items():
        lines.append(f"[{prefix}{section}]")
        nested = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        for key, value in table.items():
            if key not in nested:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
        _toml_tables(nested, f"{prefix}{section}.", lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (same escapes, incl. \n and \uXXXX).
        return json.dumps(value, ensure_ascii=False)
    return repr(value)
