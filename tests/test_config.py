"""The config tree: defaults, strict TOML loading, dotted overrides, TOML output."""

from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from leukoscreen.model.config import InferenceConfig, TrainConfig
from leukoscreen.model.errors import ConfigError
from leukoscreen.pipeline.config import (
    ClusterConfig,
    Config,
    DetectConfig,
    OutputConfig,
    SlideConfig,
    from_mapping,
    load_config,
    override,
    to_dict,
    to_toml,
)

REPO = Path(__file__).resolve().parents[1]

# The documented defaults of the keys that exist from the start (later keys are covered by the
# config.toml sync tests below, which compare the file with the code).
DEFAULTS: dict[str, dict[str, Any]] = {
    "slide": {"mpp": 0.0, "expected_mpp": 0.52, "mpp_tolerance": 2.5},
    "detect": {
        "tile_size_px": 2048,
        "halo_px": 64,
        "min_area_um2": 20.0,
        "max_area_um2": 400.0,
        "merge_distance_um": 3.0,
        "foreground_level_mpp": 8.0,
    },
    "inference": {
        "arch": "default",
        "scale": 8,
        "hr_size_px": 224,
        "context_margin_px": 4,
        "batch_size": 16,
        "device": "auto",
        "precision": "auto",
        "checkpoint": "",
    },
    "output": {"compression_level": 3, "resume": False, "overwrite": False},
    "cluster": {
        "scheduler": "",
        "n_workers": 0,
        "threads_per_worker": 0,
        "memory_limit": "auto",
        "max_batches_in_flight": 2,
        "dashboard": False,
    },
    "train": {
        "arch": "gp",
        "scale": 8,
        "epochs": 100,
        "batch_size": 8,
        "lr": 1e-4,
        "lr_halve_every_epochs": 10,
        "prior_weight": 1.0,
        "charbonnier_eps": 1e-3,
        "hr_size_px": 0,
        "seed": 0,
        "precision": "auto",
        "num_threads": 0,
    },
}


def _write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# defaults and the deployed config.toml


def test_defaults_are_the_documented_values() -> None:
    actual = to_dict(Config())
    assert list(actual) == list(DEFAULTS)
    assert {s: {k: actual[s][k] for k in table} for s, table in DEFAULTS.items()} == DEFAULTS


def test_default_sections_are_the_model_side_dataclasses() -> None:
    config = Config()
    assert type(config.slide) is SlideConfig
    assert type(config.detect) is DetectConfig
    assert type(config.inference) is InferenceConfig
    assert type(config.output) is OutputConfig
    assert type(config.cluster) is ClusterConfig
    assert type(config.train) is TrainConfig


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().inference.scale = 4


def test_no_path_gives_defaults() -> None:
    assert load_config(None) == Config()


def test_repo_config_toml_equals_the_defaults_in_code() -> None:
    assert load_config(REPO / "config.toml") == Config()


def test_repo_config_toml_names_every_key() -> None:
    def keys(tree: dict, prefix: str = "") -> set[str]:
        return set().union(*(
            keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
            for k, v in tree.items()
        ))  # fmt: skip

    data = tomllib.loads((REPO / "config.toml").read_text(encoding="utf-8"))
    in_code = keys(to_dict(Config()))
    assert "cluster.slurm.walltime" in in_code and "cluster.pbs.gpus" in in_code
    assert keys(data) == in_code


def test_repo_config_toml_comments_every_key() -> None:
    lines = (REPO / "config.toml").read_text(encoding="utf-8").splitlines()
    uncommented = [
        line
        for before, line in itertools.pairwise(lines)
        if re.match(r"^\w+\s*=", line) and not (before.startswith("#") or "=" in before)
    ]
    # A key counts as commented when a comment sits right above it or above the run of keys it
    # belongs to (e.g. lr and lr_halve_every_epochs share one comment).
    assert uncommented == []


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")) == Config()


def test_file_overrides_only_the_keys_it_names(tmp_path: Path) -> None:
    path = _write(tmp_path, "[inference]\nscale = 4\n\n[output]\nresume = true\n")
    config = load_config(path)
    assert config.inference.scale == 4
    assert config.output.resume is True
    assert config.inference.arch == "default"
    assert config.detect == DetectConfig()


def test_int_is_accepted_where_float_is_expected(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "[slide]\nmpp = 1\n"))
    assert config.slide.mpp == 1.0
    assert type(config.slide.mpp) is float


