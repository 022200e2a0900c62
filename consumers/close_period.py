"""``leaderboard close-period``: close due periods for good, snapshot their final standings, announce them.

A period is due once its end plus the board's grace window has passed (``all_time`` never closes). Closing
one, under a PostgreSQL advisory lock so two consumers never close the same period at once:

1. ONE PostgreSQL transaction: insert the ``closed_periods`` row first. Its ROW EXCLUSIVE lock waits for
   in-flight consumer batches (they hold SHARE), and every later batch sees the row and dead-letters events
   for the period (``period_closed``). The final standings, folded from the event log with the consumer's
   own ``plan.fold`` and ordered exactly as Redis orders the board, go into ``period_standings``. Commit.
2. Publish a ``period-closed`` event (idempotent producer, flushed) and record ``announced_at``: a crash in
   between is announced again on the next run; a recorded announcement never is.
3. Redis: mirror the period into the board's ``closed`` set and let its keys expire ``retention_days`` after
   the period's end; the API then serves it from the snapshot.

The consumer calls :func:`close_due` from its idle loop; operators run the command (also ``--dry-run``,
``--list``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import redis
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from consumers.generations import stream_events
from consumers.plan import Fold, fold
from consumers.rebuild import select_boards
from leaderboard import periods, scoring
from leaderboard.boards import Board
from leaderboard.errors import UserError
from leaderboard.keys import Keys
from leaderboard.periods import PeriodError, PeriodKind
from leaderboard.settings import Settings

HELP = "close due periods: snapshot final standings into PostgreSQL and publish period-closed events"
log = logging.getLogger(__name__)

LOOKBACK = timedelta(days=90)
"""Periods found only in PostgreSQL are looked for this far back (by period end): keeps each run cheap."""
_LOCK_CLASS = 0x1EAD_C105  # advisory lock class; the second key is hashtext('board/period')
_LOCK_TIMEOUT = "120s"  # waiting for in-flight consumer batches should take milliseconds
_FLUSH_S = 30.0

Report = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Standing:
    """One row of the final standings, in board order."""

    rank: int
    position: int
    player_id: str
    packed: int

    @property
    def score(self) -> int:
        return scoring.points_of(self.packed)


# -- which periods ----------------------------------------------------------------------------------------


def is_due(board: Board, period: str, now: datetime) -> bool:
    span = periods.bounds(period, board.timezone)
    return span is not None and span[1] + timedelta(seconds=board.grace_seconds) <= now


def _candidates(board: Board, now: datetime) -> list[str]:
    """Period keys of the board whose end lies in the lookback window and that are due at ``now``."""
    out: list[str] = []
    for kind in board.periods:
        if kind is PeriodKind.ALL_TIME:
            continue
        key = periods.key_for(kind, now - LOOKBACK - timedelta(days=31), board.timezone)
        while True:
            span = periods.bounds(key, board.timezone)
            assert span is not None
            if not is_due(board, key, now):
                break
            if span[1] >= now - LOOKBACK:
                out.append(key)
            key = periods.key_for(kind, span[1], board.timezone)
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _generations(client: redis.Redis, keys: Keys, board: str) -> list[int]:
    """The active generation first, then any other generation live consumers write (a rebuild's)."""
    active, writing = client.hmget(keys.meta(board), ["active", "writing"])
    gens: list[int] = [] if active is None else [int(active)]
    for part in _text(writing or b"").split(","):
        if part.strip() and int(part) not in gens:
            gens.append(int(part))
    return gens


def _closed(conn: psycopg.Connection, board: str) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT period FROM closed_periods WHERE board = %s", (board,))}


def due_periods(
    conn: psycopg.Connection,
    client: redis.Redis,
    keys: Keys,
    board: Board,
    now: datetime,
    *,
    only: str | None = None,
) -> list[str]:
    """Periods of ``board`` that are due and not closed yet (``only``: just that one, if it is)."""
    closed = _closed(conn, board.id)
    if only is not None:
        return [] if only in closed or not is_due(board, only, now) else [only]
    found: set[str] = set()
    gens = _generations(client, keys, board.id)
    if gens:
        found.update(_text(p) for p in client.smembers(keys.periods(board.id, gens[0])))
    for key in _candidates(board, now):
        if key in found:
            continue
        span = periods.bounds(key, board.timezone)
        assert span is not None
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM events WHERE occurred_at >= %s AND occurred_at < %s)", span
        ).fetchone()
        if row is not None and row[0]:
            found.add(key)
    kinds = set(board.periods)
    due = []
    for key in found - closed:
        try:
            if periods.kind_of(key) in kinds and is_due(board, key, now):
                due.append(key)
        except PeriodError:
            continue
    return sorted(due, key=lambda k: _end(board, k))


