"""Health checks answered on a thread of their own (issue 21): `/upstreams/{pool}/{instance}` is read from the
last published verdicts by the API socket's front door, the same answer the API route gives, failing open once
stale; every other request reaches the API unchanged, on the same keep-alive connection."""

from __future__ import annotations

import asyncio
import http.client
import socket
import sys
import time
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.decide.verdicts import EJECTED, HEALTHY, InstanceVerdict
from monitor.publish.checks import (
    CheckAnswer,
    PoolChecks,
    check_answer,
    find,
    snapshot_of,
)
from monitor.publish.frontdoor import CheckLoop, FrontDoor, http_date, parse_check, render
from tests.helpers.ports import free_port
from tests.helpers.procs import start_ready, stop_process

NOW = 1_800_000_000.0


def verdict(instance: str, state: str = HEALTHY, reasons: tuple[str, ...] = ()) -> InstanceVerdict:
    return InstanceVerdict("p", instance, state, reasons, "errors" if state == EJECTED else None, NOW - 60, None,
                           0.0 if state == EJECTED else 1.0, {}, NOW)


def snapshot(decided_at: float = NOW, stale_after: float = 15.0):
    pools = {"p": PoolChecks({"10.0.0.1:8000": verdict("10.0.0.1:8000"),
                              "10.0.0.2:8000": verdict("10.0.0.2:8000", EJECTED, ("error ratio 40%",))},
                             decided_at, stale_after)}
    return snapshot_of(pools, ["p", "empty"])


def test_a_check_request_is_read_as_its_pool_and_instance():
    assert parse_check(b"GET /upstreams/p/10.0.0.1:8000 HTTP/1.1\r\nHost: x") == (("p", "10.0.0.1:8000"), False)
    assert parse_check(b"GET /upstreams/p/10.0.0.1%3A8000?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close") == \
        (("p", "10.0.0.1:8000"), True)


@pytest.mark.parametrize("head", [
    b"GET /upstreams/p/nginx.conf HTTP/1.1\r\nHost: x",  # the pool's upstream block: the API's
    b"POST /upstreams/p/10.0.0.1:8000 HTTP/1.1\r\nHost: x\r\nContent-Length: 3",
    b"GET /upstreams/p/10.0.0.1:8000 HTTP/1.0",  # another keep-alive rule: the API's
    b"GET /upstreams/p/10.0.0.1:8000 HTTP/1.1\r\nTransfer-Encoding: chunked",
    b"GET /upstreams/p/a/b HTTP/1.1\r\nHost: x",
    b"GET /upstreams/p/a%2Fb HTTP/1.1\r\nHost: x",
    b"GET /upstreams/p/ HTTP/1.1\r\nHost: x",
    b"GET /healthz HTTP/1.1\r\nHost: x",
    b"GET /upstreams/p/\xff HTTP/1.1\r\nHost: x",
    b"garbage",
])
def test_every_other_request_is_left_to_the_api(head):
    assert parse_check(head)[0] is None


@settings(max_examples=300, deadline=200)
@given(st.binary(max_size=600))
def test_any_request_head_is_read_without_raising(head):
    check, close = parse_check(head)
    assert check is None or (isinstance(check[0], str) and isinstance(check[1], str))
    assert isinstance(close, bool)


@settings(max_examples=200, deadline=200)
@given(st.text(max_size=80), st.text(max_size=80))
def test_any_pool_and_instance_get_an_answer_never_an_error(pool, instance):
    answer = check_answer(snapshot(), pool, instance, NOW)
    assert answer.status in (200, 404, 503)
    assert render(answer, False).startswith(b"HTTP/1.1 ")


def test_an_ejected_instance_is_503_and_a_healthy_one_200_with_the_decision_time():
    ejected = check_answer(snapshot(), "p", "10.0.0.2:8000", NOW + 1)
    assert (ejected.status, ejected.body) == (503, "ejected: error ratio 40%\n")
    assert ejected.decided_at is not None and ejected.decided_at.startswith("2027-01-15T08:00:00")
    assert check_answer(snapshot(), "p", "10.0.0.1:8000", NOW + 1).status == 200


def test_stale_verdicts_fail_open_as_the_api_says():
    answer = check_answer(snapshot(stale_after=15.0), "p", "10.0.0.2:8000", NOW + 60)
    assert answer.status == 200
    assert "stale" in answer.body and answer.body.startswith("ejected: failing open")
    assert find(snapshot(), "10.0.0.2:8000", NOW + 60).fail_open is not None
    assert find(snapshot(), "10.0.0.2:8000", NOW + 1).fail_open is None


