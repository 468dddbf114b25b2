"""NGINX output: rendering, the safe writer, and a real NGINX routing around an ejected backend.

The writer's steps are checked with small shell commands standing in for `check` and `reload`
(they record that they ran); the NGINX test runs the real binary (Debian nginx-light) on loopback
with its own prefix, config, pid file and logs in tmp_path, so nothing of the machine's NGINX is touched.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from monitor.act.nginx import HEADER, UpstreamServer, UpstreamWriter, render_file, render_upstream
from monitor.decide.verdicts import DEGRADED, EJECTED, HEALTHY, LEAVING, SLEEPING, STARTING, UNKNOWN, InstanceVerdict

from tests.helpers.ci import require
from tests.helpers.nginx_server import NGINX, RoutingNginx
from tests.helpers.ports import free_port


# --- rendering ----------------------------------------------------------------------------------


def test_render_marks_ejected_down_and_weights_degraded():
    text = render_upstream("llama-70b", [
        UpstreamServer("10.0.0.12:8000", HEALTHY),
        UpstreamServer("10.0.0.11:8000", DEGRADED, 0.25),
        UpstreamServer("10.0.0.13:8000", EJECTED, 0.0),
        UpstreamServer("10.0.0.14:8000", UNKNOWN),
    ])
    assert text == (
        "upstream llama-70b {\n"
        "    server 10.0.0.11:8000 weight=1;  # degraded\n"
        "    server 10.0.0.12:8000 weight=4;\n"
        "    server 10.0.0.13:8000 down;  # ejected\n"
        "    server 10.0.0.14:8000 weight=4;\n"
        "}\n"
    )


def test_render_leaves_starting_servers_out_and_drains_leaving_and_sleeping_ones():
    block = render_upstream("llama", [
        UpstreamServer("10.0.0.1:8000", HEALTHY),
        UpstreamServer("10.0.0.2:8000", STARTING, 0.0),
        UpstreamServer("10.0.0.3:8000", LEAVING, 0.0),
        UpstreamServer("10.0.0.4:8000", SLEEPING, 0.0),
    ])
    assert "10.0.0.2:8000" not in block  # not listening yet: no traffic, not even a passive-check probe
    assert "server 10.0.0.3:8000 down;  # leaving" in block
    assert "server 10.0.0.4:8000 down;  # sleeping" in block
    assert "server 10.0.0.1:8000;" in block


def test_lifecycle_states_never_fail_open_but_ejected_ones_still_do():
    block = render_upstream("p", [UpstreamServer("10.0.0.1:8000", EJECTED, 0.0),
                                  UpstreamServer("10.0.0.2:8000", LEAVING, 0.0)])
    assert "failing open" in block and "server 10.0.0.1:8000;" in block  # the only judged server: serves
    assert "server 10.0.0.2:8000 down;" in block
    only_starting = render_upstream("p", [UpstreamServer("10.0.0.9:8000", STARTING, 0.0)])
    assert "server 10.0.0.9:8000 down;" in only_starting  # a block needs a server; this one gets no traffic


def test_a_warming_up_server_gets_a_lower_weight():
    block = render_upstream("p", [UpstreamServer("10.0.0.1:8000", HEALTHY), UpstreamServer("10.0.0.2:8000", HEALTHY, 0.5)])
    assert "server 10.0.0.1:8000 weight=2;" in block and "server 10.0.0.2:8000 weight=1;" in block


def test_render_without_degraded_servers_writes_no_weights():
    text = render_upstream("p", [UpstreamServer("a:1", HEALTHY), UpstreamServer("b:2", EJECTED, 0.0)],
                           directives=["keepalive 16;"])
    assert text == "upstream p {\n    keepalive 16;\n    server a:1;\n    server b:2 down;  # ejected\n}\n"


def test_render_uneven_weight_share_keeps_the_ratio():
    text = render_upstream("p", [UpstreamServer("a:1", HEALTHY), UpstreamServer("b:2", DEGRADED, 0.3)])
    assert "server a:1 weight=10;" in text and "server b:2 weight=3;" in text


def test_render_never_marks_every_server_down():
    text = render_upstream("p", [UpstreamServer("a:1", EJECTED, 0.0), UpstreamServer("b:2", EJECTED, 0.0)])
    assert "down" not in text.replace("none is marked down", "")
    assert "failing open" in text


def test_render_file_takes_verdicts_directly():
    verdict = InstanceVerdict("p", "10.0.0.1:8000", EJECTED, ("slow",), "latency", 0.0, 30.0, 0.0)
    ok = InstanceVerdict("p", "10.0.0.2:8000", HEALTHY, (), None, 0.0, None, 1.0)
    text = render_file({"p": [verdict, ok], "q": [UpstreamServer("10.0.1.1:8000", HEALTHY)]})
    assert text.startswith(HEADER)
    assert "upstream p {" in text and "server 10.0.0.1:8000 down;" in text and "upstream q {" in text


def test_a_pool_with_no_members_still_gets_a_block_that_routes_nowhere():
    # a discovery-only pool whose source is down at start, or one scaled to zero: a config that
    # proxies to it must still pass `nginx -t`, or every other pool's update would be refused too
    text = render_upstream("empty", [])
    assert text.startswith("upstream empty {") and "server 127.0.0.1:1 down;" in text


# --- the writer, with stand-in commands ---------------------------------------------------------


def _recorder(tmp_path: Path, name: str, exit_code: int = 0, message: str = "") -> str:
    log = tmp_path / f"{name}.log"
    return f"echo ran >> {log}; echo '{message}' >&2; exit {exit_code}"


def _runs(tmp_path: Path, name: str) -> int:
    log = tmp_path / f"{name}.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_writer_writes_checks_reloads_and_skips_unchanged(tmp_path):
    target = tmp_path / "conf.d" / "upstreams.conf"
    writer = UpstreamWriter(target, check=_recorder(tmp_path, "check"), reload=_recorder(tmp_path, "reload"))
    result = writer.apply_sync("upstream p { server a:1; }\n")
    assert result.ok and result.changed and result.written and result.checked and result.reloaded
    assert target.read_text() == "upstream p { server a:1; }\n"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    again = writer.apply_sync("upstream p { server a:1; }\n")
    assert again.ok and not again.changed and again.skipped == "unchanged"
    assert (_runs(tmp_path, "check"), _runs(tmp_path, "reload")) == (1, 1)
    writer.apply_sync("upstream p { server a:1 down; server b:2; }\n")
    assert (_runs(tmp_path, "check"), _runs(tmp_path, "reload")) == (2, 2)
    assert not list(target.parent.glob(".*.tmp"))  # no temp files left behind


def test_writer_restores_the_last_good_file_when_the_check_fails(tmp_path):
    target = tmp_path / "upstreams.conf"
    target.write_text("good\n")
    os.chmod(target, 0o640)
    writer = UpstreamWriter(target, check=_recorder(tmp_path, "check", 1, "bad directive"),
                            reload=_recorder(tmp_path, "reload"))
    result = writer.apply_sync("broken\n")
    assert not result.ok and result.restored and not result.reloaded
    assert "check failed, previous file restored" in result.error and "bad directive" in result.error
    assert target.read_text() == "good\n"
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert _runs(tmp_path, "reload") == 0
    # the same rejected content is not retried every cycle...
    skipped = writer.apply_sync("broken\n")
    assert skipped.skipped and _runs(tmp_path, "check") == 1
    # ...but is after retry_after_s
    writer.retry_after_s = 0
    writer.apply_sync("broken\n")
    assert _runs(tmp_path, "check") == 2 and target.read_text() == "good\n"


def test_writer_check_failure_with_no_previous_file_leaves_none(tmp_path):
    target = tmp_path / "upstreams.conf"
    result = UpstreamWriter(target, check="exit 3").apply_sync("x\n")
    assert not result.ok and result.restored and "exited 3" in result.error
    assert not target.exists()


def test_writer_reports_reload_failures_and_retries_them(tmp_path):
    target = tmp_path / "upstreams.conf"
    writer = UpstreamWriter(target, reload=_recorder(tmp_path, "reload", 1, "nginx not running"), retry_after_s=0)
    result = writer.apply_sync("a\n")
    assert not result.ok and result.written and "reload failed (file is in place and valid)" in result.error
    assert target.read_text() == "a\n"
    writer.reload = _recorder(tmp_path, "reload")
    assert writer.apply_sync("a\n").ok  # not "unchanged": it was never applied
    assert _runs(tmp_path, "reload") == 2


def test_writer_never_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    writer = UpstreamWriter(blocker / "sub" / "upstreams.conf")  # parent is a file
    result = writer.apply_sync("x\n")
    assert not result.ok and result.error
    timeout = UpstreamWriter(tmp_path / "u.conf", check="sleep 5", timeout_s=0.2).apply_sync("x\n")
    assert not timeout.ok and "timed out" in timeout.error


async def test_writer_apply_runs_off_the_event_loop(tmp_path):
    writer = UpstreamWriter(tmp_path / "u.conf", check="true", reload="true")
    result = await writer.apply("x\n")
    assert result.ok and result.reloaded and writer.last_result is result


# --- a real NGINX -------------------------------------------------------------------------------


class _NamedBackend:
    """A loopback HTTP server that answers its own name, counting requests."""

    def __init__(self, name: str) -> None:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                backend.hits += 1
                body = backend.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.name = name
        self.hits = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def nginx_setup(tmp_path):
    require(os.path.exists(NGINX), f"nginx binary not found at {NGINX} (apt-get install nginx-light)")
    backends = [_NamedBackend("alpha"), _NamedBackend("beta")]
    upstream_file = tmp_path / "conf.d" / "llm-upstreams.conf"
    nginx = RoutingNginx(tmp_path, upstream_file)
    writer = UpstreamWriter(upstream_file, check=nginx.command("-t", "-q"), reload=nginx.command("-s", "reload"))
    healthy = render_file({"p": [UpstreamServer(b.address, HEALTHY) for b in backends]})
    first = writer.apply_sync(healthy)  # the reload fails (nothing running yet) but the file is in place
    assert first.written and first.checked
    nginx.start()
    try:
        yield nginx, writer, backends
    finally:
        nginx.stop()
        for b in backends:
            b.close()


def _wait_for(nginx: RoutingNginx, allowed: set[str], timeout: float = 10.0) -> list[str]:
    """Requests until the reload is over (the old worker gone: until then it may still accept a queued
    connection with the old upstreams) and 20 in a row reach only `allowed` backends."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = nginx.names(20)
        if set(seen) <= allowed and nginx.workers() == 1:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"still reaching {set(seen) - allowed} after {timeout}s; last: {seen}")