def _end(board: Board, period: str) -> datetime:
    span = periods.bounds(period, board.timezone)
    assert span is not None
    return span[1]


# -- standings ----------------------------------------------------------------------------------------------


def standings(conn: psycopg.Connection, board: Board, period: str) -> list[Standing]:
    """Final standings from the event log, in Redis order: packed desc, then player_id desc bytewise."""
    span = periods.bounds(period, board.timezone)
    if span is None:
        raise ValueError("all_time never closes")
    only_kind = replace(board, periods=(periods.kind_of(period),))
    folded: Fold = {}
    for chunk in stream_events(conn, "WHERE occurred_at >= %s AND occurred_at < %s", span):
        fold(only_kind, chunk, into=folded, split_partitions=False)
    slot = folded.get((period, -1))
    players = {} if slot is None else slot.players
    rows = sorted(
        ((scoring.pack(v[0], v[1]), p.encode(), p) for p, v in players.items()),
        reverse=True,
    )
    out: list[Standing] = []
    rank = 0
    last_points: int | None = None
    for position, (packed, _, player) in enumerate(rows, start=1):
        points = scoring.points_of(packed)
        if points != last_points:
            rank, last_points = position, points
        out.append(Standing(rank, position, player, packed))
    return out


def _lock_key(board: str, period: str) -> tuple[int, str]:
    return _LOCK_CLASS, f"{board}/{period}"


def close_one(conn: psycopg.Connection, board: Board, period: str) -> int | None:
    """Close one period in ONE transaction; the number of players, or None if closed or being closed."""
    origin, unit = board.origin(period)
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
        got = conn.execute(
            "SELECT pg_try_advisory_xact_lock(%s::integer, hashtext(%s))", _lock_key(board.id, period)
        ).fetchone()
        if not got or not got[0]:
            return None
        # First: waits for in-flight batches; every later batch sees the period closed.
        inserted = conn.execute(
            "INSERT INTO closed_periods (board, period, players) VALUES (%s, %s, 0)"
            " ON CONFLICT (board, period) DO NOTHING RETURNING 1",
            (board.id, period),
        ).fetchone()
        if inserted is None:
            return None
        rows = standings(conn, board, period)
        with conn.cursor().copy(
            "COPY period_standings (board, period, rank, position, player_id, score, reached_at) FROM STDIN"
        ) as copy:
            for s in rows:
                reached = scoring.reached_at(scoring.unpack(s.packed)[1], origin, unit)
                copy.write_row((board.id, period, s.rank, s.position, s.player_id, s.score, reached))
        conn.execute(
            "UPDATE closed_periods SET players = %s WHERE board = %s AND period = %s",
            (len(rows), board.id, period),
        )
    return len(rows)


# -- announcement -------------------------------------------------------------------------------------------


def new_producer(config: Settings) -> Producer:
    """The idempotent (not transactional) producer that period-closed events go through."""
    return Producer({"enable.idempotence": True, "acks": "all", "linger.ms": 5, **config.kafka_common()})


