"""BASELINE ONLY - not part of the product, never shipped: the synchronous design the product replaces.

An HTTP server (stdlib ``ThreadingHTTPServer``, HTTP/1.1 keep-alive) where each ``POST /scores`` does, inside
the request: a PostgreSQL ``INSERT ... ON CONFLICT (event_id) DO NOTHING`` + ``COMMIT`` into a table shaped
like ``events`` (same indexes), then - if the row was new - ``ZINCRBY`` on the four board-period sorted sets
the product also keeps (all_time, monthly, weekly, daily), pipelined in one round trip. It answers only
after both writes. No Kafka, no batching, no exactly-once across the two stores.

``--processes N`` forks N servers sharing one listening socket, so the baseline may use every core just as
the product's N consumers do. The load driver is ``wrk`` with ``baseline_post.lua`` (see bench/run.py).

    python bench/baseline_sync.py --port 8099 --processes 2 --prefix benchX:base \
        --database-url "$DATABASE_URL?options=-csearch_path%3Dbench_x" --table baseline_events
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import psycopg
import redis

from leaderboard import settings

_local = threading.local()
_COLUMNS = "event_id, match_id, player_id, game, points, occurred_at, kafka_partition, kafka_offset"


class Config:
    redis_url = ""
    database_url = ""
    prefix = "bench:base"
    table = "baseline_events"


def _clients() -> tuple[redis.Redis, psycopg.Connection]:
    """One Redis and one PostgreSQL connection per server thread (made after fork, on first use)."""
    clients: tuple[redis.Redis, psycopg.Connection] | None = getattr(_local, "clients", None)
    if clients is None:
        clients = (
            redis.Redis.from_url(Config.redis_url, socket_timeout=10),
            psycopg.connect(Config.database_url, autocommit=False, connect_timeout=5),
        )
        _local.clients = clients
    return clients


def _period_keys(occurred_at: str) -> list[str]:
    when = dt.datetime.fromisoformat(occurred_at)
    year, week, _ = when.isocalendar()
    p = Config.prefix
    return [f"{p}:all_time", f"{p}:m:{when:%Y-%m}", f"{p}:w:{year}-W{week:02d}", f"{p}:d:{when:%Y-%m-%d}"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: object) -> None:
        del format, args

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path != "/scores":
            self._reply(404, b'{"error":"not found"}')
            return
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            ev = orjson.loads(raw)
            event_id, player, points = str(ev["event_id"]), str(ev["player_id"]), int(ev["points"])
            occurred = str(ev["occurred_at"])
            keys = _period_keys(occurred)
        except (ValueError, KeyError, TypeError):
            self._reply(400, b'{"error":"bad event"}')
            return
        r, pg = _clients()
        try:
            with pg.cursor() as cur:
                cur.execute(
                    f"INSERT INTO {Config.table} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, 0, 0)"
                    " ON CONFLICT (event_id) DO NOTHING RETURNING 1",
                    (
                        event_id,
                        str(ev.get("match_id", "")),
                        player,
                        str(ev.get("game", "chess")),
                        points,
                        occurred,
                    ),
                )
                inserted = cur.fetchone() is not None
            pg.commit()
            if inserted:
                pipe = r.pipeline(transaction=False)
                for key in keys:
                    pipe.zincrby(key, points, player)
                pipe.execute()
        except (psycopg.Error, redis.RedisError) as exc:
            pg.rollback()
            self._reply(503, orjson.dumps({"error": str(exc)[:200]}))
            return
        self._reply(200, b'{"ok":true}' if inserted else b'{"ok":true,"duplicate":true}')


def main() -> None:
    parser = argparse.ArgumentParser(description="BASELINE (not shipped): synchronous score server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--prefix", required=True, help="Redis key prefix for the baseline's boards")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", help="default: LEADERBOARD_REDIS_URL (leaderboard.settings)")
    parser.add_argument("--table", default=Config.table)
    args = parser.parse_args()
    Config.redis_url = args.redis_url or settings.load().redis_url
    Config.database_url = args.database_url
    Config.prefix, Config.table = args.prefix, args.table
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    for _ in range(max(1, args.processes) - 1):
        if os.fork() == 0:  # children serve the same listening socket; the bench stops the whole group
            break
    server.serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    main()
