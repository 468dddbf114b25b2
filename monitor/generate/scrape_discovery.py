"""The generated prometheus.yml follows the pools' discovery: file_sd, http_sd and dns_sd mirrored.

A pool whose members come from `pools[].discovery` has no `targets` to list under
`static_configs`, so without this its instances were never scraped by the generated config: every
rule selecting `job="vllm"` and its `pool` saw nothing, silently. Prometheus can run three of our
four discovery mechanisms itself (they are Prometheus's, with its defaults), so each such source
becomes the same `*_sd_configs` entry in a scrape job that sets `pool` (and `job="vllm"`) by
relabelling, exactly as the static job's labels do. What cannot be mirrored, or not exactly, is a
warning in words (`warnings`), never a silent gap:

* `type: prometheus` (another Prometheus's active targets): nothing to mirror; that Prometheus
  already scrapes them, so the user adds the `pool` label there or a job of their own;
* a `file` glob with a wildcard outside the file name (Prometheus takes `*` only in the last part);
* a relative `file` glob: slo-monitor reads it from its working directory, Prometheus from the
  directory of its config file; written absolute when the working directory is known;
* `http` credentials (a bearer token, a password in the URL): never written into prometheus.yml,
  read by Prometheus from a file the warning names; custom `headers` (Prometheus 2.x cannot send
  them on http_sd);
* `discovery.nameservers`: Prometheus's dns_sd asks its host's resolver, nothing else.

Pure functions over the config (no file or network access); `warnings` is what both `generate`
and a config check can print.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import monitor.generate.expressions as q
from monitor.config import Config, PoolConfig
from monitor.settings.discovery import (
    DnsDiscovery,
    FileDiscovery,
    HttpDiscovery,
    PrometheusDiscovery,
)
from monitor.units import redact_url

# Prometheus's own check of a file_sd name (discovery/file: patFileSDName): a `*` only in the last
# path element, and a known extension; anything else fails to load.
PROMETHEUS_FILE_SD_NAME = re.compile(r"^[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)$")
# where the written config tells Prometheus to read a discovery credential from (never the secret itself)
SECRETS_DIR = "/etc/prometheus/secrets"


@dataclass
class Mirrored:
    """The scrape jobs that mirror the config's discovery, and what could not be mirrored, in words."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _secret_file(pool: str, index: int, what: str) -> str:
    return f"{SECRETS_DIR}/slo-monitor-{pool}-discovery-{index}.{what}"  # a pool name is [A-Za-z0-9_.-]


def _file_sd(pool: str, index: int, source: FileDiscovery, working_dir: str | None,
             warnings: list[str]) -> dict[str, Any] | None:
    files = []
    for pattern in source.files:
        if not PROMETHEUS_FILE_SD_NAME.match(pattern):
            warnings.append(
                f"pool {pool}: discovery[{index}] file glob {pattern!r} has a wildcard outside the file name, "
                "which Prometheus's file_sd refuses; it is left out of alerts/prometheus.yml: list the "
                "directories one by one (e.g. /etc/targets/a/*.json, /etc/targets/b/*.json) in the config")
            continue
        if not os.path.isabs(pattern):
            if working_dir is not None:
                absolute = os.path.normpath(os.path.join(working_dir, pattern))
                warnings.append(
                    f"pool {pool}: discovery[{index}] file glob {pattern!r} is relative: slo-monitor reads it from "
                    "its working directory, Prometheus from the directory of its config file, so "
                    f"alerts/prometheus.yml names it {absolute!r} (this command's working directory); change it "
                    "there if Prometheus runs elsewhere, or give an absolute path in the config")
                pattern = absolute
            else:
                warnings.append(
                    f"pool {pool}: discovery[{index}] file glob {pattern!r} is relative: Prometheus reads it from "
                    "the directory of its config file (alerts/), slo-monitor from its working directory; give an "
                    "absolute path in the config")
        files.append(pattern)
    if not files:
        return None
    return {"files": files, "refresh_interval": q.duration(source.refresh)}


def _http_sd(pool: str, index: int, source: HttpDiscovery, warnings: list[str]) -> dict[str, Any]:
    parts = urlsplit(source.url)
    entry: dict[str, Any] = {}
    url = source.url
    if "@" in parts.netloc:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        url = urlunsplit(parts._replace(netloc=hostport))
        entry["url"] = url
        auth: dict[str, Any] = {"username": unquote(user)}
        if has_password:
            secret = _secret_file(pool, index, "password")
            auth["password_file"] = secret
            warnings.append(
                f"pool {pool}: discovery[{index}] http {redact_url(source.url)} has a password in its URL; "
                f"alerts/prometheus.yml reads it from {secret}: write the password there (readable by Prometheus)")
        entry["basic_auth"] = auth
    else:
        entry["url"] = url
    entry["refresh_interval"] = q.duration(source.refresh)
    if source.bearer_token and "basic_auth" in entry:
        # our HTTP client lets a URL's credentials replace the bearer token, and Prometheus takes one of the two
        warnings.append(
            f"pool {pool}: discovery[{index}] http {redact_url(source.url)} has both credentials in its URL and a "
            "bearer_token; the URL's (basic auth) are the ones sent, by slo-monitor and by alerts/prometheus.yml; "
            "drop one of them from the config")
    elif source.bearer_token:
        secret = _secret_file(pool, index, "token")
        entry["authorization"] = {"type": "Bearer", "credentials_file": secret}
        warnings.append(
            f"pool {pool}: discovery[{index}] http {redact_url(source.url)} sends a bearer_token; alerts/prometheus.yml "
            f"does not hold it but reads it from {secret}: write the token there (readable by Prometheus)")
    if source.headers:
        warnings.append(
            f"pool {pool}: discovery[{index}] http {redact_url(source.url)} sends headers "
            f"{', '.join(sorted(source.headers))}, which alerts/prometheus.yml does not (Prometheus 2.x's http_sd "
            "cannot; from 2.55 add them under `http_headers` of that http_sd_configs entry)")
    return entry


