"""``leaderboard archive``: months of the event log past retention go to compressed files, and can come back.

Per month below the cut, oldest first: (1) one short transaction moves ``event_log_floor`` past the month
and detaches its partition (batches hold ROW SHARE on the floor, so none writes into it afterwards; later
events for it are dead-lettered ``too_old``); (2) the detached table is copied to
``DIR/events_YYYY_MM.csv.gz`` with a ``.json`` manifest (rows, sha256); (3) the file is read back and its
rows counted against the table; (4) the table is dropped, with its rows in ``event_ids`` (the de-duplication
key keeps the log's retention).
A run that died between steps finds the detached table and carries on. Closed periods that ended before the
new floor leave PostgreSQL too: their close records and standings go to ``DIR/periods_before_YYYY_MM.csv.gz``
(no event for them can be accepted any more: it would be too_old). ``players`` is kept whole: one row per
player, bounded by players, and all-time boards still show those names.

Boards are not touched: Redis holds every board, and all-time survives the drop in Redis and in the standings
checkpoints, so a month is archived only once every board's checkpoint covers all of its events
(:func:`uncovered`, checked before anything moves and again under the floor lock).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import LiteralString

import psycopg
from psycopg import sql

from consumers import checkpoints
from consumers.rebuild import select_boards
from leaderboard import periods
from leaderboard.boards import Board
from leaderboard.errors import UserError
from leaderboard.settings import Settings

HELP = "archive months of the event log older than the retention to files and drop them (or --restore one)"
log = logging.getLogger(__name__)

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_TABLE = re.compile(r"^events_(\d{4})_(\d{2})$")
_LOCK_TIMEOUT = "10s"
_PERIOD_COLUMNS = "board, period, closed_at, players, announced_at, standings_at"
_STANDING_COLUMNS = "board, period, rank, position, player_id, score, reached_at"


# -- pure ------------------------------------------------------------------------------------------------


def month_start(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=UTC)


def next_month(instant: datetime) -> datetime:
    return month_start(instant.year + instant.month // 12, instant.month % 12 + 1)


def parse_month(text: str) -> datetime:
    """'YYYY-MM' -> the first instant of that UTC month."""
    m = _MONTH.match(text)
    if not m or not 1 <= int(m[2]) <= 12:
        raise UserError(f"--before {text!r}: expected a month as YYYY-MM")
    return month_start(int(m[1]), int(m[2]))


def retention_cut(now: datetime, months: int) -> datetime:
    """The first month kept: ``months`` whole months before the current one."""
    index = now.year * 12 + now.month - 1 - months
    return month_start(index // 12, index % 12 + 1)


def table_month(name: str) -> datetime | None:
    m = _TABLE.match(name)
    return month_start(int(m[1]), int(m[2])) if m else None


def table_name(month: datetime) -> str:
    return f"events_{month:%Y_%m}"


def open_periods_before(
    board: Board, lo: datetime, cut: datetime, closed: set[str]
) -> list[tuple[str, datetime, datetime]]:
    """Periods of ``board`` (all_time aside) holding instants in [lo, cut) that are not closed: the archive
    must not take events a close still needs. Periods last a day or more, so a probe every 6 h meets each."""
    found: dict[str, tuple[datetime, datetime]] = {}
    probe = lo
    while probe < cut:
        for key in board.period_keys(probe):
            span = board.bounds(key)
            if span is not None and key not in closed:
                found[key] = span
        probe += timedelta(hours=6)
    return [(k, a, b) for k, (a, b) in sorted(found.items(), key=lambda kv: kv[1])]


# -- I/O -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Archived:
    month: datetime
    rows: int
    path: Path


def _month_tables(conn: psycopg.Connection, query: LiteralString) -> list[datetime]:
    """The months of the tables a catalog query names (one relname per row), oldest first."""
    rows = conn.execute(query).fetchall()
    return sorted(m for (name,) in rows if (m := table_month(str(name))) is not None)


def _attached(conn: psycopg.Connection) -> list[datetime]:
    return _month_tables(
        conn,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass",
    )


def _detached(conn: psycopg.Connection) -> list[datetime]:
    """Month tables left detached by an archive that stopped before dropping them."""
    return _month_tables(
        conn,
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
        " AND c.relkind IN ('r', 'p') AND c.relname ~ '^events_[0-9]{4}_[0-9]{2}$' AND NOT c.relispartition",
    )


def _floor(conn: psycopg.Connection) -> datetime:
    row = conn.execute("SELECT floor FROM event_log_floor").fetchone()
    assert row is not None
    floor: datetime = row[0]
    return floor


def _check_closed(conn: psycopg.Connection, boards: Sequence[Board], lo: datetime, cut: datetime) -> None:
    for board in boards:
        closed = {
            str(r[0]) for r in conn.execute("SELECT period FROM closed_periods WHERE board = %s", (board.id,))
        }
        for key, start, end in open_periods_before(board, lo, cut, closed):
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM events WHERE occurred_at >= %s AND occurred_at < %s)",
                (max(start, lo), min(end, cut)),
            ).fetchone()
            if row is not None and row[0]:
                raise UserError(
                    f"board {board.id} period {key} has events before {cut:%Y-%m} and is not closed:"
                    " close it first (leaderboard close-period)"
                )


_STORED = """
WITH RECURSIVE parts AS (
    SELECT min(kafka_partition) AS p FROM {t}
    UNION ALL
    SELECT (SELECT min(kafka_partition) FROM {t} WHERE kafka_partition > parts.p) FROM parts
    WHERE parts.p IS NOT NULL
)
SELECT p, (SELECT max(kafka_offset) FROM {t} WHERE kafka_partition = parts.p) FROM parts WHERE p IS NOT NULL
"""


def uncovered(conn: psycopg.Connection, boards: Sequence[Board], month: datetime) -> str | None:
    """Why dropping ``month`` would lose standings, or None: every board's checkpoint must hold each of its
    events (all-time outlives the month only there), folded under the board's current definition (a
    redefined board is refolded from the events PostgreSQL still holds). Cost in Kafka partitions."""
    stored = conn.execute(sql.SQL(_STORED).format(t=sql.Identifier(table_name(month)))).fetchall()
    for board in boards:
        row = conn.execute(
            "SELECT fingerprint FROM checkpoint_boards WHERE board = %s", (board.id,)
        ).fetchone()
        if row is not None and row[0] != checkpoints.fingerprint(board):
            return (
                f"board {board.id}: its checkpoint was folded under another definition of the board and will"
                f" be refolded from the events PostgreSQL holds: let it refold before archiving {month:%Y-%m}"
            )
        have = checkpoints.positions(conn, board.id)
        for part, top in stored:
            if have.get(int(part), -1) < int(top):
                return (
                    f"board {board.id}: its checkpoint does not cover the events of {month:%Y-%m} (partition"
                    f" {part} up to offset {top}, folded up to {have.get(int(part), 'none')}); dropping them"
                    " would lose them from the all-time standings: let the consumers' scheduler fold them"
                    " (or run `leaderboard verify`) and archive again"
                )
    return None


def _check_covered(conn: psycopg.Connection, boards: Sequence[Board], month: datetime) -> None:
    reason = uncovered(conn, boards, month)
    if reason is not None:
        raise UserError(reason)


def _write_csv(conn: psycopg.Connection, query: sql.Composable, path: Path) -> tuple[int, str]:
    """COPY a query to a gzip CSV file (written aside, fsynced, renamed), then read back: (rows, sha256)."""
    tmp = path.with_name(path.name + ".part")
    copy_sql = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(query)
    with tmp.open("wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, conn.cursor().copy(copy_sql) as copy:
            for chunk in copy:
                gz.write(bytes(chunk))
        raw.flush()
        os.fsync(raw.fileno())
    tmp.replace(path)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return _count_file(path), digest.hexdigest()


def _count_file(path: Path) -> int:
    with gzip.open(path, "rt", newline="", encoding="utf-8") as fh:
        return sum(1 for _ in csv.reader(fh)) - 1


def _count(conn: psycopg.Connection, table: str, where: sql.Composable) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(table), where)
    ).fetchone()
    return int(row[0]) if row else 0


def _manifest(path: Path, kind: str, month: datetime, rows: int, digest: str) -> None:
    body = {"kind": kind, "month": f"{month:%Y-%m}", "rows": rows, "sha256": digest, "file": path.name}
    path.with_suffix("").with_suffix(".json").write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def archive_month(
    conn: psycopg.Connection, boards: Sequence[Board], month: datetime, out_dir: Path
) -> Archived:
    """Steps (1)-(4) of the module docstring for one month; refuses a month a checkpoint does not cover."""
    name = table_name(month)
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
        conn.execute("LOCK TABLE event_log_floor IN EXCLUSIVE MODE")
        # No batch is in flight now (each holds ROW SHARE) and none can write into the month afterwards.
        _check_covered(conn, boards, month)
        conn.execute("UPDATE event_log_floor SET floor = greatest(floor, %s)", (next_month(month),))
        if month in _attached(conn):
            conn.execute(sql.SQL("ALTER TABLE events DETACH PARTITION {}").format(sql.Identifier(name)))
    path = out_dir / f"{name}.csv.gz"
    query = sql.SQL("SELECT * FROM {} ORDER BY kafka_partition, kafka_offset").format(sql.Identifier(name))
    rows, digest = _write_csv(conn, query, path)
    stored = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()
    if stored is None or stored[0] != rows:
        raise UserError(f"{path}: wrote {rows} rows but the table holds {stored}; {name} kept, detached")
    _manifest(path, "events", month, rows, digest)
    with conn.transaction():
        # The month's event ids go with it (the log's retention): copies of them are too_old from now on.
        conn.execute(
            sql.SQL(
                "DELETE FROM event_ids d USING {} m WHERE d.event_id = m.event_id"
                " AND d.kafka_partition = m.kafka_partition AND d.kafka_offset = m.kafka_offset"
            ).format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
    log.info("event log month archived", extra={"month": f"{month:%Y-%m}", "rows": rows, "file": str(path)})
    return Archived(month, rows, path)


def archive_periods(conn: psycopg.Connection, boards: Sequence[Board], floor: datetime, out_dir: Path) -> int:
    """Close records and standings of periods that ended before ``floor``: to one file, then deleted."""
    by_id = {b.id: b for b in boards}
    gone: list[tuple[str, str]] = []
    for board_id, period in conn.execute("SELECT board, period FROM closed_periods").fetchall():
        board = by_id.get(str(board_id))
        try:
            span = None if board is None else board.bounds(str(period))
        except periods.PeriodError:  # a season no longer configured: left for the operator
            span = None
        if span is not None and span[1] <= floor:
            gone.append((str(board_id), str(period)))
    if not gone:
        return 0
    boards_list, periods_list = [b for b, _ in gone], [p for _, p in gone]
    picked = sql.SQL("(board, period) IN (SELECT * FROM unnest({}::text[], {}::text[]))").format(
        sql.Literal(boards_list), sql.Literal(periods_list)
    )
    path = out_dir / f"periods_before_{floor:%Y_%m}.csv.gz"
    # One file: a close record per line (kind 'closed'), then its standings (kind 'standing').
    query = sql.SQL(
        "SELECT 'closed' AS kind, board, period, closed_at, players, announced_at, standings_at,"
        " NULL::integer AS rank, NULL::integer AS position, NULL::text AS player_id, NULL::bigint AS score,"
        " NULL::timestamptz AS reached_at FROM closed_periods WHERE {p}"
        " UNION ALL SELECT 'standing', board, period, NULL, NULL, NULL, NULL, rank, position, player_id,"
        " score, reached_at FROM period_standings WHERE {p} ORDER BY 2, 3, 1, 9"
    ).format(p=picked)
    with conn.transaction():
        rows, digest = _write_csv(conn, query, path)
        if rows != len(gone) + _count(conn, "period_standings", picked):
            raise UserError(f"{path}: read back a different number of rows than the tables hold")
        conn.execute(sql.SQL("DELETE FROM period_standings WHERE {}").format(picked))
        conn.execute(sql.SQL("DELETE FROM closed_periods WHERE {}").format(picked))
    _manifest(path, "periods", floor, rows, digest)
    return len(gone)


def archive(
    conn: psycopg.Connection, boards: Sequence[Board], cut: datetime, out_dir: Path
) -> list[Archived]:
    """Archive and drop every month before ``cut``; refuses while a period with events there is open or
    while a board's checkpoint does not cover every event of the months (checked again under the lock)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    months = sorted(set(_detached(conn)) | {m for m in _attached(conn) if m < cut})
    done: list[Archived] = []
    if months:
        _check_closed(conn, boards, months[0], cut)
        for month in months:  # refuse before anything moves, not half-way through
            _check_covered(conn, boards, month)
    for month in months:
        done.append(archive_month(conn, boards, month, out_dir))
    archive_periods(conn, boards, _floor(conn), out_dir)
    return done


