"""Package layout: the dependency direction workflows -> pipeline -> model, and what a wheel holds.

The top-level folders model/, pipeline/, workflows/ install as leukoscreen.model,
leukoscreen.pipeline, leukoscreen.workflows (DESIGN.md §2). ``model`` must never import the
pipeline or the workflows, and the pipeline must never import the workflows.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"model": "leukoscreen.model", "pipeline": "leukoscreen.pipeline"}
ROOTS_ALL = {**ROOTS, "workflows": "leukoscreen.workflows"}
UPPER_LAYERS = ("leukoscreen.pipeline", "leukoscreen.workflows")


def _python_files(folder: str, base: Path = REPO) -> list[Path]:
    return sorted(p for p in (base / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path, base: Path = REPO) -> str:
    """``model/nets/gp.py`` -> ``leukoscreen.model.nets.gp`` (``__init__`` names the package)."""
    rel = path.relative_to(base).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([ROOTS_ALL[parts[0]], *parts[1:]])


def _imports(path: Path, base: Path = REPO) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved).

    Also counts ``importlib.import_module("...")`` and ``__import__("...")`` with a literal name.
    """
    module = _module_name(path, base)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parents = package.split(".")
                parents = parents[: len(parents) - (node.level - 1)]
                name = ".".join(parents + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.add(first.value)
    return found


def _violations(folder: str, forbidden: tuple[str, ...], base: Path = REPO) -> dict[str, list[str]]:
    bad: dict[str, list[str]] = {}
    prefixes = tuple(f"{name}." for name in forbidden)
    for path in _python_files(folder, base):
        hits = sorted(
            name for name in _imports(path, base) if name in forbidden or name.startswith(prefixes)
        )
        if hits:
            bad[path.relative_to(base).as_posix()] = hits
    return bad


# ---------------------------------------------------------------------------------------------
# static: the source text


def test_imports_checker_resolves_relative_and_dynamic_imports(tmp_path: Path) -> None:
    # The checker itself, on a copy of model/ with a file that sneaks the upper layers in.
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "__init__.py").write_text('"""Mentions leukoscreen.pipeline."""\n')
    (tmp_path / "model" / "probe.py").write_text(
        "import importlib\n"
        "from ..pipeline import config\n"
        "from leukoscreen.workflows import x\n"
        "importlib.import_module('leukoscreen.pipeline.cli')\n",
        encoding="utf-8",
    )
    (tmp_path / "model" / "fine.py").write_text(
        "from .errors import ConfigError\nimport pipeline\n"
    )
    assert _violations("model", UPPER_LAYERS, base=tmp_path) == {
        "model/probe.py": [
            "leukoscreen.pipeline",
            "leukoscreen.pipeline.cli",
            "leukoscreen.pipeline.config",
            "leukoscreen.workflows",
            "leukoscreen.workflows.x",
        ]
    }


def test_model_source_never_imports_pipeline_or_workflows() -> None:
    assert len(_python_files("model")) >= 3  # __init__, config, errors at least
    assert _violations("model", UPPER_LAYERS) == {}


def test_pipeline_source_never_imports_workflows() -> None:
    assert len(_python_files("pipeline")) >= 3
    assert _violations("pipeline", ("leukoscreen.workflows",)) == {}


def test_every_source_folder_is_a_declared_package() -> None:
    # A folder of modules missing from [tool.setuptools] packages is left out of the wheel.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    declared = set(pyproject["tool"]["setuptools"]["packages"])
    folders = {
        path.parent
        for root in ROOTS_ALL
        for path in _python_files(root)
        if "templates" not in path.relative_to(REPO).parts
    }
    missing_init = sorted(
        str(f.relative_to(REPO)) for f in folders if not (f / "__init__.py").exists()
    )
    assert missing_init == []
    in_tree = {_module_name(folder / "__init__.py") for folder in folders}
    assert in_tree - declared == set()
    assert declared - in_tree == set()


# ---------------------------------------------------------------------------------------------
# dynamic: what importing really pulls in, in a fresh interpreter

_IMPORT_PROBE = """
import importlib, json, sys
upper = ("leukoscreen.pipeline", "leukoscreen.workflows")
prefixes = tuple(u + "." for u in upper)
report = {}
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if m in upper or m.startswith(prefixes))
    if leaked:
        report[name] = leaked
print(json.dumps(report))
"""


def _probe_imports(names: list[str]) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, json.dumps(names)],
        cwd=REPO.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (
        f"importing {names} failed (a module added since an editable install in strict mode "
        f"needs `pip install -e '.[dev]' --config-settings editable_mode=strict` again):\n"
        f"{done.stderr}"
    )
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


def test_import_model_alone_does_not_import_pipeline() -> None:
    assert _probe_imports(["leukoscreen.model"]) == {}


def test_importing_every_model_module_does_not_import_pipeline_or_workflows() -> None:
    names = [_module_name(path) for path in _python_files("model")]
    assert "leukoscreen.model.errors" in names
    assert "leukoscreen.model.config" in names
    assert _probe_imports(names) == {}


def test_the_probe_sees_a_leak() -> None:
    # The same probe on a pipeline module, which must be reported.
    assert _probe_imports(["leukoscreen.model.errors", "leukoscreen.pipeline.config"]) == {
        "leukoscreen.pipeline.config": ["leukoscreen.pipeline", "leukoscreen.pipeline.config"]
    }


# ---------------------------------------------------------------------------------------------
# the wheel: modules and package data, installed outside the source tree


