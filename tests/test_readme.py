"""The README's two commands stay true: CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_leads_with_two_commands_and_ci_runs_the_test_one():
    first, second = _readme_commands()[:2]
    assert "talkinghead" in first and "pip install" in first
    assert "pytest" in second and "pip install" in second
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert second in ci_lines
