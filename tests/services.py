"""Throwaway Redis / PostgreSQL servers for fault-injection tests.

Plain helpers, not fixtures: a test creates its own server, stops and restarts it to inject
faults, and calls ``cleanup()`` at the end (or uses it as a context manager). Data survives
``stop()``/``start()``; ``cleanup()`` deletes it. Stdlib only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    """Return a loopback TCP port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(check: Callable[[], bool], what: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s; see {log}")
        time.sleep(0.05)


class _Server:
    """Common start/stop/cleanup and context-manager plumbing."""

    def __init__(self, prefix: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.port = free_port()  # kept across restarts so ``url`` stays valid

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Stop the server (if running) and delete its data."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


class RedisServer(_Server):
    """A private redis-server with AOF (appendfsync everysec) in a temp dir."""

    def __init__(self) -> None:
        super().__init__("redis-test-")
        self.log = self.dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ping(self) -> bool:
        if not self.running:
            assert self._proc is not None
            raise RuntimeError(f"redis-server exited with {self._proc.returncode}; see {self.log}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        """Start (or restart) the server and wait until it answers PING."""
        if self.running:
            return
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        args += ["--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec"]
        args += ["--save", "", "--logfile", str(self.log), "--daemonize", "no"]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_for(self._ping, "redis-server", START_TIMEOUT, self.log)

    def stop(self) -> None:
        """SIGTERM (Redis fsyncs the AOF on shutdown) and wait for exit."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: a crash; up to ~1 s of acknowledged writes may be lost (everysec)."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if not self.running:
            return
        assert self._proc is not None
        self._proc.send_signal(sig)
        try:
            self._proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)


class PostgresServer(_Server):
    """A private PostgreSQL 15 cluster (fsync on) with role/database ``leaderboard``."""

    def __init__(self) -> None:
        super().__init__("pg-test-")
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as_root = os.geteuid() == 0
        try:
            if self._as_root:  # postgres refuses to run as root: hand the dir to the postgres user
                shutil.chown(self.dir, "postgres", "postgres")
            self._initdb()
        except BaseException:
            self.cleanup()
            raise

    @property
    def url(self) -> str:
        return f"postgresql://leaderboard:leaderboard@127.0.0.1:{self.port}/leaderboard"

    def _run(self, *args: str, stdin: str | None = None, timeout: float = 60) -> None:
        cmd = (["runuser", "-u", "postgres", "--"] if self._as_root else []) + list(args)
        r = subprocess.run(cmd, check=False, input=stdin, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({r.returncode}): {r.stderr.strip()}; see {self.log}")

    def _initdb(self) -> None:
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        # Socket lives in the private 0700 temp dir, so trust on it is local to this user.
        conf = f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
        conf += f"unix_socket_directories = '{self.dir}'\nfsync = on\nsynchronous_commit = on\n"
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(conf)
        self.start()
        self._run(
            str(PG_BIN / "psql"),
            "-h",
            str(self.dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            stdin="CREATE ROLE leaderboard LOGIN CREATEDB PASSWORD 'leaderboard';\n"
            "CREATE DATABASE leaderboard OWNER leaderboard;\n",
        )

    def _pg_ctl(self, *args: str) -> None:
        t = str(int(STOP_TIMEOUT))
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", t, *args)

    @property
    def running(self) -> bool:
        pidfile = self.data / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    def start(self) -> None:
        """Start (or restart, running crash recovery if needed) and wait until ready."""
        if not self.running:
            self._pg_ctl("start")

    def stop(self) -> None:
        """Fast shutdown (clients disconnected, checkpoint written); data is kept."""
        if self.running:
            self._pg_ctl("-m", "fast", "stop")

    def kill(self) -> None:
        """Immediate shutdown, i.e. a crash: the next start() replays the WAL."""
        if self.running:
            self._pg_ctl("-m", "immediate", "stop")
