"""Moderation in PostgreSQL: the append-only audit trail, the derived state, the outbox, and erasure.

Every write runs in one transaction under one advisory lock (moderation is rare; serialising it makes the
checks in leaderboard.moderation.rules race-free). It reads only the rows the action names, so its cost is
bounded by the action (the player's events for an erasure), never by history.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from leaderboard.moderation import rules, view
from schemas import moderation as m

LOCK: Final = 0x1EAD_30D  # advisory lock: one moderation write at a time
STATEMENT_TIMEOUT_MS: Final = 60_000
"""Bound of each statement (an erasure rewrites the player's events: index lookups, but maybe many rows)."""
LOCK_TIMEOUT_MS: Final = 10_000
"""How long an action waits for another one's transaction (or a migration's lock) before failing."""
MAX_LIST: Final = 500

# The players of stored events: their claims in event_ids, then the rows at those positions
# (events_position; the log has no key on event_id, migration 0017). Matching the event_id too guards
# positions that a recreated topic reused.
_PLAYERS_OF_EVENTS: Final = """
SELECT DISTINCT e.player_id FROM event_ids d
JOIN events e ON e.kafka_partition = d.kafka_partition AND e.kafka_offset = d.kafka_offset
               AND e.event_id = d.event_id
WHERE d.event_id = ANY(%s::uuid[])
"""

PLAYER_COLUMNS: Final = (
    ("events", "player_id"),
    ("players", "player_id"),
    ("period_standings", "player_id"),
    ("standings_checkpoint", "player_id"),
    ("period_held", "player_id"),
    ("period_standings_history", "player_id"),
    ("period_correction_moves", "player_id"),
    ("moderation_exclusions", "player_id"),
    ("moderation_void_windows", "player_id"),
)
"""Every column that names a player: an erasure rewrites each (each has an index leading with it). A table
that starts naming players (standings checkpoints, ...) must be added here."""
NAME_COLUMNS: Final = (("events", "display_name"), ("players", "display_name"))
"""Every column holding a display name: an erasure sets it NULL for the player's rows."""
PSEUDONYM_PREFIX: Final = "erased-"


@dataclass(frozen=True, slots=True)
class Recorded:
    """An action as stored. ``duplicate``: this action_id was already there (nothing changed)."""

    action_id: str
    seq: int
    kind: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the audit trail, as ``moderate list`` and ``GET /v1/admin/moderation`` show it."""

    seq: int
    action_id: str
    kind: str
    record: dict[str, Any]
    recorded_at: datetime
    published: bool
    reversed_by: str | None
    """The unvoid that reversed this void, if any."""


digest = view.digest
"""The erased id's SHA-256 (kept where phase A put it; the board paths use view.digest)."""


def new_pseudonym() -> str:
    """Random, so nothing derives it from the id: once the digest is cleared, the link is gone."""
    return PSEUDONYM_PREFIX + secrets.token_hex(12)


def _bounds(conn: psycopg.Connection) -> None:
    conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
    conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")


def record(
    conn: psycopg.Connection, action: m.AnyAction, boards: frozenset[str], *, horizon: timedelta
) -> Recorded:
    """Store ``action`` and apply it to the state, once; raises rules.Refused (then nothing changed).

    ``horizon`` (erasures): how long Kafka may still hold the erased id's raw records, so how long its
    digest is kept to recognise them. The action's outbox row is written in the same transaction.
    """
    given = m.to_builtins(action)
    with conn.transaction():
        _bounds(conn)
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        row = conn.execute(
            "SELECT seq, kind, record FROM moderation_actions WHERE action_id = %s", (action.action_id,)
        ).fetchone()
        if row is not None:
            if row[1] != given["kind"] or not rules.same_action(row[2], given):
                raise rules.Refused(
                    "action-id-reused", f"action_id {action.action_id} is already a different {row[1]}"
                )
            return Recorded(action.action_id, row[0], row[1], duplicate=True)
        state = _state(conn, action)
        plan = rules.plan(action, state, boards)
        target_key = None
        if isinstance(action, m.Unvoid):
            target = conn.execute(
                "SELECT coalesce(player_id, action_id::text) FROM moderation_actions WHERE action_id = %s",
                (action.target,),
            ).fetchone()
            target_key = target[0].encode() if target else None
        key = rules.kafka_key(action, target_key)
        stored = dict(given)
        pseudonym = None
        if plan.erase:
            pseudonym = new_pseudonym()
            stored["player_id"] = pseudonym
        seq = _insert(conn, action, stored, pseudonym)
        conn.execute(
            "INSERT INTO moderation_outbox (action_id, key, value) VALUES (%s, %s, %s)",
            (action.action_id, key, m.encode(action)),
        )
        _apply(conn, action, plan)
        if plan.erase:
            assert pseudonym is not None
            assert action.player is not None
            erase(
                conn,
                action.player,
                pseudonym,
                action_id=action.action_id,
                at=m.instant(action.at),
                horizon=horizon,
            )
        return Recorded(action.action_id, seq, action.kind, duplicate=False)


def _insert(conn: psycopg.Connection, action: m.AnyAction, stored: dict[str, Any], player: str | None) -> int:
    row = conn.execute(
        "INSERT INTO moderation_actions (action_id, kind, player_id, target, actor, reason, at, record)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq",
        (
            action.action_id,
            stored["kind"],
            player if player is not None else action.player,
            action.target if isinstance(action, m.Unvoid) else None,
            action.actor,
            action.reason,
            m.instant(action.at),
            Jsonb(stored),
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _player_known(conn: psycopg.Connection, player: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM events WHERE player_id = %s)"
        " OR EXISTS (SELECT 1 FROM players WHERE player_id = %s)",
        (player, player),
    ).fetchone()
    return bool(row and row[0])


def _state(conn: psycopg.Connection, action: m.AnyAction) -> rules.State:
    """The rows the action names, and no others."""
    if isinstance(action, m.Unvoid):
        row = conn.execute(
            "SELECT a.kind, EXISTS (SELECT 1 FROM moderation_actions u WHERE u.target = a.action_id)"
            " FROM moderation_actions a WHERE a.action_id = %s",
            (action.target,),
        ).fetchone()
        return rules.State(target_kind=row[0], target_unvoided=row[1]) if row else rules.State()
    if isinstance(action, m.Void) and action.event_ids is not None:
        found = conn.execute(  # event_ids: one row per stored event (pg_sink)
            "SELECT event_id::text FROM event_ids WHERE event_id = ANY(%s::uuid[])", (action.event_ids,)
        ).fetchall()
        return rules.State(known_events=frozenset(r[0] for r in found))
    if isinstance(action, m.Void) and action.match_ids is not None:
        found = conn.execute(
            "SELECT m FROM unnest(%s::text[]) AS m WHERE EXISTS (SELECT 1 FROM events WHERE match_id = m)",
            (action.match_ids,),
        ).fetchall()
        return rules.State(known_matches=frozenset(r[0] for r in found))
    player = action.player
    assert player is not None
    known = _player_known(conn, player)
    excluded = frozenset(
        r[0] for r in conn.execute("SELECT board FROM moderation_exclusions WHERE player_id = %s", (player,))
    )
    windows: tuple[rules.Window, ...] = ()
    if isinstance(action, m.Void):
        windows = tuple(
            rules.Window(str(r[0]), r[1], r[2])
            for r in conn.execute(
                "SELECT action_id, starts_at, ends_at FROM moderation_void_windows WHERE player_id = %s",
                (player,),
            )
        )
    return rules.State(player_known=known, excluded=excluded, windows=windows)


def _apply(conn: psycopg.Connection, action: m.AnyAction, plan: rules.Plan) -> None:
    player, aid = action.player, action.action_id
    if plan.reinstate == (rules.EVERY_BOARD,):
        conn.execute("DELETE FROM moderation_exclusions WHERE player_id = %s", (player,))
    elif plan.reinstate:
        conn.execute(
            "DELETE FROM moderation_exclusions WHERE player_id = %s AND board = ANY(%s)",
            (player, list(plan.reinstate)),
        )
    if plan.exclude:
        conn.execute(
            "INSERT INTO moderation_exclusions (player_id, board, action_id, since)"
            " SELECT %s, b, %s, %s FROM unnest(%s::text[]) AS b",
            (player, aid, m.instant(action.at), list(plan.exclude)),
        )
    # One INSERT per void kind on purpose: each fills its own table, keyed by its own column and type.
    if plan.void_events:
        conn.execute(
            "INSERT INTO moderation_void_events (event_id, action_id)"
            " SELECT e, %s FROM unnest(%s::uuid[]) AS e",
            (aid, list(plan.void_events)),
        )
    if plan.void_matches:
        conn.execute(
            "INSERT INTO moderation_void_matches (match_id, action_id)"
            " SELECT x, %s FROM unnest(%s::text[]) AS x",
            (aid, list(plan.void_matches)),
        )
    if plan.void_window is not None:
        conn.execute(
            "INSERT INTO moderation_void_windows (action_id, player_id, starts_at, ends_at)"
            " VALUES (%s, %s, %s, %s)",
            (aid, player, *plan.void_window),
        )
    if plan.unvoid is not None:
        for table in ("moderation_void_events", "moderation_void_matches", "moderation_void_windows"):
            conn.execute(f"DELETE FROM {table} WHERE action_id = %s", (plan.unvoid,))


def erase(
    conn: psycopg.Connection,
    player: str,
    pseudonym: str,
    *,
    action_id: str,
    at: datetime,
    horizon: timedelta,
) -> None:
    """The PostgreSQL part of an erasure (inside the caller's transaction): the id becomes ``pseudonym``
    in every column of PLAYER_COLUMNS, display names go, earlier audit records name the pseudonym.

    Plain ``UPDATE ... WHERE player_id = ...`` per table: on a table partitioned by time each partition's
    index on player_id answers, and no row changes partition (the partition key is not touched).
    """
    names = {table: column for table, column in NAME_COLUMNS}
    for table, column in PLAYER_COLUMNS:
        sets = f"{column} = %s" + (f", {names[table]} = NULL" if table in names else "")
        conn.execute(f"UPDATE {table} SET {sets} WHERE {column} = %s", (pseudonym, player))
    conn.execute(
        "UPDATE moderation_actions"
        " SET player_id = %s, record = jsonb_set(record, '{player_id}', to_jsonb(%s::text))"
        " WHERE player_id = %s AND record ? 'player_id'",
        (pseudonym, pseudonym, player),
    )
    conn.execute(
        "INSERT INTO moderation_redis_erase (action_id, player_id) VALUES (%s, %s)", (action_id, player)
    )
    conn.execute(
        "INSERT INTO moderation_erasures (pseudonym, action_id, erased_at, id_digest, digest_until)"
        " VALUES (%s, %s, %s, %s, %s)",
        (pseudonym, action_id, at, digest(player), max(at, datetime.now(UTC)) + horizon),
    )


def forget_digests(conn: psycopg.Connection, now: datetime) -> int:
    """Clear the digests whose horizon has passed (Kafka no longer holds those raw records): from then on
    nothing links a pseudonym to the erased id. Returns how many were cleared."""
    with conn.transaction():
        _bounds(conn)
        cur = conn.execute(
            "UPDATE moderation_erasures SET id_digest = NULL"
            " WHERE id_digest IS NOT NULL AND digest_until <= %s",
            (now,),
        )
        return cur.rowcount


def pending(conn: psycopg.Connection, limit: int = 1000) -> list[tuple[str, bytes, bytes]]:
    """Outbox rows (action_id, key, value) in the order the actions were taken."""
    rows = conn.execute(
        "SELECT o.action_id::text, o.key, o.value FROM moderation_outbox o"
        " JOIN moderation_actions a USING (action_id) ORDER BY a.seq LIMIT %s",
        (limit,),
    ).fetchall()
    return [(r[0], bytes(r[1]), bytes(r[2])) for r in rows]


def published(conn: psycopg.Connection, action_ids: list[str]) -> None:
    """Kafka acknowledged these: their outbox rows (and with them any erased id they held) go."""
    if action_ids:
        conn.execute("DELETE FROM moderation_outbox WHERE action_id = ANY(%s::uuid[])", (action_ids,))


def listing(
    conn: psycopg.Connection, *, player: str | None = None, after: int = 0, limit: int = 100
) -> list[Entry]:
    """The audit trail in order (``after``: the last seq already seen), optionally of one player."""
    where = "a.seq > %s" + (" AND a.player_id = %s" if player is not None else "")
    params: list[Any] = [after] + ([player] if player is not None else []) + [min(max(limit, 1), MAX_LIST)]
    rows = conn.execute(
        "SELECT a.seq, a.action_id::text, a.kind, a.record, a.recorded_at,"
        " NOT EXISTS (SELECT 1 FROM moderation_outbox o WHERE o.action_id = a.action_id),"
        " (SELECT u.action_id::text FROM moderation_actions u WHERE u.target = a.action_id)"
        f" FROM moderation_actions a WHERE {where} ORDER BY a.seq LIMIT %s",
        params,
    ).fetchall()
    return [Entry(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]


# -- phase B: what the board paths read ---------------------------------------------------------------


def last_seq(conn: psycopg.Connection) -> int:
    """The newest action's seq (0: none): one index lookup, cheap enough for every batch."""
    row = conn.execute("SELECT coalesce(max(seq), 0) FROM moderation_actions").fetchone()
    return int(row[0]) if row else 0


def load_view(conn: psycopg.Connection) -> view.View:
    """The active moderation state, consistent at one seq (one REPEATABLE READ snapshot, a query per
    table; the tables hold active holds and voids only, so this is small whatever the history)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return _view(conn)  # inside the caller's transaction: its snapshot rules
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return _view(conn)


def _view(conn: psycopg.Connection) -> view.View:
    seq = last_seq(conn)
    holds = conn.execute("SELECT player_id, board FROM moderation_exclusions").fetchall()
    events = conn.execute("SELECT event_id::text FROM moderation_void_events").fetchall()
    matches = conn.execute("SELECT match_id FROM moderation_void_matches").fetchall()
    windows = conn.execute("SELECT player_id, starts_at, ends_at FROM moderation_void_windows").fetchall()
    erased = conn.execute("SELECT pseudonym, id_digest FROM moderation_erasures").fetchall()
    return view.build(
        seq,
        ((str(p), str(b)) for p, b in holds),
        (str(r[0]) for r in events),
        (str(r[0]) for r in matches),
        ((str(p), a, b) for p, a, b in windows),
        (str(r[0]) for r in erased),
        ((bytes(r[1]), str(r[0])) for r in erased if r[1] is not None),
    )


@dataclass(frozen=True, slots=True)
class Affected:
    """The players whose standings the actions in (after, upto] may change."""

    upto: int
    players: frozenset[str]
    """Ids as PostgreSQL holds them now (an erased player: the pseudonym)."""
    redis_ids: frozenset[str]
    """Erased ids Redis may still hold (from moderation_redis_erase): to drop from every live key."""
    facts: bool
    """Whether any action is a void, unvoid or erase (changes the checkpoint; holds do not)."""


def affected_players(conn: psycopg.Connection, after: int, upto: int | None = None) -> Affected:
    """Who the actions with seq in (``after``, ``upto``] touch, by keyed lookups only.

    exclude / reinstate / window void / erase: the player; void by events: their players (event_ids, then
    the rows at their positions);
    void by matches: the matches' players (``events_match``); unvoid: the same as its void.
    """
    top = last_seq(conn) if upto is None else upto
    rows = conn.execute(
        "SELECT a.kind, a.player_id, coalesce(t.record, a.record) FROM moderation_actions a"
        " LEFT JOIN moderation_actions t ON t.action_id = a.target"
        " WHERE a.seq > %s AND a.seq <= %s ORDER BY a.seq",
        (after, top),
    ).fetchall()
    players: set[str] = set()
    event_ids: set[str] = set()
    match_ids: set[str] = set()
    facts = False
    for kind, player, rec in rows:
        facts |= kind in {"void", "unvoid", "erase"}
        target = rec if isinstance(rec, dict) else {}
        if target.get("event_ids"):
            event_ids.update(target["event_ids"])
        elif target.get("match_ids"):
            match_ids.update(target["match_ids"])
        elif target.get("player_id"):
            players.add(str(target["player_id"]))
        elif player is not None:
            players.add(str(player))
    if event_ids:
        players.update(str(r[0]) for r in conn.execute(_PLAYERS_OF_EVENTS, (sorted(event_ids),)).fetchall())
    if match_ids:
        players.update(
            str(r[0])
            for r in conn.execute(
                "SELECT DISTINCT player_id FROM events WHERE match_id = ANY(%s)", (sorted(match_ids),)
            ).fetchall()
        )
    redis_ids = frozenset(
        str(r[0]) for r in conn.execute("SELECT player_id FROM moderation_redis_erase").fetchall()
    )
    return Affected(top, frozenset(players), redis_ids, facts)


def erased_from_redis(conn: psycopg.Connection, ids: frozenset[str]) -> None:
    """Redis no longer holds these erased ids: their last rows in PostgreSQL go."""
    if ids:
        conn.execute("DELETE FROM moderation_redis_erase WHERE player_id = ANY(%s)", (sorted(ids),))


def applied_seq(conn: psycopg.Connection) -> int:
    """The last action the Redis boards reflect (moved by the consumers after their recompute)."""
    row = conn.execute("SELECT seq FROM moderation_applied").fetchone()
    return int(row[0]) if row else 0


def mark_applied(conn: psycopg.Connection, seq: int) -> None:
    conn.execute("UPDATE moderation_applied SET seq = greatest(seq, %s)", (seq,))
