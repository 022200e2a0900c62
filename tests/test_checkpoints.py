"""Differential: a checkpoint folded in SQL, in random steps, equals the live path's fold of every event.

Events go through the live PostgreSQL sink (``pg_sink.write_batch``), so duplicates (same event_id at
another offset) and late events for a closed period are decided exactly as the consumer decides them; the
expected boards are ``plan.fold`` (what the consumer sends to Redis) over the canonical records it returned.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers import checkpoints, pg_sink
from consumers.migrate import migrate
from consumers.plan import Canonical, Fold, fold, scores
from leaderboard.boards import Board
from leaderboard.periods import PeriodKind
from leaderboard.settings import Settings
from schemas.model import MatchWon

BOARDS = (
    Board(id="sum-utc"),
    Board(id="best-utc", aggregation="best"),
    Board(id="sum-ny", timezone=ZoneInfo("America/New_York"), games=frozenset({"chess", "go"})),
    Board(
        id="best-ktm",
        aggregation="best",
        timezone=ZoneInfo("Asia/Kathmandu"),
        periods=(PeriodKind.ALL_TIME, PeriodKind.WEEKLY, PeriodKind.DAILY),
        modes=frozenset({"ranked"}),
    ),
)
START = datetime(2026, 10, 25, tzinfo=UTC)  # spans a DST change in New York and a month and ISO-week end
CLOSED = ("sum-utc", "daily:2026-10-27")


@pytest.fixture
def conn(config: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(config.database_url, autocommit=True) as c:
        migrate(c)
        yield c


def _reset(conn: psycopg.Connection) -> None:
    conn.execute(
        "TRUNCATE events, standings_checkpoint, checkpoint_positions, checkpoint_boards, closed_periods"
        " CASCADE"
    )


def _records(rnd: random.Random, n: int, partitions: int) -> list[Canonical]:
    """n records over partitions in offset order; about a tenth re-send an earlier event_id (duplicates)."""
    out: list[Canonical] = []
    offsets = [0] * partitions
    for _ in range(n):
        part = rnd.randrange(partitions)
        if out and rnd.random() < 0.1:
            event = rnd.choice(out).event  # the same event again, at a later offset
        else:
            event = MatchWon(
                event_id=str(uuid.uuid4()),
                match_id="m",
                player_id=f"p{min(int(rnd.paretovariate(1.2)), 30)}",
                game=rnd.choice(["chess", "go", "poker"]),
                mode=rnd.choice([None, "ranked", "casual"]),
                points=rnd.choice([1, 1, 2, 5, 100_000]),
                occurred_at=START + timedelta(seconds=rnd.randrange(0, 8 * 86400) // rnd.choice([1, 60])),
            )
        out.append(Canonical(part, offsets[part], event))
        offsets[part] += 1
    return out


def _expected(canonical: list[Canonical]) -> dict[str, dict[tuple[str, str], int]]:
    out: dict[str, dict[tuple[str, str], int]] = {}
    for board in BOARDS:
        folded: Fold = fold(board, canonical, split_partitions=False)
        out[board.id] = {(key, p): v for (key, _), s in scores(board, folded).items() for p, v in s.items()}
    return out


def _checkpoint(conn: psycopg.Connection) -> dict[str, dict[tuple[str, str], int]]:
    out: dict[str, dict[tuple[str, str], int]] = {}
    for board in BOARDS:
        rows: dict[tuple[str, str], int] = {}
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            for chunk in checkpoints.stream_rows(conn, board.id):
                for r in chunk:
                    rows[(r.period, r.player_id)] = checkpoints.packed(board, r)
        out[board.id] = rows
    return out


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400), cuts=st.integers(0, 4), bulk=st.booleans())
def test_checkpoint_plus_tail_equals_the_live_fold(
    conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, seed: int, n: int, cuts: int, bulk: bool
) -> None:
    # Both query shapes: index range scans per partition (tails) and one pass over the table (large steps).
    monkeypatch.setattr(checkpoints, "_BULK_OFFSETS", -1 if bulk else 10**12)
    monkeypatch.setattr(checkpoints, "STEP", 45 if seed % 2 else 2_000_000)  # many small steps, or one
    _reset(conn)
    rnd = random.Random(seed)
    records = _records(rnd, n, partitions=3)
    canonical: list[Canonical] = []
    half = len(records) // 2
    # Close one day half-way: later events for it are dead-lettered and count nowhere (not even all-time).
    for i in range(0, len(records), 50):
        if i >= half and i - 50 < half:
            conn.execute("INSERT INTO closed_periods (board, period, players) VALUES (%s, %s, 0)", CLOSED)
        outcome = pg_sink.write_batch(conn, records[i : i + 50], BOARDS)
        canonical += outcome.canonical
    stored = checkpoints.stored_positions(conn)
    # Fold in random steps (random positions per partition), then to the end: each event once.
    for _ in range(cuts):
        upto = {p: rnd.randint(-1, hi) for p, hi in stored.items()}
        for board in BOARDS:
            current = checkpoints.positions(conn, board.id)
            checkpoints.advance(conn, board, upto={p: max(o, current.get(p, -1)) for p, o in upto.items()})
    for board in BOARDS:
        done = checkpoints.advance(conn, board)
        assert done.positions == stored
    assert _checkpoint(conn) == _expected(canonical)
    # Folding again changes nothing: every event was folded once.
    for board in BOARDS:
        assert checkpoints.advance(conn, board).steps == 0
    assert _checkpoint(conn) == _expected(canonical)


def test_a_changed_board_definition_refolds_from_scratch(conn: psycopg.Connection) -> None:
    _reset(conn)
    rnd = random.Random(3)
    records = _records(rnd, 300, partitions=2)
    canonical = pg_sink.write_batch(conn, records, BOARDS).canonical
    board = BOARDS[0]
    checkpoints.advance(conn, board)
    narrowed = Board(id=board.id, games=frozenset({"go"}))
    assert checkpoints.advance(conn, narrowed).refolded
    rows = {}
    with conn.transaction():
        for chunk in checkpoints.stream_rows(conn, board.id):
            rows.update({(r.period, r.player_id): checkpoints.packed(narrowed, r) for r in chunk})
    folded = fold(narrowed, canonical, split_partitions=False)
    want = {(k, p): v for (k, _), s in scores(narrowed, folded).items() for p, v in s.items()}
    assert rows == want
    assert rows  # the narrowed board still has players: the comparison is not empty
