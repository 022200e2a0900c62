"""PostgreSQL side of a batch: append valid events once, decide which copy is canonical, in ONE transaction.

A record is canonical iff the stored row carries its own (partition, offset): the first copy of an event_id
to commit wins, and every replay asks the same question and gets the same answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg

from consumers.plan import Canonical, targets
from leaderboard.boards import Board
from schemas.model import MatchWon

_INSERT = """
INSERT INTO events (event_id, match_id, player_id, game, mode, region, points, occurred_at, display_name,
                    kafka_partition, kafka_offset)
SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int[],
                     %s::timestamptz[], %s::text[], %s::int[], %s::bigint[])
ON CONFLICT (event_id) DO NOTHING
"""
_CANONICAL = "SELECT event_id, kafka_partition, kafka_offset FROM events WHERE event_id = ANY(%s::uuid[])"
_CLOSED = """
SELECT board, period FROM closed_periods
WHERE (board, period) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
"""
_PLAYERS = """
INSERT INTO players (player_id, display_name, updated_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[])
ON CONFLICT (player_id) DO UPDATE SET display_name = EXCLUDED.display_name, updated_at = EXCLUDED.updated_at
WHERE players.updated_at <= EXCLUDED.updated_at
"""


@dataclass
class Outcome:
    canonical: list[Canonical] = field(default_factory=list)
    duplicates: int = 0
    period_closed: list[tuple[int, int, str]] = field(default_factory=list)
    """(partition, offset, "board/period") of events refused because a period they feed is closed."""


def write_batch(conn: psycopg.Connection, records: Sequence[Canonical], boards: Sequence[Board]) -> Outcome:
    """Insert, then classify every record as canonical, duplicate or period_closed. Commits once."""
    out = Outcome()
    if not records:
        return out
    touched: dict[int, list[str]] = {}
    pairs: set[tuple[str, str]] = set()
    for i, rec in enumerate(records):
        for board in boards:
            for key, _, _ in targets(board, rec.event):
                pairs.add((board.id, key))
                touched.setdefault(i, []).append(f"{board.id}/{key}")
    with conn.transaction():
        # SHARE: many batches at once, but none while close-period inserts its row (it takes ROW EXCLUSIVE).
        conn.execute("LOCK TABLE closed_periods IN SHARE MODE")
        closed: set[str] = set()
        if pairs:
            boards_col, periods_col = zip(*sorted(pairs), strict=True)
            rows = conn.execute(_CLOSED, (list(boards_col), list(periods_col))).fetchall()
            closed = {f"{b}/{p}" for b, p in rows}
        hits = {
            i: next(t for t in touched[i] if t in closed) for i in touched if closed.intersection(touched[i])
        }
        fresh = [rec.event for i, rec in enumerate(records) if i not in hits]
        fresh_coords = [(rec.partition, rec.offset) for i, rec in enumerate(records) if i not in hits]
        if fresh:
            conn.execute(_INSERT, _columns(fresh, fresh_coords))
            _upsert_players(conn, fresh)
        ids = [uuid.UUID(rec.event.event_id) for rec in records]
        stored = {str(eid): (part, off) for eid, part, off in conn.execute(_CANONICAL, (ids,)).fetchall()}
    for i, rec in enumerate(records):
        coords = stored.get(rec.event.event_id)
        if coords is None:
            out.period_closed.append((rec.partition, rec.offset, hits.get(i, "?")))
        elif coords == (rec.partition, rec.offset):
            out.canonical.append(rec)
        else:
            out.duplicates += 1
    return out


def _columns(events: Sequence[MatchWon], coords: Sequence[tuple[int, int]]) -> tuple[list[object], ...]:
    return (
        [uuid.UUID(e.event_id) for e in events],
        [e.match_id for e in events],
        [e.player_id for e in events],
        [e.game for e in events],
        [e.mode for e in events],
        [e.region for e in events],
        [e.points for e in events],
        [e.occurred_at for e in events],
        [e.display_name for e in events],
        [c[0] for c in coords],
        [c[1] for c in coords],
    )


def _upsert_players(conn: psycopg.Connection, events: Sequence[MatchWon]) -> None:
    latest: dict[str, MatchWon] = {}
    for e in events:
        if e.display_name is not None:
            cur = latest.get(e.player_id)
            if cur is None or e.occurred_at >= cur.occurred_at:
                latest[e.player_id] = e
    if latest:
        names = list(latest.values())
        conn.execute(
            _PLAYERS,
            ([e.player_id for e in names], [e.display_name for e in names], [e.occurred_at for e in names]),
        )
