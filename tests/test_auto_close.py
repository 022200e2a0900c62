"""The consumer's scheduler closes due periods on its own, within the lookback of the group's recorded clock;
later events for a closed period are dead-lettered. A period that ended before the lookback (a backdated
win) is left to an operator: no close, no announcement."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psycopg
import redis

from leaderboard.keys import Keys
from leaderboard.settings import Settings
from tests.procs import (
    ConsumerProcess,
    caught_up,
    consume_until_caught_up,
    leaderboard_cli,
    read_topic,
    wait_until,
)
from tests.test_close_period import event, publish

DAY = "daily:2026-10-01"


def _boards(tmp_path: Path) -> Path:
    boards = tmp_path / "boards.toml"
    boards.write_text('[[board]]\nid = "global"\nperiods = ["all_time", "daily"]\ngrace_seconds = 60\n')
    return boards


def _closed(cfg: Settings) -> tuple[int, object] | None:
    with psycopg.connect(cfg.database_url) as conn:
        row = conn.execute(
            "SELECT players, announced_at FROM closed_periods WHERE board = 'global' AND period = %s", (DAY,)
        ).fetchone()
    return None if row is None else (int(row[0]), row[1])


def test_consumer_closes_due_periods_by_itself(config: Settings, tmp_path: Path) -> None:
    # The events are stored today; their day ended two months earlier: inside a 400-day lookback.
    cfg = replace(config, boards_file=_boards(tmp_path), auto_close_periods=True)
    publish(cfg, [event("ann", "2026-10-01T10:00:00Z", 3), event("bob", "2026-10-01T11:00:00Z", 5)])
    consume_until_caught_up(replace(cfg, auto_close_periods=False))
    # Its scheduler runs at start, then every LEADERBOARD_CLOSE_INTERVAL_S.
    consumer = ConsumerProcess(cfg, tmp_path, LEADERBOARD_CLOSE_LOOKBACK_S=str(400 * 86400))
    try:
        consumer.wait_ready()

        def closed() -> bool:
            row = _closed(cfg)
            return row is not None and row[0] == 2 and row[1] is not None

        wait_until(closed, 90, f"the consumer to close {DAY}")
        publish(cfg, [event("cy", "2026-10-01T12:00:00Z", 9)])
        wait_until(lambda: caught_up(cfg), 60, "late event consumed")
        reasons = [h["reason"] for _, _, h in read_topic(cfg, cfg.dlq_topic)]
        assert reasons == ["period_closed"]
        with psycopg.connect(cfg.database_url) as conn:
            standings = conn.execute(
                "SELECT rank, player_id, score FROM period_standings WHERE board = 'global' AND period = %s "
                "ORDER BY position",
                (DAY,),
            ).fetchall()
        assert standings == [(1, "bob", 5), (2, "ann", 3)]
        client = redis.Redis.from_url(cfg.redis_url)
        keys = Keys(cfg.redis_prefix)
        gen = int(client.hget(keys.meta("global"), "active") or 0)
        assert gen >= 1, "no active generation: the check below would pass for nothing"
        # Retention (35 days after the day ended) is long over, so Redis let the period go at once.
        assert not client.exists(keys.board("global", gen, DAY))
        assert client.sismember(keys.closed("global"), DAY)
        client.close()
    finally:
        consumer.stop()


def test_a_backdated_period_is_left_to_an_operator(config: Settings, tmp_path: Path) -> None:
    # Default lookback (2 days of recorded time): a win dated two months back must not close its day.
    cfg = replace(config, boards_file=_boards(tmp_path), auto_close_periods=True)
    publish(cfg, [event("mallory", "2026-10-01T10:00:00Z", 50), event("eve", "2026-10-01T11:00:00Z", 1)])
    consumer = ConsumerProcess(cfg, tmp_path, LEADERBOARD_CLOSE_INTERVAL_S="1")
    try:
        consumer.wait_ready()
        wait_until(lambda: caught_up(cfg), 60, "events consumed")
        wait_until(
            lambda: (
                "period left to an operator" in consumer.log_path.read_text()
                and DAY in consumer.log_path.read_text()
            ),
            60,
            "the scheduler to see the backdated day and leave it alone",
        )
        assert _closed(cfg) is None
        assert read_topic(cfg, cfg.period_closed_topic) == []
        # The operator decides: close-period --period closes it like any other.
        res = leaderboard_cli(cfg, "close-period", "--period", DAY, timeout=120)
        assert res.returncode == 0, res.stderr
        row = _closed(cfg)
        assert row is not None
        assert row[0] == 2
        assert len(read_topic(cfg, cfg.period_closed_topic)) == 1
    finally:
        consumer.stop()
