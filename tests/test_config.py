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
    assert "ok: 1 pool, 2 targets, 3 SLOs" in capsys.readouterr().out
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
        ("pools: [{name: p, targets: []}]", "pools[0]: a pool needs `targets`, `discovery` or both"),
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


@pytest.mark.e2e
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


# --- one pass, with the fix in each message (issue 13 item 3) -----------------------------------


def check_errors(tmp_path, capsys, text: str) -> str:
    assert main(["check", "--config", write(tmp_path, text)]) == 2
    return capsys.readouterr().err


def test_check_names_a_duplicate_target_together_with_an_unknown_key(tmp_path, capsys):
    err = check_errors(tmp_path, capsys, """
        scrape: {intervall: 5s}
        pools:
          - {name: p, targets: [http://a:8000, 'http://a:8000/']}
          - {name: q, targets: [http://a:8000, 'b:8000']}
        slos: [{name: s, indicator: {type: error_ratio}, objective: 99%, pools: [r]}]
    """)
    assert "scrape.intervall: unknown key (did you mean 'interval'?)" in err
    assert "pools[0].targets[1]: the same instance (a:8000) as pools[0].targets[0]" in err
    assert "pools[1].targets[0]: instance a:8000 is already in pool 'p'" in err
    assert "pools[1].targets[1]: not an http(s) URL: 'b:8000' (did you mean http://b:8000?)" in err
    assert "slos[0].pools[0]: no pool named 'r' (pools: p, q)" in err


def test_a_duplicate_pool_name_is_named_beside_a_bad_value(tmp_path, capsys):
    err = check_errors(tmp_path, capsys, """
        api: {listen: nope}
        pools: [{name: p, targets: [http://a:8000]}, {name: p, targets: [http://b:8000]}]
    """)
    assert "api.listen: not HOST:PORT" in err
    assert "pools[1].name: duplicate pool name 'p'" in err


def test_each_problem_is_named_once(tmp_path, capsys):
    err = check_errors(tmp_path, capsys,
                       "pools: [{name: p, targets: [http://a:8000]}, {name: q, targets: [http://a:8000]}]")
    assert err.count("instance a:8000 is already in pool 'p'") == 1


@pytest.mark.parametrize("fragment, hint", [
    ("objective: 99", "slos[0].objective: ratio out of range [0, 1]: 99 (did you mean 99%?)"),
    ("objective: '99.9'", "(did you mean 99.9%?)"),
    ("objective: 100%", "use e.g. 99.9%"),
    ("objective: 99%, window: 30", "slos[0].window: not a duration: 30 (did you mean 30s?"),
])
def test_slo_mistakes_say_what_was_probably_meant(tmp_path, capsys, fragment, hint):
    err = check_errors(tmp_path, capsys, "pools: [{name: p, targets: [http://a:8000]}]\n"
                                         f"slos: [{{name: s, indicator: {{type: error_ratio}}, {fragment}}}]")
    assert hint in err, err


@pytest.mark.parametrize("fragment, hint", [
    ("pools: [{name: p, targets: ['10.0.0.1:8000']}]", "pools[0].targets[0]: not an http(s) URL: '10.0.0.1:8000' "
                                                       "(did you mean http://10.0.0.1:8000?)"),
    ("pools: [{name: p, targets: ['ftp://a']}]", "(use http://host:port or https://host:port)"),
    ("api: {listen: 9470}", "api.listen: not HOST:PORT: 9470 (did you mean 127.0.0.1:9470"),
    ("scrape: {interval: '5'}", "scrape.interval: not a duration: '5' (did you mean 5s?"),
    ("scrape: {interval: 1s, timeout: 2s}", "set timeout to 1s or less, or leave it out"),
    ("alertmanager: {resend_interval: 2s}", "timeout 5s, the default, resend_interval 2s); set timeout to 2s or less"),
    ("pools: [{name: p}]", "pools[0]: a pool needs `targets`, `discovery` or both (e.g. targets: [http://"),
    ("slos: [{name: s, indicator: {type: latency, metric: ttft}, objective: 99%}]",
     "slos[0].indicator.threshold: required key is missing (e.g. 500ms for latency, 90% for saturation)"),
    ("scrape: {concurrency: lots}", "scrape.concurrency: Input should be a valid integer"),
])
def test_messages_show_the_value_seen_and_the_form_wanted(tmp_path, capsys, fragment, hint):
    text = fragment if fragment.startswith("pools") else f"pools: [{{name: p, targets: [http://a:8000]}}]\n{fragment}"
    err = check_errors(tmp_path, capsys, text)
    assert hint in err, err
    if "concurrency" in fragment:
        assert "(got 'lots')" in err


def test_scrape_timeout_follows_a_short_interval(tmp_path):
    one = load(write(tmp_path, "scrape: {interval: 1s}\npools: [{name: p, targets: [http://a:8000]}]")).config
    assert one.scrape.timeout == 1.0
    default = load(write(tmp_path, "pools: [{name: p, targets: [http://a:8000]}]")).config
    assert (default.scrape.interval, default.scrape.timeout) == (5.0, 2.0)
    explicit = load(write(tmp_path, "scrape: {interval: 10s, timeout: 3s}\n"
                                    "pools: [{name: p, targets: [http://a:8000]}]")).config
    assert explicit.scrape.timeout == 3.0


def test_postgresql_without_a_driver_means_psycopg(tmp_path):
    cfg = load(write(tmp_path, "storage: {url: 'postgresql://mon@db:5432/slo'}\n"
                               "pools: [{name: p, targets: [http://a:8000]}]")).config
    assert cfg.storage.url == "postgresql+psycopg://mon@db:5432/slo"


def test_postgres_scheme_is_refused_with_the_right_one(tmp_path, capsys):
    err = check_errors(tmp_path, capsys, "storage: {url: 'postgres://mon:s3cret@db/slo'}\n"
                                         "pools: [{name: p, targets: [http://a:8000]}]")
    assert "storage.url: postgres:// is not a SQLAlchemy URL (did you mean postgresql+psycopg://...?)" in err
    assert "s3cret" not in err


def test_a_sqlite_file_in_a_missing_folder_is_an_error_naming_storage_url(tmp_path, capsys):
    missing = tmp_path / "no" / "such"
    err = check_errors(tmp_path, capsys, f"storage: {{url: 'sqlite:///{missing}/monitor.db'}}\n"
                                         "pools: [{name: p, targets: [http://a:8000]}]")
    assert f"storage.url: the SQLite file's folder '{missing}' does not exist" in err
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://", "sqlite:///monitor.db"])
def test_sqlite_in_memory_and_in_the_working_folder_are_fine(tmp_path, url):
    cfg = load(write(tmp_path, f"storage: {{url: '{url}'}}\npools: [{{name: p, targets: [http://a:8000]}}]")).config
    assert cfg.storage.url == url


def test_config_and_settings_import_no_stage():
    """The settings import only units (and pydantic); config.py assembles them and imports no stage,
    counting imports inside functions and under TYPE_CHECKING."""
    import ast
    from pathlib import Path

    import monitor

    root = Path(monitor.__file__).parent
    stages = ("monitor.collect", "monitor.evaluate", "monitor.decide", "monitor.act", "monitor.publish",
              "monitor.service", "monitor.gpu", "monitor.otlp", "monitor.store", "monitor.cli")
    for path in [root / "config.py", *sorted((root / "settings").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                assert not name.startswith(stages), f"{path.name} imports {name}"
                if path.parent.name == "settings" and name.startswith("monitor"):
                    assert name == "monitor.units" or name.startswith("monitor.settings"), f"{path.name}: {name}"
