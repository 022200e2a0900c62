"""PostgreSQL side of a batch: append valid events once, decide which copy is canonical, in ONE transaction.

A record is canonical iff ``event_ids`` names its own (partition, offset) for its event_id: the first copy of
an event to commit wins, whatever its occurred_at, and every replay asks the same question and gets the same
answer. ``event_ids`` is the de-duplication key (G1): the log is partitioned by month of occurred_at
(migration 0005), so no key of its own could be the event_id alone; ``event_ids`` holds one row per stored
event and loses a month's rows when the month is archived (migration 0014). ``events`` has no unique key
(migration 0017): a row is inserted only for the claim its batch just made. Months below
``event_log_floor`` have been archived, so a record for them can be neither stored nor checked against its
copies: ``too_old``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from consumers import isolate
from consumers.plan import BUCKET_S, Canonical, periods_of, targets
from leaderboard.boards import Board

log = logging.getLogger(__name__)

_COLUMNS = (
    "event_id, match_id, player_id, game, mode, region, points, score, occurred_at, display_name,"
    " kafka_partition, kafka_offset"
)
# Binary COPY into a per-session staging table, then one INSERT ... SELECT: ~3x faster than a multi-row
# INSERT of parameters, and binary halves the client-side cost per row against text COPY.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS events_in (
    event_id text, match_id text, player_id text, game text, mode text, region text, points integer,
    score integer, occurred_at timestamptz, display_name text, kafka_partition integer, kafka_offset bigint
) ON COMMIT DELETE ROWS
"""
_STAGING_TYPES = [
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "int4",
    "int4",
    "timestamptz",
    "text",
    "int4",
    "int8",
]
_COPY = f"COPY events_in ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
# The event_id claims first, then the events of the claims made just now. In id order, so two batches
# claiming the same ids lock them in the same order (no deadlock), then Kafka order, so of two copies in one
# batch the earlier wins.
_INSERT = f"""
WITH claimed AS (
    INSERT INTO event_ids (event_id, kafka_partition, kafka_offset)
    SELECT event_id::uuid, kafka_partition, kafka_offset FROM events_in
    ORDER BY event_id::uuid, kafka_partition, kafka_offset
    ON CONFLICT (event_id) DO NOTHING
    RETURNING kafka_partition, kafka_offset
)
INSERT INTO events ({_COLUMNS})
SELECT event_id::uuid, match_id, player_id, game, mode, region, points, score, occurred_at, display_name,
       kafka_partition, kafka_offset
FROM events_in JOIN claimed USING (kafka_partition, kafka_offset)
RETURNING kafka_partition, kafka_offset
"""
# Who claimed each event_id: one primary-key probe per id, whatever the partitions.
_CANONICAL = """
SELECT event_id::text, kafka_partition, kafka_offset FROM event_ids WHERE event_id = ANY(%s::uuid[])
"""
# ROW SHARE waits for an archive moving the floor (EXCLUSIVE), so the floor read holds for the whole batch.
# One round trip: the lock's (empty) result, then the floor's.
_FLOOR = "LOCK TABLE event_log_floor IN ROW SHARE MODE; SELECT floor FROM event_log_floor"
_CLOSED = """
SELECT board, period FROM closed_periods
WHERE (board, period) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
"""
# Display names: the one rule (consumers/names.py), decided here for Redis too. DISTINCT ON because one
# statement may not update a row twice; the guard compares with the stored row's own version. ON CONFLICT DO
# UPDATE locks the row and evaluates SET on its latest committed version, so name_changed says exactly whether
# this batch changed the name, also when batches race on a player; only those names go to Redis.
_PLAYERS = """
INSERT INTO players (player_id, display_name, updated_at, name_partition, name_offset, name_changed)
SELECT DISTINCT ON (player_id) player_id, display_name, occurred_at, kafka_partition, kafka_offset, true
FROM events_in WHERE display_name IS NOT NULL
ORDER BY player_id, occurred_at DESC, kafka_partition DESC, kafka_offset DESC
ON CONFLICT (player_id) DO UPDATE SET
    name_changed = players.display_name IS DISTINCT FROM EXCLUDED.display_name,
    display_name = EXCLUDED.display_name, updated_at = EXCLUDED.updated_at,
    name_partition = EXCLUDED.name_partition, name_offset = EXCLUDED.name_offset
WHERE (players.updated_at, players.name_partition, players.name_offset)
    < (EXCLUDED.updated_at, EXCLUDED.name_partition, EXCLUDED.name_offset)
RETURNING player_id, display_name, name_changed
"""


