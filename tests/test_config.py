"""Config validation: every mistake exits 2 and names its key path."""

import subprocess
import sys
import textwrap

import pytest

from monitor.cli import main
from monitor.config import load, parse_duration, parse_ratio, parse_size

GOOD = """
storage:
  url: sqlite:///./slo-monitor.db
scrape:
  interval: 5s
  timeout: 2s
pools:
  - name: llama-70b
    targets: [http://10.0.0.11:8000, http://10.0.0.12:8000]
slos:
  - name: ttft-500ms
    indicator: {type: latency, metric: ttft, threshold: 500ms}
    objective: 99%
    window: 30d
  - name: errors
    indicator: {type: error_ratio}
    objective: 99.9%
  - name: kv-cache
    indicator: {type: saturation, metric: kv_cache_usage, threshold: 0.9}
    objective: 99%
api:
  listen: 127.0.0.1:9470
  token: ${SLO_MONITOR_TOKEN}
gpu:
  exporters: [http://10.0.0.11:9400]
alertmanager:
  url: http://127.0.0.1:9093
nginx:
  upstream_file: ./nginx/llm-upstreams.conf
  check: nginx -t
  reload: nginx -s reload
"""


def write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_the_interface_example_is_valid(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLO_MONITOR_TOKEN", "s3cret")
    assert main(["check", "--config", write(tmp_path, GOOD)]) == 0
    assert "ok: 1 pools, 2 targets, 3 SLOs" in capsys.readouterr().out
    cfg = load(write(tmp_path, GOOD)).config
    assert cfg.api.token == "s3cret"
    assert cfg.slos[1].objective == pytest.approx(0.999)
    assert cfg.slos[0].indicator.threshold == 0.5
    assert cfg.slos[0].window == 30 * 86400
    assert cfg.scrape.max_body_size == 16 * 2**20


def test_unset_env_var_is_a_warning_and_leaves_the_token_unset(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SLO_MONITOR_TOKEN", raising=False)
    assert main(["check", "--config", write(tmp_path, GOOD)]) == 0
    assert "api.token: environment variable SLO_MONITOR_TOKEN is not set" in capsys.readouterr().out
    assert load(write(tmp_path, GOOD)).config.api.token is None


def test_env_default_syntax(tmp_path, monkeypatch):
    monkeypatch.delenv("DB_HOST", raising=False)
    cfg = load(write(tmp_path, """
        storage: {url: "postgresql+psycopg://mon@${DB_HOST:-db.internal}:5432/slo"}
        pools: [{name: p, targets: ["http://${DB_HOST:-10.0.0.1}:8000"]}]
    """)).config
    assert cfg.storage.url == "postgresql+psycopg://mon@db.internal:5432/slo"
    assert cfg.pools[0].targets == ["http://10.0.0.1:8000"]


@pytest.mark.parametrize(
    "fragment, expected",
    [
        ("pools: [{name: p, targets: [http://a:8000, 'ftp://b']}]", "pools[0].targets[1]: not an http(s) URL"),
        ("pools: [{name: p, targets: [http://a:8000]}]\nscrape: {intervall: 5s}",
         "scrape.intervall: unknown key (did you mean 'interval'?)"),
        ("pools: [{name: p, targets: [http://a:8000]}]\nscrape: {interval: 5}", "scrape.interval: not a duration"),
        ("pools: [{name: p, targets: [http://a:8000]}]\nscrape: {interval: 5 minutes}",
         "scrape.interval: not a duration"),
        ("pools: [{name: p, targets: [http://a:8000]}]\nscrape: {interval: 1s, timeout: 2s}",
         "scrape: timeout must not exceed interval"),
        ("pools: [{name: p, targets: [http://a:8000]}]\n"
         "slos: [{name: s, indicator: {type: error_ratio}, objective: 120%}]",
         "slos[0].objective: ratio out of range"),
        ("pools: [{name: p, targets: [http://a:8000]}]\n"
         "slos: [{name: s, indicator: {type: error_ratio}, objective: 100%}]",
         "slos[0].objective: objective must be above 0% and below 100%"),
        ("pools: [{name: p, targets: [http://a:8000]}]\n"
         "slos: [{name: s, indicator: {type: latency, metric: ttfb, threshold: 1s}, objective: 99%}]",
         "slos[0].indicator.metric:"),
        ("pools: [{name: p, targets: [http://a:8000]}]\n"
         "slos: [{name: s, indicator: {type: latency, metric: ttft}, objective: 99%}]",
         "slos[0].indicator.threshold: required key is missing"),
        ("pools: [{name: p, targets: [http://a:8000]}]\n"
         "slos: [{name: s, indicator: {type: speed}, objective: 99%}]",
         "slos[0].indicator: unknown type 'speed'"),
        ("pools: [{name: p, targets: [http://a:8000]}, {name: p, targets: [http://b:8000]}]",
         "pools[1].name: duplicate pool name 'p'"),
        ("pools: [{name: p, targets: [http://a:8000]}, {name: q, targets: [http://a:8000/]}]",
         "pools[1].targets[0]: instance a:8000 is already in pool 'p'"),
        ("pools: [{name: p, targets: []}]", "pools[0].targets: must not be empty"),
        ("pools: []", "pools: must not be empty"),
        ("storage: {url: mysql://x}\npools: [{name: p, targets: [http://a:8000]}]", "storage.url:"),
        ("pools: [{name: p, targets: [http://a:8000]}]\napi: {listen: 9470}", "api.listen: not HOST:PORT"),
        ("pools: [{name: p, targets: [http://a:8000]}]\nalertmanager: {url: localhost:9093}",
         "alertmanager.url: not an http(s) URL"),
        ("pools: [{name: 'bad name', targets: [http://a:8000]}]", "pools[0].name: must start with a letter"),
        ("pools: [{name: p, targets: [http://a:8000]}]\nslos: [{name: s, indicator: {type: error_ratio}, "
         "objective: 99%, pools: [nope]}]", "slos[0].pools[0]: no pool named 'nope'"),
        ("pools: [{name: p, targets: [http://a:8000]}]\nscrape: {max_body_size: lots}", "scrape.max_body_size: not a size"),
        ("storage: {url: sqlite:///x.db}", "pools: required key is missing"),
        ("pools: [{name: p, targets: [http://a:8000]}\n", "not valid YAML at line"),
        ("- just\n- a list\n", "(top level): expected a mapping"),
    ],
)
def test_each_mistake_exits_2_naming_its_key(tmp_path, capsys, fragment, expected):
    assert main(["check", "--config", write(tmp_path, fragment)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    path = write(tmp_path, """
        scrape: {intervall: 5s, timeout: soon}
        pools: [{name: p, targets: [http://a:8000, 'b:8000']}]
        api: {listen: nope}
    """)
    assert main(["check", "--config", path]) == 2
    err = capsys.readouterr().err
    for expected in ("scrape.intervall", "scrape.timeout", "pools[0].targets[1]", "api.listen"):
        assert expected in err


def test_missing_file_exits_2(tmp_path, capsys):
    assert main(["check", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_off_boundary_threshold_warns_with_neighbours(tmp_path, capsys):
    path = write(tmp_path, """
        pools: [{name: p, targets: [http://a:8000]}]
        slos: [{name: ttft-300, indicator: {type: latency, metric: ttft, threshold: 300ms}, objective: 99%}]
    """)
    assert main(["check", "--config", path]) == 0
    out = capsys.readouterr().out
    assert "slos[0].indicator.threshold: 300ms is not a bucket boundary" in out
    assert "250ms and 500ms" in out


def test_console_script_exit_code(tmp_path):
    path = write(tmp_path, "pools: [{name: p, targets: [ftp://a]}]")
    done = subprocess.run([sys.executable, "-m", "monitor", "check", "--config", path],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "pools[0].targets[0]: not an http(s) URL" in done.stderr


@pytest.mark.parametrize("text, seconds", [("500ms", 0.5), ("5s", 5), ("1m", 60), ("1h30m", 5400), ("30d", 2592000),
                                           ("1w", 604800), ("1.5s", 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5", 5, "", "5x", "s5", "-1s", "0s", "1m 30s"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("text, ratio", [("99.9%", 0.999), ("0.999", 0.999), (0.99, 0.99), ("100%", 1.0), (0, 0.0)])
def test_ratios(text, ratio):
    assert parse_ratio(text) == pytest.approx(ratio)


def test_sizes():
    assert parse_size("16MiB") == 16 * 2**20
    assert parse_size("1MB") == 10**6
    assert parse_size(4096) == 4096
