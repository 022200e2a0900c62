"""Standings checkpoints: every board's standings folded from the event log, in SQL, once per event.

``standings_checkpoint`` holds (board, period, player) -> (points, at_s, events); ``checkpoint_positions``
the Kafka offset per partition up to which every stored event is folded in. :func:`advance` folds the
events after those positions (``(kafka_partition, kafka_offset) > position``) onto the rows with one
set-based ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per step and moves the positions in the same
transaction, so each event is folded exactly once. It is the same fold as ``consumers.plan.fold`` (the
live path): the events table holds only canonical copies (duplicates are never stored) and no event of a
closed period (those are dead-lettered), and both aggregations commute.

``points`` holds the board's value (its points or scores, leaderboard.aggregate); ``at_s`` is an instant,
not a tie-break: for ``sum`` the latest event, for ``best`` the earliest with the best value, for ``last``
the shown (latest) event, whose exact instant and Kafka position are ``last_us/last_partition/last_offset``.
The period's tie-break follows from ``at_s`` (:func:`packed`), the same clamped units ``plan.tiebreak_of``
gives, so nothing here depends on a period's origin.

Rebuild, recovery, verify and close read the checkpoint (cost in players) plus the tail after it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from consumers.plan import origin_of, tiebreak_of
from leaderboard import scoring, shards
from leaderboard.aggregate import MAX_VALUE
from leaderboard.boards import Board
from leaderboard.moderation import store as moderation
from leaderboard.moderation.view import VOIDED_SQL
from leaderboard.periods import PeriodKind

log = logging.getLogger(__name__)

_LOCK = 0x1EAD_C4EC  # advisory lock: one fold at a time per board (second key: hashtext(board))
STEP = 2_000_000
"""Offsets (all partitions together) folded per transaction: a first fold of a long log commits as it goes
and holds the board's fold lock for one step at a time."""
CHUNK = 10_000
"""Checkpoint rows per fetch when streaming: what rebuild, verify and close hold in memory at once."""
_TS_BITS = 34  # epoch seconds until 2514; schemas.model bounds occurred_at to [2020, 2050)
_TS_MASK = (1 << _TS_BITS) - 1


@dataclass(frozen=True, slots=True)
class Row:
    """One checkpoint row: a player's standing on one period of a board."""

    period: str
    player_id: str
    points: int
    at_s: int
    events: int
    last: tuple[int, int, int] | None = None
    """``last`` boards: (us, partition, offset) of the event the row shows."""


def fingerprint(board: Board) -> str:
    """What decides a board's fold; a checkpoint taken under another definition is refolded from scratch."""
    parts = [
        board.aggregation,
        board.timezone.key,
        ",".join(sorted(k.value for k in board.periods)),
        *(",".join(sorted(s)) if s is not None else "*" for s in (board.games, board.modes, board.regions)),
    ]
    # Appended only when not the default, so the boards that existed before them keep their fingerprint
    # (an upgrade refolds nothing).
    if board.order != "desc" or board.value != "points":
        parts += [board.order, board.value]
    if board.seasons:
        parts.append(";".join(f"{x.id}={x.start.isoformat()}/{x.end.isoformat()}" for x in board.seasons))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def packed(board: Board, row: Row) -> int:
    """The Redis score of a checkpoint row: the value's rank key and the period's tie-break of ``at_s``."""
    origin, unit = origin_of(board, row.period)
    return board.rule.pack(row.points, tiebreak_of(row.at_s, origin, unit))


# -- positions ---------------------------------------------------------------------------------------------

_STORED = """
WITH RECURSIVE parts AS (
    SELECT min(kafka_partition) AS p FROM events
    UNION ALL
    SELECT (SELECT min(kafka_partition) FROM events WHERE kafka_partition > parts.p) FROM parts
    WHERE parts.p IS NOT NULL
)
SELECT p, (SELECT max(kafka_offset) FROM events WHERE kafka_partition = parts.p) FROM parts
WHERE p IS NOT NULL
"""


def stored_positions(conn: psycopg.Connection) -> dict[int, int]:
    """Highest stored offset per partition, by index (a loose scan: cost in partitions, not events)."""
    return {int(p): int(o) for p, o in conn.execute(_STORED).fetchall()}


