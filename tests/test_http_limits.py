"""Abusive HTTP clients against the real API server (``leaderboard api``: uvicorn + httptools, a subprocess).

Each test bounds the answer time; the header and body floods also bound the server's memory (VmHWM, the
peak resident size, from /proc). The frozen-PostgreSQL test SIGSTOPs a private PostgreSQL only.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import cast

import httpx
import orjson
import psycopg
import pytest
import redis
from confluent_kafka.admin import AdminClient

from consumers.migrate import migrate
from leaderboard.keys import Keys
from leaderboard.redis_client import sync_client
from leaderboard.settings import Settings
from tests.conftest import isolated
from tests.procs import ApiProcess, wait_until
from tests.services import PostgresServer, RedisServer

PROBLEM = "application/problem+json"
BOARD = "/v1/leaderboards/global"
MB = 1024 * 1024


def activate(config: Settings, client: redis.Redis) -> None:
    """The default board active (as a running consumer leaves it), so /readyz can say 200."""
    client.hset(Keys(config.redis_prefix).meta("global"), mapping={"active": 1, "writing": 1})


@contextmanager
def api_server(
    config: Settings, redis_client: redis.Redis, pg_url: str, tmp_path: Path, **env: str
) -> Iterator[ApiProcess]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn)
    activate(config, redis_client)
    api = ApiProcess(replace(config, database_url=pg_url), tmp_path, workers=1, **env)
    try:
        api.wait_ready(60)
        yield api
    finally:
        api.stop()
    log = api.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def api(config: Settings, redis_client: redis.Redis, tmp_path: Path) -> Iterator[ApiProcess]:
    with api_server(config, redis_client, config.database_url, tmp_path) as server:
        yield server


@pytest.fixture(scope="module")
def shared_api(
    base_settings: Settings, admin: AdminClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """One server, started once, for the tests that only read through it: no refusal counters, no peak
    memory (those tests get a server of their own). Its log is still checked for tracebacks at the end."""
    with isolated(base_settings, admin, (12, 3, 3)) as cfg:
        client = cast("redis.Redis", sync_client(cfg))
        try:
            with api_server(cfg, client, cfg.database_url, tmp_path_factory.mktemp("api")) as server:
                yield server
        finally:
            client.close()


def timed(call: httpx.Client, method: str, url: str, bound: float, **kw: object) -> httpx.Response:
    started = time.monotonic()
    resp = call.request(method, url, **kw)  # type: ignore[arg-type]
    took = time.monotonic() - started
    assert took < bound, f"{method} {url} took {took:.2f} s (bound {bound} s)"
    return resp


def problem(resp: httpx.Response, status: int, kind: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers
    doc: dict[str, object] = resp.json()
    assert doc["type"] == f"/problems/{kind}", doc
    return doc


def peak_rss(pid: int) -> int:
    """VmHWM: the process's peak resident set size so far, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def raw_response(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (a reset after an answer counts as the close)."""
    sock.settimeout(timeout)
    out = b""
    with suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


def raw_problem(data: bytes, status: int, kind: str) -> None:
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), data[:300]
    assert f"content-type: {PROBLEM}".encode() in head.lower(), head
    assert orjson.loads(body)["type"] == f"/problems/{kind}"


ABSURD = [
    "monthly:9999-12",
    "monthly:0000-01",
    "monthly:1999-12",
    "daily:99999-01-01",
    "daily:9999-12-31",
    "daily:2026-02-31",
    "weekly:9999-W52",
    "weekly:2026-W99",
    "weekly:2026-W9999999999",
]


def test_absurd_periods_are_400_on_every_route_and_nothing_is_logged(shared_api: ApiProcess) -> None:
    api = shared_api
    routes = [
        ("GET", "/entries", {}),
        ("GET", "/players/p1", {}),
        ("GET", "/players/p1/around", {}),
        ("GET", "/players", {"min_score": 0}),
        ("GET", "/stats", {}),
        ("GET", "/entries/stream", {}),
        ("POST", "/players:lookup", {}),
    ]
    with httpx.Client(base_url=api.url, timeout=5) as client:
        for spec in ABSURD:
            for method, path, params in routes:
                body = {"json": {"player_ids": ["p1"]}} if method == "POST" else {}
                resp = timed(client, method, BOARD + path, 1.0, params={**params, "period": spec}, **body)
                doc = problem(resp, 400, "invalid-period")
                assert spec in str(doc["detail"])
        # the stream answers the 400 at once, and no poller is left behind logging every 250 ms
        time.sleep(1.0)
        metrics = client.get("/metrics").text
    assert "leaderboard_api_sse_pollers 0.0" in metrics


