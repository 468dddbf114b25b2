"""Generated Prometheus rules: promtool, amtool and a live Alertmanager on them; drift of the committed
files; and that the rules count good and bad events exactly as the service does."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import yaml


from monitor.cli import main
from monitor.config import load, validate
from monitor.evaluate.slo import burn_factors, error_budget
from monitor.evaluate.windows import fraction_at_or_below
from monitor.generate import MARK, Options, generate, render_all, rules
from monitor.generate import expressions as q
from monitor.generate.rule_tests import Clock, Model, prom_rate, series_values
from monitor.samples import Histogram

from tests.helpers.am_server import Alertmanager
from tests.helpers.ci import require
from tests.helpers.golden import GOLDEN, compare_with_golden, generate_fresh

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "example.yaml"

# Every indicator, objectives from 80% (no page can fire) to 99.999%, windows from 1 to 30 days,
# thresholds on, between, below and above vLLM's buckets, several pools, per-SLO pools and minimums:
# also the config of the golden files (tests/fixtures/golden/matrix/).
MATRIX = (GOLDEN / "matrix" / "config.yaml").read_text()


def tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    require(Path(path).exists(), f"{name} is not installed (Debian packages prometheus / prometheus-alertmanager)")
    return path


def run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def matrix_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("matrix")
    (root / "config.yaml").write_text(MATRIX)
    generate(load(root / "config.yaml").config, root / "out")
    generate(load(EXAMPLE).config, root / "example-30s", Options(rule_interval_s=30.0))
    return root / "out"


def _alert_dirs(matrix_out: Path) -> list[Path]:
    """The committed example, the matrix, and the example at a 30 s rule interval (the shipped
    promtool tests follow `--rule-interval`: their samples and evaluations are that far apart)."""
    return [REPO / "alerts", matrix_out / "alerts", matrix_out.parent / "example-30s" / "alerts"]


@pytest.mark.e2e
def test_promtool_check_rules_passes_on_every_rule_file(matrix_out: Path) -> None:
    promtool = tool("promtool")
    for folder in _alert_dirs(matrix_out):
        files = sorted(folder.glob("*.rules.yml"))
        assert files, folder
        result = run([promtool, "check", "rules", *map(str, files)])
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("SUCCESS") == len(files)


@pytest.mark.e2e
def test_promtool_test_rules_passes_on_every_test_file(matrix_out: Path) -> None:
    promtool = tool("promtool")
    files = [f for folder in _alert_dirs(matrix_out) for f in sorted(folder.glob("*.test.yml"))]
    assert len(files) >= 5 + 12 + 5
    # one promtool per file, side by side: each takes about a second
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda f: (f, run([promtool, "test", "rules", f.name], cwd=f.parent)), files))
    failed = [f"{f}:\n{r.stdout}{r.stderr}" for f, r in results if r.returncode != 0]
    assert not failed, "\n".join(failed)


def _alert_keys(rule: dict) -> tuple[str, tuple[tuple[str, str], ...]]:
    return rule["alert"], tuple(sorted(rule.get("labels", {}).items()))


def test_every_generated_alert_has_a_firing_and_a_quiet_case(matrix_out: Path) -> None:
    """Read back from the files: each alerting rule has a promtool case expecting it and one that
    checks its alertname at a moment when it is not expected."""
    for folder in _alert_dirs(matrix_out):
        for rules_file in sorted(folder.glob("*.rules.yml")):
            tests = yaml.load(rules_file.with_name(rules_file.name.replace(".rules.", ".test.")).read_text(),
                              Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            alerts = [r for g in yaml.safe_load(rules_file.read_text())["groups"] for r in g["rules"] if "alert" in r]
            assert alerts, rules_file
            for rule in alerts:
                fires = quiet = False
                for case in tests["tests"]:
                    for check in case.get("alert_rule_test", []):
                        if check["alertname"] != rule["alert"]:
                            continue
                        matching = [a for a in check["exp_alerts"]
                                    if all(a["exp_labels"].get(k) == v for k, v in rule["labels"].items())]
                        fires |= bool(matching)
                        quiet |= not matching
                if rule["alert"] == "ErrorBudgetExhausted" and not fires:
                    # 20 minutes of input cannot cover budget_min_coverage of a long SLO window: the
                    # case to have is then an overspent budget that the coverage gate keeps quiet
                    fires = any("under budget_min_coverage" in case["name"] for case in tests["tests"])
                assert fires and quiet, f"{rules_file.name}: {rule['alert']} {rule['labels']} fires={fires} quiet={quiet}"


def test_burn_alerts_use_the_services_pairs_factors_and_no_for(matrix_out: Path) -> None:
    config = load(matrix_out.parent / "config.yaml").config
    for slo in config.slos:
        built = rules.slo_rules([p.name for p in config.pools], slo)
        budget = error_budget(slo.objective)
        factors = burn_factors(slo.window, built.pairs)
        burn = [r for r in built.alerts if r["alert"] == "SloErrorBudgetBurn"]
        for rule in burn:
            assert "for" not in rule
            # the tier says which pairs (an SLO's own labels may replace `severity`)
            severity = {"fast": "page", "slow": "ticket"}[rule["labels"]["burnrate_tier"]]
            assert rule["labels"]["severity"] == slo.labels.get("severity", severity)
            found = {(float(f), float(b)) for f, b in re.findall(r"> \(([\d.e+-]+) \* ([\d.e+-]+)\)", rule["expr"])}
            pairs = [p for p in built.pairs if p.severity == severity]
            assert found == {(round(factors[p.name], 6), float(q.number(budget))) for p in pairs}, rule["expr"]
            if slo.min_bad_events:
                assert f">= {q.number(slo.min_bad_events)}" in rule["expr"]
        # a pair that even 100% errors cannot trip is left out, never shipped silent
        for pair in built.pairs:
            assert pair.factor(slo.window) < 1 / budget
    err80 = next(s for s in config.slos if s.name == "err-80")
    assert [r["labels"]["severity"] for r in rules.slo_rules([p.name for p in config.pools], err80).alerts if "burnrate_tier" in r["labels"]] \
        == ["ticket"]


def test_burn_alert_labels_are_the_ones_the_service_sends() -> None:
    """Generation does not import the publish layer, so the burn alert's name and tiers are kept
    there twice; one inhibit rule serves both paths only while the two agree."""
    from monitor.publish import alertmanager

    assert rules.BURN_ALERT == alertmanager.ALERTNAME
    assert rules.TIERS == alertmanager.TIERS


def test_latency_rules_count_good_requests_like_the_service() -> None:
    """threshold_buckets' weights, applied to cumulative bucket counts, give exactly the good count
    `fraction_at_or_below` (the service) gives: on a boundary, between two, below the first, past
    the last."""
    for metric in ("ttft", "tpot", "e2e", "queue"):
        bounds = q.bucket_bounds(metric)
        cumulative = tuple(float(10 * (i + 1) ** 2) for i in range(len(bounds))) + (float(10 * (len(bounds) + 1) ** 2),)
        hist = Histogram(bounds + (math.inf,), cumulative, 0.0, cumulative[-1])
        thresholds = [bounds[0] / 3, bounds[0], bounds[3], (bounds[3] + bounds[4]) / 2, bounds[5] * 1.01,
                      bounds[-1], bounds[-1] * 2]
        for threshold in thresholds:
            by_bound = dict(zip(bounds, cumulative))
            good = sum(w * by_bound[b] for b, w in q.threshold_buckets(metric, threshold))
            assert good == pytest.approx(fraction_at_or_below(hist, threshold).good, rel=1e-12), (metric, threshold)


def test_le_matchers_select_both_spellings_of_whole_numbers() -> None:
    def regex(matcher: str) -> str:
        # the PromQL string literal, unescaped, is an anchored RE2 (Python's re agrees for these)
        return matcher.split('"', 1)[1].rsplit('"', 1)[0].replace("\\\\", "\\")

    whole = q.le_matcher(1.0)
    assert whole.startswith("le=~")
    assert re.fullmatch(regex(whole), "1") and re.fullmatch(regex(whole), "1.0")
    assert not re.fullmatch(regex(whole), "10") and not re.fullmatch(regex(whole), "1.05")
    assert q.le_matcher(0.5) == 'le="0.5"'
    assert re.fullmatch(regex(q.le_matcher(2560.0)), "2560.0")


def test_model_rate_matches_prometheus_extrapolation() -> None:
    """The scenario model's `rate()` on a counter starting at 0: underestimated while the 5m range is
    not yet full (Prometheus divides by the range), exact from then on."""
    samples = [60.0 * t for t in range(12)]  # 1/s
    assert prom_rate(samples, 0) is None
    assert prom_rate(samples, 1) == pytest.approx(60 / 300)
    assert prom_rate(samples, 5) == pytest.approx(1.0)
    assert prom_rate(samples, 11) == pytest.approx(1.0)
    model = Model(valid_rate=[None] + [1.0] * 10, bad_rate=[None] + [0.5] * 10, clock=Clock(60.0))
    assert model.counts(300.0, 10) == (150.0, 300.0)  # sum_over_time of 5 recordings x 60 s
    assert model.ratio(3600.0, 10) == 0.5
    # at a 30 s rule interval the same traffic gives the same counts from twice the recordings
    half = Model(valid_rate=[None] + [1.0] * 20, bad_rate=[None] + [0.5] * 20, clock=Clock(30.0))
    assert half.counts(300.0, 20) == (150.0, 300.0)
    assert prom_rate([30.0 * t for t in range(30)], 20, range_steps=10, step_s=30.0) == pytest.approx(1.0)


def test_series_values_expand_exactly() -> None:
    """A counter written as `a+bxn` segments must expand (by repeated addition, as promtool does)
    to the very same floats, or a segment joint reads as a counter reset."""
    values = [0.0]
    for _ in range(20):
        values.append(values[-1] + 1.728)
    values += [values[-1]] * 10 + [values[-1] + 600 * k for k in range(1, 5)]
    expanded: list[float] = []
    for token in series_values(values).split():
        m = re.fullmatch(r"([-\d.e+]+)(?:([+-])([\d.e+-]+)x(\d+))?", token)
        assert m, token
        start = float(m.group(1))
        if m.group(2) is None:
            expanded.append(start)
            continue
        step = float(m.group(3)) * (-1 if m.group(2) == "-" else 1)
        running = start
        for _ in range(int(m.group(4)) + 1):
            expanded.append(running)
            running += step
    assert expanded == values
    assert series_values([0.0, 5.0, 10.0, 15.0]) == "0+5x3"


def test_committed_output_matches_a_fresh_generation(tmp_path: Path) -> None:
    """dashboards/ and alerts/ hold exactly what `slo-monitor generate` writes for config/example.yaml."""
    assert main(["generate", "--config", str(EXAMPLE), "--out", str(tmp_path)]) == 0
    for folder in ("dashboards", "alerts"):
        fresh = {p.relative_to(tmp_path / folder): p for p in (tmp_path / folder).rglob("*") if p.is_file()}
        committed = {p.relative_to(REPO / folder): p for p in (REPO / folder).rglob("*") if p.is_file()}
        assert sorted(map(str, committed)) == sorted(map(str, fresh)), \
            f"{folder}/ differs from a fresh generation; run: slo-monitor generate --config config/example.yaml --out ."
        stale = [str(rel) for rel, path in fresh.items() if committed[rel].read_text() != path.read_text()]
        assert not stale, (f"{folder}/ is stale: {stale}; "
                           "run: slo-monitor generate --config config/example.yaml --out .")


def test_generate_command_writes_the_layout_and_refuses_bad_input(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["generate", "--config", str(EXAMPLE), "--out", str(out), "--rule-interval", "30s"]) == 0
    assert sorted(p.name for p in (out / "dashboards").glob("*.json")) == \
        ["decisions.json", "fleet.json", "gpus.json", "slos.json"]
    assert (out / "alerts" / "slo-errors.rules.yml").exists() and (out / "alerts" / "slo-errors.test.yml").exists()
    assert "interval: 30s" in (out / "alerts" / "slo-errors.rules.yml").read_text()
    assert "* 30)" not in (out / "alerts" / "slo-errors.rules.yml").read_text()  # the multiplier follows
    assert "[59m45s]) * 30" in (out / "alerts" / "slo-errors.rules.yml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: []\n")
    assert main(["generate", "--config", str(bad), "--out", str(out)]) == 2
    assert main(["generate", "--config", str(EXAMPLE), "--out", str(out), "--rule-interval", "10m"]) == 2
    assert "pools" in capsys.readouterr().err


def test_the_gpu_dashboard_is_written_only_where_gpus_are_configured(tmp_path: Path, capsys) -> None:
    """Without gpu.exporters no GPU series reach Prometheus: no empty GPU dashboard, a note saying
    why, and the one an earlier run wrote (with GPUs) is removed."""
    out = tmp_path / "out"
    assert main(["generate", "--config", str(EXAMPLE), "--out", str(out)]) == 0
    assert (out / "dashboards" / "gpus.json").exists()
    assert "GPU dashboard" not in capsys.readouterr().err
    no_gpu = tmp_path / "no-gpu.yaml"
    no_gpu.write_text(re.sub(r"(?m)^gpu:\n(  .*\n)+", "", EXAMPLE.read_text()))
    assert "gpu:" not in no_gpu.read_text()
    assert main(["generate", "--config", str(no_gpu), "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "dashboards").glob("*.json")) == ["decisions.json", "fleet.json", "slos.json"]
    assert "gpus.json" not in (out / "dashboards" / "README.md").read_text()
    err = capsys.readouterr().err
    assert "note: no GPU dashboard" in err and "gpu.exporters" in err


def test_regenerating_removes_only_its_own_stale_files(tmp_path: Path) -> None:
    two = validate({"pools": [{"name": "p", "targets": ["http://127.0.0.1:8000"]}],
                    "slos": [{"name": "one", "indicator": {"type": "error_ratio"}, "objective": "99%"},
                             {"name": "two", "indicator": {"type": "availability"}, "objective": "99%"}]},
                   environ={}).config
    generate(two, tmp_path)
    mine = tmp_path / "alerts" / "custom.rules.yml"
    mine.write_text("groups: []\n")
    one = two.model_copy(update={"slos": two.slos[:1]})
    generate(one, tmp_path)
    assert not (tmp_path / "alerts" / "slo-two.rules.yml").exists()
    assert not (tmp_path / "alerts" / "slo-two.test.yml").exists()
    assert (tmp_path / "alerts" / "slo-one.rules.yml").read_text().startswith(MARK)
    assert mine.exists()


@pytest.mark.e2e
def test_a_fresh_process_writes_the_golden_rules(tmp_path: Path) -> None:
    """The matrix's rules, promtool tests, prometheus.yml and README, as a new `slo-monitor generate`
    process writes them (another hash seed, no state from this one), equal the reviewed goldens
    file by file. Refresh after an intended change: UPDATE_GOLDEN=1 (tests/helpers/golden.py)."""
    generate_fresh(["--config", str(GOLDEN / "matrix" / "config.yaml")], tmp_path)
    compare_with_golden(tmp_path, "matrix", ("alerts",))


def test_the_rule_interval_changes_the_rules() -> None:
    config = load(EXAMPLE).config
    assert render_all(config, Options(rule_interval_s=30.0)) != render_all(config)


@pytest.mark.e2e
def test_prometheus_config_is_valid_and_labels_pools(matrix_out: Path) -> None:
    promtool = tool("promtool")
    for folder in _alert_dirs(matrix_out):
        result = run([promtool, "check", "config", "prometheus.yml"], cwd=folder)
        assert result.returncode == 0, result.stdout + result.stderr
    matrix = yaml.safe_load((matrix_out / "alerts" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in matrix["scrape_configs"]}
    assert jobs["slo-monitor"]["honor_labels"] is True
    pools = {g["labels"]["pool"]: g["targets"] for j in jobs.values() if j["job_name"].startswith("vllm")
             for g in j["static_configs"]}
    assert pools == {"a": ["10.0.0.1:8000", "10.0.0.2:8000"], "b.x": ["10.0.0.3:8443"]}
    https = next(j for j in jobs.values() if j.get("scheme") == "https")
    assert https["metrics_path"] == "/v1prefix/metrics"
    # a second vLLM job still reads as job="vllm", which the availability SLO and VllmTargetDown select
    assert https["relabel_configs"] == [{"target_label": "job", "replacement": "vllm"}]
    gpu = [g for j in jobs.values() if j["job_name"] == "gpu" for g in j["static_configs"]]
    # the exporter beside pool a's server is pool a's; the one on an unknown host has no pool
    assert {tuple(g["targets"]): g.get("labels", {}).get("pool") for g in gpu} == \
        {("10.0.0.1:9400",): "a", ("10.0.0.9:9400",): None}


@pytest.mark.e2e
def test_amtool_accepts_the_alertmanager_example() -> None:
    result = run([tool("amtool"), "check-config", str(REPO / "alerts" / "alertmanager.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 inhibit rules" in result.stdout


@pytest.mark.e2e
def test_a_page_inhibits_the_ticket_of_the_same_slo_on_a_real_alertmanager(tmp_path: Path) -> None:
    """Page and ticket of one SLO fire together at the start of a fast burn; with the example config
    Alertmanager holds back the ticket, and only that one."""
    config = (REPO / "alerts" / "alertmanager.yml").read_text()
    with Alertmanager(tmp_path, config=config) as am:
        now = datetime.now(timezone.utc)
        ends = (now + timedelta(minutes=10)).isoformat()

        def alert(slo: str, severity: str) -> dict:
            return {"labels": {"alertname": "SloErrorBudgetBurn", "slo": slo, "pool": "llama-70b",
                               "model_name": "m", "severity": severity,
                               "burnrate_tier": "fast" if severity == "page" else "slow"},
                    "startsAt": now.isoformat(), "endsAt": ends}

        httpx.post(f"{am.url}/api/v2/alerts", json=[alert("errors", "page"), alert("errors", "ticket"),
                                                    alert("ttft", "ticket")], timeout=5).raise_for_status()
        state = {(a["labels"]["slo"], a["labels"]["severity"]): a["status"] for a in am.alerts()}
        assert state[("errors", "ticket")]["state"] == "suppressed" and state[("errors", "ticket")]["inhibitedBy"]
        assert state[("errors", "page")]["state"] == "active"
        assert state[("ttft", "ticket")]["state"] == "active"
