"""The configuration around the rules and dashboards: Prometheus scrape config, Alertmanager, Grafana.

The scrape config is what makes the rules work: vLLM's series carry `model_name` but no pool, so
each pool's targets get a `pool` label here, from the same config the service reads. slo-monitor is
scraped with `honor_labels: true` because its series name vLLM instances in their own `instance`
label, which must not be overwritten by the service's address.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import urlsplit

import monitor.generate.expressions as q
from monitor.config import Config, instance_address, parse_duration
from monitor.generate.rules import BURN_ALERT
from monitor.generate.scrape_discovery import mirror


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def gpu_pools(config: Config) -> dict[str, str | None]:
    """GPU exporter URL -> the pool whose servers run on the same host, when exactly one does.

    NVML and dcgm-exporter see the GPUs of their own node, so an exporter beside one pool's servers
    reports that pool's GPUs; on a node shared by several pools the GPU cannot be attributed from the
    config alone and is left without a pool (it still shows under the `All` pool filter).
    """
    pools_by_host: dict[str, set[str]] = defaultdict(set)
    for pool in config.pools:
        for target in pool.targets:
            pools_by_host[_host(target)].add(pool.name)
    out: dict[str, str | None] = {}
    for url in config.gpu.exporters:
        owners = pools_by_host.get(_host(url), set())
        out[url] = next(iter(owners)) if len(owners) == 1 else None
    return out


def _static(urls: list[str], labels: dict[str, str], default_path: str) -> tuple[tuple[str, str], dict[str, Any]]:
    first = urlsplit(urls[0])
    group: dict[str, Any] = {"targets": [instance_address(u) for u in urls]}
    if labels:
        group["labels"] = labels
    return (first.scheme, first.path or default_path), group


def _jobs(name: str, groups: list[tuple[tuple[str, str], dict[str, Any]]], extra: dict[str, Any]) -> list[dict[str, Any]]:
    """One scrape job per (scheme, metrics path), since Prometheus sets both per job; every job of
    a kind carries the same `job` label (relabelled), so `up{job="vllm"}` in the rules sees them all."""
    by_kind: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for kind, group in groups:
        by_kind[kind].append(group)
    jobs = []
    for i, ((scheme, path), static) in enumerate(sorted(by_kind.items())):
        job: dict[str, Any] = {"job_name": name if i == 0 else f"{name}-{i}"}
        job.update(extra)
        if path != "/metrics":
            job["metrics_path"] = path
        if scheme != "http":
            job["scheme"] = scheme
        job["static_configs"] = static
        if i:
            job["relabel_configs"] = [{"target_label": "job", "replacement": name}]
        jobs.append(job)
    return jobs


def prometheus_config(config: Config, rule_files: list[str], *, scrape_interval: str = "15s",
                      evaluation_interval: str = "1m", service_target: str | None = None,
                      working_dir: str | None = None) -> dict[str, Any]:
    """A complete prometheus.yml for the config's fleet, the service and the GPU exporters: job
    `vllm` with a `pool` label per pool (what every rule and panel groups by), `slo-monitor`, `gpu`.

    Pools found by discovery get jobs running the same file/http/dns discovery, relabelled to the
    same `job` and `pool` (monitor.generate.scrape_discovery; `working_dir` anchors relative file
    globs, as slo-monitor's working directory does)."""
    vllm_groups = []
    for pool in config.pools:
        by_kind: dict[tuple[str, str], list[str]] = defaultdict(list)
        for url in pool.targets:
            parts = urlsplit(url)
            path = (parts.path.rstrip("/") + config.scrape.metrics_path) if parts.path.strip("/") else \
                config.scrape.metrics_path
            by_kind[(parts.scheme, path)].append(url)
        for (_, path), urls in sorted(by_kind.items()):
            (scheme, _), group = _static(urls, {"pool": pool.name}, path)
            vllm_groups.append(((scheme, path), group))
    # the service's own timeout, so Prometheus gives up on a hung server as soon as slo-monitor does
    timeout = q.duration(min(config.scrape.timeout, parse_duration(scrape_interval)))
    scrape: list[dict[str, Any]] = _jobs(q.VLLM_JOB, vllm_groups, {"scrape_timeout": timeout})
    scrape.extend(mirror(config, timeout=timeout, working_dir=working_dir).jobs)
    listen = service_target or config.api.listen.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]")
    scrape.append({"job_name": q.SERVICE_JOB, "honor_labels": True, "static_configs": [{"targets": [listen]}]})
    if config.gpu.exporters:
        gpu_groups = []
        owners = gpu_pools(config)
        for pool_name in sorted({p or "" for p in owners.values()}):
            urls = [u for u, p in owners.items() if (p or "") == pool_name]
            gpu_groups.append(_static(urls, {"pool": pool_name} if pool_name else {}, "/metrics"))
        scrape.extend(_jobs(q.GPU_JOB, gpu_groups, {}))
    out: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": rule_files,
    }
    if config.alertmanager.url:
        parts = urlsplit(config.alertmanager.url)
        am: dict[str, Any] = {"static_configs": [{"targets": [instance_address(config.alertmanager.url)]}]}
        if parts.scheme != "http":
            am["scheme"] = parts.scheme
        if parts.path.strip("/"):
            am["path_prefix"] = parts.path
        out["alerting"] = {"alertmanagers": [am]}
    out["scrape_configs"] = scrape
    return out


