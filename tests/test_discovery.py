"""Target discovery: the parsers, file_sd on a real directory, http_sd against a real HTTP server
on loopback (including one that hangs and one that never stops sending), and how sources combine
into pool membership."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import socket
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from monitor.collect.discovery import (
    DiscoveredTarget,
    Discovery,
    DiscoveryError,
    PoolSpec,
    merge,
    parse_active_targets,
    parse_target_groups,
    read_active_targets,
    read_target_groups,
)
from monitor.collect.discovery.targets import compile_matchers, load_document
from monitor.settings.discovery import (
    DiscoveryConfig,
    DiscoverySettings,
    DnsDiscovery,
    FileDiscovery,
    HttpDiscovery,
    PrometheusDiscovery,
    parse_selector,
)

ITEMS = TypeAdapter(list[DiscoveryConfig])


def groups(*entries: tuple[list[str], dict[str, str] | None]) -> list[dict]:
    return [{"targets": t, **({"labels": labels} if labels is not None else {})} for t, labels in entries]


def addresses(targets) -> list[str]:
    return [t.address for t in targets]


# --- settings ------------------------------------------------------------------------------------


def test_every_mechanism_of_the_issue_example_validates_with_prometheus_defaults():
    items = ITEMS.validate_python([
        {"type": "file", "files": ["/etc/slo-monitor/targets/chat-*.json"]},
        {"type": "http", "url": "http://sd.internal/targets", "refresh": "30s"},
        {"type": "dns", "names": ["vllm-headless.llm.svc.cluster.local"], "port": 8000, "record": "A",
         "refresh": "10s"},
        {"type": "prometheus", "url": "http://prometheus:9090", "selector": 'job="vllm"'},
    ])
    assert [i.type for i in items] == ["file", "http", "dns", "prometheus"]
    assert items[0].refresh == 300 and items[1].refresh == 30 and items[2].refresh == 10 and items[3].refresh == 30
    assert items[1].timeout_s == 10 and items[2].timeout_s == 10
    assert ITEMS.validate_python([{"type": "dns", "names": ["_vllm._tcp.x"]}])[0].record == "SRV"


@pytest.mark.parametrize(("item", "message"), [
    ({"type": "dns", "names": ["a.test"], "record": "A"}, "record A needs port"),
    ({"type": "dns", "names": ["a.test"], "port": 80}, "port is only used with record A or AAAA"),
    ({"type": "file", "files": ["/etc/targets.txt"]}, "must end in .json, .yml or .yaml"),
    ({"type": "http", "url": "http://sd/x", "timeout": "2m"}, "timeout must not exceed refresh"),
    ({"type": "http", "url": "ftp://sd/x"}, "not an http(s) URL"),
    ({"type": "http", "url": "http://sd/x", "headers": {"Authorization": "x"}}, "use bearer_token"),
    ({"type": "prometheus", "url": "http://p:9090", "selector": "up"}, "PromQL label matchers"),
    ({"type": "prometheus", "url": "http://p:9090", "selector": 'job=~"("'}, "bad regular expression"),
    ({"type": "consul", "url": "http://c"}, "does not match any of the expected tags"),
    ({"type": "file", "files": ["/x.json"], "refersh": "1m"}, "Extra inputs are not permitted"),
])
def test_a_bad_discovery_item_is_refused_with_the_reason(item, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ITEMS.validate_python([item])


def test_nameservers_are_ip_and_port_and_a_name_is_refused():
    assert DiscoverySettings(nameservers=["127.0.0.1:5353", "[::1]:53", "10.0.0.2"]).nameservers[0] == "127.0.0.1:5353"
    with pytest.raises(ValidationError, match="not an IP address"):
        DiscoverySettings(nameservers=["dns.internal:53"])
    with pytest.raises(ValidationError, match="extra"):
        DiscoverySettings(nameserver=["127.0.0.1:53"])


def test_a_selector_reads_go_string_escapes_and_keeps_matcher_order():
    assert parse_selector(r'job="vllm", path=~"/a\\.b|c", team!="x\"y",') == [
        ("job", "=", "vllm"), ("path", "=~", r"/a\.b|c"), ("team", "!=", 'x"y')]


# --- file_sd / http_sd parsing -------------------------------------------------------------------


def test_target_groups_keep_their_labels_and_honour_scheme_and_metrics_path():
    found = parse_target_groups(groups(
        (["10.0.0.11:8000", "10.0.0.12:8000"], {"team": "llm", "__meta_zone": "a"}),
        (["gpu-3.example.com:443"], {"__scheme__": "https", "__metrics_path__": "/vllm/metrics"}),
        (["[fd00::1]:8000"], None),
    ), "file", "file chat.json")
    assert [t.url for t in found] == ["http://10.0.0.11:8000", "http://10.0.0.12:8000",
                                      "https://gpu-3.example.com:443", "http://[fd00::1]:8000"]
    assert found[0].labels == {"team": "llm"} and found[0].metrics_path is None and found[0].source == "file"
    assert found[2].metrics_path == "/vllm/metrics" and found[2].labels == {}
    assert found[3].address == "[fd00::1]:8000"


def test_a_target_listed_twice_is_one_target_with_the_first_groups_labels():
    found = parse_target_groups(groups((["a:1", "A:1"], {"g": "1"}), (["a:1"], {"g": "2"})), "http", "x")
    assert addresses(found) == ["a:1"] and found[0].labels == {"g": "1"}


@pytest.mark.parametrize(("document", "message"), [
    ({"targets": ["a:1"]}, "expected a list of target groups, got a mapping"),
    (["a:1"], "group 0: expected a mapping"),
    ([{"targets": "a:1"}], "group 0: targets must be a list"),
    ([{"targets": ["a:1"], "labels": {"bad-name": "x"}}], "label name 'bad-name' is not a valid label name"),
    ([{"targets": ["a:1"], "labels": {"n": 3}}], "label n: value must be a string"),
])
def test_a_malformed_group_rejects_the_whole_list_naming_source_and_item(document, message):
    with pytest.raises(DiscoveryError, match="^file /etc/t/chat.json: .*" + message.replace("[", r"\[")
                       .replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        parse_target_groups(document, "file", "file /etc/t/chat.json")


@pytest.mark.parametrize(("document", "reason", "message"), [
    ([{"targets": ["a:1", "http://b:8000"]}], "malformed", "group 0: targets[1] 'http://b:8000' is not host:port"),
    ([{"targets": ["a:1"]}, {"targets": ["10.0.0.1"]}], "bad_port", "group 1: targets[0] '10.0.0.1' has no port"),
    ([{"targets": ["a:1", "a:99999"]}], "bad_port", "port '99999' is not a number from 1 to 65535"),
    ([{"targets": ["a:1", "a b:1"]}], "bad_host", "host 'a b' is not a DNS name"),
    ([{"targets": ["a:1", 17]}], "malformed", "targets[1] 17 is not host:port"),
    ([{"targets": ["a:1"]}, {"targets": ["c:1"], "labels": {"__scheme__": "ftp"}}], "bad_scheme",
     "group 1: label __scheme__: scheme 'ftp' is not http or https ('c:1' dropped)"),
    ([{"targets": ["a:1"]}, {"targets": ["c:1"], "labels": {"__metrics_path__": "metrics"}}], "bad_path",
     "label __metrics_path__: path 'metrics' is not an absolute path"),
])
def test_a_target_outside_the_grammar_is_dropped_with_its_reason_and_the_rest_kept(document, reason, message):
    parsed = read_target_groups(document, "file", "file /etc/t/chat.json")
    assert addresses(parsed.targets) == ["a:1"]
    assert [r.reason for r in parsed.rejected] == [reason]
    assert parsed.rejected[0].message.startswith("file /etc/t/chat.json: ")
    assert message in parsed.rejected[0].message


def test_yaml_groups_refuse_unknown_keys_as_prometheus_does_and_json_groups_ignore_them():
    yaml_doc, is_yaml = load_document(b"- targets: ['a:1']\n  label: {x: y}\n", "t.yml", "file t.yml")
    assert is_yaml
    with pytest.raises(DiscoveryError, match="unknown key 'label'"):
        parse_target_groups(yaml_doc, "file", "file t.yml", strict=is_yaml)
    json_doc, is_yaml = load_document(b'[{"targets": ["a:1"], "extra": 1}]', "t.json", "file t.json")
    assert addresses(parse_target_groups(json_doc, "file", "file t.json", strict=is_yaml)) == ["a:1"]


def test_an_undecodable_document_names_the_source():
    with pytest.raises(DiscoveryError, match=r"^file x.json: not valid JSON"):
        load_document(b"[{", "x.json", "file x.json")
    with pytest.raises(DiscoveryError, match=r"^file x.yaml: not valid YAML"):
        load_document(b"- [", "x.yaml", "file x.yaml")
    with pytest.raises(DiscoveryError, match=r"^http u: not UTF-8"):
        load_document(b"\xff\xfe", "answer.json", "http u")


def test_more_targets_than_max_targets_are_refused():
    document = groups(([f"10.0.{i // 250}.{i % 250}:8000" for i in range(101)], None))
    with pytest.raises(DiscoveryError, match="more than 100 targets"):
        parse_target_groups(document, "file", "file big.json", max_targets=100)
    assert len(parse_target_groups(document, "file", "file big.json", max_targets=101)) == 101


# --- Prometheus active targets -------------------------------------------------------------------


def active(scrape_url: str, labels: dict, discovered: dict | None = None, health: str = "up") -> dict:
    return {"scrapeUrl": scrape_url, "labels": labels, "discoveredLabels": discovered or {}, "health": health}


def api(*targets: dict) -> dict:
    return {"status": "success", "data": {"activeTargets": list(targets), "droppedTargets": []}}


def test_prometheus_targets_matching_the_selector_give_scheme_host_and_path_from_the_scrape_url():
    answer = api(
        active("http://10.0.0.11:8000/metrics", {"job": "vllm", "instance": "10.0.0.11:8000", "pool": "chat"},
               {"__meta_kubernetes_pod_label_app": "vllm"}),
        active("https://gpu-2:8443/v/metrics?x=1", {"job": "vllm", "instance": "gpu-2:8443", "pool": "chat"},
               {"__meta_kubernetes_pod_label_app": "vllm"}, health="down"),
        active("http://10.0.0.99:9100/metrics", {"job": "node", "instance": "10.0.0.99:9100"}),
        active("http://10.0.0.12:8000/metrics", {"job": "vllm", "instance": "10.0.0.12:8000", "pool": "batch"}),
    )
    matchers = compile_matchers(parse_selector('job="vllm", pool=~"ch.*", __meta_kubernetes_pod_label_app="vllm"'))
    found = parse_active_targets(answer, "prometheus http://p:9090", matchers)
    assert [(t.url, t.metrics_path) for t in found] == [("http://10.0.0.11:8000", "/metrics"),
                                                        ("https://gpu-2:8443", "/v/metrics")]
    assert found[0].labels == {"job": "vllm", "instance": "10.0.0.11:8000", "pool": "chat"}
    assert found[0].source == "prometheus"


def test_a_regex_matcher_is_anchored_and_a_missing_label_is_empty_as_in_promql():
    answer = api(active("http://a:1/metrics", {"job": "vllm-canary"}), active("http://b:1/metrics", {"job": "vllm"}))
    assert addresses(parse_active_targets(answer, "p", compile_matchers([("job", "=~", "vllm")]))) == ["b:1"]
    assert addresses(parse_active_targets(answer, "p", compile_matchers([("team", "=", "")]))) == ["a:1", "b:1"]
    assert addresses(parse_active_targets(answer, "p", compile_matchers([("job", "!~", "vllm-.*")]))) == ["b:1"]


@pytest.mark.parametrize(("answer", "message"), [
    ([], "not a Prometheus API answer"),
    ({"status": "error", "errorType": "bad_data", "error": "nope"}, "status 'error': bad_data: nope"),
    ({"status": "success", "data": {}}, "answer has no data.activeTargets list"),
])
def test_a_bad_prometheus_answer_is_refused_naming_the_source(answer, message):
    with pytest.raises(DiscoveryError, match="^prometheus http://p:9090: " + message):
        parse_active_targets(answer, "prometheus http://p:9090", compile_matchers([("job", "=", "vllm")]))


@pytest.mark.parametrize(("item", "reason", "message"), [
    (active("ftp://a:1/", {"job": "vllm"}), "bad_scheme", "activeTargets[1]: scrapeUrl 'ftp://a:1/' is not an http"),
    ({"scrapeUrl": "http://a:1/", "labels": "x"}, "malformed", "activeTargets[1]: labels and discoveredLabels"),
    ("http://a:1/", "malformed", "activeTargets[1] is a string, not an object"),
    (active("http://a;}server{listen 127.0.0.1:1;root /;}x:80/metrics", {"job": "vllm"}), "malformed",
     "is not an http(s) URL"),
    (active("http://a;}server{x:80/metrics", {"job": "vllm"}), "bad_host", "is not a DNS name"),
    (active("http://a:0/metrics", {"job": "vllm"}), "bad_port", "port '0' is not a number"),
    (active("http://a:1/metrics\x00", {"job": "vllm"}), "malformed", "is not an http(s) URL"),
    (active("http://ok:1/m", {"job": "vllm"}), "duplicate", "ok:1 is listed before"),
])
def test_a_prometheus_target_outside_the_grammar_is_dropped_with_its_reason_and_the_rest_kept(item, reason, message):
    answer = api(active("http://ok:1/m", {"job": "vllm"}), item)
    parsed = read_active_targets(answer, "prometheus http://p:9090", compile_matchers([("job", "=", "vllm")]))
    assert addresses(parsed.targets) == ["ok:1"]
    assert [r.reason for r in parsed.rejected] == [reason]
    assert message in parsed.rejected[0].message and parsed.rejected[0].message.startswith("prometheus http://p:9090: ")


def test_a_non_ascii_metrics_path_is_percent_encoded_as_prometheus_writes_it():
    found = parse_target_groups(groups((["a:1"], {"__metrics_path__": "/metrics€ x"})), "file", "f")
    assert found[0].metrics_path == "/metrics%E2%82%AC%20x"


# --- membership ----------------------------------------------------------------------------------


def t(address: str, source: str) -> DiscoveredTarget:
    return DiscoveredTarget(f"http://{address}", address, source)


def test_an_instance_found_twice_is_one_member_static_first_then_the_first_listed_source():
    file_item, http_item = ITEMS.validate_python([{"type": "file", "files": ["/x.json"]},
                                                  {"type": "http", "url": "http://sd/x"}])
    pools = [PoolSpec("chat", ["http://10.0.0.1:8000"], [file_item, http_item])]
    members, conflicts = merge(pools, {
        ("chat", 0): [t("10.0.0.1:8000", "file"), t("10.0.0.2:8000", "file")],
        ("chat", 1): [t("10.0.0.2:8000", "http"), t("10.0.0.3:8000", "http")],
    })
    assert {a: m.source for a, m in members["chat"].items()} == {
        "10.0.0.1:8000": "static", "10.0.0.2:8000": "file", "10.0.0.3:8000": "http"}
    assert conflicts == {}


def test_an_instance_discovered_in_two_pools_stays_in_the_first_and_counts_a_conflict_in_the_other():
    item = ITEMS.validate_python([{"type": "http", "url": "http://sd/x"}])[0]
    pools = [PoolSpec("chat", [], [item]), PoolSpec("batch", ["http://10.0.0.9:8000"], [item])]
    members, conflicts = merge(pools, {("chat", 0): [t("10.0.0.1:8000", "http"), t("10.0.0.9:8000", "http")],
                                       ("batch", 0): [t("10.0.0.1:8000", "http")]})
    assert list(members["chat"]) == ["10.0.0.1:8000"]  # 10.0.0.9 is batch's static member
    assert list(members["batch"]) == ["10.0.0.9:8000"]
    assert conflicts == {("chat", 0): ["10.0.0.9:8000"], ("batch", 0): ["10.0.0.1:8000"]}


# --- file_sd on a real directory -----------------------------------------------------------------


def write_atomically(path: Path, content: str | bytes) -> None:
    """As Prometheus asks of file_sd writers: a temporary file, then a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content.encode() if isinstance(content, str) else content)
    os.replace(tmp, path)