def announcement(conn: psycopg.Connection, board: Board, period: str) -> dict[str, object] | None:
    """The period-closed event of a closed period, built from its snapshot (None if it is not closed)."""
    head = conn.execute(
        "SELECT closed_at, players FROM closed_periods WHERE board = %s AND period = %s", (board.id, period)
    ).fetchone()
    span = periods.bounds(period, board.timezone)
    if head is None or span is None:
        return None
    top = conn.execute(
        "SELECT s.rank, s.player_id, s.score, p.display_name FROM period_standings s"
        " LEFT JOIN players p ON p.player_id = s.player_id"
        " WHERE s.board = %s AND s.period = %s ORDER BY s.position LIMIT %s",
        (board.id, period, board.reward_top),
    ).fetchall()
    return {
        "board": board.id,
        "period": period,
        "start": _iso(span[0]),
        "end": _iso(span[1]),
        "closed_at": _iso(head[0]),
        "players": int(head[1]),
        "top": [{"rank": r, "player_id": p, "score": s, "display_name": n} for r, p, s, n in top],
    }


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def announce(
    conn: psycopg.Connection, producer: Producer, config: Settings, board: Board, period: str
) -> bool:
    """Publish the period-closed event unless it was already recorded as published; True if sent now."""
    with conn.transaction():
        got = conn.execute(
            "SELECT pg_try_advisory_xact_lock(%s::integer, hashtext(%s))", _lock_key(board.id, period)
        ).fetchone()
        if not got or not got[0]:
            return False
        row = conn.execute(
            "SELECT announced_at FROM closed_periods WHERE board = %s AND period = %s", (board.id, period)
        ).fetchone()
        if row is None or row[0] is not None:
            return False
        doc = announcement(conn, board, period)
        if doc is None:
            return False
        errors: list[KafkaError] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            del msg
            if err is not None:
                errors.append(err)

        try:
            producer.produce(
                config.period_closed_topic,
                orjson.dumps(doc),
                f"{board.id}/{period}".encode(),
                on_delivery=delivered,
            )
        except (KafkaException, BufferError) as exc:
            raise RuntimeError(f"period-closed event for {board.id}/{period} not sent: {exc}") from exc
        left = producer.flush(_FLUSH_S)
        if left or errors:
            raise RuntimeError(
                f"period-closed event for {board.id}/{period} not acknowledged: {errors or f'{left} queued'}"
            )
        conn.execute(
            "UPDATE closed_periods SET announced_at = now() WHERE board = %s AND period = %s",
            (board.id, period),
        )
    return True


def unannounced(conn: psycopg.Connection, boards: Iterable[Board]) -> list[tuple[Board, str]]:
    by_id = {b.id: b for b in boards}
    rows = conn.execute(
        "SELECT board, period FROM closed_periods WHERE announced_at IS NULL"
        " AND board = ANY(%s) ORDER BY closed_at",
        (list(by_id),),
    ).fetchall()
    return [(by_id[str(b)], str(p)) for b, p in rows]


# -- Redis ---------------------------------------------------------------------------------------------------


def expire_at(board: Board, period: str) -> datetime:
    span = periods.bounds(period, board.timezone)
    assert span is not None
    return span[1] + timedelta(days=board.retention_days)


def mirror(client: redis.Redis, keys: Keys, board: Board, closed: Iterable[str]) -> int:
    """Mirror closed periods into Redis: the ``closed`` set, and expiries on their keys. Idempotent.

    Also repairs what a rebuild (or Redis recovery) recreated without an expiry; an expiry in the past
    drops the keys at once, which is right: the API serves those periods from PostgreSQL.
    """
    closed = sorted(closed)
    if not closed:
        return 0
    gens = _generations(client, keys, board.id)
    present = set()
    if gens:
        present = {_text(p) for p in client.smembers(keys.periods(board.id, gens[0]))}
    pipe = client.pipeline(transaction=False)
    pipe.sadd(keys.closed(board.id), *closed)
    for period in closed:
        if period not in present:
            continue
        when = expire_at(board, period)
        for gen in gens:
            for key in (
                keys.board(board.id, gen, period),
                keys.watermark(board.id, gen, period),
                keys.stats(board.id, gen, period),
            ):
                pipe.expireat(key, when)
    pipe.execute()
    return len(closed)


# -- the schedule -------------------------------------------------------------------------------------------


