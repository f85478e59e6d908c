"""The README's two commands stay true: CI runs both exactly as the README shows them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), re.DOTALL)


def _ci_commands() -> list[str]:
    """The lines of .ci/run that make a virtual environment: the README's commands."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [line for line in lines if line.startswith("python3 -m venv .venv")]


def test_readme_leads_with_the_main_command_then_the_test_command():
    main, tests = _readme_commands()[:2]
    assert main.endswith(".venv/bin/talkinghead demo") and "install -q -e . " in main
    assert tests.endswith("pytest -q") and "install -q -e '.[test]'" in tests


def test_ci_runs_the_readme_commands_as_written_in_order():
    assert _ci_commands() == _readme_commands()[:2]


def test_ci_gives_each_command_a_fresh_environment():
    """The main job must not profit from the test extras, nor the tests from its leftovers."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    main, tests = (lines.index(command) for command in _ci_commands())
    assert any(line.startswith("rm -rf .venv") for line in lines[:main])
    assert any(line.startswith("rm -rf .venv") for line in lines[main + 1 : tests])
