"""Security: the bearer token on every endpoint but the open ones, body limits, no caller-given URLs,
no secrets in the logs.

* Every route the app has (enumerated from `app.routes`, so a route added later is covered too)
  answers 401 without the token, with a wrong one and with another scheme, except `/healthz`,
  `/metrics` and `/upstreams/...`; FastAPI's `/docs`, `/redoc` and `/openapi.json` are off (the
  schema is served under the token at `/api/v1/openapi.json`). Every presented token goes
  through hmac's constant-time compare_digest, whatever its length.
* The only route that takes a body is `POST /v1/traces`, and its cap holds for a declared length and
  for a chunked body that never ends; a body sent to a route that takes none is never buffered.
* No route fetches a URL a caller gives: every route is called with a canary server's address in
  every parameter, path and query (and in an OTLP span's instance id), and the canary sees nothing;
  no route has a parameter shaped like a URL to fetch.
* `serve` at DEBUG with a token, a PostgreSQL URL with a password, an Alertmanager URL and a target URL
  with basic-auth credentials, running into failures with each of them: none of the secrets is in
  its output, nor in the API's answers.
"""

from __future__ import annotations

import gzip
import hmac
import json
import os
import re
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.testclient import TestClient

from monitor.config import validate
from monitor.service import create_app

from tests.helpers import raw_targets as raw
from tests.helpers.ports import free_port
from tests.helpers.vllm_pages import FaultableVllm, PageServer
from tests.helpers.waiting import wait_until

TOKEN = "tok-8f3a2c91d7e64b05a1c3"
# the console's pages send a browser without a session to its login form (tests/test_ui_console.py)
OPEN = ("/healthz", "/readyz", "/metrics", "/upstreams/", "/ui", "/status")
# every route taking a body, each with its own cap (tested below; /api/v1/exclusions in test_exclusions.py)
BODY_ROUTES = {"/v1/traces", "/api/v1/exclusions", "/ui/login"}  # /ui/login: test_ui_console.py
BODYLESS_POSTS = {"/-/reload", "/api/v1/exclusions/{exclusion_id}", "/ui/logout"}  # POSTs/DELETEs that read nothing of the request
URLISH = {"url", "uri", "target", "targets", "endpoint", "host", "address", "exporter", "href", "link", "source"}


def _app(**extra):
    config = validate({"pools": [{"name": "p", "targets": ["http://127.0.0.1:8000"]}],
                       "api": {"token": TOKEN}, **extra}).config
    return create_app(config)


def _routes(app) -> list[tuple[str, str, APIRoute]]:
    """(method, path, route) of every route the app serves, included routers flattened."""
    out = []
    for route in _flat(app.routes, ""):
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            out.append((method, route.path, route))
    return out


