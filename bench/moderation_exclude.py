"""Cost of applying an exclude / reinstate to a large live board while batches keep being applied.

    .venv/bin/python bench/moderation_exclude.py [--players 1000000] [--events 2000] [--rate 5000] [--runs 5]

A private PostgreSQL schema and a private redis-server (AOF as in tests/services.py). The board has 4
period keys (all_time, monthly, weekly, daily); its live generation is filled with ``--players`` members
in each, and the moderated player has ``--events`` stored events. A writer thread applies batches of 500
events of other players through the consumer's own ``RedisSink.apply`` at ``--rate`` events/s the whole
time. Each run stores ``exclude`` then ``reinstate`` (the moderation store) and times the consumer's step
(``moderation_apply.sync``: the seq check, the view, the recompute on 4 board-periods, the bookkeeping)
until the player is gone / back: the time the batch loop is held by the action (what it adds to the lag),
and how much further the writer fell behind its schedule meanwhile (its lag's growth). Prints medians.
Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumers import pg_sink  # noqa: E402
from consumers.generations import Generations, rebuild_from_checkpoint  # noqa: E402
from consumers.migrate import migrate  # noqa: E402
from consumers.moderation_apply import Recomputer, sync  # noqa: E402
from consumers.plan import Canonical  # noqa: E402
from consumers.redis_sink import RedisSink  # noqa: E402
from leaderboard import settings as settings_mod  # noqa: E402
from leaderboard.boards import Board  # noqa: E402
from leaderboard.keys import Keys  # noqa: E402
from leaderboard.moderation import store  # noqa: E402
from leaderboard.periods import PeriodKind  # noqa: E402
from schemas import moderation as m  # noqa: E402
from schemas.model import MatchWon  # noqa: E402
from tests.services import RedisServer  # noqa: E402

BOARD = Board(
    id="bench", periods=(PeriodKind.ALL_TIME, PeriodKind.MONTHLY, PeriodKind.WEEKLY, PeriodKind.DAILY)
)
NOW = datetime.now(UTC) - timedelta(minutes=30)


def win(player: str, offset_s: int = 0) -> MatchWon:
    return MatchWon(
        event_id=str(uuid.uuid4()),
        match_id=f"m{uuid.uuid4().hex[:8]}",
        player_id=player,
        game="chess",
        points=random.randint(1, 9),
        occurred_at=NOW - timedelta(seconds=offset_s),
    )


def action(kind: str) -> m.AnyAction:
    return m.validate(
        {
            "kind": kind,
            "action_id": str(uuid.uuid4()),
            "actor": "bench",
            "reason": "bench",
            "at": m.utc_text(datetime.now(UTC)),
            "player_id": "cheat",
            "boards": "all",
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--players", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    base = settings_mod.load()
    with RedisServer() as private:  # millions of members: not on the shared Redis
        private.start()
        return run(args, base, private.url)


def run(args: argparse.Namespace, base: settings_mod.Settings, redis_url: str) -> int:
    schema = f"modexcl_{uuid.uuid4().hex[:8]}"
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base.database_url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base.database_url else "?"
    url = f"{base.database_url}{sep}options={quote(f'-csearch_path={schema}')}"
    client = redis.Redis.from_url(redis_url, socket_timeout=30)
    keys = Keys(prefix)
    stop = threading.Event()
    behind: list[float] = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            gens = Generations(client, keys, [BOARD])
            sink = RedisSink(client, keys, [BOARD])
            lease = gens.lease(BOARD.id)
            assert lease is not None
            rebuild_from_checkpoint(gens, sink, conn, BOARD, lease)
            lease.release()
            gen = int(client.hget(keys.meta(BOARD.id), "active") or 0)
            periods = BOARD.period_keys(NOW)
            t0 = time.monotonic()
            pipe = client.pipeline(transaction=False)
            for period in periods:
                for i in range(0, args.players, 10_000):
                    members = range(i, min(i + 10_000, args.players))
                    pipe.zadd(
                        keys.board(BOARD.id, gen, period),
                        {f"f{j}": float(random.randrange(1 << 40)) for j in members},
                    )
                    pipe.execute()
                client.sadd(keys.periods(BOARD.id, gen), period)
            print(
                f"filled {len(periods)} x {args.players:,} members in {time.monotonic() - t0:.1f} s",
                flush=True,
            )
            mine = [Canonical(0, i, win("cheat", i)) for i in range(args.events)]
            pg_sink.write_batch(conn, mine, [BOARD])
            sink.apply(mine)
            offset = args.events

            def writer() -> None:
                nonlocal offset
                with psycopg.connect(url, autocommit=True) as wconn:
                    started = time.monotonic()
                    sent = 0
                    while not stop.is_set():
                        batch = [
                            Canonical(1 + i % 11, offset + i, win(f"f{random.randrange(args.players)}"))
                            for i in range(500)
                        ]
                        offset += 500
                        out = pg_sink.write_batch(wconn, batch, [BOARD])
                        sink.apply(out.canonical)
                        sent += 500
                        due = started + sent / args.rate
                        late = time.monotonic() - due
                        behind.append(max(0.0, late))
                        if late < 0:
                            time.sleep(-late)

            thread = threading.Thread(target=writer, daemon=True)
            thread.start()
            recomputer = Recomputer(client, keys, [BOARD])
            view = sync(conn, recomputer, None)
            took: dict[str, list[float]] = {"exclude": [], "reinstate": []}
            lag: dict[str, list[float]] = {"exclude": [], "reinstate": []}
            zkey = keys.board(BOARD.id, gen, periods[-1])
            for _ in range(args.runs):
                for kind in ("exclude", "reinstate"):
                    store.record(conn, action(kind), frozenset({BOARD.id}), horizon=timedelta(days=7))
                    mark = len(behind)
                    t = time.perf_counter()
                    view = sync(conn, recomputer, view)
                    took[kind].append((time.perf_counter() - t) * 1000)
                    present = client.zscore(zkey, "cheat") is not None
                    assert present == (kind == "reinstate"), (kind, present)
                    time.sleep(0.5)
                    before = behind[mark - 1] if mark > 0 else 0.0
                    lag[kind].append(max(0.0, max(behind[mark:] or [before]) - before) * 1000)
            stop.set()
            thread.join(10)
            for kind, values in took.items():
                print(
                    f"{kind:9s} apply median {statistics.median(values):6.1f} ms"
                    f" (runs: {', '.join(f'{v:.1f}' for v in values)}); writer behind schedule,"
                    f" growth of its lag in the 0.5 s after: median {statistics.median(lag[kind]):.0f} ms"
                )
    finally:
        stop.set()
        for k in client.scan_iter(match=f"{prefix}:*", count=10_000):
            client.unlink(k)
        client.close()
        with psycopg.connect(base.database_url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
