"""Golden files for `slo-monitor generate`: the expected output lives under tests/fixtures/golden/,
and a test compares it, file by file, with what a FRESH process writes.

A fresh process (not a second render in the test's own interpreter) is what catches output that
depends on process state: set or dict order under a new hash seed, a cache filled by an earlier
render, an import-time side effect. Each run gets `PYTHONHASHSEED=random`.

Refreshing after an intended change (review the diff before committing it):

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_generate_rules.py \
        tests/test_generate_dashboards.py tests/test_generate_operator.py -k golden
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN", "") not in ("", "0")


def generate_fresh(args: list[str], out: Path, env: dict[str, str] | None = None) -> str:
    """Run `slo-monitor generate ARGS --out OUT` in a new interpreter; returns its stdout."""
    script = Path(sys.executable).with_name("slo-monitor")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "monitor"]
    environ = {**os.environ, "PYTHONHASHSEED": "random", **(env or {})}
    done = subprocess.run([*command, "generate", *args, "--out", str(out)], capture_output=True, text=True,
                          timeout=300, env=environ)
    assert done.returncode == 0, f"slo-monitor generate {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(root.rglob("*")) if p.is_file()}


def compare_with_golden(fresh: Path, name: str, folders: tuple[str, ...]) -> None:
    """`fresh/<folder>` equals `tests/fixtures/golden/<name>/<folder>` for each folder, file by
    file; with UPDATE_GOLDEN=1 the goldens are replaced by the fresh files instead."""
    for folder in folders:
        golden = GOLDEN / name / folder
        if UPDATE:
            shutil.rmtree(golden, ignore_errors=True)
            shutil.copytree(fresh / folder, golden)
            continue
        want, got = _files(golden), _files(fresh / folder)
        refresh = "if the change is intended, refresh with UPDATE_GOLDEN=1 (tests/helpers/golden.py)"
        assert sorted(got) == sorted(want), (
            f"{name}/{folder}: files differ; missing {sorted(set(want) - set(got))}, "
            f"unexpected {sorted(set(got) - set(want))}; {refresh}")
        for rel in sorted(want):
            if got[rel] != want[rel]:
                diff = "".join(list(difflib.unified_diff(
                    want[rel].splitlines(True), got[rel].splitlines(True), f"golden/{name}/{folder}/{rel}",
                    f"fresh/{folder}/{rel}", n=2))[:60])
                raise AssertionError(f"{name}/{folder}/{rel} differs from its golden; {refresh}\n{diff}")
