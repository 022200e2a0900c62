"""The event log partitioned by month (migration 0005) against the real PostgreSQL: conversion of an existing
table, partitions made on demand, copies recognised by event_id (migration 0014) whatever their occurred_at,
too_old below the floor."""

from __future__ import annotations

import psycopg
import pytest

from consumers import pg_sink
from consumers.migrate import migrate, migrations
from consumers.plan import Canonical
from leaderboard.boards import Board
from tests.factories import win

BOARDS = [Board(id="global")]


def migrate_up_to(conn: psycopg.Connection, last: int) -> None:
    """Apply the shipped migrations up to ``last`` the way migrate() records them (an older deployment)."""
    with conn.transaction():
        conn.execute(
            "CREATE TABLE schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in migrations():
            if version <= last:
                conn.execute(sql.encode())
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))


def partitions(conn: psycopg.Connection, parent: str = "events") -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass ORDER BY 1",
        (parent,),
    ).fetchall()
    return [r[0] for r in rows]


def kind_of(conn: psycopg.Connection, table: str) -> str:
    """pg_class.relkind: r a table, p a partitioned one."""
    row = conn.execute("SELECT relkind::text FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()
    assert row is not None
    return str(row[0])


def test_migration_converts_an_unpartitioned_log_keeping_every_row(pg: psycopg.Connection) -> None:
    migrate_up_to(pg, 3)
    old = [
        Canonical(0, 0, win("ann", "2025-12-31T23:59:59Z", 3)),
        Canonical(0, 1, win("bob", "2026-01-01T00:00:00Z", 2, display_name="Bob")),
        Canonical(1, 0, win("ann", "2026-03-15T12:00:00Z", 5)),
    ]
    with pg.cursor() as cur:
        for rec in old:
            e = rec.event
            cur.execute(
                "INSERT INTO events (event_id, match_id, player_id, game, points, occurred_at, display_name,"
                " kafka_partition, kafka_offset) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    e.event_id,
                    e.match_id,
                    e.player_id,
                    e.game,
                    e.points,
                    e.occurred_at,
                    e.display_name,
                    rec.partition,
                    rec.offset,
                ),
            )
    cur = pg.execute("SELECT * FROM events ORDER BY event_id")
    before = cur.fetchall()
    columns = ", ".join(d.name for d in cur.description or ())  # later migrations add columns (0013: score)
    assert [name for name in migrate(pg) if name.startswith("0005")]
    kind = pg.execute("SELECT relkind::text FROM pg_class WHERE oid = 'events'::regclass").fetchone()
    assert kind == ("p",)  # partitioned
    assert pg.execute(f"SELECT {columns} FROM events ORDER BY event_id").fetchall() == before
    names = partitions(pg)
    assert {"events_2025_12", "events_2026_01", "events_2026_02", "events_2026_03"} <= set(names)
    # Migration 0018: months that hold rows stay whole tables, empty ones are split into their days.
    assert [
        kind_of(pg, n) for n in ("events_2025_12", "events_2026_01", "events_2026_02", "events_2026_03")
    ] == [
        "r",
        "r",
        "p",
        "r",
    ]
    assert len(partitions(pg, "events_2026_02")) == 28
    indexed = pg.execute(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'events' AND indexname = 'events_position'"
    ).fetchone()
    assert indexed is not None
    assert "(kafka_partition, kafka_offset)" in indexed[0]
    occurred = pg.execute(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'events' AND indexname = 'events_occurred_at'"
    ).fetchone()
    assert occurred is not None
    assert "USING brin (occurred_at)" in occurred[0]  # migration 0016: kept on every insert for one check
    # The converted log still decides canonical copies: the stored copy of an old event stays canonical.
    again = pg_sink.write_batch(pg, [old[0], Canonical(5, 9, old[2].event)], BOARDS)
    assert [(c.partition, c.offset) for c in again.canonical] == [(0, 0)]
    assert again.duplicates == 1


@pytest.fixture
def db(pg: psycopg.Connection) -> psycopg.Connection:
    migrate(pg)
    return pg


