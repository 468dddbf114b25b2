"""docker-compose.yml and deploy/: every file it mounts exists, the service's config is valid, the
generated rules/dashboards in deploy/ are current, the pool's targets match the simulator it starts,
and NGINX accepts its config with an upstream file as slo-monitor renders it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitor.act.nginx import UpstreamServer, render_file
from monitor.cli import main
from monitor.config import instance_address, load

from tests.helpers.ci import require
from tests.helpers.ports import free_port

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
CONFIG = REPO / "config" / "compose.yaml"
GENERATE = ["generate", "--config", str(CONFIG), "--service-target", "slo-monitor:9470", "--scrape-interval", "5s"]


def test_every_mounted_file_exists():
    for name, service in COMPOSE["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} is mounted but missing"


def test_service_config_is_valid_and_matches_the_simulator(monkeypatch):
    monkeypatch.setenv("SLO_MONITOR_DB", COMPOSE["services"]["slo-monitor"]["environment"]["SLO_MONITOR_DB"])
    config = load(CONFIG).config
    command = COMPOSE["services"]["sim"]["command"]
    instances, base = int(command[command.index("--instances") + 1]), int(command[command.index("--base-port") + 1])
    assert [instance_address(t) for p in config.pools for t in p.targets] == \
        [f"sim:{base + i}" for i in range(instances)]
    assert config.storage.url.startswith("postgresql+psycopg://slo:slo@postgres:5432/")
    assert config.alertmanager.url == "http://alertmanager:9093"
    assert config.nginx.upstream_file.startswith("/shared/nginx/")


def test_deploy_holds_a_fresh_generation(tmp_path):
    assert main(GENERATE + ["--out", str(tmp_path)]) == 0
    for folder in ("alerts", "dashboards"):
        fresh = {p.relative_to(tmp_path / folder): p.read_text() for p in (tmp_path / folder).rglob("*") if p.is_file()}
        committed = {p.relative_to(REPO / "deploy" / folder): p.read_text()
                     for p in (REPO / "deploy" / folder).rglob("*") if p.is_file()}
        assert committed == fresh, f"deploy/{folder} is stale; run: slo-monitor {' '.join(GENERATE[:-1])} ... --out deploy"


@pytest.mark.e2e
def test_nginx_accepts_the_config_with_a_rendered_upstream(tmp_path):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    require(Path(nginx).exists(), "nginx (Debian nginx-light) is not installed")
    config = load(CONFIG, environ={"SLO_MONITOR_DB": "sqlite:///x.db"}).config
    servers = [UpstreamServer(f"127.0.0.1:{8001 + i}", state) for i, state in enumerate(("healthy", "ejected", "degraded"))]
    upstreams = tmp_path / "llm-upstreams.conf"
    upstreams.write_text(render_file({config.pools[0].name: servers}))
    conf = (REPO / "deploy/nginx/nginx.conf").read_text().replace("/shared/nginx/llm-upstreams.conf", str(upstreams))
    conf = conf.replace("events {}", f"pid {tmp_path}/nginx.pid;\nevents {{}}").replace("listen 8080;", f"listen 127.0.0.1:{free_port()};")
    (tmp_path / "nginx.conf").write_text(conf)
    done = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "e.log")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) where it exists, else Debian's `docker-compose` (1.29, which
    scripts/test installs): both check the file against the Compose schema without an engine."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.e2e
def test_docker_compose_config_passes():
    command = compose_command()
    require(command is not None, "no docker compose client (apt-get install docker-compose)")
    done = subprocess.run([*command, "-f", str(REPO / "docker-compose.yml"), "config", "--quiet"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr


@pytest.mark.e2e
def test_docker_compose_config_refuses_a_broken_file(tmp_path):
    """The check above can fail: the same client refuses a service with a misspelt key."""
    command = compose_command()
    require(command is not None, "no docker compose client (apt-get install docker-compose)")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((REPO / "docker-compose.yml").read_text().replace("services:\n", "services:\n  oops:\n    imagee: x\n", 1))
    done = subprocess.run([*command, "-f", str(broken), "--project-directory", str(REPO), "config", "--quiet"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode != 0 and "imagee" in done.stderr, done.stderr


def test_every_package_ships_in_the_wheel():
    """pyproject lists packages explicitly (migrations/ is mapped into the package), so a new
    subpackage missing from the list would work in a checkout and be absent from the Docker image."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "monitor").rglob("__init__.py")}
    found |= {"monitor.migrations", "monitor.migrations.versions"}
    assert found <= listed, f"missing from [tool.setuptools] packages: {sorted(found - listed)}"
