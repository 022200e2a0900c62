"""Corrections of closed periods: moderation facts (void, unvoid, erase) that arrive after a close.

Rewards may have been paid on a closed period's standings, so they are not silently rewritten: a
correction computes the standings again exactly as the close did (the checkpoint, refolded for the
affected players, minus the players held at the close: ``period_held``), keeps the previous version in
``period_standings_history``, serves the new one (``closed_periods.version``, ``corrected_at``) and
publishes one ``period-corrected`` event per new version with who moved (old and new rank and score), so
reward services can adjust. Holds that start or end after the close change nothing (ADR 0013 addendum).

Cost: the period's rows (the standings are ranked again), once per correcting action batch; the affected
players' refold is bounded by their events (consumers.checkpoints.refold_moderated).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from confluent_kafka import Producer

from consumers import checkpoints, period_store
from consumers.announce import iso, send
from leaderboard.boards import Board
from leaderboard.moderation import store as moderation
from leaderboard.settings import Settings

log = logging.getLogger(__name__)

Report = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Move:
    player_id: str
    old: tuple[int, int] | None
    """(rank, score) before, None: was not in the standings."""
    new: tuple[int, int] | None


def moves(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[Move]:
    """Pure: every player whose rank or score changed, appeared or went, by new rank then id."""
    out = [
        Move(p, before.get(p), after.get(p))
        for p in set(before) | set(after)
        if before.get(p) != after.get(p)
    ]
    return sorted(out, key=lambda m: (m.new is None, m.new or (0, 0), m.player_id))


def _standings(conn: psycopg.Connection, board: str, period: str) -> dict[str, tuple[int, int]]:
    rows = conn.execute(
        "SELECT player_id, rank, score FROM period_standings WHERE board = %s AND period = %s",
        (board, period),
    ).fetchall()
    return {str(p): (int(r), int(s)) for p, r, s in rows}


def correct(conn: psycopg.Connection, board: Board, period: str) -> int | None:
    """Correct one closed period if moderation facts since its standings change them.

    Returns the new version, or None (nothing changed, not closed, or being worked on elsewhere).
    ``conn`` is in autocommit mode; the caller has advanced the board's checkpoint.
    """
    origin, unit = board.origin(period)
    with conn.transaction():
        if not period_store.try_lock(conn, board.id, period):
            return None
        head = conn.execute(
            "SELECT version, moderation_seq FROM closed_periods"
            " WHERE board = %s AND period = %s AND standings_at IS NOT NULL",
            (board.id, period),
        ).fetchone()
        if head is None:
            return None
        version, seen = int(head[0]), int(head[1])
        upto = checkpoints.moderation_seq(conn, board.id)
        done = conn.execute(
            "SELECT max(version) FROM period_corrections WHERE board = %s AND period = %s", (board.id, period)
        ).fetchone()
        if done is not None and done[0] is not None and int(done[0]) > version:
            new_version = int(done[0])  # stored by a run that died before its header update: finish it
        elif upto <= seen:
            return None
        else:
            affected = moderation.affected_players(conn, seen, upto)
            players = sorted(affected.players)
            has_rows, touched = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM standings_checkpoint WHERE board = %(b)s AND period = %(p)s),"
                " EXISTS (SELECT 1 FROM standings_checkpoint"
                "         WHERE board = %(b)s AND period = %(p)s AND player_id = ANY(%(x)s))"
                " OR EXISTS (SELECT 1 FROM period_standings"
                "            WHERE board = %(b)s AND period = %(p)s AND player_id = ANY(%(x)s))",
                {"b": board.id, "p": period, "x": players},
            ).fetchone() or (False, False)
            if not affected.facts or not touched or not has_rows:
                if affected.facts and touched:
                    log.warning(
                        "closed period not corrected: its checkpoint rows were dropped",
                        extra={"board": board.id, "period": period},
                    )
                new_version = version
            else:
                new_version = _rewrite(conn, board, period, version, upto, int(origin.timestamp()), unit)
    with conn.transaction():  # short: the closed_periods row lock is what batches' SHARE lock waits for
        conn.execute(f"SET LOCAL lock_timeout = '{period_store.FREEZE_LOCK_TIMEOUT}'")
        conn.execute(
            "UPDATE closed_periods SET moderation_seq = greatest(moderation_seq, %s), version = %s,"
            " corrected_at = CASE WHEN %s > version THEN now() ELSE corrected_at END,"
            " players = (SELECT count(*) FROM period_standings WHERE board = %s AND period = %s)"
            " WHERE board = %s AND period = %s",
            (upto, new_version, new_version, board.id, period, board.id, period),
        )
    return new_version if new_version > version else None


def _rewrite(  # noqa: PLR0917 - one period's correction
    conn: psycopg.Connection, board: Board, period: str, version: int, upto: int, origin: int, unit: int
) -> int:
    """Inside the caller's transaction: standings again, the old ones to history, the moves recorded.
    Returns the version now served (``version`` when nothing moved)."""
    before = _standings(conn, board.id, period)
    conn.execute(
        "INSERT INTO period_standings_history"
        " SELECT board, period, %s, rank, position, player_id, score, reached_at FROM period_standings"
        " WHERE board = %s AND period = %s",
        (version, board.id, period),
    )
    conn.execute("DELETE FROM period_standings WHERE board = %s AND period = %s", (board.id, period))
    params = {"board": board.id, "period": period, "origin": origin, "unit": unit}
    conn.execute(period_store.standings_sql(board), params)
    changed = moves(before, _standings(conn, board.id, period))
    if not changed:  # the facts did not touch this period: drop the copy, keep the version
        conn.execute(
            "DELETE FROM period_standings_history WHERE board = %s AND period = %s AND version = %s",
            (board.id, period, version),
        )
        return version
    new = version + 1
    conn.execute(
        "INSERT INTO period_corrections (board, period, version, action_seq, corrected_at)"
        " VALUES (%s, %s, %s, %s, now())",
        (board.id, period, new, upto),
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO period_correction_moves"
            " (board, period, version, player_id, old_rank, new_rank, old_score, new_score)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    board.id,
                    period,
                    new,
                    m.player_id,
                    None if m.old is None else m.old[0],
                    None if m.new is None else m.new[0],
                    None if m.old is None else m.old[1],
                    None if m.new is None else m.new[1],
                )
                for m in changed
            ],
        )
    log.info(
        "closed period corrected",
        extra={"board": board.id, "period": period, "version": new, "moves": len(changed)},
    )
    return new


def event(conn: psycopg.Connection, board: str, period: str, version: int) -> dict[str, object]:
    """The period-corrected event of one correction (built from its rows)."""
    head = conn.execute(
        "SELECT action_seq, corrected_at FROM period_corrections"
        " WHERE board = %s AND period = %s AND version = %s",
        (board, period, version),
    ).fetchone()
    assert head is not None
    rows = conn.execute(
        "SELECT player_id, old_rank, new_rank, old_score, new_score FROM period_correction_moves"
        " WHERE board = %s AND period = %s AND version = %s ORDER BY new_rank NULLS LAST, player_id",
        (board, period, version),
    ).fetchall()
    corrected_at: datetime = head[1]
    return {
        "board": board,
        "period": period,
        "version": version,
        "previous_version": version - 1,
        "corrected_at": iso(corrected_at),
        "moderation_seq": int(head[0]),
        "moves": [
            {"player_id": p, "old_rank": a, "new_rank": b, "old_score": c, "new_score": d}
            for p, a, b, c, d in rows
        ],
    }


def publish(conn: psycopg.Connection, producer: Producer, config: Settings, boards: Sequence[Board]) -> int:
    """Publish every correction not yet acknowledged (key ``board/period``), oldest first; the number sent.
    A crash between the broker's ack and ``published_at`` sends that one again (consumers key on
    board, period and version)."""
    ids = {b.id for b in boards}
    todo = conn.execute(
        "SELECT board, period, version FROM period_corrections WHERE published_at IS NULL"
        " ORDER BY corrected_at, board, period, version"
    ).fetchall()
    sent = 0
    for board, period, version in todo:
        if board not in ids:
            continue
        doc = event(conn, board, period, version)
        what = f"period-corrected event for {board}/{period}"
        send(producer, config.period_corrected_topic, f"{board}/{period}", doc, what)
        conn.execute(
            "UPDATE period_corrections SET published_at = now()"
            " WHERE board = %s AND period = %s AND version = %s",
            (board, period, version),
        )
        sent += 1
    return sent


def correct_all(
    conn: psycopg.Connection, boards: Sequence[Board], report: Report
) -> list[tuple[str, str, int]]:
    """Correct every closed period whose standings predate a moderation fact; (board, period, version)."""
    done = []
    for board in boards:
        checkpoints.advance(conn, board)
        upto = checkpoints.moderation_seq(conn, board.id)
        behind = conn.execute(
            "SELECT period FROM closed_periods WHERE board = %s AND standings_at IS NOT NULL"
            " AND moderation_seq < %s ORDER BY period",
            (board.id, upto),
        ).fetchall()
        for (period,) in behind:
            version = correct(conn, board, str(period))
            if version is not None:
                done.append((board.id, str(period), version))
                report(f"{board.id} {period}: standings corrected (version {version})")
    return done
