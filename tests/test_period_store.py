"""The freeze against real PostgreSQL: it never keeps batches queued behind it for longer than its lock
timeout, and a close that died between its two steps is finished by the next run."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import psycopg
import pytest

from consumers import checkpoints, period_store
from consumers.migrate import migrate
from leaderboard.boards import Board
from leaderboard.settings import Settings

BOARD = Board(id="global")
DAY = "daily:2026-10-05"


def test_a_stuck_batch_makes_the_freeze_give_up_within_its_lock_timeout(
    config: Settings, pg: psycopg.Connection
) -> None:
    migrate(pg)
    with psycopg.connect(config.database_url) as batch:  # a batch in flight: SHARE on closed_periods
        batch.execute("LOCK TABLE closed_periods IN SHARE MODE")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.LockNotAvailable):
            period_store.freeze(pg, BOARD.id, DAY)
        assert time.monotonic() - started < 3
        batch.rollback()
    assert period_store.closed(pg, BOARD.id) == set()
    assert period_store.freeze(pg, BOARD.id, DAY)  # the next run freezes it
    assert not period_store.freeze(pg, BOARD.id, DAY)  # once


def test_a_frozen_period_gets_its_standings_on_the_next_run(pg: psycopg.Connection) -> None:
    migrate(pg)
    pg.execute("SELECT ensure_event_partition('2026-10-05T00:00:00Z')")  # monthly partitions, made on demand
    pg.execute(
        "INSERT INTO events (event_id, match_id, player_id, game, points, occurred_at, kafka_partition,"
        " kafka_offset) VALUES (gen_random_uuid(), 'm', 'ann', 'chess', 3, '2026-10-05T10:00:00Z', 0, 0),"
        " (gen_random_uuid(), 'm', 'bob', 'chess', 3, '2026-10-05T09:00:00Z', 0, 1),"
        " (gen_random_uuid(), 'm', 'cy', 'chess', 5, '2026-10-05T11:00:00Z', 1, 0)"
    )
    assert period_store.freeze(pg, BOARD.id, DAY)  # ... and the closer died here
    assert period_store.pending(pg, BOARD.id) == [DAY]
    checkpoints.advance(pg, BOARD)
    assert period_store.store_standings(pg, BOARD, DAY) == 3
    assert period_store.pending(pg, BOARD.id) == []
    rows = pg.execute(
        "SELECT rank, position, player_id, score, reached_at FROM period_standings WHERE period = %s"
        " ORDER BY position",
        (DAY,),
    ).fetchall()
    # bob reached 3 points an hour before ann: listed first within the tie, same rank.
    assert [(r, pos, p, s) for r, pos, p, s, _ in rows] == [
        (1, 1, "cy", 5),
        (2, 2, "bob", 3),
        (2, 3, "ann", 3),
    ]
    assert rows[1][4] == datetime(2026, 10, 5, 9, 0, tzinfo=UTC)
    assert period_store.store_standings(pg, BOARD, DAY) is None  # done once