def close_due(  # noqa: PLR0917 - the consumer's call signature, agreed as is
    conn: psycopg.Connection,
    client: redis.Redis,
    producer: Producer,
    config: Settings,
    boards: Sequence[Board],
    now: datetime,
    only: tuple[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Close every due period of ``boards`` (or just ``only``); returns the (board, period) closed now.

    ``conn`` is in autocommit mode. Also announces periods whose earlier announcement did not complete
    and re-applies Redis expiries. Safe to run from every consumer at once (advisory lock per period).
    """
    return _run(
        conn, client, producer, config, boards, now=now, only=only, report=log.info, warn=log.warning
    )[0]


def _run(
    conn: psycopg.Connection,
    client: redis.Redis,
    producer: Producer,
    config: Settings,
    boards: Sequence[Board],
    *,
    now: datetime,
    only: tuple[str, str] | None,
    report: Report,
    warn: Report,
) -> tuple[list[tuple[str, str]], int]:
    """(closed now, announcements that failed and will be retried on the next run)."""
    keys = Keys(config.redis_prefix)
    done: list[tuple[str, str]] = []
    failed = 0
    for board in boards:
        if only is not None and only[0] != board.id:
            continue
        for period in due_periods(conn, client, keys, board, now, only=None if only is None else only[1]):
            players = close_one(conn, board, period)
            if players is None:
                report(f"{board.id} {period}: already closed or being closed elsewhere; skipped")
                continue
            done.append((board.id, period))
            report(f"{board.id} {period}: closed, {players} player(s) in the final standings")
    for board, period in unannounced(conn, boards):
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
    for board in boards:
        if only is None or only[0] == board.id:
            mirror(client, keys, board, _closed(conn, board.id))
    return done, failed


# -- CLI ----------------------------------------------------------------------------------------------------


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
    rows = conn.execute(
        "SELECT board, period, closed_at, players, announced_at FROM closed_periods"
        " WHERE board = ANY(%s) ORDER BY board, closed_at, period",
        ([b.id for b in boards],),
    ).fetchall()
    print(f"{'board':<16} {'period':<20} {'closed_at':<22} {'players':>8}  announced")
    for board, period, closed_at, players, announced_at in rows:
        flag = "no (will be retried)" if announced_at is None else _iso(announced_at)
        print(f"{board:<16} {period:<20} {_iso(closed_at):<22} {players:>8}  {flag}")
    print(f"{len(rows)} closed period(s)", file=sys.stderr)
    return 0


def run(config: Settings, args: argparse.Namespace) -> int:
    boards = select_boards(config, args.board)
    now = _parse_now(args.now)
    only_period: str | None = args.period
    if only_period is not None:
        try:
            kind = periods.kind_of(only_period)
            only_period = periods.resolve(only_period, now, boards[0].timezone)
        except PeriodError as exc:
            raise UserError(f"--period {only_period!r}: {exc}") from None
        if kind is PeriodKind.ALL_TIME:
            raise UserError("--period all_time: all_time never closes")
        boards = tuple(b for b in boards if kind in b.periods)
        if not boards:
            raise UserError(f"--period {only_period!r}: no selected board has {kind} periods")
    client = redis.Redis.from_url(config.redis_url, socket_timeout=10, socket_connect_timeout=3)
    keys = Keys(config.redis_prefix)
    try:
        with psycopg.connect(config.database_url, autocommit=True, connect_timeout=5) as conn:
            if args.list:
                return _list(conn, boards)
            if only_period is not None:
                for board in boards:
                    if not is_due(board, only_period, now):
                        span = periods.bounds(only_period, board.timezone)
                        assert span is not None
                        at = _iso(span[1] + timedelta(seconds=board.grace_seconds))
                        raise UserError(f"{board.id} {only_period} is not due until {at} (end + grace)")
            if args.dry_run:
                return _dry_run(conn, client, keys, boards, now, only_period=only_period)
            return _close(conn, client, config, boards, now, only_period=only_period)
    except (psycopg.OperationalError, redis.ConnectionError) as exc:
        raise UserError(f"PostgreSQL or Redis failed: {exc}") from exc
    finally:
        client.close()


def _dry_run(
    conn: psycopg.Connection,
    client: redis.Redis,
    keys: Keys,
    boards: Sequence[Board],
    now: datetime,
    *,
    only_period: str | None,
) -> int:
    total = 0
    for board in boards:
        for period in due_periods(conn, client, keys, board, now, only=only_period):
            print(f"would close {board.id} {period}")
            total += 1
    pending = unannounced(conn, boards)
    for board, period in pending:
        print(f"would announce {board.id} {period} (closed, announcement not recorded)")
    print(f"dry run: {total} period(s) due as of {_iso(now)}; nothing changed", file=sys.stderr)
    return 0


def _close(
    conn: psycopg.Connection,
    client: redis.Redis,
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
            done, fails = _run(
                conn, client, producer, config, [board], now=now, only=only, report=report, warn=report
            )
            closed += done
            failed += fails
    finally:
        producer.flush(_FLUSH_S)
    for board_id, period in closed:
        print(f"{board_id} {period}")
    print(f"closed {len(closed)} period(s) as of {_iso(now)}", file=sys.stderr)
    if failed:
        print(f"{failed} announcement(s) failed: run close-period again to publish them", file=sys.stderr)
        return 1
    return 0
