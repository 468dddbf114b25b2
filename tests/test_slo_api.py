"""`GET /api/v1/slos` and the SLO series on /metrics, from an engine fed by hand (no scraping)."""

from __future__ import annotations

from monitor.config import validate
from monitor.service import create_app

from tests.helpers.asgi_client import AUTH, Client
from tests.helpers.slo_scrapes import T0, Server, result

CONFIG = validate({
    "pools": [{"name": "mixed", "targets": ["http://10.0.0.1:8000"]},
              {"name": "single", "targets": ["http://10.0.0.2:8000"]}],
    "slos": [{"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%"},
             {"name": "ttft-300", "indicator": {"type": "latency", "metric": "ttft", "threshold": "300ms"},
              "objective": "99%", "pools": ["single"], "runbook_url": "https://runbooks.example/ttft"}],
    "api": {"token": "s3cret"},
}).config
def app_with_traffic() -> Client:
    app = create_app(CONFIG, store=None)  # no lifespan: nothing scrapes, the test feeds the engine
    engine = app.state.service.slo
    small, large, only = Server(model="small"), Server(model="large"), Server(model="only")
    for k in range(3):
        small.requests(10)
        large.requests(8)
        large.requests(2, "error")
        only.requests(9, ttft_s=0.2)
        only.requests(1, ttft_s=0.4)
        engine.observe([result("mixed", "10.0.0.1:8000", T0 + 5 * k, small, large),
                        result("single", "10.0.0.2:8000", T0 + 5 * k, only)])
    engine.evaluate(T0 + 10)
    return Client(app)


def test_slos_json_has_the_interface_fields_and_nests_models():
    client = app_with_traffic()
    assert client.get("/api/v1/slos").status_code == 401
    rows = client.get("/api/v1/slos", headers=AUTH).json()
    assert [(r["name"], r["pool"]) for r in rows] == [("errors", "mixed"), ("errors", "single"), ("ttft-300", "single")]
    mixed = rows[0]
    assert {"name", "pool", "objective", "sli", "error_budget_remaining", "burn_rates", "alert"} <= mixed.keys()
    assert list(mixed["burn_rates"]) == ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
    assert mixed["objective"] == 0.999 and mixed["window"] == "30d"
    assert (mixed["good"], mixed["total"]) == (36.0, 40.0)
    assert mixed["alert"] == "none" and mixed["held"] == ["1h/5m", "6h/30m", "1d/2h", "3d/6h"]  # 4 bad < 5
    assert set(mixed["models"]) == {"large", "small"}
    assert mixed["models"]["large"]["sli"] == 0.8 and mixed["models"]["small"]["burn_rates"]["5m"] == 0.0
    assert rows[1]["models"] == {}
    ttft = rows[2]
    assert ttft["exact"] is False and ttft["good"] == 2 * (9 + 1 * 0.05 / 0.25) and ttft["total"] == 20.0
    assert ttft["indicator"] == {"type": "latency", "metric": "ttft", "threshold": 0.3}
    assert ttft["runbook_url"] == "https://runbooks.example/ttft"
    assert ttft["burn_rate_events"]["1h"] == {"good": ttft["good"], "total": 20.0}

    assert [r["name"] for r in client.get("/api/v1/slos?pool=single&name=errors", headers=AUTH).json()] == ["errors"]
    assert client.get("/api/v1/slos?pool=nope", headers=AUTH).status_code == 404
    assert client.get("/api/v1/slos?name=nope", headers=AUTH).status_code == 404


def test_slo_series_on_metrics():
    text = app_with_traffic().get("/metrics").text
    assert 'slo_monitor_slo_sli_ratio{model_name="",pool="mixed",slo="errors"} 0.9' in text
    assert 'slo_monitor_slo_sli_ratio{model_name="large",pool="mixed",slo="errors"} 0.8' in text
    assert 'slo_monitor_slo_error_budget_remaining_ratio{model_name="",pool="mixed",slo="errors"} -99.0' in text
    assert 'slo_monitor_slo_burn_rate{model_name="",pool="mixed",slo="errors",window="5m"} 100.0' in text
    assert 'slo_monitor_slo_alert{model_name="",pool="mixed",severity="page",slo="errors"} 0.0' in text
    assert 'slo_monitor_slo_sli_exact{model_name="",pool="single",slo="ttft-300"} 0.0' in text
    assert 'slo_monitor_slo_objective_ratio{model_name="",pool="single",slo="ttft-300"} 0.99' in text
    assert "slo_monitor_slo_evaluation_errors_total 0.0" in text
    assert "slo_monitor_alertmanager" not in text  # no alertmanager.url configured
