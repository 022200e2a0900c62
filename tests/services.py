"""Throwaway Kafka / Redis / PostgreSQL servers for fault-injection tests.

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

from leaderboard import settings
from leaderboard.net import free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


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


class _ChildServer(_Server):
    """A server that is one child process: SIGTERM to stop, SIGKILL to crash, both waited for."""

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """SIGTERM: a controlled shutdown (Redis fsyncs its AOF first)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: a crash (Redis may lose up to ~1 s of writes; Kafka recovers its log dir on start)."""
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


class RedisServer(_ChildServer):
    """A private redis-server with AOF (appendfsync everysec) in a temp dir."""

    def __init__(self) -> None:
        super().__init__("redis-test-")
        self.log = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

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

    def _pids(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, WAL writer...)."""
        try:
            root = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return []
        pids = [root]
        # A /proc scan like bench/benchlib.cpu_by_command on purpose: tests do not import the bench.
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == root:
                pids.append(int(entry.name))
        return pids

    def freeze(self) -> None:
        """SIGSTOP every process of the cluster: sockets stay open, the kernel still ACKs, nothing answers."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in reversed(self._pids()):
            os.kill(pid, signal.SIGCONT)


def _java() -> str:
    """Java 17 as deploy/stack.sh finds it: $JAVA, Debian's openjdk-17, $JAVA_HOME, else `java`."""
    if java := os.environ.get("JAVA"):
        return java
    found = sorted(Path("/usr/lib/jvm").glob("java-17-openjdk-*/bin/java"))
    if found:
        return str(found[0])
    if home := os.environ.get("JAVA_HOME"):
        return str(Path(home) / "bin" / "java")
    return shutil.which("java") or "java"


def kafka_libs() -> Path:
    """The broker classpath deploy/stack.sh assembled, under LEADERBOARD_STACK_DIR or <repo>/.stack."""
    stack_dir = settings.load().stack_dir
    stack = stack_dir if stack_dir.is_absolute() else REPO / stack_dir
    libs = stack / "kafka" / "libs"
    if not any(libs.glob("kafka_*.jar")):
        raise RuntimeError(f"no Kafka jars in {libs}: run `make up` once (deploy/stack.sh assembles them)")
    return libs


RESTART_FAST = """
# After a kill the restarted node's controller still holds the node's previous registration and refuses the
# new one (DUPLICATE_BROKER_REGISTRATION) until that session times out: 9 s by default, 3 s here (six missed
# heartbeats: a loaded machine's pauses do not fence the running broker).
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
"""


class KafkaServer(_ChildServer):
    """A private single-node KRaft broker (combined broker + controller) on free ports, data in a temp dir.

    Rendered from deploy/kafka/server.properties like deploy/stack.sh does; ``kill()`` then ``start()``
    keeps the ports, the cluster id and the log dir, so clients reconnect to the same broker.
    """

    CLUSTER_ID = "LivenessTestBroker0001"  # 22 base64 characters: a 16-byte UUID

    def __init__(self) -> None:
        super().__init__("kafka-test-")
        self.controller_port = free_port()
        self.log = self.dir / "kafka.log"
        self.conf = self.dir / "server.properties"
        self._libs = kafka_libs()
        template = (REPO / "deploy" / "kafka" / "server.properties").read_text()
        self.conf.write_text(
            template.replace("@LOG_DIR@", str(self.dir / "data"))
            .replace("@KAFKA_PORT@", str(self.port))
            .replace("@CONTROLLER_PORT@", str(self.controller_port))
            + RESTART_FAST
        )
        fmt = subprocess.run(
            [
                _java(),
                "-Xmx256m",
                f"-Dlog4j2.configurationFile={REPO / 'deploy' / 'kafka' / 'tools-log4j2.properties'}",
                "-cp",
                f"{self._libs}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                self.CLUSTER_ID,
                "-c",
                str(self.conf),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if fmt.returncode != 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError(f"formatting the Kafka log dir failed: {fmt.stderr.strip()[-500:]}")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    # Exit check then port probe, as RedisServer._ping: each readiness probe speaks its server's protocol.
    def _answers(self) -> bool:
        """A metadata request lists this broker (the port alone opens before the broker is usable)."""
        if not self.running:
            assert self._proc is not None
            raise RuntimeError(f"kafka exited with {self._proc.returncode}; see {self.log}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415 - only the broker helper needs it

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        try:
            return bool(admin.list_topics(timeout=2).brokers)
        except Exception:
            return False

    def start(self, timeout: float = 90) -> None:
        """Start (or restart after ``kill()``) and wait until the broker answers metadata requests."""
        if self.running:
            return
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                [
                    _java(),
                    "-Xmx384m",
                    "-Xms384m",
                    "-XX:+UseG1GC",
                    "-XX:TieredStopAtLevel=1",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={REPO / 'deploy' / 'kafka' / 'log4j2.properties'}",
                    "-cp",
                    f"{self._libs}/*",
                    "kafka.Kafka",
                    str(self.conf),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_for(self._answers, "kafka", timeout, self.log)