@dataclass
class Outcome:
    canonical: list[Canonical] = field(default_factory=list)
    duplicates: int = 0
    period_closed: list[tuple[int, int, str]] = field(default_factory=list)
    """(partition, offset, "board/period") of events refused because a period they feed is closed."""
    too_old: list[tuple[int, int, str]] = field(default_factory=list)
    """(partition, offset, detail) of events older than the log's floor: their month is archived, so neither
    the event nor a copy of it can be stored or recognised (dead-letter reason ``too_old``)."""
    names: dict[str, str] = field(default_factory=dict)
    """player_id -> display name, for the players whose name in PostgreSQL this write changed: exactly what
    the Redis names hash must be told (consumers/names.py)."""


def write_batch(conn: psycopg.Connection, records: Sequence[Canonical], boards: Sequence[Board]) -> Outcome:
    """Insert, then classify every record as canonical, duplicate or period_closed. Commits once."""
    out = Outcome()
    if not records:
        return out
    pairs: set[tuple[str, str]] = set()  # period keys only change per 15-minute bucket: look per bucket
    for bucket in {int(rec.event.occurred_at.timestamp()) // BUCKET_S for rec in records}:
        for board in boards:
            pairs.update((board.id, key) for key, _, _ in periods_of(board, bucket))
    try:
        _ensure_partitions(conn, records)
        inserted, looked, hits, floor, out.names = _write(conn, records, boards, pairs)
    except BaseException:
        _staged.discard(conn)  # a rolled-back transaction also dropped the staging table it created
        raise
    for i, rec in enumerate(records):
        event = rec.event
        if event.occurred_at < floor:
            detail = f"occurred_at {event.occurred_at.isoformat()} is before the event log's floor"
            out.too_old.append((rec.partition, rec.offset, f"{detail} {floor.isoformat()} (archived)"))
            continue
        if (rec.partition, rec.offset) in inserted:
            out.canonical.append(rec)
            continue
        coords = looked.get(event.event_id)
        if coords is None:
            out.period_closed.append((rec.partition, rec.offset, hits.get(i, "?")))
        elif coords == (rec.partition, rec.offset):
            out.canonical.append(rec)
        else:
            out.duplicates += 1
    return out


def _closed_hits(
    records: Sequence[Canonical], boards: Sequence[Board], closed: set[tuple[str, str]]
) -> dict[int, str]:
    """Record index -> the first closed "board/period" it feeds."""
    hits: dict[int, str] = {}
    for i, rec in enumerate(records):
        for board in boards:
            key = next((k for k, _, _ in targets(board, rec.event) if (board.id, k) in closed), None)
            if key is not None:
                hits[i] = f"{board.id}/{key}"
                break
    return hits


def _write(
    conn: psycopg.Connection,
    records: Sequence[Canonical],
    boards: Sequence[Board],
    pairs: set[tuple[str, str]],
) -> tuple[set[tuple[int, int]], dict[str, tuple[int, int]], dict[int, str], datetime, dict[str, str]]:
    """The one transaction: (coordinates inserted just now, event_id -> coordinates of the copy that claimed
    it, for the other records; record index -> closed period it feeds; the log's floor; names changed)."""
    with conn.transaction():
        cur = conn.execute(_FLOOR)
        cur.nextset()
        row = cur.fetchone()
        assert row is not None  # migration 0005 inserts the only row
        floor: datetime = row[0]
        # SHARE: many batches at once, but none while close-period inserts its row (ROW EXCLUSIVE).
        conn.execute("LOCK TABLE closed_periods IN SHARE MODE")
        hits: dict[int, str] = {}
        if pairs:
            ordered = sorted(pairs)
            rows = conn.execute(_CLOSED, ([b for b, _ in ordered], [p for _, p in ordered])).fetchall()
            if rows:
                hits = _closed_hits(records, boards, {(str(b), str(p)) for b, p in rows})
        fresh = [r for i, r in enumerate(records) if i not in hits and r.event.occurred_at >= floor]
        inserted: set[tuple[int, int]] = set()
        names: dict[str, str] = {}
        if fresh:
            _stage(conn, fresh)
            # A batch holds each Kafka position once, so the coordinates name the records inserted.
            inserted = {(part, off) for part, off in conn.execute(_INSERT).fetchall()}
            if any(rec.event.display_name is not None for rec in fresh):
                rows = conn.execute(_PLAYERS).fetchall()
                names = {str(player): str(name) for player, name, changed in rows if changed}
        # Copies not inserted just now: duplicates of stored events, or events for closed periods.
        rest = {
            r.event.event_id
            for r in records
            if (r.partition, r.offset) not in inserted and r.event.occurred_at >= floor
        }
        looked: dict[str, tuple[int, int]] = {}
        if rest:
            rows = conn.execute(_CANONICAL, (list(rest),)).fetchall()
            looked = {str(eid): (int(part), int(off)) for eid, part, off in rows}
    return inserted, looked, hits, floor, names


_months: weakref.WeakKeyDictionary[psycopg.Connection, set[tuple[int, int]]] = weakref.WeakKeyDictionary()


def _ensure_partitions(conn: psycopg.Connection, records: Sequence[Canonical]) -> None:
    """Create the month partitions a batch needs that this connection has not seen, each in its own short
    transaction BEFORE the batch's: DDL inside the batch would take a lock other batches hold (deadlock)."""
    known = _months.get(conn)
    if known is None:
        known = _months[conn] = set()
    wanted = {(r.event.occurred_at.year, r.event.occurred_at.month) for r in records} - known
    for year, month in sorted(wanted):
        for attempt in (1, 2):
            try:
                with conn.transaction():
                    conn.execute("SET LOCAL lock_timeout = '10s'")
                    conn.execute(_ENSURE, (datetime(year, month, 1, tzinfo=UTC),))
                break
            except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                if attempt == 2:  # another consumer created it at the same instant: it exists now
                    raise
        known.add((year, month))


_ENSURE = "SELECT ensure_event_partition(%s)"


_staged: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()


def _stage(conn: psycopg.Connection, records: Sequence[Canonical]) -> None:
    if conn not in _staged:
        conn.execute(_STAGING)
        _staged.add(conn)
    with conn.cursor().copy(_COPY) as copy:
        copy.set_types(_STAGING_TYPES)
        for rec in records:
            e = rec.event
            copy.write_row(
                (
                    e.event_id,
                    e.match_id,
                    e.player_id,
                    e.game,
                    e.mode,
                    e.region,
                    e.points,
                    e.score,
                    e.occurred_at,
                    e.display_name,
                    rec.partition,
                    rec.offset,
                )
            )


# SQLSTATE classes that blame the data sent, not the server: 22 data exception (bad encoding, NUL in text,
# value out of range), 23 integrity constraint violation (CHECK, NOT NULL, a trigger's constraint).
_REJECTING_CLASSES = frozenset({"22", "23"})


def rejects_record(exc: BaseException) -> bool:
    """True when PostgreSQL (or psycopg before it) refused the data itself: retrying cannot help, unlike
    an outage (connection, timeout, operational errors), which the caller retries."""
    if isinstance(exc, UnicodeError):  # text the connection's encoding cannot carry
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    if exc.sqlstate is None:  # raised by psycopg itself, e.g. NUL in a text value
        return isinstance(exc, psycopg.DataError)
    return exc.sqlstate[:2] in _REJECTING_CLASSES


def describe(exc: BaseException) -> str:
    """One line naming the error, for a dead letter's detail."""
    state = getattr(exc, "sqlstate", None)
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}{f' [{state}]' if state else ''}: {first}"


