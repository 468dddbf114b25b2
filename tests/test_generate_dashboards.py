"""Structure of the generated Grafana dashboards and provisioning files (the committed ones, which the
drift test in test_generate_rules.py holds equal to a fresh generation), and golden dashboards
compared with a fresh process's output."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.generate import dashboards

from tests.helpers.golden import GOLDEN, compare_with_golden, generate_fresh

REPO = Path(__file__).resolve().parent.parent
BOARDS = sorted((REPO / "dashboards").glob("*.json"))
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
UIDS = {"fleet.json": "llm-slo-fleet", "slos.json": "llm-slo-slos", "gpus.json": "llm-slo-gpus",
        "decisions.json": "llm-slo-decisions"}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_the_four_dashboards_are_there_with_stable_unique_uids() -> None:
    assert {p.name: _load(p)["uid"] for p in BOARDS} == UIDS
    for path in BOARDS:
        board = _load(path)
        assert board["id"] is None  # Grafana assigns ids; a fixed one would clash on import
        assert "llm-slo-monitor" in board["tags"]
        assert len(board["uid"]) <= 40


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_panel_ids_are_unique_and_grid_positions_valid(path: Path) -> None:
    panels = _load(path)["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert set(pos) == {"h", "w", "x", "y"} and all(isinstance(v, int) for v in pos.values()), panel["title"]
        assert pos["w"] >= 1 and pos["h"] >= 1 and pos["x"] >= 0 and pos["y"] >= 0
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    titles = [p["title"] for p in panels if p["type"] != "row"]
    assert len(titles) == len(set(titles))
    assert panels[0]["type"] == "row" and panels[0]["gridPos"]["y"] == 0


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_every_panel_and_query_reads_the_datasource_variable(path: Path) -> None:
    board = _load(path)
    for panel in board["panels"]:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == DATASOURCE, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("pool", "model_name", "instance"):
        var = variables[name]
        assert var["type"] == "query" and var["datasource"] == DATASOURCE
        assert var["includeAll"] and var["multi"] and var["allValue"] == ".*"
        assert var["current"]["value"] == ["$__all"]
        assert re.fullmatch(r"label_values\(.+, " + name + r"\)", var["query"])


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_every_panel_has_a_unit_and_queries_use_the_filters(path: Path) -> None:
    board = _load(path)
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        unit = panel["fieldConfig"]["defaults"].get("unit")
        if panel["type"] != "state-timeline":
            assert unit, f"{panel['title']} has no unit"
        else:
            assert panel["fieldConfig"]["defaults"]["mappings"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert "$pool" in expr or 'slo:objective:ratio{slo=~"$slo"}' in expr, (panel["title"], expr)
            assert "[5m]" not in expr and "[1m]" not in expr  # rates follow the dashboard's $__rate_interval


def test_fleet_dashboard_covers_what_the_issue_lists() -> None:
    titles = {p["title"] for p in _load(REPO / "dashboards" / "fleet.json")["panels"]}
    for wanted in ("Requests per second", "Tokens per second", "Time to first token", "Time per output token",
                   "End-to-end request latency", "Errors and aborts by reason", "Requests running and waiting",
                   "KV-cache usage", "Preemptions per second", "Prefix-cache hit rate"):
        assert wanted in titles
    ttft = next(p for p in _load(REPO / "dashboards" / "fleet.json")["panels"] if p["title"] == "Time to first token")
    assert [t["legendFormat"].split()[0] for t in ttft["targets"]] == ["p50", "p90", "p99"]
    assert ttft["fieldConfig"]["defaults"]["unit"] == "s"
    slos = {p["title"] for p in _load(REPO / "dashboards" / "slos.json")["panels"]}
    assert {"SLI", "Error budget remaining", "Burn rate per window", "Burn-rate alerts firing"} <= slos
    gpus = {p["title"] for p in _load(REPO / "dashboards" / "gpus.json")["panels"]}
    assert {"GPU utilisation", "GPU memory used", "Temperature", "Power draw", "Last XID error (exporters)"} <= gpus
    decisions = {p["title"] for p in _load(REPO / "dashboards" / "decisions.json")["panels"]}
    assert {"Instance health", "Desired and current replicas", "Load-balancer weight"} <= decisions


def test_specs_and_json_agree() -> None:
    for spec in dashboards.dashboard_specs():
        board = json.loads(dashboards.render(spec))
        exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
        assert exprs == [query.expr for panel in spec.panels() for query in panel.queries]


@pytest.mark.e2e
def test_a_fresh_process_writes_the_golden_dashboards(tmp_path: Path) -> None:
    """Dashboards and provisioning files, as a new `slo-monitor generate` process writes them
    (another hash seed, no state from this one), equal the reviewed goldens file by file. Refresh
    after an intended change: UPDATE_GOLDEN=1 (tests/helpers/golden.py)."""
    generate_fresh(["--config", str(GOLDEN / "matrix" / "config.yaml")], tmp_path)
    compare_with_golden(tmp_path, "matrix", ("dashboards",))


def test_provisioning_files_load_the_dashboards() -> None:
    provisioning = REPO / "dashboards" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "llm-slo-monitor.yml").read_text())
    assert datasource["apiVersion"] == 1
    (source,) = datasource["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy" and source["url"].startswith("http")
    provider = yaml.safe_load((provisioning / "dashboards" / "llm-slo-monitor.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"].startswith("/")
    readme = (REPO / "dashboards" / "README.md").read_text()
    assert entry["options"]["path"] in readme  # the README copies the JSON where the provider looks