def test_a_month_without_partition_is_created_and_copies_are_recognised_in_it(db: psycopg.Connection) -> None:
    first = win("ann", "2031-05-04T10:00:00Z", 4)
    out = pg_sink.write_batch(
        db, [Canonical(0, 0, first), Canonical(0, 1, win("bob", "2031-06-01T00:00:00Z"))], BOARDS
    )
    assert len(out.canonical) == 2
    assert {"events_2031_05", "events_2031_06"} <= set(partitions(db))
    # A copy at another offset (a retry, a replay, a redrive) carries the same event: not canonical.
    copy = pg_sink.write_batch(db, [Canonical(3, 7, first), Canonical(0, 0, first)], BOARDS)
    assert [(c.partition, c.offset) for c in copy.canonical] == [(0, 0)]
    assert copy.duplicates == 1
    assert db.execute("SELECT count(*) FROM events").fetchone() == (2,)
    assert db.execute("SELECT count(*) FROM events_2031_05").fetchone() == (1,)
    # A month made since migration 0018 is split into its days (UTC), each row in its own day's table.
    assert kind_of(db, "events_2031_05") == "p"
    days = partitions(db, "events_2031_05")
    assert (len(days), days[0], days[-1]) == (31, "events_2031_05_01", "events_2031_05_31")
    assert db.execute("SELECT count(*) FROM events_2031_05_04").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM events_2031_06_01").fetchone() == (1,)


def test_events_below_the_floor_are_too_old_with_or_without_a_stored_copy(db: psycopg.Connection) -> None:
    kept = win("ann", "2026-02-10T10:00:00Z")
    gone = win("bob", "2026-01-10T10:00:00Z")
    pg_sink.write_batch(db, [Canonical(0, 0, kept), Canonical(0, 1, gone)], BOARDS)
    db.execute("UPDATE event_log_floor SET floor = '2026-02-01T00:00:00Z'")
    late = win("cy", "2026-01-31T23:59:59Z")
    out = pg_sink.write_batch(
        db, [Canonical(0, 0, kept), Canonical(0, 1, gone), Canonical(0, 2, late)], BOARDS
    )
    assert [(c.partition, c.offset) for c in out.canonical] == [(0, 0)]
    assert [(p, o) for p, o, _ in out.too_old] == [(0, 1), (0, 2)]
    assert all("floor 2026-02-01" in detail for _, _, detail in out.too_old)
    assert out.period_closed == []
    assert out.duplicates == 0
    assert db.execute("SELECT count(*) FROM events WHERE player_id = 'cy'").fetchone() == (0,)


def test_a_reused_event_id_with_another_occurred_at_counts_once(db: psycopg.Connection) -> None:
    """G1 by event_id: a copy that rewrote occurred_at (this month or another) is a duplicate, not a win."""
    first = win("ann", "2031-05-04T10:00:00Z", 4)
    same_month = win("ann", "2031-05-09T10:00:00Z", 4, event_id=first.event_id)
    other_month = win("ann", "2031-07-04T10:00:00Z", 4, event_id=first.event_id)
    out = pg_sink.write_batch(db, [Canonical(0, 0, first), Canonical(1, 0, same_month)], BOARDS)
    assert [(c.partition, c.offset) for c in out.canonical] == [(0, 0)]
    assert out.duplicates == 1
    later = pg_sink.write_batch(db, [Canonical(2, 5, other_month), Canonical(0, 0, first)], BOARDS)
    assert [(c.partition, c.offset) for c in later.canonical] == [(0, 0)]  # the replay stays canonical
    assert later.duplicates == 1
    assert db.execute("SELECT count(*), sum(points) FROM events").fetchone() == (1, 4)
    # Replaying every copy, in any order, asks the same question and gets the same answer.
    again = pg_sink.write_batch(
        db, [Canonical(2, 5, other_month), Canonical(1, 0, same_month), Canonical(0, 0, first)], BOARDS
    )
    assert ([(c.partition, c.offset) for c in again.canonical], again.duplicates) == ([(0, 0)], 2)


def test_of_two_copies_in_one_batch_the_earlier_position_claims_the_id(db: psycopg.Connection) -> None:
    first = win("bob", "2031-05-04T10:00:00Z", 2)
    moved = win("bob", "2031-06-04T10:00:00Z", 2, event_id=first.event_id)
    out = pg_sink.write_batch(db, [Canonical(0, 9, moved), Canonical(0, 3, first)], BOARDS)
    assert [(c.partition, c.offset) for c in out.canonical] == [(0, 3)]
    assert out.duplicates == 1
    assert db.execute("SELECT occurred_at FROM events").fetchall() == [(first.occurred_at,)]