def file_pool(tmp_path: Path, **extra) -> Discovery:
    item = FileDiscovery(type="file", files=[str(tmp_path / "chat-*.json"), str(tmp_path / "chat-*.yml")], **extra)
    return Discovery([PoolSpec("chat", ["http://10.0.0.1:8000"], [item])])


async def test_a_file_change_is_seen_at_the_next_refresh_and_a_new_file_matching_the_glob_too(tmp_path):
    write_atomically(tmp_path / "chat-a.json", json.dumps(groups((["10.0.0.2:8000"], {"rack": "a"}))))
    discovery = file_pool(tmp_path)
    members = await discovery.refresh(now=1000.0)
    assert sorted(members["chat"]) == ["10.0.0.1:8000", "10.0.0.2:8000"]
    assert members["chat"]["10.0.0.2:8000"].labels == {"rack": "a"}
    version = discovery.version

    assert await discovery.refresh(now=1005.0) is members  # nothing changed: the same object
    write_atomically(tmp_path / "chat-a.json", json.dumps(groups((["10.0.0.3:8000"], None))))
    (tmp_path / "chat-b.yml").write_text("- targets: ['10.0.0.4:8000']\n  labels: {__scheme__: https}\n")
    members = await discovery.refresh(now=1010.0)
    assert sorted(members["chat"]) == ["10.0.0.1:8000", "10.0.0.3:8000", "10.0.0.4:8000"]
    assert members["chat"]["10.0.0.4:8000"].url == "https://10.0.0.4:8000"
    assert discovery.version == version + 1

    (tmp_path / "chat-b.yml").unlink()  # a file gone from the glob takes its targets with it
    assert sorted((await discovery.refresh(now=1015.0))["chat"]) == ["10.0.0.1:8000", "10.0.0.3:8000"]
    status = discovery.statuses()[0]
    assert (status.kind, status.targets, status.failures, status.last_error) == ("file", 1, 0, None)