def test_head_on_health_checks_answers_without_a_body(shared_api: ApiProcess) -> None:
    api = shared_api
    with httpx.Client(base_url=api.url, timeout=5) as client:
        for path in ("/healthz", "/readyz"):
            resp = timed(client, "HEAD", path, 1.0)
            assert resp.status_code == 200, path
            assert resp.content == b""
            assert resp.headers["cache-control"] == "no-store"


def _flood(port: int, head: bytes, total: int, result: dict[str, object]) -> None:
    """Send ``head`` and then ``total`` bytes of filler; record what the server answered and when."""
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    reader = threading.Thread(target=lambda: result.update(answer=raw_response(sock, 20)))
    reader.start()
    chunk = b"a" * MB
    sent = 0
    try:
        sock.sendall(head)
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError as exc:  # the server closed on us: that is the point
        result["send_error"] = type(exc).__name__
    reader.join(25)
    result.update(sent=sent, took=time.monotonic() - started)
    sock.close()


def _served_quickly(api: ApiProcess, seconds: float) -> list[float]:
    """Latencies of /healthz requests made for ``seconds`` (new connection each time)."""
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        status, _ = api.get("/healthz")
        assert status == 200
        out.append(time.monotonic() - started)
        time.sleep(0.05)
    return out


def test_a_96_mb_header_is_refused_fast_and_stalls_nobody(api: ApiProcess) -> None:
    before = peak_rss(api.proc.pid)
    result: dict[str, object] = {}
    flood = threading.Thread(
        target=_flood, args=(api.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ", 96 * MB, result)
    )
    flood.start()
    latencies = _served_quickly(api, 2.0)
    flood.join(30)
    assert not flood.is_alive()
    assert result["took"] < 5, result  # type: ignore[operator]
    assert result["sent"] < 96 * MB, "the server read the whole 96 MB header"  # type: ignore[operator]
    answer = result["answer"]
    assert isinstance(answer, bytes)
    raw_problem(answer, 431, "headers-too-large")  # written before the server stopped reading
    assert max(latencies) < 0.5, latencies
    assert peak_rss(api.proc.pid) - before < 32 * MB
    assert refused(api, "header_bytes") == 1


def refused(api: ApiProcess, reason: str) -> float:
    for line in api.get("/metrics")[1].decode().splitlines():
        if line.startswith(f'leaderboard_api_refused_total{{reason="{reason}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_100_mb_lookup_body_is_413_without_buffering_it(api: ApiProcess) -> None:
    lookup = f"POST {BOARD}/players:lookup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    before = peak_rss(api.proc.pid)
    # declared length: 413 before a byte of the body is read
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(f"{lookup}Content-Length: {100 * MB}\r\n\r\n".encode())
        raw_problem(raw_response(sock, 5), 413, "body-too-large")
        assert time.monotonic() - started < 1.0
    # chunked, no length: refused once the count passes the limit, while the client is still sending
    result: dict[str, object] = {}
    head = f"{lookup}Transfer-Encoding: chunked\r\n\r\n".encode()
    flood = threading.Thread(target=_flood_chunked, args=(api.port, head, 100 * MB, result))
    flood.start()
    latencies = _served_quickly(api, 2.0)
    flood.join(30)
    assert not flood.is_alive()
    assert result["took"] < 5, result  # type: ignore[operator]
    assert result["sent"] < 100 * MB, "the server read the whole body"  # type: ignore[operator]
    answer = result["answer"]
    assert isinstance(answer, bytes)
    if answer:  # uvicorn closes at once after a 413: the client may see the reset first
        raw_problem(answer, 413, "body-too-large")
    assert max(latencies) < 0.5, latencies
    assert peak_rss(api.proc.pid) - before < 32 * MB
    assert refused(api, "body_bytes") == 2
    # a normal lookup on the same server is fine
    with httpx.Client(base_url=api.url, timeout=5) as client:
        resp = timed(client, "POST", f"{BOARD}/players:lookup", 1.0, json={"player_ids": ["p1"]})
        assert resp.status_code == 200, resp.text


def _flood_chunked(port: int, head: bytes, total: int, result: dict[str, object]) -> None:
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    reader = threading.Thread(target=lambda: result.update(answer=raw_response(sock, 20)))
    reader.start()
    piece = b"%x\r\n%s\r\n" % (MB, b"[" * MB)
    sent = 0
    try:
        sock.sendall(head)
        while sent < total:
            sock.sendall(piece)
            sent += MB
    except OSError as exc:
        result["send_error"] = type(exc).__name__
    reader.join(25)
    result.update(sent=sent, took=time.monotonic() - started)
    sock.close()


def test_slow_and_idle_connections_are_closed_after_the_header_timeout(
    config: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = {
        "LEADERBOARD_API_HEADER_TIMEOUT_S": "2",
        "LEADERBOARD_API_KEEP_ALIVE_S": "2",
        "LEADERBOARD_API_MAX_CONNECTIONS_PER_CLIENT": "500",
    }
    with api_server(config, redis_client, config.database_url, tmp_path, **env) as api:
        slow = [socket.create_connection(("127.0.0.1", api.port), timeout=5) for _ in range(100)]
        idle = [socket.create_connection(("127.0.0.1", api.port), timeout=5) for _ in range(100)]
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answers: list[bytes] = []

        def trickle() -> None:  # slowloris: one header byte a second, until the server hangs up
            for _ in range(10):
                time.sleep(0.5)
                for sock in slow:
                    with suppress(OSError):
                        sock.sendall(b"X")

        dripper = threading.Thread(target=trickle, daemon=True)
        dripper.start()
        assert max(_served_quickly(api, 1.0)) < 0.5  # others are served meanwhile
        for sock in slow + idle:
            answers.append(raw_response(sock, 6))
            sock.close()
        took = time.monotonic() - started
        assert took < 6, f"slow connections were open for {took:.1f} s (header timeout 2 s + linger 1 s)"
        for answer in answers:
            raw_problem(answer, 408, "request-timeout")
        assert refused(api, "header_timeout") == 200
        # a keep-alive connection idle after its response is closed by uvicorn's timeout_keep_alive
        with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            started = time.monotonic()
            data = raw_response(sock, 6)
            assert data.startswith(b"HTTP/1.1 200"), data[:200]
            assert time.monotonic() - started < 3.5


def _hold(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _ask(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return raw_response(sock, 5)


def test_connections_beyond_the_limits_get_429_and_503(
    config: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Same set-up shape as the header-timeout test on purpose: each test states the limits it exercises.
    env = {
        "LEADERBOARD_API_MAX_CONNECTIONS": "8",
        "LEADERBOARD_API_MAX_CONNECTIONS_PER_CLIENT": "5",
        "LEADERBOARD_API_HEADER_TIMEOUT_S": "30",
    }
    with api_server(config, redis_client, config.database_url, tmp_path, **env) as api:
        held = [_hold(api.port, "127.0.0.1") for _ in range(5)]
        time.sleep(0.2)  # accepted by the server's loop
        started = time.monotonic()
        raw_problem(_ask(_hold(api.port, "127.0.0.1")), 429, "too-many-connections")
        held += [_hold(api.port, "127.0.0.2") for _ in range(3)]  # another client: total now 8
        time.sleep(0.2)
        raw_problem(_ask(_hold(api.port, "127.0.0.3")), 503, "too-many-connections")
        assert time.monotonic() - started < 2.0
        # the held connections are served normally, and once they go new ones are accepted again
        for sock in held:
            assert _ask(sock).startswith(b"HTTP/1.1 200"), "a held connection was not served"
            sock.close()
        wait_until(lambda: api.get("/healthz")[0] == 200, 3, "a new connection accepted")
        assert refused(api, "client") == 1
        assert refused(api, "total") == 1


def _lookups(api: ApiProcess) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in api.get("/metrics")[1].decode().splitlines():
        if line.startswith("leaderboard_api_snapshot_lookups_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            out[result] = float(line.rsplit(" ", 1)[1])
    return out


def test_negative_snapshot_lookups_are_cached_briefly(
    config: Settings, redis_client: redis.Redis, pg: psycopg.Connection, tmp_path: Path
) -> None:
    env = {"LEADERBOARD_API_NEGATIVE_CACHE_S": "2"}
    period = "monthly:2024-03"
    with (
        api_server(config, redis_client, config.database_url, tmp_path, **env) as api,
        httpx.Client(base_url=api.url, timeout=5) as client,
    ):
        for _ in range(50):
            resp = timed(client, "GET", f"{BOARD}/stats", 1.0, params={"period": period})
            assert resp.json()["players"] == 0
        seen = _lookups(api)
        assert seen.get("miss") == 1.0, seen
        assert seen.get("cached_miss", 0) >= 49, seen
        # the period gets closed: visible once the negative entry expires
        pg.execute(
            "INSERT INTO closed_periods (board, period, closed_at, players) VALUES ('global', %s, now(), 0)",
            (period,),
        )
        wait_until(
            lambda: client.get(f"{BOARD}/stats", params={"period": period}).json()["source"] == "snapshot",
            5,
            "the new snapshot served",
        )


def _cluster_pids(server: PostgresServer) -> list[int]:
    """The private postmaster and its children (only this test's server)."""
    master = int((server.data / "postmaster.pid").read_text().split("\n", 1)[0])
    pids = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(entry.name))
    return pids


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


@pytest.mark.slow
def test_frozen_postgres_gives_503_within_the_timeout_and_recovers(
    config: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """SIGSTOP 15 s, not 30: the longest internal bound is psycopg's cancellation of a stuck query (5 s to
    reach the server, 5 s for it to stop), so 15 s keeps reads arriving after every timer has fired once."""
    env = {"LEADERBOARD_API_PG_CONNECT_TIMEOUT_S": "2", "LEADERBOARD_API_PG_STATEMENT_TIMEOUT_MS": "2000"}
    bound = 2 + 2.0 + 0.5 + 1.0  # connect/pool wait + statement + slack (Snapshots) + HTTP
    with PostgresServer() as server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            migrate(conn)
            for month in ("2024-01", "2024-02"):
                conn.execute(
                    "INSERT INTO closed_periods (board, period, closed_at, players)"
                    " VALUES ('global', %s, now(), 0)",
                    (f"monthly:{month}",),
                )
        with (
            api_server(config, redis_client, server.url, tmp_path, **env) as api,
            httpx.Client(base_url=api.url, timeout=30) as client,
        ):
            assert client.get(f"{BOARD}/periods").status_code == 200
            assert client.get(f"{BOARD}/entries", params={"period": "monthly:2024-01"}).status_code == 200
            pids = _cluster_pids(server)
            _signal(pids, signal.SIGSTOP)
            try:
                frozen_at = time.monotonic()
                not_ready_after = None
                rounds = 0
                while time.monotonic() - frozen_at < 15:
                    if not_ready_after is None:
                        ready = timed(client, "GET", "/readyz", bound)
                        if ready.status_code == 503:
                            problem(ready, 503, "postgres-unavailable")
                            not_ready_after = time.monotonic() - frozen_at
                    for path, params in (
                        ("/periods", {}),
                        ("/entries", {"period": "monthly:2024-01"}),  # header cached, page needs PG
                        ("/stats", {"period": "monthly:2024-02"}),  # never looked up yet
                    ):
                        resp = timed(client, "GET", BOARD + path, bound, params=params)
                        problem(resp, 503, "postgres-unavailable")
                        assert resp.headers["retry-after"] == "5"
                    live = timed(client, "GET", f"{BOARD}/entries", 1.0, params={"period": "monthly:current"})
                    assert live.status_code == 200  # Redis-only reads do not wait for PostgreSQL
                    rounds += 1
                assert not_ready_after is not None, "/readyz stayed 200 while PostgreSQL was frozen"
                assert not_ready_after < 15
                assert rounds >= 2, "reads were not repeated during the freeze"
            finally:
                _signal(pids, signal.SIGCONT)
            wait_until(lambda: client.get("/readyz").status_code == 200, 15, "API ready after SIGCONT")
            for path, params in (
                ("/periods", {}),
                ("/entries", {"period": "monthly:2024-01"}),
                ("/stats", {"period": "monthly:2024-02"}),
            ):
                resp = timed(client, "GET", BOARD + path, 2.0, params=params)
                assert resp.status_code == 200, resp.text


def test_frozen_redis_makes_readyz_not_ready_within_its_bound(
    config: Settings, pg: psycopg.Connection, tmp_path: Path
) -> None:
    with RedisServer() as private:
        client = redis.Redis.from_url(private.url)
        own = replace(config, redis_url=private.url)
        with api_server(own, client, config.database_url, tmp_path) as api:
            assert api.get("/readyz")[0] == 200
            assert private._proc is not None
            os.kill(private._proc.pid, signal.SIGSTOP)  # the private server only
            try:
                # GET and HEAD at once (each waits out its own Redis bound), /healthz while both wait.
                with httpx.Client(base_url=api.url, timeout=30) as http, ThreadPoolExecutor(2) as pool:
                    get = pool.submit(timed, http, "GET", "/readyz", 4.5)
                    head = pool.submit(timed, http, "HEAD", "/readyz", 4.5)
                    assert timed(http, "GET", "/healthz", 1.0).status_code == 200
                    assert not get.done(), "/readyz answered before its Redis bound with Redis frozen"
                    problem(get.result(), 503, "redis-unavailable")
                    assert head.result().status_code == 503
            finally:
                os.kill(private._proc.pid, signal.SIGCONT)
            wait_until(lambda: api.get("/readyz")[0] == 200, 15, "API ready after SIGCONT")
        client.close()
