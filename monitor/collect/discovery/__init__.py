"""Target discovery: pools whose members come from files, HTTP endpoints, DNS or a Prometheus,
beside (or instead of) static `targets`, as Prometheus users describe their fleets.

`targets` parses (pure), `sources` reads one mechanism each (bounded, keeping the last good list),
`membership` combines them into {pool: {address: DiscoveredTarget}}.
"""

from monitor.collect.discovery.membership import Discovery, Membership, PoolSpec, check_files, merge, static_target
from monitor.collect.discovery.sources import (
    DnsSource,
    FileSource,
    HttpSource,
    PrometheusTargetsSource,
    Source,
    SourceStatus,
    make_source,
)
from monitor.collect.discovery.targets import (
    DiscoveredTarget,
    DiscoveryError,
    Parsed,
    Rejected,
    parse_active_targets,
    parse_target_groups,
    read_active_targets,
    read_target_groups,
)

__all__ = [
    "DiscoveredTarget",
    "Discovery",
    "DiscoveryError",
    "DnsSource",
    "FileSource",
    "HttpSource",
    "Membership",
    "Parsed",
    "PoolSpec",
    "PrometheusTargetsSource",
    "check_files",
    "Rejected",
    "Source",
    "SourceStatus",
    "make_source",
    "merge",
    "parse_active_targets",
    "parse_target_groups",
    "read_active_targets",
    "read_target_groups",
    "static_target",
]