async def test_a_broken_file_keeps_its_last_good_list_logs_once_and_counts_a_failure(tmp_path, caplog):
    write_atomically(tmp_path / "chat-a.json", json.dumps(groups((["10.0.0.2:8000"], None))))
    write_atomically(tmp_path / "chat-b.json", json.dumps(groups((["10.0.0.3:8000"], None))))
    discovery = file_pool(tmp_path)
    await discovery.refresh(now=0.0)
    caplog.set_level(logging.INFO, logger="monitor.discovery")

    write_atomically(tmp_path / "chat-a.json", '[{"targets": ["10.0.0.5:8000"]}, {"targets": "10.0.0.7:8000"}]')
    write_atomically(tmp_path / "chat-b.json", json.dumps(groups((["10.0.0.4:8000"], None))))
    for now in (5.0, 10.0, 15.0):
        members = await discovery.refresh(now=now)
    # chat-a's last good list stays; chat-b's change is taken
    assert sorted(members["chat"]) == ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.4:8000"]
    status = discovery.statuses()[0]
    assert status.failures == 1  # read once: unchanged since, so not re-read
    assert f"file {tmp_path}/chat-a.json: group 1: targets must be a list" in status.last_error
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "keeping the last good list" in warnings[0].getMessage()

    write_atomically(tmp_path / "chat-a.json", json.dumps(groups((["10.0.0.6:8000"], None))))
    members = await discovery.refresh(now=20.0)
    assert sorted(members["chat"]) == ["10.0.0.1:8000", "10.0.0.4:8000", "10.0.0.6:8000"]
    assert discovery.statuses()[0].last_error is None
    assert any("reads again" in r.getMessage() for r in caplog.records)


