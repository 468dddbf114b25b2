"""From what a discovery source said to targets: pure parsers, no I/O.

The formats are Prometheus's, read as Prometheus reads them. Every host, port, scheme and path
passes the one target grammar of `monitor.units` (`check_host`, `check_port`, `check_scheme`,
`check_path`), whichever source it came from. A target outside it is dropped with its reason
(`Rejected`: one of `TARGET_REASONS` and a message naming the source and item) and the rest of the
answer is kept: one mangled line must not cost a pool every other member, and the source counts
and logs what it dropped. Structural errors (not a list, a group that is not a mapping, a bad
label name, unknown keys in YAML) still reject the whole file or answer, as in Prometheus: the
source keeps its last good list.
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from monitor.units import (
    TARGET_REASONS,
    TargetRefused,
    address_of,
    check_host,
    check_path,
    check_port,
    check_scheme,
    split_host_port,
)

SOURCES = ("static", "file", "http", "dns", "prometheus")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GROUP_KEYS = frozenset(("targets", "labels"))
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~20x faster on a large file
# a YAML document can alias one list into itself a billion times over; a message shows a bounded part of it
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4

__all__ = ["TARGET_REASONS", "DiscoveredTarget", "DiscoveryError", "Parsed", "Rejected", "address_of",
           "split_host_port", "target"]


class DiscoveryError(ValueError):
    """A source's answer that cannot be used; the message names the source and the bad item."""