# ---------------------------------------------------------------------------------------------
# bad files: one ConfigError naming the file and the dotted key, expected vs found


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "[foo]\nx = 1\n",
            "unknown key 'foo'; expected one of cluster, detect, inference, output, slide, train",
            id="unknown-section",
        ),
        pytest.param(
            "[output]\nresum = true\n",
            "unknown key 'output.resum'; expected one of "
            + ", ".join(sorted(f.name for f in dataclasses.fields(OutputConfig))),
            id="unknown-key",
        ),
        pytest.param(
            "[detect]\ntile_size_px = true\n",
            "key 'detect.tile_size_px': expected int, found bool True",
            id="bool-for-int",
        ),
        pytest.param(
            '[slide]\nmpp = "0.5"\n',
            "key 'slide.mpp': expected float, found str '0.5'",
            id="str-for-float",
        ),
        pytest.param(
            "[detect]\nhalo_px = 1.5\n",
            "key 'detect.halo_px': expected int, found float 1.5",
            id="float-for-int",
        ),
        pytest.param(
            "[output]\nresume = 1\n",
            "key 'output.resume': expected bool, found int 1",
            id="int-for-bool",
        ),
        pytest.param(
            "[inference]\ncheckpoint = 3\n",
            "key 'inference.checkpoint': expected str, found int 3",
            id="int-for-str",
        ),
        pytest.param(
            "[inference]\narch = 3\n",
            "key 'inference.arch': expected one of default, bicubic, gp, np, srcnn, vdsr, "
            "srresnet, gpsft, srgan, sftgan, found int 3",
            id="int-for-arch",
        ),
        pytest.param(
            "[inference]\nscale = 5\n",
            "key 'inference.scale': expected one of 4, 8, found int 5",
            id="scale-not-4-or-8",
        ),
        pytest.param(
            "[inference]\nscale = true\n",
            "key 'inference.scale': expected one of 4, 8, found bool True",
            id="bool-for-scale",
        ),
        pytest.param(
            "[train]\nprecision = 'fp16'\n",
            "key 'train.precision': expected one of auto, bf16, fp32, found str 'fp16'",
            id="unknown-precision",
        ),
        pytest.param(
            "[inference]\ndevice = 'tpu'\n",
            "key 'inference.device': expected one of auto, cpu, cuda, found str 'tpu'",
            id="unknown-device",
        ),
        pytest.param(
            "[inference]\nbatch_size = 0\n",
            "key 'inference.batch_size': expected >= 1, found 0",
            id="batch-size-zero",
        ),
        pytest.param(
            "[inference]\nscale = 8\nhr_size_px = 220\n",
            "key 'inference.hr_size_px': expected a multiple of the scale 8, found 220",
            id="hr-size-not-a-multiple",
        ),
        pytest.param(
            "[detect]\nworking_mpp = -1.0\n",
            "key 'detect.working_mpp': expected a number >= 0, found -1.0",
            id="working-mpp-negative",
        ),
        pytest.param(
            "[detect]\nworking_mpp = nan\n",
            "key 'detect.working_mpp': expected a number >= 0, found nan",
            id="working-mpp-nan",
        ),
        pytest.param(
            "[train]\nepochs = 0\n",
            "key 'train.epochs': expected >= 1, found 0",
            id="epochs-zero",
        ),
        pytest.param(
            "[cluster]\nn_workers = [1, 2]\n",
            "key 'cluster.n_workers': expected int, found list [1, 2]",
            id="list-for-int",
        ),
        pytest.param(
            "slide = 3\n",
            "'slide' must be a table [slide], found 3",
            id="scalar-for-section",
        ),
    ],
)
def test_bad_key_or_type_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {message}"


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "[slide\nmpp = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "(at line 1, column 7)" in message
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: config file not found"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read config file (IsADirectoryError)"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[cluster]\nscheduler = "\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read config file (UnicodeDecodeError)"


def test_config_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown key 'foo'"):
        load_config(_write(tmp_path, "[foo]\n"))


def test_from_mapping_uses_the_source_name() -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(Config, {"train": {"epochs": "ten"}}, source="--set")
    assert str(info.value) == "--set: key 'train.epochs': expected int, found str 'ten'"


# ---------------------------------------------------------------------------------------------
# overrides of dotted keys (what CLI flags do)


def test_override_replaces_dotted_keys_and_keeps_the_rest() -> None:
    base = Config()
    changed = override(
        base, **{"inference.scale": 4, "output.resume": True, "cluster.scheduler": "tcp://h:8786"}
    )
    assert changed.inference.scale == 4
    assert changed.output.resume is True
    assert changed.cluster.scheduler == "tcp://h:8786"
    assert changed.detect == base.detect
    assert changed.inference.arch == "default"
    assert base == Config()  # the original is untouched


