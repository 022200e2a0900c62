"""``leaderboard close-period``: close due periods for good, store their final standings, announce them.

The work itself is :mod:`consumers.closing`; this module parses the command line and reports.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import psycopg
import redis
from redis.exceptions import RedisClusterException

from consumers import checkpoints, due, period_store
from consumers.announce import FLUSH_S, iso, new_producer
from consumers.closing import due_periods, run_closes
from consumers.rebuild import select_boards
from leaderboard import periods
from leaderboard.boards import SEASON_PREFIX, Board
from leaderboard.errors import UserError
from leaderboard.periods import PeriodError, PeriodKind
from leaderboard.redis_client import SyncClient, sync_client
from leaderboard.settings import Settings

HELP = "close due periods: snapshot final standings into PostgreSQL and publish period-closed events"
log = logging.getLogger(__name__)

Report = Callable[[str], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", help="only this board (default: every configured board)")
    parser.add_argument("--period", help="only this period key, e.g. monthly:2026-10")
    parser.add_argument("--now", help="decide what is due as of this ISO 8601 instant (default: now)")
    parser.add_argument("--dry-run", action="store_true", help="list what would close; change nothing")
    parser.add_argument("--list", action="store_true", help="list closed periods and exit")


def _parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--now {text!r}: expected an ISO 8601 instant, e.g. 2026-11-01T02:00:00Z") from None
    if value.tzinfo is None:
        raise UserError(f"--now {text!r}: give a timezone, e.g. 2026-11-01T02:00:00Z")
    return value.astimezone(UTC)


def _list(conn: psycopg.Connection, boards: Sequence[Board]) -> int:
    rows = period_store.listing(conn, boards)
    print(f"{'board':<16} {'period':<20} {'closed_at':<22} {'players':>8}  announced")
    for r in rows:
        if r.standings_at is None:
            flag = "no (standings being stored)"
        else:
            flag = "no (will be retried)" if r.announced_at is None else iso(r.announced_at)
        print(f"{r.board:<16} {r.period:<20} {iso(r.closed_at):<22} {r.players:>8}  {flag}")
    print(f"{len(rows)} closed period(s)", file=sys.stderr)
    return 0


def _selected(boards: tuple[Board, ...], spec: str, now: datetime) -> tuple[tuple[Board, ...], str]:
    """The boards that keep the period ``spec`` names, and its key; a season names the boards defining it."""
    if spec.startswith(SEASON_PREFIX):
        keys = {}
        for b in boards:
            try:
                keys[b.id] = b.resolve(spec, now)
            except PeriodError:
                continue
        if len(set(keys.values())) != 1:
            defined = ", ".join(sorted({x.key for b in boards for x in b.seasons})) or "none"
            raise UserError(
                f"--period {spec!r}: no one season of the selected boards; their seasons: {defined}"
            )
        return tuple(b for b in boards if b.id in keys), next(iter(keys.values()))
    try:
        kind = periods.kind_of(spec)
        key = periods.resolve(spec, now, boards[0].timezone)
    except PeriodError as exc:
        raise UserError(f"--period {spec!r}: {exc}") from None
    if kind is PeriodKind.ALL_TIME:
        raise UserError("--period all_time: all_time never closes")
    kept = tuple(b for b in boards if kind in b.periods)
    if not kept:
        raise UserError(f"--period {key!r}: no selected board has {kind} periods")
    return kept, key


def run(config: Settings, args: argparse.Namespace) -> int:
    boards = select_boards(config, args.board)
    now = _parse_now(args.now)
    only_period: str | None = args.period
    if only_period is not None:
        boards, only_period = _selected(boards, only_period, now)
    client = sync_client(config)
    try:
        with psycopg.connect(config.database_url, autocommit=True, connect_timeout=5) as conn:
            if args.list:
                return _list(conn, boards)
            if only_period is not None:
                for board in boards:
                    at_dt = due.due_at(board, only_period)
                    if at_dt is not None and at_dt > now:
                        at = iso(at_dt)
                        raise UserError(f"{board.id} {only_period} is not due until {at} (end + grace)")
            if args.dry_run:
                return _dryrun_closes(conn, boards, now, only_period=only_period)
            return _close(conn, client, config, boards, now, only_period=only_period)
    except (psycopg.OperationalError, redis.ConnectionError, RedisClusterException) as exc:
        raise UserError(f"PostgreSQL or Redis failed: {exc}") from exc
    finally:
        client.close()


def _dryrun_closes(
    conn: psycopg.Connection, boards: Sequence[Board], now: datetime, *, only_period: str | None
) -> int:
    total = 0
    for board in boards:
        checkpoints.advance(conn, board)  # the checkpoint says which periods have events
        for period in due_periods(conn, board, now, only=only_period):
            print(f"would close {board.id} {period}")
            total += 1
    pending = period_store.unannounced(conn, boards)
    for board, period in pending:
        print(f"would announce {board.id} {period} (closed, announcement not recorded)")
    print(f"dry run: {total} period(s) due as of {iso(now)}; nothing changed", file=sys.stderr)
    return 0


def _close(
    conn: psycopg.Connection,
    client: SyncClient,
    config: Settings,
    boards: Sequence[Board],
    now: datetime,
    *,
    only_period: str | None,
) -> int:
    producer = new_producer(config)

    def report(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    closed: list[tuple[str, str]] = []
    failed = 0
    try:
        for board in boards:
            only = None if only_period is None else (board.id, only_period)
            done, fails = run_closes(
                conn,
                client,
                producer,
                config,
                [board],
                now=now,
                only=only,
                lookback=None,
                report=report,
                warn=report,
            )
            closed += done
            failed += fails
    finally:
        producer.flush(FLUSH_S)
    for board_id, period in closed:
        print(f"{board_id} {period}")
    print(f"closed {len(closed)} period(s) as of {iso(now)}", file=sys.stderr)
    if failed:
        print(f"{failed} announcement(s) failed: run close-period again to publish them", file=sys.stderr)
        return 1
    return 0
