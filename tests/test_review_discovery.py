"""Hostile-review findings on discovery (issue 19, "one grammar for targets"): every source reads
a host the same way."""

from __future__ import annotations

from monitor.collect.discovery.targets import compile_matchers, read_active_targets
from monitor.settings.discovery import parse_selector
from monitor.units import TargetRefused, split_host_port


def _answer(*urls: str) -> dict:
    return {"status": "success", "data": {"activeTargets": [
        {"labels": {"job": "vllm"}, "discoveredLabels": {}, "scrapeUrl": url} for url in urls]}}


def test_an_unbracketed_ipv6_scrape_url_is_refused_as_file_sd_refuses_it_not_split_at_its_last_colon():
    # `fd00::1:80` is the IPv6 address fd00::1:80 as much as fd00::1 port 80; file, http and DNS
    # sources refuse it, the Prometheus source took the last colon for the port
    try:
        split_host_port("fd00::1:80")
        raise AssertionError("file_sd form accepted")
    except TargetRefused as exc:
        assert exc.reason == "bad_host"
    matchers = compile_matchers(parse_selector('job="vllm"'))
    parsed = read_active_targets(_answer("http://fd00::1:80/metrics", "http://[fd00::1]:8000/metrics"),
                                 "prometheus test", matchers)
    assert [t.address for t in parsed.targets] == ["[fd00::1]:8000"]
    assert [r.reason for r in parsed.rejected] == ["bad_host"]
    assert "brackets" in parsed.rejected[0].message
