"""The command line: help, version, config, and how bad input becomes one line and exit 2.

Behaviour of run/train/evaluate/upscale is tested with those commands' own modules.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from leukoscreen.model import __version__, errors
from leukoscreen.model.errors import ConfigError, LeukoscreenError
from leukoscreen.pipeline.cli import app, main
from leukoscreen.pipeline.config import Config, from_mapping, to_dict

REPO = Path(__file__).resolve().parents[1]
TAGLINE = (
    "Find every leukocyte in a low-magnification blood-smear scan, super-resolve it x4 or x8 with "
    "the geometry-prior network of Hua et al. (J. Biomed. Opt. 2020), and write the cells, their "
    "nucleus/cytoplasm parsing maps and a cell table into one Zarr store."
)
COMMANDS = ("config", "run", "train", "evaluate", "upscale")
# A typo in a section name (the sections change less often than the keys inside them).
UNKNOWN_SECTION = (
    "unknown key 'inferense'; expected one of cluster, detect, inference, output, slide, train"
)

runner = CliRunner()


def _flat(text: str) -> str:
    """Help text with its line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text("[inferense]\nscale = 4\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# through CliRunner


def test_version_matches_pyproject() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert __version__ == pyproject["project"]["version"]


def test_help_explains_the_tool_and_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    text = _flat(result.stdout)
    assert text.startswith("Usage: leukoscreen [OPTIONS] COMMAND [ARGS]...")
    assert TAGLINE in text
    assert "--version Print the version and exit." in text
    listed = result.stdout.split("Commands:")[1].split()
    assert [word for word in listed if word in COMMANDS] == list(COMMANDS)


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"leukoscreen {__version__}\n"


def test_config_prints_the_defaults_as_toml() -> None:
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0
    data = tomllib.loads(result.stdout)
    assert data == to_dict(Config())
    assert from_mapping(Config, data, source="stdout") == Config()


def test_config_overlays_a_file(tmp_path: Path) -> None:
    path = tmp_path / "x4.toml"
    path.write_text("[inference]\nscale = 4\n", encoding="utf-8")
    result = runner.invoke(app, ["config", "--config", str(path)])
    assert result.exit_code == 0
    data = tomllib.loads(result.stdout)
    assert data["inference"]["scale"] == 4
    assert data["train"]["scale"] == 8


def test_config_of_the_repo_file_prints_the_defaults() -> None:
    result = runner.invoke(app, ["config", "--config", str(REPO / "config.toml")])
    assert result.exit_code == 0
    assert tomllib.loads(result.stdout) == to_dict(Config())


def test_bad_config_raises_config_error_from_the_app(bad_config: Path) -> None:
    # The typer app raises; main() (the console script) turns it into one line and exit 2.
    result = runner.invoke(app, ["config", "--config", str(bad_config)])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == f"{bad_config}: {UNKNOWN_SECTION}"


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["--bogus"],
        ["config", "--bogus"],
        ["config", "extra"],
        ["config", "--config"],
    ],
)
def test_usage_errors_exit_2_in_the_runner(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2


# ---------------------------------------------------------------------------------------------
# through main(), the console-script entry point


def test_main_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert TAGLINE in _flat(out)


def test_main_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"leukoscreen {__version__}\n"


def test_main_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    captured = capsys.readouterr()
    assert tomllib.loads(captured.out) == to_dict(Config())
    assert captured.err == ""


def test_main_no_arguments_shows_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("Usage: leukoscreen [OPTIONS] COMMAND [ARGS]...")
    assert captured.out == ""


@pytest.mark.parametrize(
    ("args", "line"),
    [
        pytest.param(["frobnicate"], "leukoscreen: No such command 'frobnicate'.", id="command"),
        pytest.param(["--bogus"], "leukoscreen: No such option: --bogus", id="option"),
        pytest.param(
            ["config", "--bogus"], "leukoscreen: No such option: --bogus", id="command-option"
        ),
        pytest.param(
            ["config", "extra"],
            "leukoscreen: Got unexpected extra argument(s) (extra)",
            id="extra-argument",
        ),
        pytest.param(
            ["config", "--config"],
            "leukoscreen: Option '--config' requires an argument.",
            id="option-without-value",
        ),
    ],
)
def test_main_usage_error_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], line: str
) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err == line + "\n"
    assert captured.out == ""


