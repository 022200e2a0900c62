"""The consumer closes a due period on its own schedule; later events for it are dead-lettered."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psycopg
import redis

from leaderboard.keys import Keys
from leaderboard.settings import Settings
from tests.procs import ConsumerProcess, caught_up, consume_until_caught_up, read_topic, wait_until
from tests.test_close_period import event, publish


def test_consumer_closes_due_periods_by_itself(config: Settings, tmp_path: Path) -> None:
    boards = tmp_path / "boards.toml"
    boards.write_text('[[board]]\nid = "global"\nperiods = ["all_time", "daily"]\ngrace_seconds = 60\n')
    cfg = replace(config, boards_file=boards, auto_close_periods=True)
    day = "daily:2026-10-01"  # long past: due as soon as the consumer looks
    publish(cfg, [event("ann", "2026-10-01T10:00:00Z", 3), event("bob", "2026-10-01T11:00:00Z", 5)])
    consume_until_caught_up(replace(cfg, auto_close_periods=False))
    consumer = ConsumerProcess(cfg, tmp_path)  # its schedule runs at start, then once a minute
    try:
        consumer.wait_ready()

        def closed() -> bool:
            with psycopg.connect(cfg.database_url) as conn:
                row = conn.execute(
                    "SELECT players, announced_at FROM closed_periods WHERE board = 'global' AND period = %s",
                    (day,),
                ).fetchone()
            return row is not None and row[0] == 2 and row[1] is not None

        wait_until(closed, 90, f"the consumer to close {day}")
        publish(cfg, [event("cy", "2026-10-01T12:00:00Z", 9)])
        wait_until(lambda: caught_up(cfg), 60, "late event consumed")
        reasons = [h["reason"] for _, _, h in read_topic(cfg, cfg.dlq_topic)]
        assert reasons == ["period_closed"]
        with psycopg.connect(cfg.database_url) as conn:
            standings = conn.execute(
                "SELECT rank, player_id, score FROM period_standings WHERE board = 'global' AND period = %s "
                "ORDER BY position",
                (day,),
            ).fetchall()
        assert standings == [(1, "bob", 5), (2, "ann", 3)]
        client = redis.Redis.from_url(cfg.redis_url)
        keys = Keys(cfg.redis_prefix)
        gen = int(client.hget(keys.meta("global"), "active") or 0)
        assert gen >= 1, "no active generation: the check below would pass for nothing"
        # Retention (35 days after the day ended) is long over, so Redis let the period go at once.
        assert not client.exists(keys.board("global", gen, day))
        assert client.sismember(keys.closed("global"), day)
        client.close()
    finally:
        consumer.stop()
