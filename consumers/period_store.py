"""PostgreSQL side of a period close, in two steps that never hold a lock batches wait on for long.

1. :func:`freeze`: insert the ``closed_periods`` row in a transaction of its own. Its ROW EXCLUSIVE lock waits
   for in-flight batches (they hold SHARE on the table while they decide what is closed) and is released at
   once; every later batch sees the row and dead-letters events for the period (``period_closed``). A
   ``lock_timeout`` bounds how long batches can queue behind it.
2. :func:`store_standings`: after the checkpoint has folded everything stored up to the freeze, compute the
   final standings from the checkpoint in ONE set-based statement (cost in the period's players), ordered
   exactly as Redis orders the board, into ``period_standings``. Only then a short update marks the row
   complete (``standings_at``). Nothing here holds a table lock batches need while the standings are built.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg

from leaderboard import aggregate, scoring
from leaderboard.boards import Board

_LOCK_CLASS = (
    0x1EAD_C105  # advisory lock class per (board, period); the second key is hashtext('board/period')
)
FREEZE_LOCK_TIMEOUT = "1s"
"""The freeze waits this long at most for in-flight batches; batches queue behind it at most this long."""

# Players held off the board by moderation at the close are left out (period_held; ADR 0013 addendum).
_HELD = """
INSERT INTO period_held (board, period, player_id)
SELECT DISTINCT %(board)s, %(period)s, player_id FROM moderation_exclusions
WHERE board = %(board)s OR board = '*'
ON CONFLICT DO NOTHING
"""
# Redis order: packed desc = rank key desc (value desc on desc boards, asc on asc ones), then tie-break desc
# (earlier first), then member desc bytewise. Values saturate as leaderboard.aggregate.Rule.key does.
_STANDINGS = f"""
INSERT INTO period_standings (board, period, rank, position, player_id, score, reached_at)
SELECT %(board)s, %(period)s,
       rank() OVER (ORDER BY score {{direction}}),
       row_number() OVER (ORDER BY score {{direction}}, units, player_id COLLATE "C" DESC),
       player_id, score, to_timestamp(%(origin)s + units * %(unit)s)
