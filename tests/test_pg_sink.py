"""The PostgreSQL side of a batch against the real server: canonical copies and the players' latest names."""

from __future__ import annotations

import psycopg
import pytest

from consumers import pg_sink
from consumers.migrate import migrate
from consumers.plan import Canonical
from leaderboard.boards import Board
from tests.factories import win

BOARDS = [Board(id="global")]


@pytest.fixture
def db(pg: psycopg.Connection) -> psycopg.Connection:
    migrate(pg)
    return pg


def names(pg: psycopg.Connection) -> dict[str, str]:
    return {str(p): str(n) for p, n in pg.execute("SELECT player_id, display_name FROM players").fetchall()}


def test_latest_display_name_by_occurred_at_across_and_within_batches(db: psycopg.Connection) -> None:
    t = "2026-11-28T10:00:0{}Z".format
    pg_sink.write_batch(
        db,
        [
            Canonical(0, 0, win("ann", t(3), display_name="Ann B")),
            Canonical(0, 1, win("ann", t(1), display_name="Ann A")),  # older, later in the batch: loses
            Canonical(0, 2, win("bob", t(1), display_name="Bob")),
            Canonical(0, 3, win("cy", t(1))),  # no name: no row
        ],
        BOARDS,
    )
    assert names(db) == {"ann": "Ann B", "bob": "Bob"}
    pg_sink.write_batch(db, [Canonical(0, 4, win("ann", t(2), display_name="Ann late"))], BOARDS)
    assert names(db)["ann"] == "Ann B"  # an out-of-order older rename does not win
    pg_sink.write_batch(
        db,
        [
            Canonical(0, 5, win("bob", t(5), display_name="Bob 1")),
            Canonical(0, 6, win("bob", t(5), display_name="Bob 2")),  # same instant: the later record wins
            Canonical(0, 7, win("ann", t(3), display_name="Ann C")),  # same instant as the stored name: wins
        ],
        BOARDS,
    )
    assert names(db) == {"ann": "Ann C", "bob": "Bob 2"}


def test_duplicates_are_not_canonical_and_replays_are(db: psycopg.Connection) -> None:
    first = win("ann", display_name="Ann")
    copy = Canonical(1, 9, first)
    out = pg_sink.write_batch(db, [Canonical(0, 0, first), copy, Canonical(0, 1, win("bob"))], BOARDS)
    assert [(c.partition, c.offset) for c in out.canonical] == [(0, 0), (0, 1)]
    assert out.duplicates == 1
    replay = pg_sink.write_batch(db, [Canonical(0, 0, first), copy], BOARDS)
    assert [(c.partition, c.offset) for c in replay.canonical] == [(0, 0)]
    assert replay.duplicates == 1
    assert db.execute("SELECT count(*) FROM events").fetchone() == (2,)
