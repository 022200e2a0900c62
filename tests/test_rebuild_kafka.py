"""`leaderboard rebuild --from kafka` against the real Kafka, PostgreSQL and Redis: it replays the topic into
the event log batch by batch (events PostgreSQL lacked are stored, copies recognised) and then rebuilds from
the checkpoint like `--from postgres`; a deadline the process enforces stops it with one line."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import redis

from consumers.migrate import migrate
from leaderboard.keys import Keys
from leaderboard.settings import Settings
from tests.procs import leaderboard_cli
from tests.test_close_period import event, publish
from tests.test_consumer import board


def test_rebuild_from_kafka_stores_what_postgres_lacked_and_stops_at_its_deadline(
    config: Settings, pg: psycopg.Connection, redis_client: redis.Redis
) -> None:
    migrate(pg)
    now = datetime.now(UTC).replace(microsecond=0)
    records = [
        event(f"p{i % 7}", (now - timedelta(minutes=30 - i % 20)).isoformat(), 1 + i % 5) for i in range(300)
    ]
    publish(config, [*records, records[3], records[40]])  # two copies: a producer's retries
    want: dict[str, int] = {}
    for _, value in records:
        body = json.loads(value)
        want[body["player_id"]] = want.get(body["player_id"], 0) + body["points"]

    done = leaderboard_cli(config, "rebuild", "--from", "kafka")
    assert done.returncode == 0, done.stderr
    assert "done replayed records: 302/302" in done.stderr
    assert "302 records replayed, 300 canonical events in PostgreSQL" in done.stderr
    assert pg.execute("SELECT count(*) FROM events").fetchone() == (300,)
    keys = Keys(config.redis_prefix)
    active = int(redis_client.hget(keys.meta("global"), "active") or 0)
    assert board(redis_client, config, "all_time") == want

    # A rebuild blocked in PostgreSQL (an archive's lock on the floor, held here) ends at its deadline.
    blocker = psycopg.connect(config.database_url)
    try:
        blocker.execute("LOCK TABLE event_log_floor IN EXCLUSIVE MODE")
        started = time.monotonic()
        stuck = leaderboard_cli(
            replace(config, rebuild_deadline_s=3), "rebuild", "--from", "kafka", timeout=60
        )
        took = time.monotonic() - started
    finally:
        blocker.close()
    assert stuck.returncode == 2, stuck.stderr
    assert "Traceback" not in stuck.stderr
    last = stuck.stderr.strip().splitlines()[-1]
    assert "deadline of 3 s (LEADERBOARD_REBUILD_DEADLINE_S) passed while replaying topic" in last, last
    assert took < 3 + 10, took  # the interpreter's start, the deadline, the leases' release
    assert not redis_client.exists(keys.lock("global"))  # released: the next rebuild may start at once
    assert int(redis_client.hget(keys.meta("global"), "active") or 0) == active  # still the live one