def positions(conn: psycopg.Connection, board: str) -> dict[int, int]:
    """The positions a board's checkpoint covers (empty: nothing folded yet)."""
    rows = conn.execute(
        "SELECT kafka_partition, kafka_offset FROM checkpoint_positions WHERE board = %s", (board,)
    ).fetchall()
    return {int(p): int(o) for p, o in rows}


def clock(conn: psycopg.Connection) -> datetime | None:
    """The group's recorded clock: the latest ingest time any checkpoint folded (None before any fold).

    Decisions that must replay identically (which periods the scheduler may close) use this, not the
    wall clock of whoever decides.
    """
    row = conn.execute("SELECT max(seen_until) FROM checkpoint_boards").fetchone()
    return None if row is None else row[0]


# -- the fold ----------------------------------------------------------------------------------------------

_KEY_SQL = {
    PeriodKind.ALL_TIME: "'all_time'",
    PeriodKind.MONTHLY: "'monthly:' || to_char(e.occurred_at AT TIME ZONE %(tz)s, 'YYYY-MM')",
    PeriodKind.WEEKLY: "'weekly:' || to_char(e.occurred_at AT TIME ZONE %(tz)s, 'IYYY-\"W\"IW')",
    PeriodKind.DAILY: "'daily:' || to_char(e.occurred_at AT TIME ZONE %(tz)s, 'YYYY-MM-DD')",
}

_RANGES = "unnest(%(parts)s::int[], %(lo)s::bigint[], %(hi)s::bigint[]) AS r(p, lo, hi)"
# A tail: one index range scan of events_position per partition (LATERAL, with OFFSET 0 so the planner does
# not flatten it into a join and pick a sequential scan), so it costs its own rows, never the whole log.
_TAIL = f"""
FROM {_RANGES}
CROSS JOIN LATERAL (
    SELECT * FROM events
    WHERE kafka_partition = r.p AND kafka_offset > r.lo AND kafka_offset <= r.hi
    OFFSET 0
) e
"""
# A large step (a first fold of an existing log): a join, for which the planner scans the table in one pass.
_BULK = f"""
FROM events e
JOIN {_RANGES} ON e.kafka_partition = r.p AND e.kafka_offset > r.lo AND e.kafka_offset <= r.hi
"""
_BULK_OFFSETS = 1_000_000
_BULK_WORK_MEM = "128MB"
"""Steps covering more offsets than this (all partitions together) read the table in one pass."""
# A few players' events up to the positions (moderation refold): events_player, cost in their events.
_PLAYERS = f"""
FROM (SELECT * FROM events WHERE player_id = ANY(%(players)s) OFFSET 0) e
JOIN {_RANGES} ON e.kafka_partition = r.p AND e.kafka_offset > r.lo AND e.kafka_offset <= r.hi
"""
# Voided events and erased players' events count nowhere (leaderboard.moderation.view: the same rule).
_FILTER = """
CROSS JOIN LATERAL (VALUES {keys}) AS k(period)
WHERE (%(games)s::text[] IS NULL OR e.game = ANY(%(games)s::text[]))
  AND (%(modes)s::text[] IS NULL OR e.mode = ANY(%(modes)s::text[]))
  AND (%(regions)s::text[] IS NULL OR e.region = ANY(%(regions)s::text[]))
  AND k.period IS NOT NULL AND {value} IS NOT NULL AND {value} BETWEEN 0 AND {max_value}
  AND NOT """ + VOIDED_SQL.replace("{", "{{").replace("}", "}}")
_SEASON_SQL = (
    "(CASE WHEN e.occurred_at >= %(s{i}_start)s AND e.occurred_at < %(s{i}_end)s THEN %(s{i}_key)s END)"
)

_TS = "floor(extract(epoch FROM e.occurred_at))::bigint"
_US = "(extract(epoch FROM e.occurred_at) * 1000000)::bigint"

_FOLD_SUM = """
INSERT INTO standings_checkpoint AS c (board, period, player_id, points, at_s, events)
SELECT %(board)s, k.period, e.player_id, sum({value}), max({ts}), count(*)
{tail}
GROUP BY k.period, e.player_id
ON CONFLICT (board, period, player_id) DO UPDATE SET
    points = c.points + EXCLUDED.points,
    at_s = greatest(c.at_s, EXCLUDED.at_s),
    events = c.events + EXCLUDED.events
"""