def test_main_bad_config_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], bad_config: Path
) -> None:
    assert main(["config", "--config", str(bad_config)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"leukoscreen: error: {bad_config}: {UNKNOWN_SECTION}\n"
    assert captured.out == ""


def test_main_wrong_type_in_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('[slide]\nmpp = "0.25"\n', encoding="utf-8")
    assert main(["config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"leukoscreen: error: {path}: key 'slide.mpp': expected float, found str '0.25'\n"
    )


def test_main_invalid_toml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[slide\n", encoding="utf-8")
    assert main(["config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"leukoscreen: error: {path}: invalid TOML: ")
    assert err.count("\n") == 1


def test_main_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    assert main(["config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"leukoscreen: error: {path}: config file not found\n"


def test_main_config_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["config", "--config", str(tmp_path)]) == 2
    # click capitalises "file" in some versions and not in others.
    assert capsys.readouterr().err.lower() == (
        f"leukoscreen: invalid value for '--config': file '{tmp_path}' is a directory.\n".lower()
    )


# ---------------------------------------------------------------------------------------------
# how main() treats what a command body raises (a throwaway command, removed afterwards)


@pytest.fixture
def command_raising() -> Iterator[Callable[[BaseException], None]]:
    def install(exc: BaseException) -> None:
        @app.command("raise-for-test")
        def _raise() -> None:
            raise exc

    yield install
    app.registered_commands[:] = [c for c in app.registered_commands if c.name != "raise-for-test"]


ERROR_CLASSES = [
    cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, LeukoscreenError)
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_main_turns_every_leukoscreen_error_into_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    command_raising: Callable[[BaseException], None],
    cls: type[LeukoscreenError],
) -> None:
    command_raising(cls("/data/a.svs: expected X, found Y"))
    assert main(["raise-for-test"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "leukoscreen: error: /data/a.svs: expected X, found Y\n"
    assert captured.out == ""


def test_main_lets_a_bug_keep_its_traceback(
    command_raising: Callable[[BaseException], None],
) -> None:
    command_raising(KeyError("a bug"))
    with pytest.raises(KeyError, match="a bug"):
        main(["raise-for-test"])


@pytest.mark.parametrize("code", [0, 1, 3])
def test_main_returns_the_exit_code_a_command_asks_for(
    command_raising: Callable[[BaseException], None], code: int
) -> None:
    command_raising(typer.Exit(code=code))
    assert main(["raise-for-test"]) == code


def test_error_classes_were_found() -> None:
    assert len(ERROR_CLASSES) == 11


# ---------------------------------------------------------------------------------------------
# the installed console script, from another directory


def _script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "leukoscreen"
    return subprocess.run(
        [str(exe), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )


def test_console_script_help_from_another_directory(tmp_path: Path) -> None:
    done = _script(tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    assert TAGLINE in _flat(done.stdout)


def test_console_script_config_from_another_directory(tmp_path: Path) -> None:
    done = _script(tmp_path, "config")
    assert done.returncode == 0, done.stderr
    assert tomllib.loads(done.stdout) == to_dict(Config())


def test_console_script_bad_config_is_one_line_without_traceback(
    tmp_path: Path, bad_config: Path
) -> None:
    done = _script(tmp_path, "config", "--config", bad_config.name)
    assert done.returncode == 2
    assert done.stderr == f"leukoscreen: error: bad.toml: {UNKNOWN_SECTION}\n"
    assert done.stdout == ""
    # The README shows this very line.
    assert done.stderr in (REPO / "README.md").read_text(encoding="utf-8")