async def test_a_bad_target_in_a_file_is_dropped_counted_and_logged_once_per_change_and_the_rest_kept(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="monitor.discovery")
    path = tmp_path / "chat-a.json"
    write_atomically(path, json.dumps(groups((["10.0.0.5:8000", "not a target", "a;}server{x:80"], None))))
    discovery = file_pool(tmp_path)
    for now in (0.0, 400.0, 800.0):  # re-read every refresh (300s): the same drops, logged once
        members = await discovery.refresh(now=now)
    assert sorted(members["chat"]) == ["10.0.0.1:8000", "10.0.0.5:8000"]
    status = discovery.statuses()[0]
    assert status.last_error is None and status.targets == 1
    assert status.rejected == {"bad_port": 3, "bad_host": 3}
    assert "targets[1] 'not a target' has no port" in status.dropped[0]
    assert "targets[2] 'a;}server{x:80': host 'a;}server{x' is not a DNS name" in status.dropped[1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 targets dropped, the rest kept" in warnings[0]

    write_atomically(path, json.dumps(groups((["10.0.0.5:8000", "b:0"], None))))  # another cause: logged again
    await discovery.refresh(now=805.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "port '0' is not a number" in warnings[1]
    write_atomically(path, json.dumps(groups((["10.0.0.5:8000"], None))))
    await discovery.refresh(now=810.0)
    assert discovery.statuses()[0].dropped == () and discovery.statuses()[0].rejected["bad_port"] == 4
    assert any("no target dropped any more" in r.getMessage() for r in caplog.records)


async def test_an_error_that_changes_cause_is_logged_again(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="monitor.discovery")
    path = tmp_path / "chat-a.json"
    discovery = file_pool(tmp_path)
    for now, content in ((0.0, "[{"), (5.0, "{}"), (10.0, "{}")):
        write_atomically(path, content)
        os.utime(path, ns=(int(now * 1e9) + 1, int(now * 1e9) + 1))
        await discovery.refresh(now=now)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "not valid JSON" in warnings[0] and "expected a list of target groups" in warnings[1]


async def test_an_unreadable_file_keeps_its_list_and_a_file_that_is_not_regular_is_never_opened(tmp_path):
    path = tmp_path / "chat-a.json"
    write_atomically(path, json.dumps(groups((["10.0.0.2:8000"], None))))
    discovery = file_pool(tmp_path)
    await discovery.refresh(now=0.0)
    os.mkfifo(tmp_path / "chat-fifo.json")  # open() on it would wait for a writer forever
    if os.geteuid() != 0:  # root reads any file, so only a non-root run can test permissions
        path.chmod(0)
        os.utime(path, ns=(1, 1))
    members = await asyncio.wait_for(discovery.refresh(now=5.0), 5)
    assert sorted(members["chat"]) == ["10.0.0.1:8000", "10.0.0.2:8000"]
    assert "not a regular file" in discovery.statuses()[0].last_error


async def test_a_1_gib_file_is_refused_from_its_size_without_being_read(tmp_path):
    write_atomically(tmp_path / "chat-a.json", json.dumps(groups((["10.0.0.2:8000"], None))))
    discovery = file_pool(tmp_path)
    await discovery.refresh(now=0.0)
    with open(tmp_path / "chat-a.json", "r+b") as f:  # sparse: 1 GiB on paper, nothing on disk
        f.truncate(2**30)
    members = await asyncio.wait_for(discovery.refresh(now=5.0), 5)
    assert sorted(members["chat"]) == ["10.0.0.1:8000", "10.0.0.2:8000"]
    assert "1073741824 bytes, more than max_size 16777216" in discovery.statuses()[0].last_error


async def test_a_file_of_100000_targets_is_refused_by_max_targets_and_read_when_allowed(tmp_path):
    many = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:8000" for i in range(100_000)]
    write_atomically(tmp_path / "chat-big.json", json.dumps(groups((many, {"team": "llm"}))))
    discovery = file_pool(tmp_path)
    members = await discovery.refresh(now=0.0)
    assert list(members["chat"]) == ["10.0.0.1:8000"]
    assert "more than 10000 targets (discovery.max_targets)" in discovery.statuses()[0].last_error

    allowed = Discovery([PoolSpec("chat", [], [FileDiscovery(type="file", files=[str(tmp_path / "*.json")])])],
                        DiscoverySettings(max_targets=100_000))
    assert len((await allowed.refresh(now=0.0))["chat"]) == 100_000


async def test_an_empty_glob_and_an_empty_file_are_no_targets_not_errors(tmp_path):
    discovery = file_pool(tmp_path)
    assert list((await discovery.refresh(now=0.0))["chat"]) == ["10.0.0.1:8000"]
    (tmp_path / "chat-a.yml").write_text("")
    (tmp_path / "chat-b.json").write_text("[]")
    assert list((await discovery.refresh(now=5.0))["chat"]) == ["10.0.0.1:8000"]
    assert discovery.statuses()[0].last_error is None


# --- http_sd against a real HTTP server ----------------------------------------------------------


class SdServer:
    """An HTTP/1.1 server on a loopback port, one route per behaviour the tests need."""

    def __init__(self) -> None:
        self.body = b"[]"
        self.status = 200
        self.content_type = "application/json"
        self.requests: list[dict[str, str]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> SdServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        if hasattr(self.server, "close_clients"):
            self.server.close_clients()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            path = head.split(" ", 2)[1]
            self.requests.append({k.lower(): v.strip() for k, _, v in
                                  (line.partition(":") for line in head.split("\r\n")[1:] if line)})
            if path == "/hang":
                await asyncio.sleep(3600)
            if path == "/endless":  # close-delimited, never ends
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[")
                chunk = b'{"targets": ["10.0.0.1:1"]},' * 4000
                while True:
                    writer.write(chunk)
                    await writer.drain()
            body, extra = self.body, ""
            if path == "/gzip-bomb":
                body, extra = gzip.compress(b"[" + b" " * (64 * 2**20) + b"]"), "Content-Encoding: gzip\r\n"
            writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Type: {self.content_type}\r\n{extra}"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def http_pool(url: str, **extra) -> Discovery:
    item = HttpDiscovery(type="http", url=url, **{"refresh": "30s", **extra})
    return Discovery([PoolSpec("chat", [], [item])])


async def test_http_sd_reads_the_groups_and_sends_prometheus_refresh_header_and_bearer_token():
    async with SdServer() as server:
        server.body = json.dumps(groups((["10.0.0.2:8000", "10.0.0.3:8000"], {"__metrics_path__": "/m"}))).encode()
        discovery = http_pool(server.url + "/targets", bearer_token="s3cret", headers={"X-Scope-OrgID": "llm"})
        members = await discovery.refresh(now=0.0)
        await discovery.aclose()
    assert sorted(members["chat"]) == ["10.0.0.2:8000", "10.0.0.3:8000"]
    assert members["chat"]["10.0.0.2:8000"].source == "http"
    assert members["chat"]["10.0.0.2:8000"].metrics_path == "/m"
    request = server.requests[0]
    assert request["x-prometheus-refresh-interval-seconds"] == "30"
    assert request["authorization"] == "Bearer s3cret" and request["x-scope-orgid"] == "llm"


async def test_http_sd_is_polled_every_refresh_not_every_cycle():
    async with SdServer() as server:
        server.body = json.dumps(groups((["10.0.0.2:8000"], None))).encode()
        discovery = http_pool(server.url + "/targets")
        for now in (0.0, 5.0, 10.0, 29.0, 30.0):
            await discovery.refresh(now=now)
        await discovery.aclose()
    assert len(server.requests) == 2


async def test_a_failing_http_sd_endpoint_keeps_the_last_good_list_for_each_kind_of_failure():
    async with SdServer() as server:
        server.body = json.dumps(groups((["10.0.0.2:8000"], None))).encode()
        discovery = http_pool(server.url + "/targets", refresh="1s", timeout="1s")
        await discovery.refresh(now=0.0)
        failures = [
            ({"status": 503}, "HTTP 503 (expected 200)"),
            ({"content_type": "text/html"}, "Content-Type 'text/html', expected application/json"),
            ({"body": b"<html>"}, "not valid JSON"),
            ({"body": b'[{"targets": ["10.0.0.9:8000/metrics"]}]'}, "group 0: targets[0] '10.0.0.9:8000/metrics'"),
        ]
        for now, (change, message) in enumerate(failures, start=1):
            server.status, server.content_type = 200, "application/json"
            for key, value in change.items():
                setattr(server, key, value)
            members = await discovery.refresh(now=float(now))
            assert list(members["chat"]) == ["10.0.0.2:8000"], message
            assert message in discovery.statuses()[0].last_error
            assert discovery.statuses()[0].last_error.startswith(f"http {server.url}/targets: ")
        await discovery.aclose()
    assert discovery.statuses()[0].failures == len(failures)


async def test_a_hung_http_sd_endpoint_is_bounded_by_the_timeout_and_poll_never_waits_for_it():
    async with SdServer() as server:
        discovery = http_pool(server.url + "/hang", timeout="300ms")
        # poll is not a coroutine: it cannot wait; the read goes on in the background
        assert discovery.poll(now=0.0) == {"chat": {}}
        assert discovery.statuses()[0].last_error is None
        await asyncio.wait_for(discovery.refresh(now=0.1), 5)  # waits for the read poll started
        assert "no complete answer within timeout 0.3s" in discovery.statuses()[0].last_error
        await discovery.aclose()


async def test_an_endless_or_bomb_http_sd_answer_is_cut_at_max_size():
    async with SdServer() as server:
        for path in ("/endless", "/gzip-bomb"):
            discovery = http_pool(server.url + path, max_size="1MiB", timeout="5s")
            await asyncio.wait_for(discovery.refresh(now=0.0), 10)
            assert "answer larger than max_size 1048576 bytes" in discovery.statuses()[0].last_error, path
            await discovery.aclose()


async def test_an_unreachable_http_sd_endpoint_is_a_clear_error(unused_tcp_port):
    discovery = http_pool(f"http://127.0.0.1:{unused_tcp_port}/targets")
    await discovery.refresh(now=0.0)
    assert discovery.statuses()[0].last_error.startswith(f"http http://127.0.0.1:{unused_tcp_port}/targets: Connect")
    await discovery.aclose()


async def test_static_targets_never_leave_and_a_failing_source_never_empties_a_pool():
    async with SdServer() as server:
        server.body = json.dumps(groups((["10.0.0.2:8000"], None))).encode()
        item = HttpDiscovery(type="http", url=server.url + "/targets", refresh="1s")
        discovery = Discovery([PoolSpec("chat", ["http://10.0.0.1:8000"], [item])])
        await discovery.refresh(now=0.0)
        server.status = 500
        members = await discovery.refresh(now=1.0)
        await discovery.aclose()
    assert sorted(members["chat"]) == ["10.0.0.1:8000", "10.0.0.2:8000"]
    status = discovery.statuses()[0]
    assert (status.pool, status.kind, status.index, status.targets, status.failures) == ("chat", "http", 0, 1, 1)
    assert status.last_success is not None and status.name == "chat/http[0]"


async def test_a_reload_keeps_the_last_good_list_of_an_unchanged_source_and_drops_a_removed_one():
    async with SdServer() as server:
        server.body = json.dumps(groups((["10.0.0.2:8000"], None))).encode()
        item = HttpDiscovery(type="http", url=server.url + "/targets", refresh="1m")
        other = PrometheusDiscovery(type="prometheus", url=server.url, selector='job="x"')
        discovery = Discovery([PoolSpec("chat", [], [item])])
        await discovery.refresh(now=0.0)
        server.status = 500
        await discovery.reconfigure([PoolSpec("chat", ["http://10.0.0.1:8000"], [other, item])])
        members = discovery.membership  # the kept source was not re-read, its list is still there
        assert sorted(members["chat"]) == ["10.0.0.1:8000", "10.0.0.2:8000"]
        assert [(s.kind, s.index) for s in discovery.statuses()] == [("prometheus", 0), ("http", 1)]
        await discovery.reconfigure([PoolSpec("chat", ["http://10.0.0.1:8000"], [])])
        assert list(discovery.membership["chat"]) == ["10.0.0.1:8000"]
        await discovery.aclose()


async def test_run_polls_until_cancelled(tmp_path):
    write_atomically(tmp_path / "chat-a.json", json.dumps(groups((["10.0.0.2:8000"], None))))
    discovery = file_pool(tmp_path)
    task = asyncio.create_task(discovery.run(0.05))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if "10.0.0.2:8000" in discovery.membership["chat"]:
            break
    write_atomically(tmp_path / "chat-a.json", json.dumps(groups((["10.0.0.3:8000"], None))))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if "10.0.0.3:8000" in discovery.membership["chat"]:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(discovery.membership["chat"]) == ["10.0.0.1:8000", "10.0.0.3:8000"]


# --- DNS that never answers (the real-server tests are in test_discovery_e2e.py) ------------------


async def test_a_nameserver_that_never_answers_is_bounded_by_the_timeout_and_keeps_the_list():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never read: every query is lost
    silent.bind(("127.0.0.1", 0))
    try:
        item = DnsDiscovery(type="dns", names=["a.example.test"], record="A", port=8000, refresh="1s",
                            timeout="500ms")
        settings = DiscoverySettings(nameservers=[f"127.0.0.1:{silent.getsockname()[1]}"])
        discovery = Discovery([PoolSpec("chat", ["http://10.0.0.1:8000"], [item])], settings)
        members = await asyncio.wait_for(discovery.refresh(now=0.0), 5)
    finally:
        silent.close()
    assert list(members["chat"]) == ["10.0.0.1:8000"]
    assert "dns A a.example.test: no answer within timeout 0.5s" in discovery.statuses()[0].last_error


async def test_files_that_together_list_more_than_max_targets_keep_their_last_good_lists(tmp_path):
    write_atomically(tmp_path / "chat-a.json", json.dumps(groups((["10.0.0.2:8000", "10.0.0.3:8000"], None))))
    item = FileDiscovery(type="file", files=[str(tmp_path / "*.json")])
    discovery = Discovery([PoolSpec("chat", [], [item])], DiscoverySettings(max_targets=3))
    await discovery.refresh(now=0.0)
    write_atomically(tmp_path / "chat-b.json", json.dumps(groups((["10.0.0.4:8000", "10.0.0.5:8000"], None))))
    members = await discovery.refresh(now=5.0)
    assert sorted(members["chat"]) == ["10.0.0.2:8000", "10.0.0.3:8000"]
    assert "4 targets, more than discovery.max_targets 3" in discovery.statuses()[0].last_error
    (tmp_path / "chat-a.json").unlink()  # room again: b is taken once it changes (or at the next full re-read)
    members = await discovery.refresh(now=10.0)
    assert list(members["chat"]) == []
    members = await discovery.refresh(now=400.0)
    assert sorted(members["chat"]) == ["10.0.0.4:8000", "10.0.0.5:8000"]
    assert discovery.statuses()[0].last_error is None
