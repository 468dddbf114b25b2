"""One grammar for targets, whichever way they come in: the config's static `targets`, file_sd,
http_sd, DNS and a Prometheus's active targets all pass `monitor.units`'s host, port, scheme and
path checks, and the NGINX and HAProxy outputs check every server token once more before writing
it. The hostile `scrapeUrl` of issue 19 goes through the real Prometheus discovery source against a
loopback server and on to the rendered upstream file."""

from __future__ import annotations

import asyncio
import json
import re
import textwrap
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.act.haproxy import agent_reply
from monitor.act.nginx import UpstreamServer, render_file, render_upstream
from monitor.cli import main
from monitor.collect.discovery import Discovery, PoolSpec
from monitor.config import validate
from monitor.service import create_app
from monitor.settings.discovery import PrometheusDiscovery
from monitor.units import (
    TARGET_REASONS,
    TargetRefused,
    check_host,
    check_path,
    check_port,
    is_server_address,
    parse_http_url,
    parse_target_url,
    split_host_port,
)
from tests.helpers.asgi_client import Client
from tests.helpers.fleet import metric
from tests.helpers.vllm_pages import PageServer

HOSTILE = "http://a;}server{listen 127.0.0.1:1;root /;}x:80/metrics"
SAFE_HOST = re.compile(r"[A-Za-z0-9._:\-]+")  # what an accepted host is made of (brackets only around IPv6)


@pytest.mark.parametrize(("host", "written"), [
    ("10.0.0.11", "10.0.0.11"),
    ("GPU-3.Example.com", "gpu-3.example.com"),
    ("vllm_1", "vllm_1"),
    ("[FD00::1]", "fd00::1"),
    ("::1", "::1"),
])
def test_dns_names_ipv4_and_ipv6_addresses_are_hosts_in_one_written_form(host, written):
    assert check_host(host) == written


@pytest.mark.parametrize("host", [
    "exa mple.com", "a;}server{x", "a\nb", "", "-a", "a..b", "a.", "999.1.1.1", "10.0.0.01", "[fe80::1%eth0]",
    "[::1", "x" * 64, "é.example", "a/b", "a:b", "[zz::1]",
])
def test_a_host_outside_the_grammar_is_refused_as_bad_host(host):
    with pytest.raises(TargetRefused) as refused:
        check_host(host)
    assert refused.value.reason == "bad_host"


@pytest.mark.parametrize(("value", "reason"), [
    ("a:0", "bad_port"), ("a:65536", "bad_port"), ("a:８０", "bad_port"), ("a", "bad_port"),
    ("fd00::1:80", "bad_host"), ("http://a:80", "malformed"), (17, "malformed"), ("a b:80", "bad_host"),
])
def test_host_port_is_refused_with_the_reason_a_user_can_act_on(value, reason):
    with pytest.raises(TargetRefused) as refused:
        split_host_port(value)
    assert refused.value.reason == reason and refused.value.reason in TARGET_REASONS


def test_a_path_is_percent_encoded_as_go_writes_it_and_control_characters_are_refused():
    assert check_path("/metrics") == "/metrics"
    assert check_path("/metrics€") == "/metrics%E2%82%AC"
    assert check_path("/a b#c?d{e}") == "/a%20b%23c%3Fd%7Be%7D"
    assert check_path("/already%20encoded%zz") == "/already%20encoded%25zz"
    for bad in ("/a\r\nHost: x", "/a\x00", "metrics", "/\ud800"):
        with pytest.raises(TargetRefused) as refused:
            check_path(bad)
        assert refused.value.reason == "bad_path"


def test_a_static_target_follows_the_same_grammar_and_a_base_url_only():
    assert parse_target_url("http://u:p@GPU-1.example.com:8000/") == "http://u:p@GPU-1.example.com:8000"
    assert parse_target_url("http://[fd00::1]:8000") == "http://[fd00::1]:8000"
    for bad in ("http://exa mple.com:80", HOSTILE, "http://a;b:80", "http://999.1.1.1:80", "http://h:80/?x=1",
                "http://h:80/#f", "http://a:0"):
        with pytest.raises(ValueError):
            parse_target_url(bad)


def test_check_names_a_static_target_with_a_space_in_its_host_by_key_path(tmp_path, capsys):
    config = tmp_path / "c.yml"
    config.write_text(textwrap.dedent("""
        pools:
          - {name: p, targets: ['http://10.0.0.1:8000', 'http://exa mple.com:80']}
    """))
    assert main(["check", "--config", str(config)]) == 2
    assert "pools[0].targets[1]: not an http(s) URL: 'http://exa mple.com:80'" in capsys.readouterr().err


def test_the_nginx_renderer_leaves_out_a_server_outside_the_grammar_and_writes_only_a_count():
    text = render_file({"chat": [UpstreamServer("10.0.0.1:8000", "healthy"),
                                 UpstreamServer("a;}server{listen 127.0.0.1:80", "healthy"),
                                 UpstreamServer("b:80\nserver evil:1", "ejected")]})
    assert "server 10.0.0.1:8000;" in text and "# 2 servers left out: not host:port" in text
    assert "evil" not in text and "listen" not in text and len(re.findall(r"^    server ", text, re.MULTILINE)) == 1


