"""From what a discovery source said to targets: pure parsers, no I/O.

The formats are Prometheus's, read as Prometheus reads them, with one deliberate difference: a
target that is not `host:port` rejects the whole file or answer (the source keeps its last good
list and reports which target was bad), where Prometheus would drop just that target when it
builds its scrape targets. A file with one mangled line is most often a generator bug that mangled
others too, and keeping the last good list is what the operator asked of a failing source.
Structural errors (not a list, a group that is not a mapping, a bad label name, unknown keys in
YAML) reject the whole file in Prometheus too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

SOURCES = ("static", "file", "http", "dns", "prometheus")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOST = re.compile(r"^(?:\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|([A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})))$")
_GROUP_KEYS = frozenset(("targets", "labels"))
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~20x faster on a large file


class DiscoveryError(ValueError):
    """A source's answer that cannot be used; the message names the source and the bad item."""


@dataclass(frozen=True, slots=True)
class DiscoveredTarget:
    """One instance as a discovery source gave it, in the form the scraper takes.

    `url` is `scheme://host:port` (the static `targets` entry as written, for `static`);
    `metrics_path` is the group's `__metrics_path__` when it set one (None: the pool's default);
    `labels` are the group's labels without the internal `__*` ones.
    """

    url: str
    address: str  # host:port, the instance's name in the API, NGINX and traces
    source: str  # one of SOURCES
    metrics_path: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


def split_host_port(value: Any) -> tuple[str, int] | None:
    """(host, port) of `host:port` / `[v6]:port` (host lower-cased, as URLs compare), or None."""
    if not isinstance(value, str) or len(value) > 300:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536:
        return None
    match = _HOST.match(host)
    if match is None or (match.group(2) is not None and ":" in host):
        return None
    return (match.group(1) or match.group(2)).lower(), int(port)


