"""Settings of target discovery: the `pools[].discovery` list and the top-level `discovery` section.

The four mechanisms and their defaults are Prometheus's (`file_sd`, `http_sd`, `dns_sd` and its
active targets), so a fleet already described for Prometheus needs no second description. Every
network read and every file read has a size and a time bound here, because a discovery source is
input we do not control: a file generator that loops, an endpoint that hangs.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from monitor.settings.base import HeaderMap, HeaderStr, Section
from monitor.units import HttpUrl, Interval, Size, Timeout

DEFAULT_TIMEOUT = 10.0  # per refresh of a network source, when the item does not say (capped by its refresh)


# PromQL label matchers, the same grammar as `source.selector`: pasted nowhere, but matched by us
# against each target's labels, so it must be only matchers.
_MATCHER = r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
_SELECTOR = re.compile(rf"{_MATCHER}(?:,{_MATCHER})*,?\s*")
_ONE_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")\s*(?:,|$)')


def _unquote(literal: str) -> str:
    """A PromQL double-quoted string: Go's escapes, of which JSON's are a subset (the rest as Python reads them)."""
    try:
        return json.loads(literal)
    except ValueError:
        try:
            value = ast.literal_eval(literal)
        except (ValueError, SyntaxError):
            raise ValueError(f"bad string literal {literal}") from None
        if not isinstance(value, str):
            raise ValueError(f"bad string literal {literal}") from None
        return value


def parse_selector(text: str) -> list[tuple[str, str, str]]:
    """(label, operator, value) of each matcher in `job="vllm", env=~"prod|canary"`.

    Regexes are compiled here so that a bad one is a config error, not a failure at every refresh.
    """
    if not _SELECTOR.fullmatch(text):
        raise ValueError('must be PromQL label matchers separated by commas, e.g. job="vllm", env=~"prod|canary"')
    matchers = []
    for match in _ONE_MATCHER.finditer(text):
        name, op, literal = match.groups()
        value = _unquote(literal)
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{name}{op}{literal}: bad regular expression: {exc}") from None
        matchers.append((name, op, value))
    return matchers


class _Network(Section):
    """What every polled network source shares: how often, how long at most, how much at most."""

    refresh: Interval
    timeout: Timeout | None = Field(default=None, description=f"per refresh; default min({DEFAULT_TIMEOUT:g}s, refresh)")

    @property
    def timeout_s(self) -> float:
        return self.timeout if self.timeout is not None else min(DEFAULT_TIMEOUT, self.refresh)

    @model_validator(mode="after")
    def _timeout_fits(self) -> Any:
        if self.timeout is not None and self.timeout > self.refresh:
            raise ValueError("timeout must not exceed refresh (refreshes of one source would overlap)")
        return self


class _Http(_Network):
    headers: HeaderMap = Field(default_factory=dict, description="sent with every request, e.g. X-Scope-OrgID")
    bearer_token: HeaderStr = Field(default=None, description="sent as Authorization: Bearer")


class FileDiscovery(Section):
    """Prometheus `file_sd`: JSON or YAML lists of target groups, matched by globs.

    Files are polled for changes (mtime, size, inode) every scrape interval and re-read every
    `refresh` regardless, as Prometheus re-reads them every `refresh_interval`.
    """

    type: Literal["file"]
    files: list[str] = Field(min_length=1, description="globs ending in .json, .yml or .yaml")
    refresh: Interval = 300.0
    scheme: Literal["http", "https"] = Field(default="http", description="when a group has no __scheme__ label")
    max_size: Size = Field(default=16 * 2**20, description="a larger file is refused (its last good list is kept)")

    @field_validator("files")
    @classmethod
    def _known_formats(cls, files: list[str]) -> list[str]:
        for i, pattern in enumerate(files):
            if not re.search(r"\.(json|ya?ml)$", pattern):
                raise ValueError(f"files[{i}]: {pattern!r} must end in .json, .yml or .yaml (as Prometheus's file_sd)")
        return files


class HttpDiscovery(_Http):
    """Prometheus `http_sd`: GET `url` every `refresh`, a JSON list of target groups."""

    type: Literal["http"]
    url: HttpUrl
    refresh: Interval = 60.0
    scheme: Literal["http", "https"] = Field(default="http", description="when a group has no __scheme__ label")
    max_size: Size = Field(default=16 * 2**20, description="a larger answer is refused (the last good list is kept)")


class DnsDiscovery(_Network):
    """Prometheus `dns_sd`: A, AAAA or SRV records of `names` every `refresh`.

    SRV (Prometheus's default) records carry their own port; A and AAAA need `port`. A Kubernetes
    headless Service answers A records for its ready pods.
    """

    type: Literal["dns"]
    names: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(min_length=1)
    record: Literal["SRV", "A", "AAAA"] = "SRV"
    port: int | None = Field(default=None, ge=1, le=65535)
    refresh: Interval = 30.0
    scheme: Literal["http", "https"] = "http"

    @field_validator("record", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _port_matches_record(self) -> DnsDiscovery:
        if self.record in ("A", "AAAA") and self.port is None:
            raise ValueError(f"record {self.record} needs port (SRV records carry their own)")
        if self.record == "SRV" and self.port is not None:
            raise ValueError("port is only used with record A or AAAA (SRV records carry their own)")
        return self


class PrometheusDiscovery(_Http):
    """The active targets of a Prometheus (`/api/v1/targets?state=active`) that match `selector`:
    where Prometheus already runs `kubernetes_sd` (or the Operator's PodMonitors), its view of the
    fleet, without a Kubernetes client or RBAC of our own."""

    type: Literal["prometheus"]
    url: HttpUrl
    selector: str = Field(description='PromQL label matchers on the targets\' labels, e.g. job="vllm"; '
                                      "names starting with __ match the discovered labels (__meta_*)")
    refresh: Interval = 30.0
    max_size: Size = Field(default=64 * 2**20, description="the targets list of a large Prometheus is big")

    @field_validator("selector")
    @classmethod
    def _matchers_only(cls, value: str) -> str:
        parse_selector(value)
        return value.strip().rstrip(",").strip()


DiscoveryConfig = Annotated[
    FileDiscovery | HttpDiscovery | DnsDiscovery | PrometheusDiscovery,
    Field(discriminator="type"),
]


def _parse_nameserver(value: Any) -> str:
    """An IP literal and a port: dnspython sends to addresses, and a name here would need a resolver itself."""
    if not isinstance(value, str):
        raise ValueError(f"not HOST:PORT: {value!r}")
    match = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})|([0-9A-Fa-f:.]+)", value.strip())
    if not match:
        raise ValueError(f"not IP:PORT (or [IPv6]:PORT): {value!r}")
    host = match.group(1) or match.group(3) or match.group(5)
    port = int(match.group(2) or match.group(4) or 53)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not an IP address: {host!r} (a nameserver is given by address, e.g. 10.96.0.10:53)") from None
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {value!r}")
    return value.strip()


class DiscoverySettings(Section):
    """The top-level `discovery` section: what all pools' discovery shares."""

    nameservers: list[str] = Field(
        default_factory=list, description='"IP:PORT" (or "[IPv6]:PORT", or a bare IP for port 53); default: the system resolver')
    max_targets: int = Field(default=10_000, ge=1, le=1_000_000,
                             description="per source and refresh; a larger list is refused (the last good list is kept)")

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, values: list[str]) -> list[str]:
        return [_parse_nameserver(v) for v in values]


def nameserver_address(value: str) -> tuple[str, int]:
    """(ip, port) of a validated `nameservers` entry."""
    value = value.strip()
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
        return host, int(port)
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, 53