def _package_data(base: Path) -> list[str]:
    """Wheel paths of the data files under ``base`` that a wheel must hold (weights, example)."""
    pyproject = tomllib.loads((base / "pyproject.toml").read_text(encoding="utf-8"))
    package_dirs = pyproject["tool"]["setuptools"]["package-dir"]
    wanted: set[str] = set()

    def add(package: str, pattern: str) -> None:
        top = next(p for p in package_dirs if package == p or package.startswith(p + "."))
        folder = base / package_dirs[top]
        for part in package.removeprefix(top).split(".")[1:]:
            folder = folder / part
        for path in folder.glob(pattern):
            if path.is_file():
                wanted.add("/".join([*package.split("."), *path.relative_to(folder).parts]))

    for package, patterns in pyproject["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            add(package, pattern)
    # Named explicitly as well, so that dropping a pattern from pyproject cannot hide them.
    for pattern in ("*.pt", "*.json", "*.safetensors"):
        add("leukoscreen.model.weights", pattern)
    add("leukoscreen.pipeline.example", "*.svs")
    return sorted(wanted)


def _copy_sources(dest: Path) -> None:
    """The files a build needs, so that building leaves nothing behind in the checkout."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ROOTS_ALL:
        shutil.copytree(REPO / folder, dest / folder, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)


def _run(
    args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{args}:\n{done.stderr}"
    return done


@pytest.mark.slow
def test_wheel_holds_modules_and_data_and_imports_outside_the_tree(tmp_path: Path) -> None:
    # Built from a copy, so that the checkout gets no build/ or *.egg-info and files that other
    # work adds meanwhile cannot make the lists below disagree.
    src, dist = tmp_path / "src", tmp_path / "dist"
    _copy_sources(src)
    pip = [sys.executable, "-m", "pip"]
    _run(
        [
            *pip,
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(dist),
        ]
    )
    (wheel,) = dist.glob("leukoscreen-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "leukoscreen = leukoscreen.pipeline.cli:entry" in archive.read(entry_points).decode()
    for required in (
        "leukoscreen/model/__init__.py",
        "leukoscreen/model/errors.py",
        "leukoscreen/pipeline/cli.py",
        "leukoscreen/pipeline/config.py",
        "leukoscreen/workflows/__init__.py",
    ):
        assert required in names
    modules = [
        _module_name(path, src).replace(".", "/")
        + ("/__init__.py" if path.name == "__init__.py" else ".py")
        for root in ROOTS_ALL
        for path in _python_files(root, src)
    ]
    assert [m for m in modules if m not in names] == []
    data = _package_data(src)
    assert [d for d in data if d not in names] == []

    # Install it into a bare venv; the dependencies come from this environment's site-packages
    # through PYTHONPATH (a .pth there, such as an editable install's, is not processed).
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)])
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    env.pop("PYTHONHOME", None)
    probe = (
        "import importlib.resources as r, json\n"
        "import leukoscreen.model, leukoscreen.pipeline.cli, leukoscreen.workflows\n"
        "files = lambda p: sorted(f.name for f in r.files(p).iterdir() if f.is_file())\n"
        "print(json.dumps({'model': leukoscreen.model.__file__,\n"
        "    'leukoscreen/model/weights/': files('leukoscreen.model.weights'),\n"
        "    'leukoscreen/pipeline/example/': files('leukoscreen.pipeline.example')}))\n"
    )
    report = json.loads(_run([str(python), "-c", probe], cwd=tmp_path, env=env).stdout)
    assert Path(report.pop("model")).is_relative_to(target)
    for prefix, installed in report.items():
        shipped = [d.removeprefix(prefix) for d in data if d.startswith(prefix)]
        assert [name for name in shipped if name not in installed] == []
        assert "__init__.py" in installed

    script = target / "bin" / "leukoscreen"
    printed = _run([str(script), "config"], cwd=tmp_path, env=env).stdout
    assert tomllib.loads(printed)["inference"]["scale"] == 8


# ---------------------------------------------------------------------------------------------
# size and shape of the installed package (STYLE.md: split by concept before ~500 / ~80 lines)

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _function_lengths(path: Path, base: Path = REPO) -> dict[str, int]:
    """``module:line name`` -> lines of each function, its docstring left out."""
    lengths = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0]
            has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            doc = (first.end_lineno or first.lineno) - first.lineno + 1 if has_doc else 0
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lengths[f"{path.relative_to(base).as_posix()}:{node.lineno} {node.name}"] = (
                (node.end_lineno or node.lineno) - start + 1 - doc
            )
    return lengths


def test_function_lengths_counts_lines_without_the_docstring(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        'def f():\n    """Doc\n    more."""\n    a = 1\n    return a\n\n\n'
        "@staticmethod\ndef g(x):\n    return x\n"
    )
    assert _function_lengths(probe, tmp_path) == {"probe.py:1 f": 3, "probe.py:9 g": 3}


def test_no_module_over_500_lines_and_no_function_over_80() -> None:
    files = [path for root in ROOTS_ALL for path in _python_files(root)]
    long_modules = {
        str(path.relative_to(REPO)): n
        for path in files
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    long_functions = {
        name: n
        for path in files
        for name, n in _function_lengths(path).items()
        if n > MAX_FUNCTION_LINES
    }
    assert long_modules == {}
    assert long_functions == {}


def test_no_argparse_program_in_the_installed_package() -> None:
    # Lab programs live in tools/; what a user runs is a `leukoscreen` subcommand.
    offenders = {
        path.relative_to(REPO).as_posix()
        for root in ROOTS_ALL
        for path in _python_files(root)
        if "argparse" in _imports(path)
    }
    assert offenders == set()


def test_inference_never_imports_training() -> None:
    probe = (
        "import sys, leukoscreen.model.inference, leukoscreen.pipeline.sr_task\n"
        "print('leukoscreen.model.train' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"