def _flat(routes, prefix: str):
    for route in routes:
        if isinstance(route, APIRoute):
            assert not prefix, "an included router with a prefix: extend this test"
            yield route
        elif hasattr(route, "original_router"):  # newer FastAPI keeps an included router as one entry
            yield from _flat(route.original_router.routes, getattr(route.include_context, "prefix", ""))
        else:
            raise AssertionError(f"{route!r}: not an APIRoute; add it to this test")


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def test_every_route_but_the_open_ones_requires_the_token():
    app = _app()
    client = TestClient(app)
    routes = _routes(app)
    paths = {path for _, path, _ in routes}
    assert {"/api/v1/instances", "/api/v1/slos", "/api/v1/decisions", "/v1/traces", "/healthz", "/metrics",
            "/upstreams/{pool}/{instance}", "/api/v1/openapi.json"} <= paths
    wrong = [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer " + TOKEN[:-1]},
             {"Authorization": "Bearer " + TOKEN + "x"}, {"Authorization": "Basic " + TOKEN},
             {"Authorization": TOKEN}, {"Authorization": "Bearer " + TOKEN.upper()},
             {"Authorization": "Bearer tok-\u00e9".encode("latin-1")}, {"X-Api-Token": TOKEN}]
    for method, path, _ in routes:
        url = _fill(path, "p")
        if path.startswith(OPEN):
            # (the login form's 401 is its answer to a wrong token, the one way in)
            assert client.request(method, url).status_code != 401 or path == "/ui/login", path
            continue
        for headers in wrong:
            answer = client.request(method, url, headers=headers)
            assert answer.status_code == 401, (method, path, headers, answer.status_code)
            assert answer.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in answer.text
        good = client.request(method, url, headers={"Authorization": f"Bearer {TOKEN}",
                                                    "Content-Type": "application/json"},
                              content=b"{}" if method == "POST" else None)
        assert good.status_code not in (401, 403, 500), (method, path, good.status_code, good.text[:200])
    # FastAPI's own pages would describe the API to anyone: off, with or without a token
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
            assert client.get(path, headers=headers).status_code == 404, path
    schema = client.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert schema.status_code == 200 and "/api/v1/instances" in schema.json()["paths"]
    # the scheme is case-insensitive (RFC 7235); the token is not
    assert client.get("/api/v1/slos", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_without_a_token_configured_the_api_is_open_but_the_docs_stay_off():
    client = TestClient(create_app(validate({"pools": [{"name": "p", "targets": ["http://127.0.0.1:8000"]}]}).config))
    assert client.get("/api/v1/instances").status_code == 200
    assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404


def test_every_presented_token_is_checked_by_a_constant_time_comparison(monkeypatch):
    """Whatever its length, a presented bearer token reaches `compare_digest` (hmac's, which takes the
    same time however early two strings differ) together with the configured token, and is refused
    unless equal: no length check or `==` decides first. Watched by wrapping compare_digest, so the
    test holds whichever module spelling the check uses and on any Python version."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a, b):
        calls.append(tuple(x.encode() if isinstance(x, str) else bytes(x) for x in (a, b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    monkeypatch.setattr(secrets, "compare_digest", recording)
    app = _app()
    for _, _, route in _routes(app):  # a check that imported the function by name is watched too
        for dep in route.dependant.dependencies:
            if "compare_digest" in getattr(dep.call, "__globals__", {}):
                monkeypatch.setitem(dep.call.__globals__, "compare_digest", recording)
    client = TestClient(app)
    wrong = [TOKEN[:n] for n in range(1, len(TOKEN))]  # every shorter length, each a prefix of the token
    wrong += [TOKEN + "x" * n for n in (1, 2, 31)]  # longer
    wrong += ["y" * len(TOKEN), TOKEN[:-1] + "!", "!" + TOKEN[1:]]  # the same length, differing last or first
    for given in wrong:
        calls.clear()
        answer = client.get("/api/v1/instances", headers={"Authorization": f"Bearer {given}"})
        assert answer.status_code == 401, (given, answer.status_code)
        assert (given.encode(), TOKEN.encode()) in calls or (TOKEN.encode(), given.encode()) in calls, (given, calls)
    calls.clear()
    assert client.get("/api/v1/instances", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert (TOKEN.encode(), TOKEN.encode()) in calls  # the right token is let in by the same comparison


def test_only_the_otlp_route_takes_a_body_and_no_route_takes_a_url():
    app = _app()
    for method, path, route in _routes(app):
        if method not in ("GET",) and path in BODYLESS_POSTS:
            assert not route.dependant.body_params, f"{method} {path} reads a body after all"
        elif method not in ("GET",):
            assert path in BODY_ROUTES, f"{method} {path} takes a body: give it a cap and add it to BODY_ROUTES"
        params = route.dependant.path_params + route.dependant.query_params + route.dependant.body_params
        for dep in route.dependant.dependencies:
            params += dep.path_params + dep.query_params + dep.body_params
        names = {p.name.lower() for p in params}
        assert not names & URLISH, (path, names)


# -- against a running `serve` --------------------------------------------------------------------

PG_PASSWORD = "pg-Pa55w0rd-7c1e"
AM_PASSWORD = "am-Pa55w0rd-90ab"
TARGET_PASSWORD = "tg-Pa55w0rd-4d2f"
GPU_PASSWORD = "gp-Pa55w0rd-e3a1"
SECRETS = (TOKEN, PG_PASSWORD, AM_PASSWORD, TARGET_PASSWORD, GPU_PASSWORD)
OTLP_CAP = 64 * 1024


def _serve_debug(config: Path, port: int) -> tuple[subprocess.Popen, Path]:
    """`serve` at DEBUG, its output to a file: DEBUG is chatty enough to fill a pipe nobody reads
    until the end, and a process blocked writing its log stops serving."""
    log = config.with_suffix(".log")
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "--log-level", "DEBUG", "serve", "--config",
                                 str(config), "--listen", f"127.0.0.1:{port}"],
                                stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, log


def _stop(proc: subprocess.Popen, log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    output = log.read_text()
    assert proc.returncode == 0, output[-3000:]
    return output


def _stream_body(port: int, head: str, chunk: bytes, *, max_bytes: int = 256 * 2**20,
                 limit_s: float = 15.0) -> tuple[bytes, int, float]:
    """Send `head`, then `chunk` over and over until the server answers (or `max_bytes`): the answer,
    the bytes of body sent, the seconds it took."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    started = time.perf_counter()
    pending, sent, answer, sending = head.encode(), 0, b"", True
    try:
        while time.perf_counter() - started < limit_s:
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], 0.2)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                answer += data
                sending = False  # the server has answered: stop feeding it
                if b"\r\n\r\n" in answer and _complete(answer):
                    break
                continue
            if writable and sending:
                if not pending:
                    if sent >= max_bytes:
                        sending = False
                        continue
                    pending = chunk
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    sending = False
                    continue
                pending = pending[n:]
                sent += n
    finally:
        sock.close()
    return answer, sent, time.perf_counter() - started


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    found = re.search(rb"content-length: *(\d+)", head, re.I)
    return found is not None and len(body) >= int(found.group(1))


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


