"""The four discovery mechanisms, by the `type` of a `pools[].discovery` item: each refresh reads
its source, bounded in size and time, and either replaces the source's target list or keeps the
last good one and says why (`source`: what they share; `file_sd`, `http_sd`, `dns_sd`: one each).
"""

from __future__ import annotations

from monitor.collect.discovery.dns_sd import DnsSource
from monitor.collect.discovery.file_sd import FileSource
from monitor.collect.discovery.http_sd import HttpSource, PrometheusTargetsSource
from monitor.collect.discovery.source import Source, SourceStatus
from monitor.settings.discovery import DiscoveryConfig, DiscoverySettings

__all__ = ["DnsSource", "FileSource", "HttpSource", "PrometheusTargetsSource", "Source", "SourceStatus",
           "make_source"]

_KINDS: dict[str, type[Source]] = {"file": FileSource, "http": HttpSource, "dns": DnsSource,
                                   "prometheus": PrometheusTargetsSource}


def make_source(pool: str, index: int, config: DiscoveryConfig, settings: DiscoverySettings) -> Source:
    return _KINDS[config.type](pool, index, config, settings)