def test_unknown_pools_and_instances_are_404_named():
    assert check_answer(snapshot(), "nope", "x", NOW) == CheckAnswer(404, "unknown pool 'nope' (pools: p, empty)\n")
    assert check_answer(snapshot(), "empty", "x", NOW) == CheckAnswer(404, "unknown instance x in pool empty\n")


@pytest.mark.e2e
def test_the_front_door_answers_checks_and_hands_the_rest_over_on_one_connection():
    handed: list[tuple[socket.socket, bytes]] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    loop = CheckLoop().start()
    door = FrontDoor(listener, lambda pool, instance: check_answer(snapshot(), pool, instance, time.time()),
                     lambda conn, buffered: handed.append((conn, buffered)))
    loop.start_soon(door.serve())
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(3):  # keep-alive: several checks on one connection
            conn.request("GET", "/upstreams/p/10.0.0.2:8000")
            response = conn.getresponse()
            assert (response.status, response.read()) == (503, b"ejected: error ratio 40%\n")
            assert response.getheader("X-Decided-At") is not None
        conn.request("GET", "/healthz")
        deadline = time.monotonic() + 10
        while not handed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handed and handed[0][1].startswith(b"GET /healthz HTTP/1.1\r\n")
        handed[0][0].sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # the API's answer, same socket
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"ok")
        conn.close()
    finally:
        asyncio.run_coroutine_threadsafe(door.close(), loop.loop).result(10)
        loop.stop()
        listener.close()
        for conn_, _ in handed:
            conn_.close()


@pytest.mark.e2e
def test_serve_answers_checks_and_the_api_on_the_same_port(tmp_path):
    port, target = free_port(), free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f'storage: {{url: "sqlite:///{tmp_path / "m.db"}"}}\n'
                      f"pools: [{{name: p, targets: [http://127.0.0.1:{target}]}}]\n"
                      "scrape: {interval: 1s, timeout: 500ms}\n")
    log_path = tmp_path / "serve.log"
    proc, log = start_ready([sys.executable, "-m", "monitor", "serve", "--config", str(config),
                             "--listen", f"127.0.0.1:{port}"], log_path, f"http://127.0.0.1:{port}/readyz",
                            "slo-monitor serve", timeout_s=60)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/upstreams/p/127.0.0.1:{target}")
        check = conn.getresponse()
        body = check.read().decode()
        conn.request("GET", "/healthz")  # the same connection, now the API's
        health = conn.getresponse()
        assert health.status == 200 and b"cycles" in health.read()
        conn.request("GET", "/upstreams/p/nginx.conf")
        block = conn.getresponse()
        assert block.status == 200 and b"upstream p" in block.read()
        conn.close()
        assert check.status in (200, 503) and body.endswith("\n"), body
        api = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        api.request("GET", "/upstreams/nope/x")
        missing = api.getresponse()
        assert (missing.status, missing.read()) == (404, b"unknown pool 'nope' (pools: p)\n")
        api.close()
    finally:
        stop_process(proc, log)
    assert "Traceback" not in log_path.read_text()


@pytest.mark.e2e
def test_checks_pipelined_with_an_api_request_are_answered_in_order_before_the_hand_over():
    handed: list[tuple[socket.socket, bytes]] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    loop = CheckLoop().start()
    door = FrontDoor(listener, lambda pool, instance: check_answer(snapshot(), pool, instance, time.time()),
                     lambda conn, buffered: handed.append((conn, buffered)))
    loop.start_soon(door.serve())
    client = socket.create_connection(listener.getsockname(), timeout=10)
    try:
        check = b"GET /upstreams/p/10.0.0.1:8000 HTTP/1.1\r\nhost: x\r\n\r\n"
        client.sendall(check * 3 + b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        deadline = time.monotonic() + 10
        while not handed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handed and handed[0][1] == b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
        handed[0][0].sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        received = b""
        while not received.endswith(b"ok"):
            chunk = client.recv(65536)
            assert chunk, received
            received += chunk
        answers = received.split(b"HTTP/1.1 ")[1:]
        assert [a.endswith(b"healthy: ok\n") for a in answers] == [True, True, True, False]
        assert answers[-1] == b"200 OK\r\ncontent-length: 2\r\n\r\nok"
        assert door.answered == 3
    finally:
        client.close()
        asyncio.run_coroutine_threadsafe(door.close(), loop.loop).result(10)
        loop.stop()
        listener.close()
        for conn_, _ in handed:
            conn_.close()


@given(st.floats(0, 4e9), st.floats(0, 4e9))
def test_the_date_header_is_the_rfc_9110_date_of_the_second_whichever_second_came_before(before, now):
    http_date(before)
    assert http_date(now) == formatdate(int(now), usegmt=True)