def test_override_skips_none() -> None:
    assert override(Config(), **{"inference.scale": None, "slide.mpp": None}) == Config()


def test_override_int_for_float_becomes_float() -> None:
    changed = override(Config(), **{"slide.mpp": 1})
    assert changed.slide.mpp == 1.0
    assert type(changed.slide.mpp) is float


def test_override_works_on_one_section() -> None:
    assert override(InferenceConfig(), scale=4) == InferenceConfig(scale=4)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        pytest.param("inference.bogus", 1, "override: unknown key 'inference.bogus'", id="key"),
        pytest.param("bogus.scale", 1, "override: unknown key 'bogus.scale'", id="section"),
        pytest.param(
            "inference.scale.x", 1, "override: unknown key 'inference.scale.x'", id="too-deep"
        ),
        pytest.param(
            "inference.batch_size",
            "4",
            "override: key 'inference.batch_size': expected int, found str '4'",
            id="str-for-int",
        ),
        pytest.param(
            "inference.batch_size",
            True,
            "override: key 'inference.batch_size': expected int, found bool True",
            id="bool-for-int",
        ),
        pytest.param(
            "inference.scale",
            3,
            "override: key 'inference.scale': expected one of 4, 8, found int 3",
            id="scale-not-4-or-8",
        ),
        pytest.param(
            "inference.batch_size",
            0,
            "override: key 'inference.batch_size': expected >= 1, found 0",
            id="batch-size-zero",
        ),
        pytest.param(
            "slide.mpp",
            "0.5",
            "override: key 'slide.mpp': expected float, found str '0.5'",
            id="str-for-float",
        ),
        pytest.param(
            "output.resume",
            "yes",
            "override: key 'output.resume': expected bool, found str 'yes'",
            id="str-for-bool",
        ),
        pytest.param(
            "inference",
            3,
            "override: key 'inference': expected InferenceConfig, found int 3",
            id="scalar-for-section",
        ),
    ],
)
def test_override_bad_key_or_type(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        override(Config(), **{key: value})
    assert str(info.value) == message


# ---------------------------------------------------------------------------------------------
# TOML output


def test_to_toml_of_defaults_round_trips() -> None:
    text = to_toml(Config())
    data = tomllib.loads(text)
    assert data == to_dict(Config())
    assert from_mapping(Config, data, source="to_toml") == Config()


def test_to_toml_has_one_table_per_section() -> None:
    headers = [line for line in to_toml(Config()).splitlines() if line.startswith("[")]
    assert headers == ["[slide]", "[detect]", "[inference]", "[output]", "[cluster]",
                       "[cluster.slurm]", "[cluster.pbs]", "[train]"]  # fmt: skip


def test_to_toml_round_trips_awkward_values() -> None:
    config = override(
        Config(),
        **{
            "inference.checkpoint": 'C:\\runs\\gp "best"\\ckpt.pt',
            "cluster.scheduler": "tcp://höst:8786",
            "cluster.dashboard": True,
            "train.lr": 2.5e-7,
            "slide.mpp": 0.2425,
            "detect.max_area_um2": 1e20,
        },
    )
    data = tomllib.loads(to_toml(config))
    assert data["inference"]["checkpoint"] == 'C:\\runs\\gp "best"\\ckpt.pt'
    assert from_mapping(Config, data, source="to_toml") == config


def test_to_toml_escapes_control_characters() -> None:
    path = "runs/line one\nline two\ttab\x01.pt"
    config = override(Config(), **{"inference.checkpoint": path})
    text = to_toml(config)
    assert 'checkpoint = "runs/line one\\nline two\\ttab\\u0001.pt"' in text
    assert tomllib.loads(text)["inference"]["checkpoint"] == path


def test_to_toml_output_loads_from_a_file(tmp_path: Path) -> None:
    config = override(Config(), **{"inference.scale": 4, "train.epochs": 3})
    assert load_config(_write(tmp_path, to_toml(config))) == config


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            'walltime = "00:10:00"',
            "key 'cluster.slurm.lifetime': expected lifetime + lifetime_stagger",
        ),
        ("gpus = 2", "key 'cluster.slurm.gpus': expected 0, or 1 with processes = 1"),
        ('walltime = "soon"', "key 'cluster.slurm.walltime': expected HH:MM:SS"),
        ("minimum_jobs = 5", "key 'cluster.slurm.minimum_jobs': expected <= maximum_jobs (4)"),
        ('job_extra_directives = "--qos=low"', "expected an array, found str"),
    ],
)
def test_bad_jobqueue_section_names_the_key(tmp_path: Path, section: str, expected: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f"[cluster.slurm]\n{section}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value) and str(path) in str(info.value)
