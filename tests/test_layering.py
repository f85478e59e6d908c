"""Dependencies flow one way: config -> landmarks/data/models/losses/provenance ->
training/inference -> cli/web. Models never import training; provenance (marking outputs as
synthetic) needs only video/fileio/errors; nothing imports the CLI or the web app."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "talkinghead"
LOWER = ("config", "landmarks", "data", "models", "losses", "pretrained", "provenance")
UPPER = ("training", "inference", "evaluation", "demo", "cli", "web")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("talkinghead")}


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_lower_layers_never_import_upper_ones():
    for part in LOWER:
        for path in (PACKAGE / part).rglob("*.py"):
            bad = {m for m in _imports(path) if _part(m) in UPPER}
            assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_nothing_imports_the_cli_or_the_web_app():
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cli.py":
            continue
        bad = {m for m in _imports(path) if _part(m) in ("cli", "web")}
        if path.parent.name == "web":  # the web package's modules build on each other
            bad = {m for m in bad if not m.startswith("talkinghead.web.")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"