def _dns_sd(source: DnsDiscovery) -> dict[str, Any]:
    entry: dict[str, Any] = {"names": list(source.names), "type": source.record}
    if source.port is not None:
        entry["port"] = source.port
    entry["refresh_interval"] = q.duration(source.refresh)
    return entry


def _prometheus_warning(pool: str, index: int, source: PrometheusDiscovery) -> str:
    return (f"pool {pool}: discovery[{index}] reads the active targets of the Prometheus at "
            f"{redact_url(source.url)} ({source.selector}), which alerts/prometheus.yml cannot mirror: that "
            f'Prometheus already scrapes them, so give its scrape job the labels job="{q.VLLM_JOB}" and '
            f'pool="{pool}" (relabel_configs: [{{target_label: pool, replacement: "{pool}"}}]) and load the '
            "rules there, or add a scrape job of your own for them with those labels; otherwise the pool's "
            "rules and panels see no series")


def _pool_jobs(pool: PoolConfig, config: Config, working_dir: str | None, timeout: str,
               out: Mirrored) -> None:
    """One job per scheme of the pool's mirrored sources (Prometheus sets the default scheme per job;
    a group's `__scheme__` and `__metrics_path__` labels still override it per target, as ours do)."""
    by_scheme: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for index, source in enumerate(pool.discovery):
        if isinstance(source, FileDiscovery):
            entry = _file_sd(pool.name, index, source, working_dir, out.warnings)
            if entry is not None:
                by_scheme[source.scheme]["file_sd_configs"].append(entry)
        elif isinstance(source, HttpDiscovery):
            by_scheme[source.scheme]["http_sd_configs"].append(_http_sd(pool.name, index, source, out.warnings))
        elif isinstance(source, DnsDiscovery):
            by_scheme[source.scheme]["dns_sd_configs"].append(_dns_sd(source))
        else:
            out.warnings.append(_prometheus_warning(pool.name, index, source))
    for scheme in sorted(by_scheme):
        # `/` is in no pool name, so these never clash with each other or with the static jobs
        name = f"{q.VLLM_JOB}-discovery/{pool.name}" + ("" if scheme == "http" else f"/{scheme}")
        job: dict[str, Any] = {"job_name": name, "scrape_timeout": timeout}
        if config.scrape.metrics_path != "/metrics":
            job["metrics_path"] = config.scrape.metrics_path
        if scheme != "http":
            job["scheme"] = scheme
        for kind in ("file_sd_configs", "http_sd_configs", "dns_sd_configs"):
            if by_scheme[scheme][kind]:
                job[kind] = by_scheme[scheme][kind]
        # after the groups' own labels: a group labelled pool= or job= cannot move its targets
        job["relabel_configs"] = [{"target_label": "pool", "replacement": pool.name},
                                  {"target_label": "job", "replacement": q.VLLM_JOB}]
        out.jobs.append(job)


def mirror(config: Config, *, timeout: str, working_dir: str | None = None) -> Mirrored:
    """Scrape jobs for every pool's file, http and dns discovery, and the warnings for what they lack.

    `timeout` is the jobs' scrape_timeout (the static vLLM job's); `working_dir` is the directory a
    relative file glob is read from (slo-monitor's working directory), None when unknown.
    """
    out = Mirrored()
    for pool in config.pools:
        _pool_jobs(pool, config, working_dir, timeout, out)
    dns_pools = [p.name for p in config.pools if any(isinstance(s, DnsDiscovery) for s in p.discovery)]
    if dns_pools and config.discovery.nameservers:
        out.warnings.append(
            f"discovery.nameservers ({', '.join(config.discovery.nameservers)}) is not in alerts/prometheus.yml: "
            f"Prometheus's dns_sd asks its host's resolver (/etc/resolv.conf) for pool(s) {', '.join(dns_pools)}; "
            "make sure that resolver answers the same names")
    return out


def warnings(config: Config, working_dir: str | None = None) -> list[str]:
    """What the generated prometheus.yml cannot follow of the config's discovery, one sentence each
    (empty when it mirrors everything): for `generate` to print, and for a config check."""
    return mirror(config, timeout="10s", working_dir=working_dir).warnings


__all__ = ["PROMETHEUS_FILE_SD_NAME", "SECRETS_DIR", "Mirrored", "mirror", "warnings"]
