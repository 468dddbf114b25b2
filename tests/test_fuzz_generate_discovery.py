"""Hypothesis properties of the discovery `generate` mirrors into prometheus.yml: whatever the pools'
sources, every discovery job labels its targets with its own pool and job="vllm", a secret of the
config never reaches the written file, and the mirroring is a pure function of the config."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from monitor.config import ConfigError, validate
from monitor.generate.configs import prometheus_config
from monitor.generate.scrape_discovery import mirror
from monitor.generate.yaml_text import to_yaml

SLOS = [{"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%"}]
SECRET = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=12, max_size=20)
GLOB = st.builds(lambda head, tail, ext: f"{head}{tail}.{ext}",
                 st.sampled_from(["/sd/", "sd/", "./", "/sd/*/", "", "../x/"]),
                 st.text(alphabet="ab*?[]-_ ", max_size=8), st.sampled_from(["json", "yml", "yaml"]))


@st.composite
def source(draw: st.DrawFn, token: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["file", "http", "dns", "prometheus"]))
    if kind == "file":
        return {"type": "file", "files": draw(st.lists(GLOB, min_size=1, max_size=3)),
                "scheme": draw(st.sampled_from(["http", "https"]))}
    if kind == "http":
        userinfo = draw(st.sampled_from(["", "user@", f"user:{token}@"]))
        out: dict[str, Any] = {"type": "http", "url": f"http://{userinfo}inventory:8080/sd",
                               "scheme": draw(st.sampled_from(["http", "https"]))}
        if draw(st.booleans()):
            out["bearer_token"] = token
        if draw(st.booleans()):
            out["headers"] = {"X-Scope-OrgID": token}
        return out
    if kind == "dns":
        if draw(st.booleans()):
            return {"type": "dns", "names": ["_http._tcp.vllm.svc"]}
        return {"type": "dns", "names": ["vllm.svc"], "record": draw(st.sampled_from(["A", "AAAA"])), "port": 8000}
    return {"type": "prometheus", "url": f"http://admin:{token}@prom:9090", "selector": 'job="vllm"'}


@st.composite
def configs(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    token = draw(SECRET)
    names = draw(st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,8}", fullmatch=True), min_size=1, max_size=3,
                          unique_by=str.lower))
    pools = []
    for i, name in enumerate(names):
        pool: dict[str, Any] = {"name": name, "discovery": draw(st.lists(source(token), min_size=1, max_size=3))}
        if draw(st.booleans()):
            pool["targets"] = [f"http://10.0.0.{i + 1}:8000"]
        pools.append(pool)
    return {"pools": pools, "slos": SLOS}, token


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(configs(), st.sampled_from([None, "/srv/slo-monitor"]))
def test_every_discovery_job_carries_its_pool_and_no_secret_is_written(drawn: tuple[dict[str, Any], str],
                                                                       working_dir: str | None) -> None:
    data, token = drawn
    try:
        config = validate(data).config
    except ConfigError:
        assume(False)
        return
    written = prometheus_config(config, ["*.rules.yml"], working_dir=working_dir)
    text = to_yaml(written)
    assert token not in text
    mirrored = mirror(config, timeout="10s", working_dir=working_dir)
    assert not any(token in w for w in mirrored.warnings)
    names = [j["job_name"] for j in written["scrape_configs"]]
    assert len(names) == len(set(names))
    pools = {p.name for p in config.pools}
    for job in written["scrape_configs"]:
        if any(k in job for k in ("file_sd_configs", "http_sd_configs", "dns_sd_configs")):
            labels = {r["target_label"]: r["replacement"] for r in job["relabel_configs"]}
            assert labels["job"] == "vllm" and labels["pool"] in pools
            for entry in job.get("file_sd_configs", []):
                assert entry["files"]  # a source whose every glob was refused writes no empty entry
    # a pool with a source Prometheus cannot run is said, by name
    for pool in config.pools:
        if any(s.type == "prometheus" for s in pool.discovery):
            assert any(w.startswith(f"pool {pool.name}: ") and "cannot mirror" in w for w in mirrored.warnings)
    assert mirror(config, timeout="10s", working_dir=working_dir) == mirrored