def restore(conn: psycopg.Connection, path: Path) -> int:
    """Load an archive file back: an event month is re-attached below the floor (the month just below it
    only, so the log has no gap), a periods file re-inserts its close records and standings."""
    if not path.is_file():
        raise UserError(f"--restore {path}: no such file")
    if path.name.startswith("periods_before_"):
        return _restore_periods(conn, path)
    month = table_month(path.name.removesuffix(".csv.gz"))
    if month is None:
        raise UserError(f"--restore {path}: expected a file named events_YYYY_MM.csv.gz or periods_before_*")
    name = sql.Identifier(table_name(month))
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
        conn.execute("LOCK TABLE event_log_floor IN EXCLUSIVE MODE")
        floor = _floor(conn)
        if next_month(month) != floor:
            raise UserError(
                f"--restore {path}: the log's floor is {floor:%Y-%m}; restore months newest first"
            )
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(name)
        )
        with (
            gzip.open(path, "rb") as fh,
            conn.cursor().copy(sql.SQL("COPY {} FROM STDIN (FORMAT csv, HEADER)").format(name)) as copy,
        ):
            while data := fh.read(1 << 20):
                copy.write(data)
        lo, hi = month, next_month(month)
        conn.execute(
            sql.SQL("ALTER TABLE events ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                name, sql.Literal(lo), sql.Literal(hi)
            )
        )
        conn.execute("UPDATE event_log_floor SET floor = %s", (month,))
        conn.execute(
            sql.SQL(
                "INSERT INTO event_ids SELECT event_id, kafka_partition, kafka_offset FROM {}"
                " ORDER BY kafka_partition, kafka_offset ON CONFLICT (event_id) DO NOTHING"
            ).format(name)
        )
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()
    return int(row[0]) if row else 0


