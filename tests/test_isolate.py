"""Finding the records a sink refuses: the bisection as pure logic, then against the real PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Sequence

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers import isolate, pg_sink
from consumers.migrate import migrate
from consumers.plan import Canonical
from leaderboard.boards import Board
from tests.factories import win

BOARDS = [Board(id="global")]


class Sink:
    """A fake sink for the pure logic: refuses any part holding a bad item, records what it wrote."""

    def __init__(self, bad: set[int], pairs: frozenset[int] = frozenset()) -> None:
        self.bad, self.pairs = bad, pairs
        self.written: list[int] = []
        self.attempts = 0

    def attempt(self, part: Sequence[int]) -> str | None:
        self.attempts += 1
        hit = sorted(set(part) & self.bad)
        if hit:
            return f"refused {hit[0]}"
        if self.pairs and self.pairs <= set(part):
            return "refused the pair"
        self.written.extend(part)
        return None


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 600).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), min_size=1)))
)
def test_finds_exactly_the_refused_items_and_writes_the_rest_in_order(case: tuple[int, set[int]]) -> None:
    n, bad = case
    sink = Sink(bad)
    items = list(range(n))
    failed = sink.attempt(items)  # the caller's write of the whole batch, which failed
    assert failed is not None
    found = isolate.refused(items, sink.attempt, failed)
    assert [item for item, _ in found] == sorted(bad)
    assert all(error == f"refused {item}" for item, error in found)
    assert sink.written == [i for i in range(n) if i not in bad], "every other item written once, in order"
    assert sink.attempts <= 1 + 2 * len(bad) * max(1, math.ceil(math.log2(n))), "bisection, not one by one"


def test_a_refusal_by_combination_only_refuses_nothing() -> None:
    """Each of 3 and 4 passes alone, the pair does not: no single record to blame; both halves are written."""
    sink = Sink(set(), pairs=frozenset({3, 4}))
    assert isolate.refused(list(range(8)), sink.attempt, "refused the pair") == []
    assert sorted(sink.written) == list(range(8))


def test_outages_end_the_search() -> None:
    def attempt(part: Sequence[int]) -> str | None:
        raise ConnectionError("sink down")

    with pytest.raises(ConnectionError):
        isolate.refused([1, 2, 3], attempt, "refused")


@pytest.fixture
def db(pg: psycopg.Connection) -> psycopg.Connection:
    migrate(pg)
    return pg


def error_of(conn: psycopg.Connection, sql: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql)
    return info.value


def test_data_errors_are_rejections_and_outages_are_not(db: psycopg.Connection) -> None:
    assert pg_sink.rejects_record(error_of(db, "SELECT 1 / 0"))  # 22012
    assert pg_sink.rejects_record(error_of(db, "SELECT 'x'::int"))  # 22P02
    assert pg_sink.rejects_record(error_of(db, "SELECT convert_from('\\xe9'::bytea, 'UTF8')"))  # 22021
    assert pg_sink.rejects_record(error_of(db, "INSERT INTO players (player_id) VALUES (NULL)"))  # 23502
    assert not pg_sink.rejects_record(error_of(db, "SELEC 1"))  # 42601: our bug, not the record's
    db.execute("SET statement_timeout = 50")
    assert not pg_sink.rejects_record(error_of(db, "SELECT pg_sleep(1)"))  # 57014
    db.execute("RESET statement_timeout")
    db.close()
    assert not pg_sink.rejects_record(error_of(db, "SELECT 1"))  # connection closed


def test_postgres_refusals_are_isolated_and_the_rest_written(db: psycopg.Connection) -> None:
    """A constraint of this test's schema refuses some records; NUL in text is refused by PostgreSQL itself
    (such an event cannot pass validation any more, so it is built here without it)."""
    db.execute("ALTER TABLE events ADD CONSTRAINT no_cheaters CHECK (player_id NOT LIKE 'cheater%')")
    records = [Canonical(0, i, win(f"p{i % 7}")) for i in range(200)]
    bad = {17: win("cheater-1"), 120: win("p1", display_name="nul\x00name"), 121: win("cheater-2")}
    for offset, event in bad.items():
        records[offset] = Canonical(0, offset, event)
    duplicate = Canonical(1, 0, records[5].event)
    outcome, refused = pg_sink.write_isolating(db, [*records, duplicate], BOARDS)
    assert [(rec.offset, why.split(":")[0]) for rec, why in refused] == [(o, "postgres") for o in sorted(bad)]
    assert "no_cheaters" in refused[0][1]
    assert "[23514]" in refused[0][1]
    assert "DataError" in refused[1][1] or "[22" in refused[1][1]
    assert sorted(c.offset for c in outcome.canonical) == [i for i in range(200) if i not in bad]
    assert outcome.duplicates == 1
    assert db.execute("SELECT count(*) FROM events").fetchone() == (197,)
    # The happy path is one write: nothing refused, nothing bisected.
    again, none = pg_sink.write_isolating(db, [r for r in records if r.offset not in bad], BOARDS)
    assert none == []
    assert len(again.canonical) == 197