def test_the_haproxy_answer_is_one_printable_line_whatever_the_name_asked():
    reply = agent_reply(None, "x\x00\x1b[31m\u2028\r\nup ready 100%")
    assert reply.endswith("\n") and reply.count("\n") == 1 and reply.startswith("#")
    assert all(" " <= c <= "~" for c in reply[:-1])


def active(scrape_url: str) -> dict:
    return {"scrapeUrl": scrape_url, "labels": {"job": "vllm"}, "discoveredLabels": {}, "health": "up"}


async def test_a_hostile_scrape_url_from_prometheus_never_reaches_the_upstream_file_and_the_rest_does():
    answer = {"status": "success", "data": {"activeTargets": [
        active("http://10.0.0.11:8000/metrics"), active(HOSTILE),
        active("http://a;}server{x:80/metrics"), active("http://10.0.0.12:8000/m€trics")]}}
    body = json.dumps(answer).encode()
    with PageServer(lambda path: (200, body)) as prometheus:
        item = PrometheusDiscovery(type="prometheus", url=prometheus.url, selector='job="vllm"')
        discovery = Discovery([PoolSpec("chat", (), (item,))])
        members = await discovery.refresh(now=0.0)
        await discovery.aclose()
    chat = members["chat"]
    assert sorted(chat) == ["10.0.0.11:8000", "10.0.0.12:8000"]
    assert chat["10.0.0.12:8000"].metrics_path == "/m%E2%82%ACtrics"
    status = discovery.statuses()[0]
    assert status.healthy and status.rejected == {"malformed": 1, "bad_host": 1}
    assert any("activeTargets[2]: scrapeUrl" in d and "is not a DNS name" in d for d in status.dropped)
    text = render_file({"chat": [UpstreamServer(address, "ejected") for address in chat]})
    assert len(re.findall(r"^    server ", text, re.MULTILINE)) == 2 and ";}" not in text and "listen" not in text


# --- properties ----------------------------------------------------------------------------------

hostish = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="abcXYZ019.-_:[]%; {}\n\t/é", max_size=30),
    st.from_regex(r"\[[0-9a-fA-F:.%a-z]{0,40}\]", fullmatch=True),
    st.ip_addresses().map(str),
)


@settings(max_examples=300, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(hostish)
def test_an_accepted_host_is_only_letters_digits_dot_dash_underscore_and_colon(host):
    try:
        written = check_host(host)
    except TargetRefused as refused:
        assert refused.reason == "bad_host"
        return
    assert SAFE_HOST.fullmatch(written) and written == written.lower()


@settings(max_examples=300, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(hostish, st.one_of(st.integers(-5, 70000).map(str), st.text(max_size=6)))
def test_an_accepted_host_port_renders_as_exactly_one_nginx_server_token(host, port):
    value = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        h, p = split_host_port(value)
    except TargetRefused as refused:
        assert refused.reason in TARGET_REASONS
        return
    address = f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
    assert is_server_address(address) and check_port(p) == p
    block = render_upstream("chat", [UpstreamServer(address, "healthy")])
    assert block.splitlines()[1] == f"    server {address};" and block.count(";") == 1


@settings(max_examples=300, deadline=500)
@given(st.text(max_size=60).map(lambda t: "/" + t))
def test_an_accepted_path_is_printable_ascii_without_spaces(path):
    try:
        written = check_path(path)
    except TargetRefused as refused:
        assert refused.reason == "bad_path"
        return
    assert all("!" <= c <= "~" for c in written) and written.startswith("/")


@settings(max_examples=300, deadline=500)
@given(st.text(alphabet="abc019.:/@[]%; {}\n€?#-", max_size=40).map(lambda t: "http://" + t))
def test_a_url_the_config_accepts_has_a_host_in_the_grammar(url):
    try:
        accepted = parse_http_url(url)
    except ValueError:
        return
    check_host(urlsplit(accepted).hostname)


def test_check_names_each_target_a_file_sd_source_would_drop_with_its_reason(tmp_path, capsys):
    (tmp_path / "chat.json").write_text(json.dumps([{"targets": ["10.0.0.1:8000", "a;}server{x:80", "b:0"]}]))
    config = tmp_path / "c.yml"
    config.write_text(textwrap.dedent(f"""
        pools:
          - name: chat
            discovery: [{{type: file, files: ['{tmp_path}/*.json']}}]
    """))
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "warning: pools[0].discovery[0]: target dropped: file " in out
    assert "targets[1] 'a;}server{x:80': host 'a;}server{x' is not a DNS name" in out
    assert "targets[2] 'b:0': port '0' is not a number from 1 to 65535" in out


def test_metrics_count_the_targets_a_source_dropped_by_pool_source_and_reason(tmp_path):
    (tmp_path / "chat.json").write_text(json.dumps([{"targets": ["10.0.0.1:8000", "a b:80", "c:0", "d:0"]}]))
    config = validate({"pools": [{"name": "chat", "discovery": [{"type": "file", "files": [f"{tmp_path}/*.json"]}]}]}).config
    app = create_app(config, store=None)  # no lifespan: discovery is read once by hand
    asyncio.run(app.state.service.discovery.refresh(now=0.0))
    page = Client(app).get("/metrics").text
    assert metric(page, "slo_monitor_discovery_rejected_targets_total", pool="chat", source="file", reason="bad_port") == 2
    assert metric(page, "slo_monitor_discovery_rejected_targets_total", pool="chat", source="file", reason="bad_host") == 1
    assert metric(page, "slo_monitor_discovery_targets", pool="chat", source="file") == 1