@dataclass(frozen=True, slots=True)
class DiscoveredTarget:
    """One instance as a discovery source gave it, in the form the scraper takes.

    `url` is `scheme://host:port` (the static `targets` entry as written, for `static`);
    `metrics_path` is the group's `__metrics_path__` when it set one (None: the pool's default),
    percent-encoded by the grammar;
    `labels` are the group's labels without the internal `__*` ones.
    """

    url: str
    address: str  # host:port, the instance's name in the API, NGINX and traces
    source: str  # one of SOURCES
    metrics_path: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A target dropped from an answer: `reason` one of TARGET_REASONS, `message` names where and what."""

    reason: str
    message: str


@dataclass(slots=True)
class Parsed:
    """What one file or answer gave: the targets kept and those dropped."""

    targets: list[DiscoveredTarget] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def target(host: str, port: int, source: str, *, scheme: str = "http", metrics_path: str | None = None,
           labels: Mapping[str, str] | None = None) -> DiscoveredTarget:
    """A target from parts that already passed the grammar (`check_host`, `check_port`...)."""
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
    except RecursionError:  # [[[[...]]]] nested deeper than the parser recurses
        raise DiscoveryError(f"{where}: nested too deeply") from None


def parse_target_groups(data: Any, source: str, where: str, *, default_scheme: str = "http",
                        max_targets: int = 10_000, strict: bool = False,
                        allow_null: bool = False) -> list[DiscoveredTarget]:
    """The targets `read_target_groups` keeps."""
    return read_target_groups(data, source, where, default_scheme=default_scheme, max_targets=max_targets,
                              strict=strict, allow_null=allow_null).targets


def read_target_groups(data: Any, source: str, where: str, *, default_scheme: str = "http",
                       max_targets: int = 10_000, strict: bool = False, allow_null: bool = False) -> Parsed:
    """Targets of a Prometheus target-group list (`file_sd` and `http_sd`), and those dropped.

    `where` names the source in errors (`file /etc/x/chat.json`); every error names the group and
    target. A target listed twice (in one group or two) is one target, the first one's labels
    kept; the second is counted as a `duplicate`.
    """
    out = Parsed()
    if data is None and allow_null:  # an empty YAML file: no groups, as in Prometheus
        return out
    if not isinstance(data, list):
        raise DiscoveryError(f"{where}: expected a list of target groups, got {_kind(data)}")
    kept: dict[str, DiscoveredTarget] = {}
    count = 0
    for i, group in enumerate(data):
        if not isinstance(group, dict):
            raise DiscoveryError(f"{where}: group {i}: expected a mapping with targets and labels, got {_kind(group)}")
        if strict and (extra := set(group) - _GROUP_KEYS):
            raise DiscoveryError(f"{where}: group {i}: unknown key {min(map(str, extra))!r:.80} (targets, labels)")
        targets = group.get("targets")
        if targets is None:
            targets = []
        if not isinstance(targets, list):
            raise DiscoveryError(f"{where}: group {i}: targets must be a list of host:port, got {_kind(targets)}")
        count += len(targets)
        if count > max_targets:
            raise DiscoveryError(f"{where}: more than {max_targets} targets (discovery.max_targets); "
                                 f"{count} by group {i} of {len(data)}")
        try:
            scheme, metrics_path, labels = _group_labels(group.get("labels"), f"{where}: group {i}", default_scheme)
        except TargetRefused as exc:  # a bad __scheme__ or __metrics_path__: the group's targets go
            out.rejected.extend(Rejected(exc.reason, f"{where}: group {i}: {exc} ({_show(value)} dropped)")
                                for value in targets)
            continue
        for j, value in enumerate(targets):
            try:
                host, port = split_host_port(value)
            except TargetRefused as exc:
                out.rejected.append(Rejected(exc.reason, f"{where}: group {i}: targets[{j}] {exc} (e.g. "
                                                         "10.0.0.11:8000; no scheme or path: use the __scheme__ "
                                                         "and __metrics_path__ labels)"))
                continue
            found = target(host, port, source, scheme=scheme, metrics_path=metrics_path, labels=labels)
            if found.address in kept:
                out.rejected.append(Rejected("duplicate", f"{where}: group {i}: targets[{j}] {found.address} "
                                                          "is listed before; the first one's labels are kept"))
                continue
            kept[found.address] = found
    out.targets = list(kept.values())
    return out


def _group_labels(labels: Any, where: str, default_scheme: str) -> tuple[str, str | None, dict[str, str]]:
    """(scheme, metrics_path, public labels) of a group; one dict shared by all its targets.
    DiscoveryError for a malformed mapping (the whole answer goes), TargetRefused for a
    `__scheme__` or `__metrics_path__` outside the grammar (the group's targets go)."""
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
    try:
        scheme = check_scheme(labels.get("__scheme__", default_scheme))
        metrics_path = labels.get("__metrics_path__")
        if metrics_path is not None:
            metrics_path = check_path(metrics_path)
    except TargetRefused as exc:
        label = "__scheme__" if exc.reason == "bad_scheme" else "__metrics_path__"
        raise TargetRefused(exc.reason, f"label {label}: {exc}") from None
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
    """The targets `read_active_targets` keeps."""
    return read_active_targets(answer, where, compiled, max_targets=max_targets).targets


def read_active_targets(answer: Any, where: str, compiled: Sequence[tuple[str, str, Any]], *,
                        max_targets: int = 10_000) -> Parsed:
    """Targets from a Prometheus `/api/v1/targets?state=active` answer that match the selector.

    Scheme, address and path come from `scrapeUrl` (what Prometheus itself scrapes, after
    relabelling), each through the target grammar; the labels are the target's `labels` without
    the `__*` ones. `health` is not used: whether an instance is healthy is this monitor's own
    judgement. An item that is not an object, or whose scrapeUrl is outside the grammar, is
    dropped with its reason; an answer that is not a successful API answer is refused whole.
    """
    if not isinstance(answer, dict):
        raise DiscoveryError(f"{where}: not a Prometheus API answer ({_kind(answer)})")
    if answer.get("status") != "success":
        detail = ": ".join(_text(p) for p in (answer.get("errorType"), answer.get("error")) if p)
        raise DiscoveryError(f"{where}: status {_show(answer.get('status'))}: {detail[:300] or 'no error given'}")
    data = answer.get("data")
    active = data.get("activeTargets") if isinstance(data, dict) else None
    if not isinstance(active, list):
        raise DiscoveryError(f"{where}: answer has no data.activeTargets list")
    out = Parsed()
    kept: dict[str, DiscoveredTarget] = {}
    for i, item in enumerate(active):
        here = f"{where}: activeTargets[{i}]"
        if not isinstance(item, dict):
            out.rejected.append(Rejected("malformed", f"{here} is {_kind(item)}, not an object"))
            continue
        labels = item.get("labels")
        discovered = item.get("discoveredLabels") or {}
        if not isinstance(labels, dict) or not isinstance(discovered, dict):
            out.rejected.append(Rejected("malformed", f"{here}: labels and discoveredLabels must be objects"))
            continue
        if not matches(compiled, labels, discovered):
            continue
        try:
            found = _scrape_url_target(item.get("scrapeUrl"), labels)
        except TargetRefused as exc:
            out.rejected.append(Rejected(exc.reason, f"{here}: scrapeUrl {exc}"))
            continue
        if found.address in kept:
            out.rejected.append(Rejected("duplicate", f"{here}: {found.address} is listed before"))
            continue
        kept[found.address] = found
        if len(kept) > max_targets:
            raise DiscoveryError(f"{where}: more than {max_targets} matching targets (discovery.max_targets); "
                                 "narrow the selector")
    out.targets = list(kept.values())
    return out


def _scrape_url_target(scrape_url: Any, labels: Mapping[str, Any]) -> DiscoveredTarget:
    if not isinstance(scrape_url, str) or len(scrape_url) > 4096 or any(
            c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in scrape_url):
        raise TargetRefused("malformed", f"{_show(scrape_url)} is not an http(s) URL")
    try:
        parts = urlsplit(scrape_url)
    except ValueError:  # "Invalid IPv6 URL" and the like
        raise TargetRefused("malformed", f"{_show(scrape_url)} is not an http(s) URL") from None
    try:
        check_scheme(parts.scheme)
    except TargetRefused:
        raise TargetRefused("bad_scheme", f"{_show(scrape_url)} is not an http(s) URL") from None
    netloc = parts.netloc.rpartition("@")[2]
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ("" if not rest else None)
    else:
        host, _, port_text = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
        if ":" in host:  # `http://fd00::1:80/`: which colon ends the address? RFC 3986 wants brackets
            raise TargetRefused("bad_host", f"{_show(scrape_url)}: an IPv6 address goes in brackets "
                                            "(http://[fd00::1]:8000/metrics)")
    try:
        host = check_host(host)
    except TargetRefused as exc:
        raise TargetRefused("bad_host", f"{_show(scrape_url)}: {exc}") from None
    if port_text is None:
        raise TargetRefused("bad_port", f"{_show(scrape_url)}: nothing may follow the IPv6 address but :port")
    try:
        port = check_port(port_text) if port_text else (443 if parts.scheme == "https" else 80)
        path = check_path(parts.path) if parts.path else None
    except TargetRefused as exc:
        raise TargetRefused(exc.reason, f"{_show(scrape_url)}: {exc}") from None
    public = {k: v for k, v in labels.items() if isinstance(k, str) and not k.startswith("__") and isinstance(v, str)}
    return target(host, port, "prometheus", scheme=parts.scheme, metrics_path=path, labels=public)


def _kind(value: Any) -> str:
    kinds: dict[type, str] = {dict: "a mapping", list: "a list", str: "a string"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """A bounded repr: YAML aliases can make a small document a huge (or self-containing) object."""
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _show(value)