def address_of(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def target(host: str, port: int, source: str, *, scheme: str = "http", metrics_path: str | None = None,
           labels: Mapping[str, str] | None = None) -> DiscoveredTarget:
    address = address_of(host, port)
    return DiscoveredTarget(f"{scheme}://{address}", address, source, metrics_path, labels if labels is not None else {})


def load_document(data: bytes, name: str, where: str) -> tuple[Any, bool]:
    """The decoded content of a file_sd file (by its extension) or http_sd answer (JSON), and
    whether it was YAML (YAML groups are read strictly, as Prometheus's UnmarshalStrict does)."""
    is_yaml = name.endswith((".yml", ".yaml"))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DiscoveryError(f"{where}: not UTF-8 (byte {exc.start})") from None
    try:
        if is_yaml:
            return yaml.load(text, Loader=_YAML_LOADER), True  # noqa: S506 - a safe loader
        return json.loads(text), False
    except yaml.YAMLError as exc:
        raise DiscoveryError(f"{where}: not valid YAML: {str(exc)[:300]}") from None
    except ValueError as exc:
        raise DiscoveryError(f"{where}: not valid JSON: {exc}") from None


def parse_target_groups(data: Any, source: str, where: str, *, default_scheme: str = "http",
                        max_targets: int = 10_000, strict: bool = False,
                        allow_null: bool = False) -> list[DiscoveredTarget]:
    """Targets of a Prometheus target-group list (`file_sd` and `http_sd`).

    `where` names the source in errors (`file /etc/x/chat.json`); every error names the group and
    target. A target listed twice (in one group or two) is one target, the first one's labels kept.
    """
    if data is None and allow_null:  # an empty YAML file: no groups, as in Prometheus
        return []
    if not isinstance(data, list):
        raise DiscoveryError(f"{where}: expected a list of target groups, got {_kind(data)}")
    out: dict[str, DiscoveredTarget] = {}
    count = 0
    for i, group in enumerate(data):
        if not isinstance(group, dict):
            raise DiscoveryError(f"{where}: group {i}: expected a mapping with targets and labels, got {_kind(group)}")
        if strict and (extra := set(group) - _GROUP_KEYS):
            raise DiscoveryError(f"{where}: group {i}: unknown key {sorted(map(str, extra))[0]!r} (targets, labels)")
        targets = group.get("targets")
        if targets is None:
            targets = []
        if not isinstance(targets, list):
            raise DiscoveryError(f"{where}: group {i}: targets must be a list of host:port, got {_kind(targets)}")
        scheme, metrics_path, labels = _group_labels(group.get("labels"), f"{where}: group {i}", default_scheme)
        count += len(targets)
        if count > max_targets:
            raise DiscoveryError(f"{where}: more than {max_targets} targets (discovery.max_targets); "
                                 f"{count} by group {i} of {len(data)}")
        for j, value in enumerate(targets):
            parsed = split_host_port(value)
            if parsed is None:
                raise DiscoveryError(f"{where}: group {i}: targets[{j}] {_show(value)} is not host:port "
                                     "(e.g. 10.0.0.11:8000; no scheme or path: use the __scheme__ and "
                                     "__metrics_path__ labels)")
            found = target(*parsed, source, scheme=scheme, metrics_path=metrics_path, labels=labels)
            out.setdefault(found.address, found)
    return list(out.values())


def _group_labels(labels: Any, where: str, default_scheme: str) -> tuple[str, str | None, dict[str, str]]:
    """(scheme, metrics_path, public labels) of a group; one dict shared by all its targets."""
    if labels is None:
        return default_scheme, None, {}
    if not isinstance(labels, dict):
        raise DiscoveryError(f"{where}: labels must be a mapping of names to strings, got {_kind(labels)}")
    public: dict[str, str] = {}
    for name, value in labels.items():
        if not isinstance(name, str) or not _LABEL_NAME.match(name):
            raise DiscoveryError(f"{where}: label name {_show(name)} is not a valid label name")
        if not isinstance(value, str):
            raise DiscoveryError(f"{where}: label {name}: value must be a string, got {_kind(value)}")
        if not name.startswith("__"):
            public[name] = value
    scheme = labels.get("__scheme__", default_scheme)
    if scheme not in ("http", "https"):
        raise DiscoveryError(f"{where}: label __scheme__ {_show(scheme)} is not http or https")
    metrics_path = labels.get("__metrics_path__")
    if metrics_path is not None and (not metrics_path.startswith("/") or any(c in metrics_path for c in " \r\n#")):
        raise DiscoveryError(f"{where}: label __metrics_path__ {_show(metrics_path)} is not an absolute path")
    return scheme, metrics_path, public


# --- Prometheus's active targets -----------------------------------------------------------------

Matcher = tuple[str, str, str]  # (label, operator, value), as monitor.settings.discovery.parse_selector gives


def compile_matchers(matchers: Sequence[Matcher]) -> list[tuple[str, str, Any]]:
    """Regex matchers compiled fully anchored, as PromQL anchors them."""
    return [(name, op, re.compile(f"(?:{value})\\Z", re.DOTALL) if op in ("=~", "!~") else value)
            for name, op, value in matchers]


def matches(compiled: Sequence[tuple[str, str, Any]], labels: Mapping[str, Any],
            discovered: Mapping[str, Any]) -> bool:
    """PromQL matcher semantics (a missing label is the empty string). Names starting with `__`
    are looked up in the discovered labels (`__meta_kubernetes_pod_label_app`), the rest in the
    target's labels after relabelling (`job`, `instance`)."""
    for name, op, value in compiled:
        actual = (discovered if name.startswith("__") else labels).get(name, "")
        if not isinstance(actual, str):
            actual = str(actual)
        if op == "=":
            ok = actual == value
        elif op == "!=":
            ok = actual != value
        elif op == "=~":
            ok = value.match(actual) is not None
        else:
            ok = value.match(actual) is None
        if not ok:
            return False
    return True


def parse_active_targets(answer: Any, where: str, compiled: Sequence[tuple[str, str, Any]], *,
                         max_targets: int = 10_000) -> list[DiscoveredTarget]:
    """Targets from a Prometheus `/api/v1/targets?state=active` answer that match the selector.

    Scheme, address and path come from `scrapeUrl` (what Prometheus itself scrapes, after
    relabelling); the labels are the target's `labels` without the `__*` ones. `health` is not
    used: whether an instance is healthy is this monitor's own judgement.
    """
    if not isinstance(answer, dict):
        raise DiscoveryError(f"{where}: not a Prometheus API answer ({_kind(answer)})")
    if answer.get("status") != "success":
        detail = ": ".join(str(p) for p in (answer.get("errorType"), answer.get("error")) if p)
        raise DiscoveryError(f"{where}: status {_show(answer.get('status'))}: {detail[:300] or 'no error given'}")
    data = answer.get("data")
    active = data.get("activeTargets") if isinstance(data, dict) else None
    if not isinstance(active, list):
        raise DiscoveryError(f"{where}: answer has no data.activeTargets list")
    out: dict[str, DiscoveredTarget] = {}
    for i, item in enumerate(active):
        if not isinstance(item, dict):
            raise DiscoveryError(f"{where}: activeTargets[{i}] is {_kind(item)}, not an object")
        labels = item.get("labels")
        discovered = item.get("discoveredLabels") or {}
        if not isinstance(labels, dict) or not isinstance(discovered, dict):
            raise DiscoveryError(f"{where}: activeTargets[{i}]: labels and discoveredLabels must be objects")
        if not matches(compiled, labels, discovered):
            continue
        scrape_url = item.get("scrapeUrl")
        parts = urlsplit(scrape_url) if isinstance(scrape_url, str) else None
        try:
            port = parts.port if parts is not None else None
        except ValueError:
            port = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise DiscoveryError(f"{where}: activeTargets[{i}]: scrapeUrl {_show(scrape_url)} is not an http(s) URL")
        port = port or (443 if parts.scheme == "https" else 80)
        public = {k: v for k, v in labels.items() if not k.startswith("__") and isinstance(v, str)}
        found = target(parts.hostname.lower(), port, "prometheus", scheme=parts.scheme,
                       metrics_path=parts.path or None, labels=public)
        out.setdefault(found.address, found)
        if len(out) > max_targets:
            raise DiscoveryError(f"{where}: more than {max_targets} matching targets (discovery.max_targets); "
                                 "narrow the selector")
    return list(out.values())


def _kind(value: Any) -> str:
    return "null" if value is None else {dict: "a mapping", list: "a list", str: "a string"}.get(
        type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