def _restore_periods(conn: psycopg.Connection, path: Path) -> int:
    with gzip.open(path, "rt", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    closed = [r for r in rows if r["kind"] == "closed"]
    standing = [r for r in rows if r["kind"] == "standing"]
    with conn.transaction():
        with conn.cursor().copy(f"COPY closed_periods ({_PERIOD_COLUMNS}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(_csv_lines(closed, _PERIOD_COLUMNS))
        with conn.cursor().copy(
            f"COPY period_standings ({_STANDING_COLUMNS}) FROM STDIN (FORMAT csv)"
        ) as copy:
            copy.write(_csv_lines(standing, _STANDING_COLUMNS))
    return len(rows)


def _csv_lines(rows: list[dict[str, str]], columns: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        # An archive written before a column existed restores it empty (NULL).
        writer.writerow([row.get(c.strip(), "") for c in columns.split(",")])
    return out.getvalue()


# -- command ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", type=Path, help="folder for the archive files")
    parser.add_argument(
        "--before",
        help="archive months before this one, YYYY-MM (default: LEADERBOARD_EVENT_RETENTION_MONTHS)",
    )
    parser.add_argument("--restore", type=Path, metavar="FILE", help="load one archive file back")


def run(config: Settings, args: argparse.Namespace) -> int:
    try:
        with psycopg.connect(config.database_url, autocommit=True) as conn:
            if args.restore is not None:
                n = restore(conn, args.restore)
                print(f"restored {n} row(s) from {args.restore}")
                return 0
            if args.to is None:
                raise UserError("give --to DIR (where archives go) or --restore FILE")
            cut = retention_cut(datetime.now(UTC), config.event_retention_months)
            if args.before is not None:
                cut = parse_month(args.before)
                if cut > retention_cut(datetime.now(UTC), 0):
                    raise UserError(f"--before {args.before}: the current month cannot be archived")
            done = archive(conn, select_boards(config, None), cut, args.to)
            floor = _floor(conn)
    except psycopg.errors.UndefinedTable as exc:
        raise UserError(f"the event log is not partitioned yet ({exc}): run `leaderboard migrate`") from exc
    except psycopg.OperationalError as exc:
        raise UserError(f"PostgreSQL: {str(exc).strip().splitlines()[0]}") from exc
    except psycopg.Error as exc:  # e.g. a lock not granted within the lock timeout: nothing was dropped
        raise UserError(f"PostgreSQL refused: {str(exc).strip().splitlines()[0]}") from exc
    for item in done:
        print(f"archived {item.month:%Y-%m}: {item.rows} event(s) -> {item.path}")
    print(f"event log now starts at {floor:%Y-%m}" if done else f"nothing to archive before {cut:%Y-%m}")
    return 0
