"""Closing periods for good: freeze, store final standings from the checkpoint, announce, mirror to Redis.

The work is split by job: :mod:`consumers.due` decides which periods are due (pure);
:mod:`consumers.period_store` freezes a period, then stores its standings from the checkpoint (two steps,
neither holding a lock batches wait on for more than ``FREEZE_LOCK_TIMEOUT``); :mod:`consumers.announce`
publishes the ``period-closed`` event; :mod:`consumers.mirror` gives the period's Redis keys their
retention; :mod:`consumers.corrections` corrects closed periods that later moderation facts change.
:func:`run_closes` runs them in order. Callers: the consumers' scheduler thread
(:mod:`consumers.scheduler`, with the group's recorded clock and a lookback) and ``leaderboard close-period``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import psycopg
from confluent_kafka import Producer

from consumers import checkpoints, corrections, due, period_store
from consumers.announce import announce
from consumers.mirror import mirror
from consumers.moderation_apply import replace_closed
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.redis_client import SyncClient
from leaderboard.settings import Settings

log = logging.getLogger(__name__)

Report = Callable[[str], None]


def due_periods(
    conn: psycopg.Connection,
    board: Board,
    now: datetime,
    *,
    only: str | None = None,
    lookback: timedelta | None = None,
) -> list[str]:
    """Periods of ``board`` due at ``now`` and not closed (``only``: just that one, if it is).

    Reads the checkpoint's period keys, so the caller advances the checkpoint first.
    """
    closed = period_store.closed(conn, board.id)
    if only is not None:
        return [] if only in closed or not due.is_due(board, only, now) else [only]
    return due.select(board, checkpoints.periods_of(conn, board.id), closed, now, lookback)


def close_one(conn: psycopg.Connection, board: Board, period: str) -> int | None:
    """Freeze one period, fold the checkpoint past the freeze, store the standings.

    The number of players, or None if it was closed (or is being closed) elsewhere.
    """
    if not period_store.freeze(conn, board.id, period):
        return None
    checkpoints.advance(conn, board)
    return period_store.store_standings(conn, board, period)


def run_closes(
    conn: psycopg.Connection,
    client: SyncClient,
    producer: Producer,
    config: Settings,
    boards: Sequence[Board],
    *,
    now: datetime,
    only: tuple[str, str] | None = None,
    lookback: timedelta | None = None,
    report: Report = log.info,
    warn: Report = log.warning,
) -> tuple[list[tuple[str, str]], int]:
    """Close every due period of ``boards`` (or just ``only``): (the (board, period) closed now, the
    announcements that failed and will be retried on the next run).

    ``conn`` is in autocommit mode. Also finishes closes that died half-way, announces periods whose
    earlier announcement did not complete and re-applies Redis expiries. Safe to run from several
    processes at once (per-period advisory locks; the freeze is an idempotent insert).
    """
    keys = Keys(config.redis_prefix)
    done: list[tuple[str, str]] = []
    for board in boards:
        if only is None or only[0] == board.id:
            done += _close_board(conn, board, now, None if only is None else only[1], lookback, report)
    failed = _announce_pending(conn, producer, config, boards, only, report, warn)
    by_id = {b.id: b for b in boards}
    for board_id, period, _ in corrections.correct_all(
        conn, [b for b in boards if only is None or only[0] == b.id], report
    ):
        board = by_id[board_id]
        replace_closed(client, keys, board, period, period_store.redis_scores(conn, board, period))
    try:
        corrections.publish(conn, producer, config, boards)
    except RuntimeError as exc:
        failed += 1
        warn(f"{exc}; the correction is stored and will be published on the next run")
    for board in boards:
        if only is None or only[0] == board.id:
            mirror(client, keys, board, period_store.complete(conn, board.id))
    return done, failed


def _close_board(  # noqa: PLR0917 - run_closes' own arguments, passed along
    conn: psycopg.Connection,
    board: Board,
    now: datetime,
    only: str | None,
    lookback: timedelta | None,
    report: Report,
) -> list[tuple[str, str]]:
    """Step 1 (freeze) for every due period, then step 2 (standings) for every frozen one."""
    checkpoints.advance(conn, board)
    frozen = False
    for period in due_periods(conn, board, now, only=only, lookback=lookback):
        frozen |= period_store.freeze(conn, board.id, period)
    todo = [p for p in period_store.pending(conn, board.id) if only is None or only == p]
    if not todo:
        return []
    if frozen:
        checkpoints.advance(conn, board)  # everything stored before the freeze, and nothing after
    done = []
    for period in todo:
        players = period_store.store_standings(conn, board, period)
        if players is None:
            report(f"{board.id} {period}: being closed elsewhere; skipped")
            continue
        done.append((board.id, period))
        report(f"{board.id} {period}: closed, {players} player(s) in the final standings")
    return done


def _announce_pending(  # noqa: PLR0917 - run_closes' own arguments, passed along
    conn: psycopg.Connection,
    producer: Producer,
    config: Settings,
    boards: Sequence[Board],
    only: tuple[str, str] | None,
    report: Report,
    warn: Report,
) -> int:
    """Announce every closed period not yet announced; the number that failed (retried next run)."""
    failed = 0
    for board, period in period_store.unannounced(conn, boards):
        if only is not None and only != (board.id, period):
            continue
        try:
            sent = announce(conn, producer, config, board, period)
        except RuntimeError as exc:
            failed += 1
            warn(f"{exc}; the close is committed and will be announced on the next run")
            continue
        if sent:
            report(f"{board.id} {period}: period-closed event published to {config.period_closed_topic}")
    return failed
