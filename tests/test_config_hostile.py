"""Config files as they come (issue 19): whatever bytes a file holds, `check` and `serve` refuse it
with exit 2 and a line that names the problem, through one path, so a config `check` passes never
stops `serve`; a reload of such a file keeps the old config serving and says why in one line."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import ConfigError, load, validate
from monitor.service import create_app
from monitor.service.reload import Reloader
from tests.helpers.asgi_client import AUTH
from tests.helpers.asgi_requests import request

POOL = "pools:\n  - name: chat\n    targets: [http://127.0.0.1:8000]\n"


def write(tmp_path: Path, content: str | bytes, name: str = "monitor.yaml") -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def run(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def refused_by_check_and_serve(path: str, capsys) -> str:
    """Both commands exit 2 with the same message, and nothing that looks like a traceback."""
    code, checked = run(["check", "--config", path], capsys)
    assert code == 2, checked
    code, served = run(["serve", "--config", path, "--listen", "127.0.0.1:1"], capsys)
    assert code == 2, served
    assert checked == served
    assert "Traceback" not in checked
    return checked


# --- bytes that are not a config -------------------------------------------------------------------------


def test_a_latin1_comment_is_refused_naming_the_byte_and_line(tmp_path, capsys):
    path = write(tmp_path, (POOL + "# caf\xe9\n").encode("latin-1"))
    out = refused_by_check_and_serve(path, capsys)
    offset = len(POOL.encode()) + len("# caf")
    assert f"not UTF-8 at byte {offset} (line 4" in out


def test_a_binary_file_is_refused_with_exit_2(tmp_path, capsys):
    out = refused_by_check_and_serve(write(tmp_path, bytes(range(256)) * 4), capsys)
    assert "not valid YAML" in out or "not UTF-8" in out


def test_yaml_that_does_not_parse_names_its_line(tmp_path, capsys):
    out = refused_by_check_and_serve(write(tmp_path, POOL + "slos: [\n"), capsys)
    assert "not valid YAML at line" in out


def test_a_file_that_is_a_list_is_not_a_mapping_of_sections(tmp_path, capsys):
    out = refused_by_check_and_serve(write(tmp_path, "- pools\n- slos\n"), capsys)
    assert "expected a mapping of sections, got list" in out


def test_nesting_thousands_deep_is_refused_as_too_deep(tmp_path, capsys):
    out = refused_by_check_and_serve(write(tmp_path, "a: " + "[" * 5000), capsys)
    assert "nested too deeply" in out


def test_aliases_that_expand_to_billions_of_values_are_refused_as_too_large(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    with pytest.raises(ConfigError, match="too large"):
        load(write(tmp_path, "\n".join(lines) + "\n"))


def test_a_recursive_alias_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="recursive"):
        load(write(tmp_path, "pools: &p [*p]\n"))


def test_a_file_larger_than_any_config_is_refused_without_reading_it_whole(tmp_path):
    with pytest.raises(ConfigError, match="too large"):
        load(write(tmp_path, POOL + "#" * (5 * 2**20) + "\n"))


def test_an_impossible_date_is_a_string_not_a_crash(tmp_path):
    path = write(tmp_path, POOL + "slos:\n  - {name: x, indicator: {type: availability}, objective: 2026-99-99}\n")
    with pytest.raises(ConfigError, match="slos\\[0\\].objective"):
        load(path)


# --- duplicate keys --------------------------------------------------------------------------------------


def test_a_duplicated_top_level_pools_key_is_refused_with_both_lines(tmp_path, capsys):
    path = write(tmp_path, POOL + "scrape: {interval: 5s}\n" + POOL.replace("chat", "batch"))
    out = refused_by_check_and_serve(path, capsys)
    assert "pools: duplicate key (line 1 and line 5)" in out


def test_a_duplicated_key_deep_inside_a_pool_is_refused_by_its_key_path(tmp_path):
    path = write(tmp_path, POOL + "    health: {min_requests: 1, min_requests: 5}\n")
    with pytest.raises(ConfigError) as refused:
        load(path)
    assert refused.value.problems == [
        ("pools[0].health.min_requests: duplicate key (line 4 and line 4); YAML keeps only the last, "
        "so remove or merge one")]


def test_a_key_merged_from_an_anchor_may_still_be_overridden(tmp_path):
    text = "scrape:\n  <<: {interval: 5s, timeout: 1s}\n  interval: 10s\n" + POOL
    assert load(write(tmp_path, text)).config.scrape.interval == 10.0  # an override, not a duplicate


# --- bounds ----------------------------------------------------------------------------------------------


def test_a_scrape_interval_of_millions_of_years_is_refused_by_check_and_serve_alike(tmp_path, capsys):
    out = refused_by_check_and_serve(write(tmp_path, "scrape: {interval: 99999999999999d}\n" + POOL), capsys)
    assert "scrape.interval: duration too long: '99999999999999d' (at most 1d)" in out


@pytest.mark.parametrize(("section", "key", "value", "limit"), [
    ("scrape", "timeout", "2h", "1h"),
    ("evaluation", "window", "2d", "1d"),
    ("storage", "retention", "4000d", "3650d"),
    ("alertmanager", "timeout", "90m", "1h"),
])
def test_each_duration_has_an_upper_bound_named_in_its_message(section, key, value, limit):
    with pytest.raises(ConfigError) as refused:
        validate({section: {key: value}, "pools": [{"name": "p", "targets": ["http://h:1"]}]})
    assert f"{section}.{key}: duration too long: {value!r} (at most {limit})" in refused.value.problems


def test_an_slo_window_may_be_a_year_but_not_two():
    def slo(window: str) -> dict:
        return {"name": "up", "indicator": {"type": "availability"}, "objective": "99%", "window": window}

    validate({"pools": [{"name": "p", "targets": ["http://h:1"]}], "slos": [slo("365d")]})
    with pytest.raises(ConfigError, match=r"slos\[0\]\.window: duration too long: '730d' \(at most 400d\)"):
        validate({"pools": [{"name": "p", "targets": ["http://h:1"]}], "slos": [slo("730d")]})


def test_a_size_over_a_gibibyte_or_beyond_a_double_is_refused_not_a_crash():
    for size in ("2GiB", "9" * 400, 10**400):
        with pytest.raises(ConfigError, match="scrape.max_body_size: size too large"):
            validate({"scrape": {"max_body_size": size}, "pools": [{"name": "p", "targets": ["http://h:1"]}]})


def test_a_ratio_beyond_a_double_is_out_of_range_not_a_crash():
    with pytest.raises(ConfigError, match=r"slos\[0\]\.objective: ratio out of range"):
        validate({"pools": [{"name": "p", "targets": ["http://h:1"]}],
                  "slos": [{"name": "up", "indicator": {"type": "availability"}, "objective": 10**400}]})


# --- what serve would have crashed on, found by check ----------------------------------------------------


def test_a_prometheus_header_that_is_not_ascii_is_refused_before_the_client_is_built(tmp_path, capsys):
    text = POOL + "source: {type: prometheus, url: http://p:9090, headers: {X-Scope-OrgID: t\u00e9nant}}\n"
    out = refused_by_check_and_serve(write(tmp_path, text), capsys)
    assert "source.headers: header X-Scope-OrgID: value must be printable ASCII" in out


def test_a_listen_host_no_resolver_can_encode_is_refused_by_check(tmp_path, capsys):
    out = refused_by_check_and_serve(write(tmp_path, POOL + f"api: {{listen: '{'a' * 70}:9470'}}\n"), capsys)
    assert "api.listen: not a host name or address that can be bound" in out


def test_a_database_url_with_a_port_that_is_not_a_number_is_refused_by_check(tmp_path, capsys):
    out = refused_by_check_and_serve(write(tmp_path, POOL + "storage: {url: 'postgresql+psycopg://u@h:port/db'}\n"),
                                     capsys)
    assert "storage.url: not a database URL SQLAlchemy can read" in out


# --- messages --------------------------------------------------------------------------------------------


def test_an_unset_variable_is_named_where_the_value_is_refused():
    with pytest.raises(ConfigError) as refused:
        validate({"storage": {"url": "${SLO_MONITOR_DATABASE_URL}"},
                  "pools": [{"name": "p", "targets": ["http://h:1"]}]}, environ={})
    [problem] = refused.value.problems
    assert problem.startswith("storage.url: ${SLO_MONITOR_DATABASE_URL} is not set (expands to an empty string)")


@pytest.mark.parametrize(("metric", "number", "hint"), [
    ("ttft", 500, "500ms"), ("tpot", 50, "50ms"), ("e2e", 2, "2s"), ("itl", 0.5, "0.5s"), ("queue", "250", "250ms")])
def test_a_bare_latency_threshold_suggests_what_people_mean(metric, number, hint):
    with pytest.raises(ConfigError) as refused:
        validate({"pools": [{"name": "p", "targets": ["http://h:1"]}],
                  "slos": [{"name": "x", "indicator": {"type": "latency", "metric": metric, "threshold": number},
                            "objective": "99%"}]})
    assert f"did you mean {hint}?" in "\n".join(refused.value.problems)


def test_a_bare_scrape_interval_still_suggests_seconds():
    with pytest.raises(ConfigError, match="did you mean 30s?"):
        validate({"scrape": {"interval": 30}, "pools": [{"name": "p", "targets": ["http://h:1"]}]})


def test_check_counts_one_pool_and_one_slo_in_the_singular(tmp_path, capsys):
    path = write(tmp_path, POOL + "slos: [{name: up, indicator: {type: availability}, objective: 99%}]\n")
    code, out = run(["check", "--config", path], capsys)
    assert code == 0 and "ok: 1 pool, 1 target, 1 SLO" in out


# --- reloads ---------------------------------------------------------------------------------------------

GOOD = POOL + "api: {token: s3cret}\n"


def reloading_app(tmp_path: Path):
    path = write(tmp_path, GOOD)
    return create_app(load(path).config, store=None, config_path=path), Path(path)


def test_a_reload_of_a_file_that_is_not_utf8_answers_400_and_keeps_the_old_config(tmp_path, caplog):
    app, path = reloading_app(tmp_path)
    service = app.state.service
    before = service.config
    path.write_bytes((GOOD + "# caf\xe9\n").encode("latin-1"))
    with caplog.at_level(logging.INFO, logger="monitor"):
        answer = request(app, "POST", "/-/reload", headers=AUTH)
    assert answer.status_code == 400
    body = answer.json()
    assert body["status"] == "refused" and "not UTF-8 at byte" in body["problems"][0]
    assert service.config is before and service.reload_status.successful is False
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors[0].getMessage().startswith(f"config reload from {path} refused, still serving the previous "
                                             "config (1 problem)")
    assert all(r.exc_info is None for r in caplog.records)


def test_a_sighup_reload_of_a_broken_file_sets_the_gauge_to_0_and_leaves_no_task_exception(tmp_path, caplog):
    app, path = reloading_app(tmp_path)
    service = app.state.service
    reloader: Reloader = app.state.reloader
    path.write_bytes(b"\xff\xfe" + bytes(range(200)))

    async def sighup() -> None:
        reloader.bind(asyncio.get_running_loop())
        reloader.request()  # as the signal handler does
        for _ in range(200):
            await asyncio.sleep(0.01)
            if not service.reload_status.successful and not reloader._tasks:
                return

    with caplog.at_level(logging.INFO):
        asyncio.run(sighup())
    assert service.reload_status.successful is False
    page = request(app, "GET", "/metrics").text
    assert "slo_monitor_config_last_reload_successful 0.0" in page
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Task exception was never retrieved" not in logged and "Traceback" not in logged
    assert logged.count("refused, still serving the previous config") == 1
    assert all(r.exc_info is None for r in caplog.records)


def test_a_reload_with_a_duplicate_key_answers_400_naming_both_lines(tmp_path):
    app, path = reloading_app(tmp_path)
    path.write_text(GOOD + POOL)
    answer = request(app, "POST", "/-/reload", headers=AUTH)
    assert answer.status_code == 400
    assert "pools: duplicate key (line 1 and line 5); YAML keeps only the last, so remove or merge one" in \
        answer.json()["problems"]


# --- query parameters ------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["-5", "0", "5000", "abc", "1.5", "", "1e3", "\u0661"])
def test_a_decisions_limit_out_of_range_or_not_a_number_is_a_400_naming_it(tmp_path, limit):
    app, _ = reloading_app(tmp_path)
    answer = request(app, "GET", f"/api/v1/decisions?limit={limit}", headers=AUTH)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith("limit: expected a whole number from 1 to 1,000")


def test_a_decisions_limit_in_range_is_taken(tmp_path):
    app, _ = reloading_app(tmp_path)
    for limit in ("1", "1000", " 7 "):
        assert request(app, "GET", f"/api/v1/decisions?limit={limit}", headers=AUTH).status_code == 200