def write_isolating(
    conn: psycopg.Connection, records: Sequence[Canonical], boards: Sequence[Board]
) -> tuple[Outcome, list[tuple[Canonical, str]]]:
    """write_batch; when PostgreSQL refuses the batch for a record's data, bisect to the records it
    refuses alone (consumers.isolate) and write the rest. Returns the outcome of the rest and the refused
    records with why. Outages still raise; the happy path costs what write_batch costs."""
    try:
        return write_batch(conn, records, boards), []
    except (psycopg.Error, UnicodeError) as exc:
        if not rejects_record(exc):
            raise
        failed: BaseException = exc

    changed: dict[str, str] = {}  # names changed by the attempts: the final write finds them done

    def attempt(part: Sequence[Canonical]) -> BaseException | None:
        try:
            changed.update(write_batch(conn, part, boards).names)
        except (psycopg.Error, UnicodeError) as exc:
            if not rejects_record(exc):
                raise
            return exc
        return None

    bad = isolate.refused(records, attempt, failed)
    log.warning(
        "postgres refused records for their data; dead-lettering them as sink_rejected",
        extra={"records": len(bad), "batch": len(records), "error": describe(failed)[:300]},
    )
    coords = {(rec.partition, rec.offset) for rec, _ in bad}
    rest = [rec for rec in records if (rec.partition, rec.offset) not in coords]
    # The rest was written while bisecting; writing it again is idempotent and classifies every copy.
    out = write_batch(conn, rest, boards)
    out.names = {**changed, **out.names}
    return out, [(rec, f"postgres: {describe(err)}") for rec, err in bad]
