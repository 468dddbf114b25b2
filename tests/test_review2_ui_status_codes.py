"""Error pages of the console answer with error statuses: a script or a test that checks the status
code (not the page's words) sees a bad report period as 400 and an unknown instance as 404."""

from __future__ import annotations

from monitor.config import validate
from monitor.service import create_app
from tests.helpers.asgi_client import AUTH
from tests.helpers.asgi_requests import request


def app_of_one_pool():
    return create_app(validate({"pools": [{"name": "chat", "targets": ["http://10.0.0.1:8000"]}],
                                "slos": [{"name": "errors", "indicator": {"type": "error_ratio"},
                                          "objective": "99%"}],
                                "api": {"token": "s3cret"}}).config, store=None)


def test_a_report_period_that_is_not_a_month_is_a_400_in_html_and_in_csv():
    app = app_of_one_pool()
    for period in ("2026-13", "abc", "%3Cscript%3E"):
        page = request(app, "GET", f"/ui/reports?period={period}", headers=AUTH)
        assert page.status_code == 400, period
        assert "<script>" not in page.text
        csv = request(app, "GET", f"/ui/reports?period={period}&format=csv", headers=AUTH)
        assert csv.status_code == 400, period
        assert not csv.headers["content-type"].startswith("text/csv")


def test_a_good_period_still_answers_200_with_a_csv_header_row():
    app = app_of_one_pool()
    csv = request(app, "GET", "/ui/reports?period=2026-11&format=csv", headers=AUTH)
    assert csv.status_code == 200
    assert csv.text.splitlines()[0].startswith("period,slo,pool")


def test_an_unknown_instance_page_is_a_404_naming_it_escaped():
    answer = request(app_of_one_pool(), "GET", "/ui/instances/%3Cscript%3Ex", headers=AUTH)
    assert answer.status_code == 404
    assert "&lt;script&gt;x" in answer.text and "<script>x" not in answer.text