# best: the best value, and of the events with it the earliest: max of key * 2^34 + (2^34 - 1 - ts), where the
# key is the value (desc) or MAX_VALUE - value (asc), as leaderboard.aggregate.Rule.key.
_FOLD_BEST = """
INSERT INTO standings_checkpoint AS c (board, period, player_id, points, at_s, events)
SELECT %(board)s, period, player_id, {unkey}, {mask} - (top & {mask}), n
FROM (
    SELECT k.period, e.player_id, max(({key}::bigint << {bits}) + ({mask} - {ts})) AS top, count(*) AS n
    {tail}
    GROUP BY k.period, e.player_id
) g
ON CONFLICT (board, period, player_id) DO UPDATE SET
    points = CASE WHEN {wins} THEN EXCLUDED.points ELSE c.points END,
    at_s = CASE WHEN {wins} THEN EXCLUDED.at_s ELSE c.at_s END,
    events = c.events + EXCLUDED.events
"""

# last: the latest event by (occurred_at in microseconds, partition, offset), as Rule.merge.
_FOLD_LAST = """
INSERT INTO standings_checkpoint AS c
    (board, period, player_id, points, at_s, events, last_us, last_partition, last_offset)
SELECT %(board)s, period, player_id, v, ts, n, us, p, o
FROM (
    SELECT DISTINCT ON (k.period, e.player_id) k.period, e.player_id, {value} AS v, {ts} AS ts,
           count(*) OVER (PARTITION BY k.period, e.player_id) AS n, {us} AS us, e.kafka_partition AS p,
           e.kafka_offset AS o
    {tail}
    ORDER BY k.period, e.player_id, {us} DESC, e.kafka_partition DESC, e.kafka_offset DESC
) g
ON CONFLICT (board, period, player_id) DO UPDATE SET
    points = CASE WHEN {newer} THEN EXCLUDED.points ELSE c.points END,
    at_s = CASE WHEN {newer} THEN EXCLUDED.at_s ELSE c.at_s END,
    last_us = CASE WHEN {newer} THEN EXCLUDED.last_us ELSE c.last_us END,
    last_partition = CASE WHEN {newer} THEN EXCLUDED.last_partition ELSE c.last_partition END,
    last_offset = CASE WHEN {newer} THEN EXCLUDED.last_offset ELSE c.last_offset END,
    events = c.events + EXCLUDED.events
"""
_WINS = {
    order: f"EXCLUDED.points {op} c.points OR (EXCLUDED.points = c.points AND EXCLUDED.at_s < c.at_s)"
    for order, op in (("desc", ">"), ("asc", "<"))
}
"""best: the new row's value is better, or equal and reached earlier."""
_NEWER = (
    "(EXCLUDED.last_us, EXCLUDED.last_partition, EXCLUDED.last_offset)"
    " > (c.last_us, c.last_partition, c.last_offset)"
)


def _fold_sql(board: Board, bulk: bool = False, players: bool = False) -> str:
    keys = [f"({_KEY_SQL[kind]})" for kind in board.periods]
    keys += [_SEASON_SQL.format(i=i) for i in range(len(board.seasons))]
    value = f"e.{board.value}"
    source = _PLAYERS if players else _BULK if bulk else _TAIL
    tail = source + _FILTER.format(keys=", ".join(keys), value=value, max_value=MAX_VALUE)
    if board.aggregation == "best":
        asc = board.order == "asc"
        key = f"({MAX_VALUE} - {value})" if asc else value
        unkey = f"{MAX_VALUE} - (top >> {_TS_BITS})" if asc else f"top >> {_TS_BITS}"
        return _FOLD_BEST.format(
            tail=tail, ts=_TS, bits=_TS_BITS, mask=_TS_MASK, key=key, unkey=unkey, wins=_WINS[board.order]
        )
    if board.aggregation == "last":
        return _FOLD_LAST.format(tail=tail, ts=_TS, us=_US, value=value, newer=_NEWER)
    return _FOLD_SUM.format(tail=tail, ts=_TS, value=value)


def _season_params(board: Board) -> dict[str, object]:
    out: dict[str, object] = {}
    for i, season in enumerate(board.seasons):
        out.update({f"s{i}_start": season.start, f"s{i}_end": season.end, f"s{i}_key": season.key})
    return out