def alertmanager_config() -> dict[str, Any]:
    """Pages to the pager, tickets to the ticket queue, and a page silencing the ticket of the same SLO.

    Burn-rate pages and tickets fire together at the start of a fast burn (the ticket's windows see
    the same errors); without the inhibition on-call gets both. The rule matches the labels that the
    generated rules and slo-monitor's own Alertmanager client both send, so it works for either.
    """
    return {
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "slo", "pool", "model_name"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {"matchers": ['severity="page"'], "receiver": "pager", "group_wait": "10s", "repeat_interval": "1h"},
                {"matchers": ['severity="ticket"'], "receiver": "tickets", "repeat_interval": "24h"},
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": [f'alertname="{BURN_ALERT}"', 'severity="page"'],
                "target_matchers": [f'alertname="{BURN_ALERT}"', 'severity="ticket"'],
                "equal": ["slo", "pool", "model_name"],
            },
            {
                # a whole pool in trouble says more than each of its instances
                "source_matchers": ['alertname="SloMonitorPoolCapacityLow"'],
                "target_matchers": ['alertname=~"SloMonitorInstanceEjected|SloMonitorInstanceDegraded"'],
                "equal": ["pool"],
            },
        ],
        "receivers": [
            {"name": "default"},
            {"name": "pager", "webhook_configs": [{"url": "http://127.0.0.1:9095/page", "send_resolved": True}]},
            {"name": "tickets", "webhook_configs": [{"url": "http://127.0.0.1:9095/ticket", "send_resolved": True}]},
        ],
    }


def grafana_datasource(url: str = "http://127.0.0.1:9090", scrape_interval: str = "15s") -> dict[str, Any]:
    """`timeInterval` is Prometheus's scrape interval: Grafana's `$__rate_interval` is built on it."""
    return {
        "apiVersion": 1,
        "datasources": [{
            "name": "Prometheus",
            "uid": "prometheus",
            "type": "prometheus",
            "access": "proxy",
            "url": url,
            "isDefault": True,
            "jsonData": {"timeInterval": scrape_interval},
        }],
    }


def grafana_dashboard_provider(path: str = "/var/lib/grafana/dashboards/llm-slo-monitor") -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [{
            "name": "llm-slo-monitor",
            "folder": "LLM SLOs",
            "type": "file",
            "disableDeletion": False,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 60,
            "options": {"path": path, "foldersFromFilesStructure": False},
        }],
    }
