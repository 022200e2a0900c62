"""Which periods are due to close: pure functions of the board, the known periods and a clock (no I/O).

A period is due once its end plus the board's grace window has passed (``all_time`` never closes). The
scheduler also applies a lookback: it never closes, on its own, a period that ended more than
``lookback`` before its clock (the group's recorded time, ``checkpoints.clock``). A backdated win
(say, for January 2020) then cannot make the group close and announce a long-gone period; an operator
closes such periods with ``leaderboard close-period --period``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from leaderboard import periods
from leaderboard.boards import Board
from leaderboard.periods import PeriodError, PeriodKind


def end_of(board: Board, period: str) -> datetime | None:
    """The instant a period ends (None for all_time)."""
    span = board.bounds(period)
    return None if span is None else span[1]


def due_at(board: Board, period: str) -> datetime | None:
    """When a period becomes due: its end plus the board's grace (None: never)."""
    end = end_of(board, period)
    return None if end is None else end + timedelta(seconds=board.grace_seconds)


def is_due(board: Board, period: str, now: datetime) -> bool:
    at = due_at(board, period)
    return at is not None and at <= now


def expire_at(board: Board, period: str) -> datetime:
    """When a closed period's Redis keys go (the API serves it from PostgreSQL afterwards)."""
    end = end_of(board, period)
    if end is None:
        raise ValueError("all_time never closes")
    return end + timedelta(days=board.retention_days)


def select(
    board: Board,
    known: Iterable[str],
    closed: Iterable[str],
    now: datetime,
    lookback: timedelta | None = None,
) -> list[str]:
    """Periods of ``board`` among ``known`` that are due at ``now`` and not closed, oldest end first.

    With ``lookback``, periods that ended before ``now - lookback`` are left to an operator.
    """
    kinds = set(board.periods) - {PeriodKind.ALL_TIME}
    shut = set(closed)
    out: list[tuple[datetime, str]] = []
    for key in set(known) - shut:
        try:
            if board.season(key) is None and periods.kind_of(key) not in kinds:
                continue
            end = end_of(board, key)
        except PeriodError:
            continue
        if end is None or not is_due(board, key, now):
            continue
        if lookback is not None and end < now - lookback:
            continue
        out.append((end, key))
    return [key for _, key in sorted(out)]


def too_old(
    board: Board, known: Iterable[str], closed: Iterable[str], now: datetime, lookback: timedelta
) -> list[str]:
    """Due periods the scheduler leaves to an operator because they ended before ``now - lookback``."""
    every = set(select(board, known, closed, now))
    return sorted(every - set(select(board, known, closed, now, lookback)))
