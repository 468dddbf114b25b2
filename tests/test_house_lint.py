"""The house's habits, checked like any other behaviour: `ruff check` and `mypy` find nothing.

Both read their settings from pyproject.toml (`[tool.ruff]`, `[tool.mypy]`), so what CI checks is what
`ruff check` and `mypy` say when run by hand in the repository root. Both come with the test dependencies
(`pip install -e ".[test]"`). ruff takes well under a second and runs in the quick loop; mypy reads the
whole package (half a minute to a minute cold) and is marked `e2e`, so `-m "not e2e"` stays quick and
CI (`.ci/run`, everything) runs it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_tool(module: str, *args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """`python -m <module>` in the repository root, its cache under pytest's tmp (the tree stays clean)."""
    env_args = ["--cache-dir", str(cache)]
    return subprocess.run([sys.executable, "-m", module, *args, *env_args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)


def test_ruff_finds_nothing_in_the_package_and_the_benchmarks(tmp_path):
    done = run_tool("ruff", "check", "--output-format", "concise", cache=tmp_path / "ruff")
    assert done.returncode == 0, f"ruff check (pyproject.toml [tool.ruff]):\n{done.stdout}{done.stderr}"


@pytest.mark.e2e
def test_mypy_finds_no_type_error_in_the_package(tmp_path):
    done = run_tool("mypy", cache=tmp_path / "mypy")
    assert done.returncode == 0, f"mypy (pyproject.toml [tool.mypy]):\n{done.stdout}{done.stderr}"