FROM (
    SELECT player_id, least(points, {aggregate.MAX_VALUE}) AS score,
           greatest(0, least({scoring.TIME_SPAN - 1}, (at_s - %(origin)s) / %(unit)s)) AS units
    FROM standings_checkpoint c WHERE board = %(board)s AND period = %(period)s
      AND NOT EXISTS (SELECT 1 FROM period_held h
                      WHERE h.board = c.board AND h.period = c.period AND h.player_id = c.player_id)
) s
"""


def redis_scores(conn: psycopg.Connection, board: Board, period: str) -> dict[str, int]:
    """A closed period's stored standings as Redis scores (the tie-break recovered from ``reached_at``):
    what Redis holds for a closed period still in its retention, so it serves what PostgreSQL does
    (players held at the close stay out, corrections show)."""
    origin, unit = board.origin(period)
    pack = board.rule.pack
    rows = conn.execute(
        "SELECT player_id, score, reached_at FROM period_standings WHERE board = %s AND period = %s",
        (board.id, period),
    ).fetchall()
    return {str(p): pack(int(s), scoring.tiebreak(scoring.time_units(at, origin, unit))) for p, s, at in rows}


def standings_sql(board: Board) -> str:
    """The statement that ranks a period's standings from the checkpoint into ``period_standings``
    (params board, period, origin, unit), in the board's order: the close and its corrections compute
    them the same way."""
    return _STANDINGS.format(direction="ASC" if board.order == "asc" else "DESC")


@dataclass(frozen=True, slots=True)
class ClosedRow:
    board: str
    period: str
    closed_at: datetime
    players: int
    standings_at: datetime | None
    announced_at: datetime | None


def _lock_key(board: str, period: str) -> tuple[int, str]:
    return _LOCK_CLASS, f"{board}/{period}"


def closed(conn: psycopg.Connection, board: str) -> set[str]:
    """Every period of the board that is frozen or closed (late events for it are dead-lettered)."""
    return {str(r[0]) for r in conn.execute("SELECT period FROM closed_periods WHERE board = %s", (board,))}


def complete(conn: psycopg.Connection, board: str) -> set[str]:
    """Closed periods whose standings are stored."""
    rows = conn.execute(
        "SELECT period FROM closed_periods WHERE board = %s AND standings_at IS NOT NULL", (board,)
    )
    return {str(r[0]) for r in rows}


def freeze(conn: psycopg.Connection, board: str, period: str) -> bool:
    """Step 1: mark the period closed so later events are refused; False if it already was.

    Raises ``psycopg.errors.LockNotAvailable`` when in-flight batches did not finish within
    FREEZE_LOCK_TIMEOUT (the caller retries on its next run).
    """
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{FREEZE_LOCK_TIMEOUT}'")
        row = conn.execute(
            "INSERT INTO closed_periods (board, period, players) VALUES (%s, %s, 0)"
            " ON CONFLICT (board, period) DO NOTHING RETURNING 1",
            (board, period),
        ).fetchone()
    return row is not None


def pending(conn: psycopg.Connection, board: str) -> list[str]:
    """Frozen periods whose standings are not stored yet (a close under way, or one that died)."""
    rows = conn.execute(
        "SELECT period FROM closed_periods WHERE board = %s AND standings_at IS NULL"
        " ORDER BY closed_at, period",
        (board,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def store_standings(conn: psycopg.Connection, board: Board, period: str) -> int | None:
    """Step 2: final standings from the checkpoint; the number of players, None if done or being done.

    The caller has folded the checkpoint past the freeze, so it holds every event the period will ever
    count. Idempotent: a crash between the two transactions leaves standings that the next run keeps.
    """
    origin, unit = board.origin(period)
    with conn.transaction():
        if not claim(conn, board.id, period, "standings_at"):
            return None
        have = conn.execute(
            "SELECT count(*) FROM period_standings WHERE board = %s AND period = %s", (board.id, period)
        ).fetchone()
        players = 0 if have is None else int(have[0])
        if players == 0:
            params = {"board": board.id, "period": period, "origin": int(origin.timestamp()), "unit": unit}
            conn.execute(_HELD, params)
            players = conn.execute(standings_sql(board), params).rowcount
        mod = conn.execute(
            "SELECT moderation_seq FROM checkpoint_boards WHERE board = %s", (board.id,)
        ).fetchone()
    # A separate, short transaction: this UPDATE's table lock is the only one batches would wait for.
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{FREEZE_LOCK_TIMEOUT}'")
        conn.execute(
            "UPDATE closed_periods SET players = %s, standings_at = now(), moderation_seq = %s"
            " WHERE board = %s AND period = %s AND standings_at IS NULL",
            (players, 0 if mod is None else int(mod[0]), board.id, period),
        )
    return players


def unannounced(conn: psycopg.Connection, boards: Iterable[Board]) -> list[tuple[Board, str]]:
    """Closed periods with stored standings whose period-closed event is not recorded as published."""
    by_id = {b.id: b for b in boards}
    rows = conn.execute(
        "SELECT board, period FROM closed_periods WHERE announced_at IS NULL AND standings_at IS NOT NULL"
        " AND board = ANY(%s) ORDER BY closed_at",
        (list(by_id),),
    ).fetchall()
    return [(by_id[str(b)], str(p)) for b, p in rows]


def listing(conn: psycopg.Connection, boards: Iterable[Board]) -> list[ClosedRow]:
    rows = conn.execute(
        "SELECT board, period, closed_at, players, standings_at, announced_at FROM closed_periods"
        " WHERE board = ANY(%s) ORDER BY board, closed_at, period",
        ([b.id for b in boards],),
    ).fetchall()
    return [ClosedRow(str(b), str(p), c, int(n), s, a) for b, p, c, n, s, a in rows]


def claim(
    conn: psycopg.Connection, board: str, period: str, step: Literal["standings_at", "announced_at"]
) -> bool:
    """Inside the caller's transaction: the (board, period) lock (``try_lock``), and whether the frozen
    period still waits for ``step`` (its closed_periods column is NULL). False: not frozen, done, or being
    done elsewhere."""
    if not try_lock(conn, board, period):
        return False
    row = conn.execute(
        f"SELECT {step} FROM closed_periods WHERE board = %s AND period = %s", (board, period)
    ).fetchone()
    return row is not None and row[0] is None


def try_lock(conn: psycopg.Connection, board: str, period: str) -> bool:
    """Take, inside the caller's transaction, the advisory lock that serialises work on one (board, period)
    (standings, announcement, corrections); False when another process holds it."""
    got = conn.execute(
        "SELECT pg_try_advisory_xact_lock(%s::integer, hashtext(%s))", _lock_key(board, period)
    ).fetchone()
    return bool(got and got[0])