@pytest.mark.e2e
def test_real_nginx_stops_sending_to_an_ejected_backend_and_survives_a_broken_render(nginx_setup):
    nginx, writer, (alpha, beta) = nginx_setup
    assert set(nginx.names(20)) == {"alpha", "beta"}  # round robin over both

    ejected = render_file({"p": [UpstreamServer(alpha.address, HEALTHY), UpstreamServer(beta.address, EJECTED, 0.0)]})
    result = writer.apply_sync(ejected)
    assert result.ok and result.checked and result.reloaded, result.error
    assert f"server {beta.address} down;" in writer.path.read_text()
    _wait_for(nginx, {"alpha"})
    before = beta.hits
    assert set(nginx.names(30)) == {"alpha"} and beta.hits == before

    # a render NGINX rejects: validation fails, the last good file is put back, routing goes on
    broken = ejected.replace("upstream p {", "upstream p {\n    server ;")
    failed = writer.apply_sync(broken)
    assert not failed.ok and failed.restored and not failed.reloaded
    assert "check failed" in failed.error
    assert writer.path.read_text() == ejected
    assert nginx.process.poll() is None
    assert set(nginx.names(20)) == {"alpha"}
    # an unrelated reload afterwards (an operator's) still finds a valid file
    assert subprocess.run(nginx.command("-s", "reload"), shell=True).returncode == 0

    # the instance returns: traffic reaches both again
    back = writer.apply_sync(render_file({"p": [UpstreamServer(b.address, HEALTHY) for b in (alpha, beta)]}))
    assert back.ok and back.reloaded
    deadline = time.monotonic() + 10
    while "beta" not in nginx.names(20):
        assert time.monotonic() < deadline, "beta never came back"
        time.sleep(0.05)


@pytest.mark.e2e
def test_real_nginx_degraded_weight_and_fail_open_render(nginx_setup):
    nginx, writer, (alpha, beta) = nginx_setup
    degraded = render_file({"p": [UpstreamServer(alpha.address, HEALTHY), UpstreamServer(beta.address, DEGRADED, 0.25)]})
    assert writer.apply_sync(degraded).ok
    deadline = time.monotonic() + 10
    while True:  # NGINX's smooth weighted round robin: exactly 4 : 1 once the new workers serve
        names = nginx.names(50)
        if (names.count("alpha"), names.count("beta")) == (40, 10):
            break
        assert time.monotonic() < deadline, f"weights never applied: {names}"
        time.sleep(0.05)
    # every server ejected: the render fails open and NGINX keeps serving through both
    all_out = render_file({"p": [UpstreamServer(b.address, EJECTED, 0.0) for b in (alpha, beta)]})
    assert writer.apply_sync(all_out).ok
    deadline = time.monotonic() + 10
    while set(nginx.names(20)) != {"alpha", "beta"}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