def _names(values: frozenset[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


@dataclass
class Advanced:
    """What one :func:`advance` did for a board."""

    positions: dict[int, int]
    steps: int
    refolded: bool


def advance(
    conn: psycopg.Connection,
    board: Board,
    *,
    upto: dict[int, int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Advanced:
    """Fold the stored events after the board's checkpoint onto it, up to ``upto`` (default: all stored).

    ``conn`` must be in autocommit mode: each step is its own transaction, under the board's advisory
    lock, read committed, so a concurrent fold waits and then sees what this one committed. Every event at
    or below a stored row's offset on its partition is already committed when that offset is read (a
    partition's batches commit in offset order), so the range never misses one.
    """
    done = _fold_tail(conn, board, stored_positions(conn) if upto is None else upto, progress)
    refold_moderated(conn, board)
    return done


def moderation_seq(conn: psycopg.Connection, board: str) -> int:
    """The last moderation action the board's checkpoint reflects (0: none)."""
    row = conn.execute("SELECT moderation_seq FROM checkpoint_boards WHERE board = %s", (board,)).fetchone()
    return 0 if row is None else int(row[0])


def refold_moderated(conn: psycopg.Connection, board: Board) -> int:
    """Refold, from their own events up to the checkpoint's positions, the players of the void, unvoid
    and erase actions the checkpoint does not reflect yet; returns how many players. Cost: their events
    (``events_player``), never the log. Holds do not change the checkpoint (it keeps held players)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s::integer, hashtext(%s))", (_LOCK, board.id))
        after = moderation_seq(conn, board.id)
        upto = moderation.last_seq(conn)
        if upto <= after:
            return 0
        affected = moderation.affected_players(conn, after, upto)
        players = sorted(affected.players) if affected.facts else []
        have = positions(conn, board.id)
        if players and have:
            parts = sorted(have)
            conn.execute(
                "DELETE FROM standings_checkpoint WHERE board = %s AND player_id = ANY(%s)",
                (board.id, players),
            )
            conn.execute(
                _fold_sql(board, players=True),
                {
                    "board": board.id,
                    "tz": board.timezone.key,
                    "parts": parts,
                    "lo": [-1] * len(parts),
                    "hi": [have[p] for p in parts],
                    "players": players,
                    "games": _names(board.games),
                    "modes": _names(board.modes),
                    "regions": _names(board.regions),
                    **_season_params(board),
                },
            )
        conn.execute("UPDATE checkpoint_boards SET moderation_seq = %s WHERE board = %s", (upto, board.id))
    if players:
        log.info("checkpoint refolded for moderation", extra={"board": board.id, "players": len(players)})
    return len(players)


def _fold_tail(
    conn: psycopg.Connection, board: Board, target: dict[int, int], progress: Callable[[int], None] | None
) -> Advanced:
    steps = 0
    refolded = False
    while True:
        with conn.transaction():
            # Advisory locks are per database: the schema in the key keeps deployments (and tests) that
            # share one apart, so a long fold in one never holds up another's.
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s::integer, hashtext(current_schema() || '/' || %s))",
                (_LOCK, board.id),
            )
            refolded |= _reset_if_redefined(conn, board)
            have = positions(conn, board.id)
            step = max(1, STEP // max(1, len(target)))
            todo = {p: (have.get(p, -1), min(hi, have.get(p, -1) + step)) for p, hi in target.items()}
            todo = {p: r for p, r in todo.items() if r[1] > r[0]}
            if not todo:
                return Advanced(have, steps, refolded)
            parts = sorted(todo)
            params = {
                "board": board.id,
                "tz": board.timezone.key,
                "parts": parts,
                "lo": [todo[p][0] for p in parts],
                "hi": [todo[p][1] for p in parts],
                "games": _names(board.games),
                "modes": _names(board.modes),
                "regions": _names(board.regions),
                **_season_params(board),
            }
            todo_total = sum(hi - lo for lo, hi in todo.values())
            bulk = todo_total > _BULK_OFFSETS
            if bulk:  # the aggregate of a large step stays in memory (a bounded amount) instead of spilling
                conn.execute(f"SET LOCAL work_mem = '{_BULK_WORK_MEM}'")
            conn.execute(_fold_sql(board, bulk), params)
            conn.execute(
                "INSERT INTO checkpoint_positions (board, kafka_partition, kafka_offset)"
                " SELECT %s, p, o FROM unnest(%s::int[], %s::bigint[]) AS t(p, o)"
                " ON CONFLICT (board, kafka_partition) DO UPDATE SET kafka_offset = EXCLUDED.kafka_offset",
                (board.id, parts, params["hi"]),
            )
            conn.execute(
                "UPDATE checkpoint_boards SET folded_at = now(), seen_until = greatest(seen_until,"
                " (SELECT max(ingested_at) FROM events e JOIN unnest(%s::int[], %s::bigint[]) AS t(p, o)"
                "  ON e.kafka_partition = t.p AND e.kafka_offset = t.o)) WHERE board = %s",
                (parts, params["hi"], board.id),
            )
        steps += 1
        if bulk:
            log.info(
                "checkpoint step folded", extra={"board": board.id, "step": steps, "offsets": todo_total}
            )
        if progress is not None:
            progress(steps)


def _reset_if_redefined(conn: psycopg.Connection, board: Board) -> bool:
    """Start the board's checkpoint over when its definition changed (or it has none); True if reset."""
    fp = fingerprint(board)
    row = conn.execute("SELECT fingerprint FROM checkpoint_boards WHERE board = %s", (board.id,)).fetchone()
    if row is not None and row[0] == fp:
        return False
    if row is not None:
        log.warning("board definition changed; refolding its checkpoint", extra={"board": board.id})
    conn.execute("DELETE FROM standings_checkpoint WHERE board = %s", (board.id,))
    conn.execute("DELETE FROM checkpoint_boards WHERE board = %s", (board.id,))
    conn.execute("INSERT INTO checkpoint_boards (board, fingerprint) VALUES (%s, %s)", (board.id, fp))
    return row is not None


# -- reading -----------------------------------------------------------------------------------------------


def stream_rows(
    conn: psycopg.Connection, board: str, periods: Sequence[str] | None = None
) -> Iterator[list[Row]]:
    """The board's checkpoint rows (only ``periods``, if given), in chunks, in no particular order.

    Call inside the transaction that read :func:`positions` so rows and positions agree.
    """
    where = "board = %s" + ("" if periods is None else " AND period = ANY(%s)")
    params: tuple[object, ...] = (board,) if periods is None else (board, list(periods))
    with conn.cursor(name=f"ckpt_{uuid.uuid4().hex[:8]}") as cur:
        cur.itersize = CHUNK
        cur.execute(
            "SELECT period, player_id, points, at_s, events, last_us, last_partition, last_offset"
            f" FROM standings_checkpoint WHERE {where}",
            params,
        )
        while rows := cur.fetchmany(CHUNK):
            yield [
                Row(str(a), str(b), int(c), int(d), int(e), None if u is None else (int(u), int(p), int(o)))
                for a, b, c, d, e, u, p, o in rows
            ]


# The Redis score of a row, as :func:`packed` computes it (rank key * 2^24 + the period's tie-break of at_s;
# integer division truncates where Python floors, which differs only below 0, clamped to 0 either way).
_KEY = {
    "desc": f"least(greatest(points, 0), {MAX_VALUE})",
    "asc": f"{MAX_VALUE} - least(greatest(points, 0), {MAX_VALUE})",
}
_SCORE = (
    "(least({key}, {max_score}) * {span} + ({span_1}"
    " - least(greatest((at_s - %(origin)s) / %(unit)s, 0), {span_1})))"
)
# One entry of a chunk for the standings script (leaderboard/lua/standings.lua): "<score> [<mark> ]<bytes>
# <player>", length-prefixed so any player id passes unchanged.
_ENTRY = {
    False: "{score} || ' ' || octet_length(player_id) || ' ' || player_id",
    True: "{score} || ' ' || last_us || ':' || last_partition || ':' || last_offset || ' '"
    " || octet_length(player_id) || ' ' || player_id",
}
ENTRIES = 1000
"""Entries per standings.lua call: what one call holds Redis for (about 1-2 ms)."""


def score_sql(board: Board) -> str:
    """The SQL expression of a checkpoint row's Redis score (params ``origin``, ``unit``)."""
    return _SCORE.format(
        key=_KEY[board.order],
        max_score=scoring.MAX_SCORE,
        span=scoring.TIME_SPAN,
        span_1=scoring.TIME_SPAN - 1,
    )


@dataclass(frozen=True, slots=True)
class Entries:
    """A chunk of one period's checkpoint as standings.lua entries (``rows`` of them, ``events`` folded)."""

    blob: str
    rows: int
    events: int


def stream_entries(
    conn: psycopg.Connection,
    board: Board,
    period: str,
    leave_out: Sequence[str] = (),
    *,
    marks: bool = False,
    shard: int | None = None,
) -> Iterator[Entries]:
    """One period's checkpoint rows, scored by PostgreSQL, as chunks of standings.lua entries.

    Per row only PostgreSQL works (the score, the text) and Python joins strings: what the rebuild's load
    and verify cost per player. ``leave_out``: players not to list (moderation holds); ``marks``: with
    each ``last`` row's mark (keys.latest), for a load; ``shard``: that shard's players only (a sharded
    board, leaderboard.shards: PostgreSQL hashes the ids as Python does). Call inside the
    transaction that read :func:`positions` so rows and positions agree.
    """
    entry = _ENTRY[marks and board.aggregation == "last"].format(score=score_sql(board))
    yield from _entries(
        conn,
        board,
        period,
        f"SELECT {entry}, events FROM standings_checkpoint"
        " WHERE board = %(board)s AND period = %(period)s AND player_id <> ALL(%(out)s::text[])"
        + _of_shard(board, shard),
        leave_out,
    )


def _of_shard(board: Board, shard: int | None) -> str:
    """The SQL condition (`` AND ...``) of a shard's players; '' for all of them."""
    if shard is None or board.shards == 1:
        return ""
    return f" AND {shards.shard_sql('player_id', board.shards)} = {int(shard)}"


def stream_stored_entries(
    conn: psycopg.Connection, board: Board, period: str, shard: int | None = None
) -> Iterator[Entries]:
    """A closed period's stored standings (``period_standings``) as chunks of standings.lua entries, scored
    as its Redis copy holds them (``period_store.redis_scores``, one row at a time): verify streams them."""
    entry = _ENTRY[False].format(score=score_sql(board))
    # reached_at is origin + whole units (period_store.standings_sql), so at_s gives the same tie-break back.
    yield from _entries(
        conn,
        board,
        period,
        f"SELECT {entry}, 1 FROM (SELECT player_id, score AS points,"
        " extract(epoch FROM reached_at)::bigint AS at_s FROM period_standings"
        " WHERE board = %(board)s AND period = %(period)s" + _of_shard(board, shard) + ") s",
    )


def _entries(
    conn: psycopg.Connection, board: Board, period: str, sql: str, leave_out: Sequence[str] = ()
) -> Iterator[Entries]:
    origin, unit = origin_of(board, period)
    with conn.cursor(name=f"ckpt_{uuid.uuid4().hex[:8]}") as cur:
        cur.itersize = ENTRIES * 10
        cur.execute(
            sql, {"board": board.id, "period": period, "origin": origin, "unit": unit, "out": list(leave_out)}
        )
        while rows := cur.fetchmany(ENTRIES):
            yield Entries("".join([r[0] for r in rows]), len(rows), sum([r[1] for r in rows]))


_PERIODS = """
WITH RECURSIVE ps AS (
    SELECT min(period) AS p FROM standings_checkpoint WHERE board = %(board)s
    UNION ALL
    SELECT (SELECT min(period) FROM standings_checkpoint WHERE board = %(board)s AND period > ps.p) FROM ps
    WHERE ps.p IS NOT NULL
)
SELECT p FROM ps WHERE p IS NOT NULL
"""


def periods_of(conn: psycopg.Connection, board: str) -> list[str]:
    """Period keys the board's checkpoint has rows for (a loose index scan: cost in periods)."""
    return [str(r[0]) for r in conn.execute(_PERIODS, {"board": board}).fetchall()]


def drop_periods(conn: psycopg.Connection, board: str, periods: Sequence[str]) -> int:
    """Delete the checkpoint rows of periods nothing reads from the checkpoint any more."""
    if not periods:
        return 0
    cur = conn.execute(
        "DELETE FROM standings_checkpoint WHERE board = %s AND period = ANY(%s)", (board, list(periods))
    )
    return cur.rowcount
