"""Debian's dnsmasq on a loopback port serving `example.test` from a hosts file that tests change
while it runs (re-read on SIGHUP), for the DNS discovery tests."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.nameserver
import dns.resolver

from tests.helpers.ci import require
from tests.helpers.ports import free_port

DNSMASQ = shutil.which("dnsmasq") or next((p for p in ("/usr/sbin/dnsmasq",) if os.path.exists(p)), None)


class Dnsmasq:
    """dnsmasq on a loopback port serving `example.test` from a hosts file (re-read on SIGHUP)
    and two SRV records; nothing else (no upstream, no /etc/hosts, no DHCP)."""

    def __init__(self, workdir: Path) -> None:
        require(DNSMASQ is not None, "dnsmasq is not installed (apt-get install dnsmasq)")
        self.hosts = workdir / "hosts"
        self.port = free_port()
        self.log_path = workdir / "dnsmasq.log"
        self.argv = [DNSMASQ, "--no-daemon", "--conf-file=/dev/null", f"--port={self.port}",
                     "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                     f"--addn-hosts={self.hosts}", "--local=/example.test/", "--pid-file=",
                     f"--user={getpass.getuser()}", "--log-facility=-",
                     "--srv-host=_vllm._tcp.example.test,gpu-1.example.test,8001",
                     "--srv-host=_vllm._tcp.example.test,gpu-2.example.test,8002"]

    def write_hosts(self, lines: list[str]) -> None:
        tmp = self.hosts.with_suffix(".tmp")
        tmp.write_text("".join(f"{line}\n" for line in lines))
        os.replace(tmp, self.hosts)

    def reload(self) -> None:
        # the re-read is logged; wait for it so the next query sees the new records
        reads = self.log_path.read_text().count(f"read {self.hosts}")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.log_path.read_text().count(f"read {self.hosts}") <= reads:
            assert time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.02)

    def __enter__(self) -> Dnsmasq:
        if not self.hosts.exists():
            self.write_hosts([])
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", self.port)]
        resolver.lifetime = 0.5
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.log_path.read_text()}")
            try:
                resolver.resolve("_vllm._tcp.example.test", "SRV")
                return self
            except dns.exception.DNSException:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dnsmasq did not answer: {self.log_path.read_text()}") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
