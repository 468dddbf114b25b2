"""README.md tells the truth: its configuration block, pasted as-is, passes `check` and runs without
touching anything outside the folder it runs in (issue 13 item 4), and its links and docs/'s lead
somewhere.

The block is read from README.md itself (the first ```yaml block), so editing the README is what
these tests check. "Touching" is observed, not inferred: `serve` and `check` run under a Python audit
hook that reports every file opened for writing, created, renamed or removed, every SQLite database
opened, and every process started; SQLite's own journal files lie beside its database.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers.ports import free_port
from tests.helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Runs `slo-monitor` with an audit hook; each event a line `AUDIT <kind> <path or program>` on fd 2.
AUDITED = r"""
import os, sys
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATHS = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link", "os.truncate",
         "os.chmod", "os.chown", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile")
SPAWN = ("subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.spawn", "os.fork", "os.forkpty")
def say(kind, what):
    text = os.fsdecode(what) if isinstance(what, (str, bytes, os.PathLike)) else repr(what)
    os.write(2, f"AUDIT {kind} {text}\n".encode(errors="replace"))
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)) and (args[2] or 0) & WRITE:
        say("write", args[0])
    elif event in PATHS:
        for arg in args[:2]:
            if isinstance(arg, (str, bytes, os.PathLike)):
                say(event, arg)
    elif event == "sqlite3.connect":
        say("sqlite", args[0])
    elif event in SPAWN:
        say("spawn", args[0] if args else event)
sys.addaudithook(hook)
from monitor.cli import main
sys.exit(main(sys.argv[1:]))
"""


def readme_config() -> str:
    found = re.search(r"^```yaml\n(.*?)^```", README.read_text(), re.S | re.M)
    assert found, "README.md has no ```yaml block"
    return found.group(1)


def audited(args: list[str], cwd: Path, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", AUDITED, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def touched(stderr: str, folder: Path) -> tuple[list[str], list[str]]:
    """(paths written outside `folder`, processes started), from the audit lines."""
    outside, spawned = [], []
    for kind, what in re.findall(r"^AUDIT (\S+) (.*)$", stderr, re.M):
        if kind == "spawn":
            spawned.append(what)
            continue
        if kind == "sqlite" and what in (":memory:", ""):
            continue
        path = Path(os.path.realpath(folder / what))  # relative paths are the folder's (the cwd)
        if path != Path("/dev/null") and not path.is_relative_to(folder.resolve()):
            outside.append(f"{kind} {what}")
    return outside, spawned


@pytest.mark.e2e
def test_the_readme_configuration_block_passes_check_in_a_fresh_folder(tmp_path):
    (tmp_path / "slo-monitor.yaml").write_text(readme_config())
    proc = audited(["check", "--config", "slo-monitor.yaml"], tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    outside, spawned = touched(err, tmp_path)
    assert outside == [] and spawned == []


@pytest.mark.e2e
def test_the_readme_configuration_block_acts_only_inside_its_working_folder(tmp_path):
    """What a new user pastes: nothing it does (database, NGINX file, commands) reaches outside the
    folder it runs in. `--listen` picks a free port so that parallel runs do not collide; the
    block itself is unchanged."""
    config = readme_config()
    assert re.search(r"^\s*(check|reload):", config, re.M) is None, "NGINX commands must stay commented out"
    (tmp_path / "slo-monitor.yaml").write_text(config)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = audited(["serve", "--config", "slo-monitor.yaml", "--listen", f"127.0.0.1:{port}"], tmp_path)
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, 60, what="serve ready",
                   procs=[_Alive(proc)])
        # a second cycle, and with it the NGINX file, the README's promise of where it lands
        wait_until(lambda: httpx.get(f"{base}/healthz", timeout=2).json()["cycles"] >= 2, 30, what="two cycles",
                   procs=[_Alive(proc)])
        wait_until(lambda: (tmp_path / "nginx" / "llm-upstreams.conf").exists(), 30, what="the upstream file")
        instances = httpx.get(f"{base}/api/v1/instances", timeout=5).json()
        assert sorted(i["instance"] for i in instances) == ["127.0.0.1:8000", "127.0.0.1:8001"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    outside, spawned = touched(err, tmp_path)
    assert outside == [], outside
    assert spawned == [], spawned  # no `nginx -t`, no `nginx -s reload`
    assert (tmp_path / "slo-monitor.db").exists()
    assert "upstream llama-8b {" in (tmp_path / "nginx" / "llm-upstreams.conf").read_text()


class _Alive:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def check(self) -> None:
        if self.proc.poll() is not None:
            out, err = self.proc.communicate()
            raise AssertionError(f"serve exited with {self.proc.returncode}:\n{out}{err}")


# --- links ----------------------------------------------------------------------------------------------


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", line.lstrip("#").strip())
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    out.update(re.findall(r'<a (?:name|id)="([^"]+)"', markdown))
    return out


def _links(markdown: str) -> list[str]:
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)  # not links inside code blocks
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)


def test_every_relative_link_in_the_readme_and_docs_leads_to_a_file_and_heading_that_exist():
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        markdown = page.read_text()
        for link in _links(markdown):
            if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
                continue
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path.read_text()):
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_stays_short():
    assert len(README.read_text().splitlines()) <= 170  # about 150: the reference lives in docs/
