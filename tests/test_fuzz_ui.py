"""Hypothesis properties for what the console parses from a request: the report's `period`, the login
form's body and the page paths. Only the parser's own error (ValueError) escapes, in bounded time, and
no answer is a 500."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config import validate
from monitor.publish.ui import figures
from monitor.publish.ui.auth import safe_next
from monitor.service import create_app
from tests.helpers.asgi_requests import request

APP = create_app(validate({"pools": [{"name": "chat", "targets": ["http://10.0.0.1:8000"]}],
                           "slos": [{"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99%"}],
                           "api": {"token": "s3cret"}}).config, store=None)


@settings(max_examples=300, deadline=200)
@given(st.text(max_size=40))
def test_fuzz_report_period_raises_only_value_error(period):
    try:
        start, end = figures.month(period)
    except ValueError as exc:
        assert "period" in str(exc)
    else:
        assert 28 * 86400 <= end - start <= 31 * 86400


@settings(max_examples=300, deadline=200)
@given(st.text(max_size=600))
def test_fuzz_login_next_is_always_a_console_path(value):
    target = safe_next(value)
    assert target.startswith("/ui/") and "//" not in target and "\\" not in target


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=5000))
def test_fuzz_login_body_never_errors_and_never_signs_in(body):
    answer = request(APP, "POST", "/ui/login", content=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code in (401, 413)
    assert "set-cookie" not in answer.headers


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=60))
def test_fuzz_report_query_never_errors(period):
    from urllib.parse import quote
    answer = request(APP, "GET", "/ui/reports?period=" + quote(period, safe=""),
                     headers={"Authorization": "Bearer s3cret"})
    assert answer.status_code in (200, 400)  # 400: not a month
    assert "<script" not in answer.text.lower().replace("<script src=", "")