CHUNK = b"%x\r\n" % 65536 + b"\x00" * 65536 + b"\r\n"


@pytest.mark.e2e
def test_serve_limits_bodies_fetches_no_caller_urls_and_logs_no_secrets(tmp_path, pg_url):
    vllm = FaultableVllm(seed=11)
    vllm.set(error_ratio=1.0)  # a page fires and goes to the (unreachable) Alertmanager
    storage = pg_url.replace("postgresql+psycopg://postgres@", f"postgresql+psycopg://postgres:{PG_PASSWORD}@")
    assert PG_PASSWORD in storage
    am_port = free_port()
    with PageServer(vllm) as good, PageServer(lambda path: (500, b"no")) as locked, raw.RawServer(raw.hung) as canary:
        locked_url = f"http://scraper:{TARGET_PASSWORD}@127.0.0.1:{locked.port}"
        config = tmp_path / "c.yaml"
        config.write_text(json.dumps({
            "storage": {"url": storage},
            "scrape": {"interval": "500ms", "timeout": "400ms"},
            "pools": [{"name": "chat", "targets": [good.url, locked_url]}],
            "slos": [{"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "95%"}],
            "api": {"token": TOKEN},
            "gpu": {"exporters": [f"http://dcgm:{GPU_PASSWORD}@127.0.0.1:{locked.port}"]},
            "traces": {"max_body_size": OTLP_CAP},
            "alertmanager": {"url": f"http://alerts:{AM_PASSWORD}@127.0.0.1:{am_port}", "timeout": "500ms",
                             "resend_interval": "5s"},
        }))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        proc, log = _serve_debug(config, port)
        answers: list[str] = []
        try:
            wait_until(lambda: httpx.get(f"{base}/healthz", timeout=2).json()["cycles"] >= 2, 30, what="serving")

            # -- body limits --------------------------------------------------------------------
            otlp = (f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                    "Content-Type: application/x-protobuf\r\n")
            answer, sent, took = _stream_body(port, otlp + "Transfer-Encoding: chunked\r\n\r\n", CHUNK)
            assert _status(answer) == 413, answer[:300]
            assert sent < 32 * 2**20 and took < 5, (sent, took)  # cut off, not read to the end
            print(f"\nendless chunked OTLP body: 413 after {sent / 2**20:.1f} MiB sent (socket buffers "
                  f"included), {took * 1000:.0f} ms; cap {OTLP_CAP // 1024} KiB")
            answer, sent, took = _stream_body(port, otlp + f"Content-Length: {10**9}\r\n\r\n", b"\x00" * 65536)
            assert _status(answer) == 413 and took < 5, (answer[:200], took)
            no_token = otlp.replace(f"Authorization: Bearer {TOKEN}\r\n", "")
            answer, sent, took = _stream_body(port, no_token + "Transfer-Encoding: chunked\r\n\r\n", CHUNK)
            assert _status(answer) == 401 and took < 5, (answer[:200], took)  # before any body is read
            for path in ("/healthz", "/api/v1/instances"):  # routes that take no body never buffer one
                head = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
                answer, sent, took = _stream_body(port, head, CHUNK)
                assert _status(answer) == 200 and took < 5, (path, answer[:200], took)
            bomb = raw._bomb(1)  # 1 GiB of zeros in 1 MB of gzip
            answer = httpx.post(f"{base}/v1/traces", content=bomb, timeout=10, headers={
                **auth, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
            assert answer.status_code == 413  # over the cap already compressed
            small_bomb = gzip.compress(b"\x00" * (8 * 2**20))
            answer = httpx.post(f"{base}/v1/traces", content=small_bomb, timeout=10, headers={
                **auth, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
            assert answer.status_code == 413 and "decompressed" in answer.text, answer.text  # cut while inflating

            # -- no route fetches a caller's URL ------------------------------------------------
            canary_values = [canary.url, f"127.0.0.1:{canary.port}", f"{canary.url}/metrics",
                             f"//127.0.0.1:{canary.port}", canary.url.replace("http", "https")]
            for method, path, route in _routes(_app()):
                for value in canary_values:
                    url = _fill(path, value.replace("/", "%2F"))
                    query = {p.name: value for p in route.dependant.query_params}
                    query.update({name: value for name in URLISH})
                    body = json.dumps({"resourceSpans": [{"resource": {"attributes": [
                        {"key": "service.instance.id", "value": {"stringValue": value}},
                        {"key": "service.name", "value": {"stringValue": "chat"}}]},
                        "scopeSpans": [{"spans": [{"name": "llm_request", "attributes": [
                            {"key": "gen_ai.latency.e2e", "value": {"doubleValue": 0.5}},
                            {"key": "url.full", "value": {"stringValue": value}}]}]}]}]})
                    answer = httpx.request(method, base + url, params=query, headers={
                        **auth, "Content-Type": "application/json"}, content=body if method == "POST" else None,
                        timeout=5)
                    assert answer.status_code < 500, (method, url, answer.status_code)
                    answers.append(answer.text)
            time.sleep(1.5)  # a few scrape cycles: the scraper only ever goes to configured targets
            assert canary.connections == 0, canary.paths

            # -- the failures whose messages carry secrets have happened -------------------------
            metrics = wait_until(lambda: (m := httpx.get(f"{base}/metrics", timeout=5).text) and re.search(
                r"^slo_monitor_alertmanager_errors_total [1-9]", m, re.M) and m, 20, what="a failed POST to Alertmanager")
            assert 'slo_monitor_alertmanager_up 0.0' in metrics
            answers.append(metrics)
            for path in ("/api/v1/instances", "/api/v1/slos", "/api/v1/decisions", "/api/v1/gpus",
                         "/api/v1/openapi.json"):
                answers.append(httpx.get(base + path, headers=auth, timeout=5).text)
            locked_row = [i for i in httpx.get(f"{base}/api/v1/instances", headers=auth, timeout=5).json()
                          if i["instance"] == f"127.0.0.1:{locked.port}"][0]
            assert locked_row["url"] == f"http://***@127.0.0.1:{locked.port}"
            assert locked_row["scrape"]["error"] == f"HTTP 500 from http://***@127.0.0.1:{locked.port}/metrics"
            [exporter] = httpx.get(f"{base}/api/v1/gpus", headers=auth, timeout=5).json()["exporters"]
            assert exporter["url"] == f"http://***@127.0.0.1:{locked.port}"
            assert exporter["error"] == f"HTTP 500 from http://***@127.0.0.1:{locked.port}/metrics"
        finally:
            output = _stop(proc, log)
    assert "POST of" in output and "failed" in output  # the Alertmanager failure was logged ...
    assert f"http://***@127.0.0.1:{am_port}/api/v2/alerts" in output  # ... naming the URL without credentials
    assert "DEBUG" in output  # the most talkative level was on
    for secret in SECRETS:
        assert secret not in output, f"secret {secret!r} in serve's output"
        for text in answers:
            assert secret not in text, f"secret {secret!r} in an API answer"


@pytest.mark.e2e
def test_a_database_that_refuses_at_start_is_reported_without_its_password(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "storage": {"url": f"postgresql+psycopg://monitor:{PG_PASSWORD}@127.0.0.1:{free_port()}/db"},
        "pools": [{"name": "p", "targets": ["http://127.0.0.1:9"]}], "api": {"token": TOKEN}}))
    proc, log = _serve_debug(config, free_port())
    proc.wait(timeout=60)
    output = log.read_text()
    assert proc.returncode != 0 and "connection failed" in output, output[-2000:]
    for secret in (PG_PASSWORD, TOKEN):
        assert secret not in output
