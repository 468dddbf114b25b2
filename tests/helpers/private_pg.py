"""A PostgreSQL cluster of the test's own, to stop and start at will.

The machine's shared cluster (127.0.0.1:5432) must never be stopped: other tests and people use it.
This one lives in a temporary directory, listens on a free loopback port (and a socket in its own
directory), asks for a password (scram-sha-256) and is removed afterwards. Debian's server binaries
are in /usr/lib/postgresql/<version>/bin; as root, they run as the `postgres` user (initdb refuses
root). Tests call `PrivatePostgres.available()` through tests.helpers.ci.require(), so with CI=true a
missing binary fails the test instead of skipping it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.helpers.ports import free_port


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PrivatePostgres:
    """`with PrivatePostgres(password) as pg:` → `pg.url`, `pg.stop()`, `pg.start()`."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.bindir = _bindir()
        assert self.bindir is not None
        self.root = Path(tempfile.mkdtemp(prefix="slo-monitor-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
            self._owner: tuple[int, int] | None = (user.pw_uid, user.pw_gid)
        else:
            self._owner = None

    @staticmethod
    def available() -> tuple[bool, str]:
        bindir = _bindir()
        if bindir is None or not (bindir / "initdb").exists():
            return False, "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return False, "running as root and there is no `postgres` user to run initdb as"
            if not (shutil.which("runuser") or os.path.exists("/usr/sbin/runuser")):
                return False, "running as root and `runuser` is missing"
        return True, ""

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr or done.stdout}\n{log[-2000:]}")

    def init(self) -> PrivatePostgres:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._owner:
            os.chown(pwfile, *self._owner)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
                  f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync", "--locale=C")
        pwfile.unlink()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = off\nmax_connections = 30\n")
        return self

    def start(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self) -> None:
        """A fast shutdown: sessions are cut, as when the database host goes away."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def __enter__(self) -> PrivatePostgres:
        self.init()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.running():
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
