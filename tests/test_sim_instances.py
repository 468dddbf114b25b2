"""Instances that join and leave the simulated fleet: the control endpoint, the model-load time during
which a new instance refuses connections, the file_sd file, and acting as KEDA on a scaling endpoint."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from monitor.cli import main
from monitor.sim.control import Autoscaler, control_app, desired_replicas, next_step
from monitor.sim.fleet import QuietServer, bind_socket, running_fleet, write_file_sd
from monitor.sim.params import InstanceParams

FAST = InstanceParams(time_scale=0.2, seed=3)


def _targets(path: Path) -> list[str]:
    groups = json.loads(path.read_text())
    return [t for g in groups for t in g["targets"]]


async def _serve(app) -> tuple[QuietServer, asyncio.Task, str]:
    sock = bind_socket("127.0.0.1", 0)
    server = QuietServer(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def _refused(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            await client.get(url + "/health")
    except httpx.ConnectError:
        return True
    return False


def test_file_sd_is_replaced_whole_and_lists_no_group_when_empty(tmp_path):
    path = tmp_path / "sd" / "chat.json"
    write_file_sd(path, ["127.0.0.1:1", "127.0.0.1:2"], {"pool": "chat"})
    assert json.loads(path.read_text()) == [{"targets": ["127.0.0.1:1", "127.0.0.1:2"], "labels": {"pool": "chat"}}]
    write_file_sd(path, [])
    assert json.loads(path.read_text()) == []
    assert [p.name for p in path.parent.iterdir()] == ["chat.json"]  # no temp file left behind


def test_autoscale_steps_one_instance_toward_desired_within_bounds():
    assert next_step(2, 5, min_instances=1, max_instances=10) == 1
    assert next_step(2, 0, min_instances=1, max_instances=10) == -1
    assert next_step(1, 0, min_instances=1, max_instances=10) == 0
    assert next_step(10, 12, min_instances=1, max_instances=10) == 0
    assert desired_replicas({"desired_replicas": 3}) == 3
    for body in ({}, {"desired_replicas": 2.5}, {"desired_replicas": -1}, {"desired_replicas": True}, []):
        with pytest.raises(ValueError, match="desired_replicas"):
            desired_replicas(body)


@pytest.mark.e2e
async def test_control_endpoint_adds_an_instance_that_refuses_connections_while_loading_and_removes_it(tmp_path):
    sd = tmp_path / "targets.json"
    async with running_fleet([FAST], file_sd=sd) as fleet, httpx.AsyncClient(timeout=10) as client:
        server, task, control = await _serve(control_app(fleet, load_time_s=0.6))
        try:
            assert _targets(sd) == [fleet.urls[0].removeprefix("http://")]
            r = await client.post(control + "/sim/instances", json={"add": 1})
            assert r.status_code == 200, r.text
            [new] = r.json()["added"]
            assert _targets(sd) == [u.removeprefix("http://") for u in fleet.urls] and len(fleet.urls) == 2
            assert {i["url"]: i["state"] for i in r.json()["instances"]}[new] == "loading"
            assert await _refused(new)  # the model is still loading: nothing listens yet
            deadline = time.monotonic() + 10
            while await _refused(new):
                assert time.monotonic() < deadline, "the new instance never started serving"
                await asyncio.sleep(0.05)
            assert (await client.get(new + "/health")).status_code == 200
            listed = (await client.get(control + "/sim/instances")).json()["instances"]
            assert [i["state"] for i in listed] == ["serving", "serving"]

            r = await client.post(control + "/sim/instances", json={"remove": new.removeprefix("http://")})
            assert r.status_code == 200 and r.json()["removed"] == new
            assert _targets(sd) == [fleet.urls[0].removeprefix("http://")]
            assert await _refused(new)

            for body, status in (({"remove": "127.0.0.1:1"}, 404), ({"add": 0}, 400), ({"add": 1, "remove": "x"}, 400),
                                 ({"grow": 1}, 400)):
                r = await client.post(control + "/sim/instances", json=body)
                assert r.status_code == status, body
        finally:
            server.should_exit = True
            await task


@pytest.mark.e2e
async def test_autoscaler_follows_a_scaling_endpoint_one_step_per_poll(tmp_path):
    answer: dict = {"status": 200, "body": {"pool": "chat", "current_replicas": 1, "desired_replicas": 3}}

    async def scaling(request: Request) -> Response:
        if answer["status"] != 200:
            return Response("no", status_code=answer["status"])
        return JSONResponse(answer["body"])

    server, task, base = await _serve(Starlette(routes=[Route("/api/v1/pools/chat/scaling", scaling)]))
    sd = tmp_path / "chat.json"
    try:
        async with running_fleet([FAST], file_sd=sd) as fleet, httpx.AsyncClient(timeout=5) as client:
            scaler = Autoscaler(fleet, base + "/api/v1/pools/chat/scaling", interval_s=0.1, max_instances=4)
            assert await scaler.poll_once(client) == 3 and len(fleet.members) == 2
            assert await scaler.poll_once(client) == 3 and len(fleet.members) == 3
            assert await scaler.poll_once(client) == 3 and len(fleet.members) == 3
            assert len(_targets(sd)) == 3
            answer["body"]["desired_replicas"] = 9
            await scaler.poll_once(client)
            await scaler.poll_once(client)
            assert len(fleet.members) == 4  # --max-instances
            answer["status"] = 503  # a failing monitor changes nothing
            assert await scaler.poll_once(client) is None and len(fleet.members) == 4
            answer.update(status=200, body={"desired_replicas": 0})
            newest = fleet.newest()
            await scaler.poll_once(client)
            assert len(fleet.members) == 3 and newest not in fleet.urls
            for _ in range(5):
                await scaler.poll_once(client)
            assert len(fleet.members) == 1  # never below one instance
            assert [a for a, _, _ in scaler.steps] == ["add", "add", "add", "remove", "remove", "remove"]
    finally:
        server.should_exit = True
        await task


@pytest.mark.e2e
def test_simulate_command_serves_a_control_port_and_keeps_the_file_sd_file(tmp_path):
    sd = tmp_path / "fleet.json"
    sim = subprocess.Popen([sys.executable, "-m", "monitor", "simulate", "--instances", "1", "--base-port", "0",
                            "--control-port", "0", "--file-sd", str(sd), "--model-load-time", "0.2",
                            "--status-every", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        control = None
        deadline = time.monotonic() + 30
        while control is None:
            assert time.monotonic() < deadline and sim.poll() is None, "simulate did not print its control URL"
            line = sim.stdout.readline()
            found = re.search(r"control: (http://\S+)/sim/instances", line)
            control = found.group(1) if found else None
        assert len(_targets(sd)) == 1
        r = httpx.post(control + "/sim/instances", json={"add": 2}, timeout=10)
        assert r.status_code == 200 and len(r.json()["added"]) == 2
        assert len(_targets(sd)) == 3
        page = None
        deadline = time.monotonic() + 20
        while page is None:
            assert time.monotonic() < deadline
            try:
                page = httpx.get(r.json()["added"][0] + "/metrics", timeout=2).text
            except httpx.TransportError:
                time.sleep(0.1)
        assert "vllm:num_requests_waiting_by_reason" in page  # latest is the default
    finally:
        sim.send_signal(signal.SIGTERM)
        out, err = sim.communicate(timeout=20)
    assert sim.returncode == 0, err
    assert "stopped" in out


def test_bad_simulate_flags_exit_2(capsys):
    assert main(["simulate", "--instances", "1", "--base-port", "0", "--spec-decode-acceptance", "1.5"]) == 2
    assert main(["simulate", "--instances", "1", "--base-port", "0", "--autoscale-from", "not a url"]) == 2
    assert main(["simulate", "--instances", "3", "--base-port", "0", "--max-instances", "2"]) == 2
    err = capsys.readouterr().err
    assert "--spec-decode-acceptance" in err and "--autoscale-from" in err and "--max-instances" in err
