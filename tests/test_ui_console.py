"""The console, the status page and the report without a browser: the service's ASGI app in-process
(no lifespan, nothing scraped), the state put in through the service's own parts."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from monitor.config import validate
from monitor.evaluate.slo.engine import SloEventRow
from monitor.samples import ScrapeResult
from monitor.service import create_app
from tests.helpers.asgi_client import AUTH
from tests.helpers.asgi_requests import request

HOSTILE_NAME = '<img src=x onerror="alert(1)">:8000'
HOSTILE_ERROR = "</td><script>alert('reason')</script>"
PAGES = ("/ui/", "/ui/slos", "/ui/decisions", "/ui/pools", "/ui/reports")


def config(token: str | None = "s3cret", **ui: object) -> dict:
    return {
        "pools": [{"name": "chat", "targets": ["http://10.0.0.1:8000"]}],
        "slos": [{"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99%"},
                 {"name": "up", "indicator": {"type": "availability"}, "objective": "99%"}],
        "api": {"token": token},
        "ui": ui,
    }


def app_of(raw: dict):
    return create_app(validate(raw).config, store=None)


def login(app, token: str = "s3cret", next_path: str = "/ui/", headers: dict | None = None):
    return request(app, "POST", "/ui/login", content=f"token={token}&next={next_path}".encode(),
                   headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})


def cookie_of(answer) -> str:
    return answer.headers["set-cookie"].split(";")[0]


def test_hostile_instance_names_and_scrape_errors_reach_the_pages_escaped():
    app = app_of(config())
    service = app.state.service
    service.fleet.set_members({"chat": {HOSTILE_NAME: "http://evil.example:8000"}})
    service.fleet.ingest([ScrapeResult("chat", HOSTILE_NAME, "http://evil.example:8000", time.time(), 0.1,
                                       error=HOSTILE_ERROR, error_kind="malformed")])
    for path in ("/ui/", "/ui/instances/" + HOSTILE_NAME.replace(" ", "%20").replace('"', "%22")):
        text = request(app, "GET", path, headers=AUTH).text
        assert "<img src=x" not in text and "<script>alert" not in text, path
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;:8000" in text, path
    instance = request(app, "GET", "/ui/instances/" + HOSTILE_NAME.replace(" ", "%20").replace('"', "%22"),
                       headers=AUTH).text
    assert "&lt;/td&gt;&lt;script&gt;alert(&#x27;reason&#x27;)&lt;/script&gt;" in instance


def test_every_page_forbids_inline_script_and_sniffing():
    app = app_of(config(status_page=True))
    for path in (*PAGES, "/status", "/ui/login?next=/ui/slos"):
        answer = request(app, "GET", path, headers=AUTH)
        assert answer.status_code in (200, 303), path
        if answer.status_code == 200:
            assert "script-src 'self'" in answer.headers["content-security-policy"], path
            assert "unsafe-inline" not in answer.headers["content-security-policy"], path
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert "<script>" not in answer.text, path  # scripts are files, never inline


def test_without_a_session_the_console_sends_the_browser_to_the_login_form():
    app = app_of(config())
    for path in PAGES:
        answer = request(app, "GET", path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/ui/login?next=%2Fui%2F"), path
    form = request(app, "GET", "/ui/login?next=/ui/slos")
    assert form.status_code == 200
    assert 'type="password"' in form.text and 'for="token"' in form.text and 'method="post"' in form.text


def test_a_wrong_token_is_refused_with_a_401_page_and_no_cookie():
    answer = login(app_of(config()), token="guess")
    assert answer.status_code == 401
    assert "set-cookie" not in answer.headers
    assert "Wrong token" in answer.text


def test_a_login_form_over_4_kib_is_refused_unread():
    answer = request(app_of(config()), "POST", "/ui/login", content=b"token=" + b"x" * 5000,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413 and "set-cookie" not in answer.headers


def test_the_right_token_sets_an_httponly_samesite_strict_cookie_that_opens_the_console():
    app = app_of(config())
    answer = login(app, next_path="/ui/slos")
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/slos"
    flags = answer.headers["set-cookie"].lower()
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "secure" not in flags  # plain http: a Secure cookie would never come back
    assert "s3cret" not in answer.headers["set-cookie"]  # the cookie is not the token
    page = request(app, "GET", "/ui/slos", headers={"Cookie": cookie_of(answer)})
    assert page.status_code == 200 and "<h1>SLOs</h1>" in page.text


def test_the_cookie_is_secure_behind_https_or_when_the_config_says_so():
    behind_tls = login(app_of(config()), headers={"X-Forwarded-Proto": "https"})
    assert "secure" in behind_tls.headers["set-cookie"].lower()
    forced = login(app_of(config(secure_cookie=True)))
    assert "secure" in forced.headers["set-cookie"].lower()


def test_the_cookie_opens_the_api_reads_but_never_its_changes():
    app = app_of(config())
    cookie = {"Cookie": cookie_of(login(app))}
    assert request(app, "GET", "/api/v1/instances", headers=cookie).status_code == 200
    assert request(app, "GET", "/api/v1/instances").status_code == 401
    body = b'{"duration": "1h", "reason": "upgrade"}'
    post = request(app, "POST", "/api/v1/exclusions", content=body,
                   headers={**cookie, "Content-Type": "application/json"})
    assert post.status_code == 401
    assert request(app, "POST", "/-/reload", headers=cookie).status_code == 401


def test_a_forged_cookie_opens_nothing():
    app = app_of(config())
    forged = {"Cookie": "slo_monitor_session=s3cret"}
    assert request(app, "GET", "/api/v1/instances", headers=forged).status_code == 401
    assert request(app, "GET", "/ui/", headers=forged).status_code == 303


def test_after_login_the_browser_goes_back_only_to_a_console_page():
    app = app_of(config())
    for target in ("//evil.example/", "https://evil.example/", "/ui/\\evil", "/api/v1/instances"):
        assert login(app, next_path=target).headers["location"] == "/ui/", target


def test_logout_clears_the_cookie():
    answer = request(app_of(config()), "POST", "/ui/logout")
    assert answer.status_code == 303
    assert 'slo_monitor_session=""' in answer.headers["set-cookie"] or "max-age=0" in \
        answer.headers["set-cookie"].lower()


def test_without_a_token_the_console_opens_directly():
    app = app_of(config(token=None))
    assert request(app, "GET", "/ui/").status_code == 200
    assert request(app, "GET", "/ui/login").status_code == 303


def test_the_status_page_is_off_unless_the_config_turns_it_on():
    assert request(app_of(config()), "GET", "/status").status_code == 404


def test_the_status_page_needs_no_token_and_shows_no_address_or_reason():
    app = app_of(config(status_page=True))
    service = app.state.service
    service.fleet.set_members({"chat": {"10.0.0.1:8000": "http://10.0.0.1:8000"}})
    service.fleet.ingest([ScrapeResult("chat", "10.0.0.1:8000", "http://10.0.0.1:8000", time.time(), 0.1,
                                       error="connection refused", error_kind="down")])
    now = time.time()
    service.slo.load([SloEventRow("up", "chat", "", (now // 60 - 5) * 60, 0.0, 1.0)], now)
    service.slo.evaluate(now)
    answer = request(app, "GET", "/status")
    assert answer.status_code == 200
    assert "10.0.0.1" not in answer.text and "connection refused" not in answer.text
    assert "chat" in answer.text and "24 h" in answer.text and "30 d" in answer.text
    assert "script-src 'self'" in answer.headers["content-security-policy"]


def test_the_report_csv_has_one_line_per_slo_with_attainment_budget_and_excluded_minutes():
    app = app_of(config())
    service = app.state.service
    now = time.time()
    this_month = datetime.fromtimestamp(now, UTC).strftime("%Y-%m")
    minute = (now // 60 - 3) * 60
    if datetime.fromtimestamp(minute, UTC).strftime("%Y-%m") != this_month:
        minute = (now // 60) * 60  # the first minutes of a month
    service.slo.load([SloEventRow("errors", "chat", "", minute, 990.0, 1000.0)], now)
    service.slo.evaluate(now)
    answer = request(app, "GET", f"/ui/reports?period={this_month}&format=csv", headers=AUTH)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    lines = answer.text.split("\r\n")
    assert lines[0] == ("period,slo,pool,indicator,objective,attainment,good_events,valid_events,budget_spent,"
                        "incidents,incident_minutes,excluded_minutes,met")
    errors = next(line.split(",") for line in lines[1:] if line.startswith(f"{this_month},errors,chat,"))
    assert errors[5] == "0.99" and errors[7] == "1000" and errors[8] == "1" and errors[11] == "0"
    assert errors[12] == "true"
    printable = request(app, "GET", f"/ui/reports?period={this_month}", headers=AUTH)
    assert printable.status_code == 200 and "99.000%" in printable.text and "format=csv" in printable.text


def test_a_report_period_that_is_not_a_month_is_refused_naming_the_form():
    answer = request(app_of(config()), "GET", "/ui/reports?period=2026-13", headers=AUTH)
    assert "no such month" in answer.text
    answer = request(app_of(config()), "GET", "/ui/reports?period=%3Cb%3E", headers=AUTH)
    assert "expected a month as YYYY-MM" in answer.text and "<b>" not in answer.text


def test_the_budget_history_ends_at_the_budget_the_api_shows():
    app = app_of(config())
    service = app.state.service
    now = time.time()
    service.slo.load([SloEventRow("errors", "chat", "", (now // 60 - 30) * 60, 995.0, 1000.0),
                      SloEventRow("errors", "chat", "", (now // 60 - 10) * 60, 1000.0, 1000.0)], now)
    service.slo.evaluate(now)
    history = request(app, "GET", "/api/v1/slos/errors/history?pool=chat", headers=AUTH).json()
    api = request(app, "GET", "/api/v1/slos?name=errors", headers=AUTH).json()[0]
    assert history["error_budget_remaining"][0] == 1.0
    assert abs(history["error_budget_remaining"][-1] - api["error_budget_remaining"]) < 1e-6
    assert len(history["t"]) == len(history["error_budget_remaining"]) <= 500
    assert request(app, "GET", "/api/v1/slos/errors/history?pool=nope", headers=AUTH).status_code == 404
    assert request(app, "GET", "/api/v1/slos/errors/history?pool=chat").status_code == 401


def test_the_static_files_are_served_with_their_types_and_nothing_else_is():
    app = app_of(config())
    js = request(app, "GET", "/ui/static/uPlot.iife.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert request(app, "GET", "/ui/static/uPlot.LICENSE").text.startswith("The MIT License")
    assert request(app, "GET", "/ui/static/..%2Froutes.py").status_code == 404
    assert request(app, "GET", "/ui/static/routes.py").status_code == 404
