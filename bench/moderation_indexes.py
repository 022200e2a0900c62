"""Cost of the moderation indexes on the consumer's PostgreSQL write (``pg_sink.write_batch``).

    .venv/bin/python bench/moderation_indexes.py [--stored 1000000] [--players 200000] [--runs 5]

Fills a private schema (``modidx_<run>``, the partitioned event log of the current migrations) with
``--stored`` events of this month, then times batches of 5,000 fresh events (random players among
``--players``, random match ids) under each index set: none, ``events_player`` (player_id, occurred_at),
``events_match`` (match_id), both. The sets are taken in turn, ``--runs`` rounds, so background noise on
the shared machine spreads over all of them; prints the median per set. The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumers import pg_sink  # noqa: E402
from consumers.migrate import migrate  # noqa: E402
from consumers.plan import Canonical  # noqa: E402
from leaderboard import settings as settings_mod  # noqa: E402
from leaderboard.boards import Board  # noqa: E402
from schemas.model import MatchWon  # noqa: E402

_FILL = """
INSERT INTO events (event_id, match_id, player_id, game, points, occurred_at, kafka_partition, kafka_offset)
SELECT gen_random_uuid(), 'm-' || (i / 2), 'p' || floor(%(players)s * random())::int, 'chess',
       1 + (i %% 5), %(start)s + (i %% 86400) * interval '1 second', i %% 12, i / 12
FROM generate_series(0, %(n)s - 1) AS i
"""
INDEXES = {
    "events_player": "CREATE INDEX events_player ON events (player_id, occurred_at)",
    "events_match": "CREATE INDEX events_match ON events (match_id)",
}
SETS = {"none": (), "player": ("events_player",), "match": ("events_match",), "both": tuple(INDEXES)}
BATCH = 5000


def batch(players: int, start: datetime, offset: int) -> list[Canonical]:
    out = []
    for i in range(BATCH):
        event = MatchWon(
            event_id=str(uuid.uuid4()),
            match_id=f"m-{uuid.uuid4().hex[:12]}",
            player_id=f"p{random.randrange(players)}",
            game="chess",
            points=1 + i % 5,
            occurred_at=start + timedelta(seconds=random.randrange(86400)),
        )
        out.append(Canonical(i % 12, offset + i, event))
    return out


def use(conn: psycopg.Connection, names: tuple[str, ...]) -> None:
    for name, ddl in INDEXES.items():
        conn.execute(f"DROP INDEX IF EXISTS {name}")
        if name in names:
            conn.execute(ddl)
    conn.execute("VACUUM ANALYZE events")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stored", type=int, default=1_000_000)
    parser.add_argument("--players", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    base = settings_mod.load().database_url
    schema = f"modidx_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    url = f"{base}{'&' if '?' in base else '?'}options={quote(f'-csearch_path={schema}')}"
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    boards = [Board(id="global")]
    took: dict[str, list[float]] = {name: [] for name in SETS}
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            conn.execute("SELECT ensure_event_partition(%s)", (start,))
            conn.execute("SELECT ensure_event_partition(%s)", (start + timedelta(days=1),))
            t0 = time.monotonic()
            conn.execute(_FILL, {"players": args.players, "start": start, "n": args.stored})
            print(f"filled {args.stored:,} events in {time.monotonic() - t0:.1f} s", flush=True)
            offset = args.stored
            with psycopg.connect(url) as writer:
                for _ in range(args.runs):
                    for name, names in SETS.items():
                        use(conn, names)
                        records = batch(args.players, start, offset)
                        offset += BATCH
                        t = time.perf_counter()
                        pg_sink.write_batch(writer, records, boards)
                        took[name].append((time.perf_counter() - t) * 1000)
            for name, values in took.items():
                runs = ", ".join(f"{v:.0f}" for v in values)
                print(f"{name:7s} median {statistics.median(values):6.0f} ms  (runs: {runs})")
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
