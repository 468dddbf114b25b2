"""Discovery answers from hostile or broken sources: file_sd and http_sd documents, DNS records and
a Prometheus's active targets. Whatever the document, only `DiscoveryError` escapes a parser, in
bounded time; every target it keeps passes the target grammar and renders as exactly one NGINX
`server host:port;` line; every target it drops has a reason from the fixed set."""

from __future__ import annotations

import re

import dns.name
import dns.rdataclass
import dns.rdatatype
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.SRV import SRV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.act.nginx import UpstreamServer, render_upstream
from monitor.collect.discovery import (
    DiscoveryError,
    Parsed,
    read_active_targets,
    read_target_groups,
)
from monitor.collect.discovery.dns_sd import answer_targets
from monitor.collect.discovery.targets import compile_matchers, load_document
from monitor.units import TARGET_REASONS, is_server_address

FUZZ = settings(max_examples=250, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
target_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="ab09.:[]-_; {}/\n€%", max_size=25),
    st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(["10.0.0.1", "a", "[fd00::1]", "a;}b", "x y", "é"]),
              st.integers(-1, 70000)),
)
label_value = st.one_of(st.text(max_size=20), st.sampled_from(["/metrics", "/metrics€", "/a b", "/\x00", "http", "ftp"]))
groups = st.lists(st.fixed_dictionaries(
    {"targets": st.lists(st.one_of(target_text, json_values), max_size=6)},
    optional={"labels": st.dictionaries(st.sampled_from(["__scheme__", "__metrics_path__", "team", "bad-name", "__x"]),
                                        st.one_of(label_value, json_values), max_size=3)}), max_size=4)


def assert_sound(parsed: Parsed) -> None:
    """Every kept target is in the grammar and renders as one server line; every drop has a known reason."""
    for t in parsed.targets:
        assert is_server_address(t.address) and t.url.split("://", 1)[1] == t.address
        assert t.url.split("://", 1)[0] in ("http", "https")
        assert t.metrics_path is None or all("!" <= c <= "~" for c in t.metrics_path)
    assert len({t.address for t in parsed.targets}) == len(parsed.targets)
    assert all(r.reason in TARGET_REASONS and r.message for r in parsed.rejected)
    block = render_upstream("chat", [UpstreamServer(t.address, "healthy") for t in parsed.targets])
    servers = re.findall(r"^    server ([^\s;]+)[ ;]", block, re.MULTILINE)
    assert servers == (sorted(t.address for t in parsed.targets) or ["127.0.0.1:1"])
    assert "left out" not in block


@FUZZ
@given(st.one_of(json_values, groups), st.booleans())
def test_any_target_group_document_gives_sound_targets_or_a_discovery_error(document, strict):
    try:
        parsed = read_target_groups(document, "file", "file x.json", strict=strict, allow_null=True, max_targets=50)
    except DiscoveryError:
        return
    assert_sound(parsed)


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 st.sampled_from([b"&a [*a, *a]", b"- &t {targets: [*t]}", b"[" * 5000, b"- targets: !!binary aGk=",
                                  b"- {targets: ['a:1'], labels: {__metrics_path__: !!timestamp 2001-12-14}}"])),
       st.sampled_from(["t.json", "t.yml"]))
def test_any_file_sd_bytes_give_sound_targets_or_a_discovery_error(data, name):
    try:
        document, is_yaml = load_document(data, name, f"file {name}")
        parsed = read_target_groups(document, "file", f"file {name}", strict=is_yaml, allow_null=True, max_targets=50)
    except DiscoveryError:
        return
    assert_sound(parsed)


labels_bytes = st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=4)


@FUZZ
@given(st.lists(st.tuples(labels_bytes, st.integers(0, 65535)), max_size=6))
def test_any_srv_answer_gives_sound_targets_or_a_discovery_error(records):
    rdata = []
    for labels, port in records:
        try:
            target = dns.name.Name([*labels, b""])
        except dns.name.NameTooLong:
            continue
        rdata.append(SRV(dns.rdataclass.IN, dns.rdatatype.SRV, 0, 0, port, target))
    try:
        parsed = answer_targets(rdata, dns.rdatatype.SRV, None, "http", "dns SRV _vllm._tcp.x", max_targets=50)
    except DiscoveryError:
        return
    assert_sound(parsed)


def test_a_records_get_the_configured_port_and_a_bad_srv_target_is_dropped_with_its_reason():
    a = [A(dns.rdataclass.IN, dns.rdatatype.A, "10.0.0.1"), A(dns.rdataclass.IN, dns.rdatatype.A, "10.0.0.1")]
    parsed = answer_targets(a, dns.rdatatype.A, 8000, "http", "dns A x", max_targets=10)
    assert [t.address for t in parsed.targets] == ["10.0.0.1:8000"] and [r.reason for r in parsed.rejected] == ["duplicate"]
    srv = [SRV(dns.rdataclass.IN, dns.rdatatype.SRV, 0, 0, 8000, dns.name.from_text("ok.x.")),
           SRV(dns.rdataclass.IN, dns.rdatatype.SRV, 0, 0, 8000, dns.name.Name([b"a;}server{", b""])),
           SRV(dns.rdataclass.IN, dns.rdatatype.SRV, 0, 0, 0, dns.name.from_text("zero.x."))]
    parsed = answer_targets(srv, dns.rdatatype.SRV, None, "http", "dns SRV x", max_targets=10)
    assert [t.address for t in parsed.targets] == ["ok.x:8000"]
    assert [r.reason for r in parsed.rejected] == ["bad_host", "bad_port"]


scrape_url = st.one_of(
    st.text(max_size=40),
    st.builds(lambda s, h, p, path: f"{s}://{h}{p}{path}", st.sampled_from(["http", "https", "ftp", "HTTP"]),
              st.text(alphabet="ab09.:[]-_;{}@%/ ", max_size=20) | st.sampled_from(["10.0.0.1", "[fd00::1]", "a;}b"]),
              st.sampled_from(["", ":80", ":0", ":99999", ":x", ":"]),
              st.text(max_size=15).map(lambda t: "/" + t)),
)
active_item = st.one_of(
    json_values,
    st.fixed_dictionaries({"scrapeUrl": st.one_of(scrape_url, json_values),
                           "labels": st.one_of(st.just({"job": "vllm"}), json_values),
                           "discoveredLabels": st.one_of(st.just({}), json_values)}),
)
answers = st.one_of(
    json_values,
    st.builds(lambda items: {"status": "success", "data": {"activeTargets": items}}, st.lists(active_item, max_size=6)),
)


@FUZZ
@given(answers)
def test_any_prometheus_targets_answer_gives_sound_targets_or_a_discovery_error(answer):
    try:
        parsed = read_active_targets(answer, "prometheus http://p:9090", compile_matchers([("job", "=~", "v.*")]),
                                     max_targets=50)
    except DiscoveryError:
        return
    assert_sound(parsed)
