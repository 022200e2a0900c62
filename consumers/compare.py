"""Redis boards against the standings checkpoint (folded up to everything stored), in bounded memory.

Per period: checkpoint rows stream in chunks, scored by PostgreSQL, and standings.lua compares each chunk
inside Redis; only when Redis holds more members than matched does a ZSCAN look for members PostgreSQL does
not know. Memory is a chunk, whatever the board's size.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import psycopg

from consumers import checkpoints, period_store
from leaderboard import shards
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.lua_scripts import script
from leaderboard.moderation import store as moderation
from leaderboard.moderation.view import View
from leaderboard.redis_client import SyncClient

MAX_LINES = 1000
"""Difference lines kept per board; the count says how many there were in all."""
MODERATION_WAIT_S = 10.0
"""How long verify waits for the consumers to apply the newest moderation action before saying so."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


VERIFIED = "verified_version"
"""Field of a closed copy's stats hash: the ``closed_periods.version`` it last compared equal to."""


def differences(  # noqa: PLR0917 - verify's own arguments
    client: SyncClient,
    conn: psycopg.Connection,
    keys: Keys,
    board: Board,
    period: str | None,
    recheck_closed: bool = False,
) -> tuple[list[str], int]:
    """Readable difference lines (at most MAX_LINES, then a count) and the number of periods compared.

    The ground truth honours moderation: the checkpoint leaves voided and erased events out; players held
    off the board are expected absent. When the Redis boards do not reflect the newest action yet
    (``moderation_applied``), that is reported as moderation lag, never as a mismatch.

    A closed period's Redis copy is compared whole once per generation and version: nothing writes it
    after that but a correction, which bumps the version. Later runs check its size against the stored
    player count (one ZCARD); ``recheck_closed`` compares every copy whole again. So a run costs the open
    periods' players, not the closed days still in their retention."""
    checkpoints.advance(conn, board)
    view = moderation.load_view(conn)
    behind = _moderation_lag(conn, view.seq)
    if behind is not None:
        return [f"{board.id}: moderation lag: Redis reflects action {behind}, the newest is {view.seq}"], 0
    stored_parts = shards.parts(board)  # a sharded board: each shard against its own players
    raw_gens = [client.hget(keys.meta(part.id), "active") for part in stored_parts]
    if any(g is None for g in raw_gens):
        return [f"{board.id}: no live generation in Redis (being rebuilt?)"], 0
    gens = [int(cast("bytes", g)) for g in raw_gens]
    live_periods = {
        _text(p)
        for part, g in zip(stored_parts, gens, strict=True)
        for p in client.smembers(keys.periods(part.id, g))
    }
    closed = {_text(p) for p in client.smembers(keys.closed(board.id))}
    lines: list[str] = []
    total = 0
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        stored = set(checkpoints.periods_of(conn, board.id))
        stored_closed = period_store.complete(conn, board.id)
        wanted = (stored | live_periods) if period is None else {period}
        for key in sorted(wanted):
            at = [
                Stored(shard, keys.board(part.id, g, key), keys.stats(part.id, g, key))
                for shard, (part, g) in enumerate(zip(stored_parts, gens, strict=True))
            ]
            if (key in closed or key in stored_closed) and not any(client.exists(a.zkey) for a in at):
                continue  # closed, and not in Redis (retention over, or rebuilt): served from PostgreSQL
            lines_of = (
                _closed_period(client, conn, board, key, at, recheck_closed)
                if key in stored_closed
                else (line for a in at for line in _period(client, conn, board, key, a, view))
            )
            for line in lines_of:
                total += 1
                if len(lines) < MAX_LINES:
                    lines.append(line)
    if total > len(lines):
        lines.append(f"{board.id}: {total - len(lines)} more difference(s) not shown")
    return lines, len(wanted)


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored board-period: the board's, or one shard's (leaderboard.shards)."""

    shard: int
    zkey: str
    stats: str


def _closed_period(  # noqa: PLR0917 - one period of differences()
    client: SyncClient,
    conn: psycopg.Connection,
    board: Board,
    key: str,
    at: list[Stored],
    recheck: bool,
) -> Iterator[str]:
    """A closed period's Redis copy against its stored standings (held-at-close out, corrections in),
    streamed like an open period's: memory is a chunk whatever the period's size. Each shard's copy is
    marked verified on its own; once all are, a run compares their sizes only."""
    head = conn.execute(
        "SELECT version, players FROM closed_periods WHERE board = %s AND period = %s", (board.id, key)
    ).fetchone()
    assert head is not None  # the caller found its standings stored
    version, players = str(head[0]), int(head[1])
    if not recheck and all(_text(client.hget(a.stats, VERIFIED) or b"") == version for a in at):
        size = sum(int(client.zcard(a.zkey)) for a in at)
        if size != players:
            yield f"{board.id} {key}: Redis holds {size} players, the stored standings {players} (closed)"
        return
    for a in at:
        found = False
        for line in _compare(
            client,
            conn,
            board,
            key,
            a.zkey,
            checkpoints.stream_stored_entries(conn, board, key, a.shard),
            "stored standings",
            _KNOWN_STORED,
            None,
        ):
            found = True
            yield line
        ttl = int(client.pttl(a.zkey))
        if not found and ttl != -2:  # -2: no copy (a shard without players): nothing to mark
            pipe = client.pipeline(transaction=False)
            pipe.hset(a.stats, VERIFIED, version)
            if ttl > 0:  # the copy's retention, so the mark never outlives it
                pipe.pexpire(a.stats, ttl)
            pipe.execute()


def _moderation_lag(conn: psycopg.Connection, newest: int, wait_s: float = MODERATION_WAIT_S) -> int | None:
    """None once Redis reflects action ``newest`` (waits up to ``wait_s``), else the seq it reflects."""
    deadline = time.monotonic() + wait_s
    while (applied := moderation.applied_seq(conn)) < newest:
        if time.monotonic() >= deadline:
            return applied
        time.sleep(0.2)
    return None


_KNOWN = "SELECT player_id FROM standings_checkpoint WHERE board = %s AND period = %s AND player_id = ANY(%s)"
_KNOWN_STORED = (
    "SELECT player_id FROM period_standings WHERE board = %s AND period = %s AND player_id = ANY(%s)"
)


def _period(  # noqa: PLR0917 - one period of differences()
    client: SyncClient, conn: psycopg.Connection, board: Board, key: str, at: Stored, view: View
) -> Iterator[str]:
    """An open period's checkpoint rows (of the shard's players) against Redis."""
    entries = checkpoints.stream_entries(conn, board, key, view.held_off(board.id), shard=at.shard)
    yield from _compare(client, conn, board, key, at.zkey, entries, "PostgreSQL", _KNOWN, view)


def _compare(  # noqa: PLR0917 - the two kinds of period differ in these
    client: SyncClient,
    conn: psycopg.Connection,
    board: Board,
    key: str,
    zkey: str,
    entries: Iterator[checkpoints.Entries],
    truth: str,
    known_sql: str,
    view: View | None,
) -> Iterator[str]:
    """Chunks of expected entries against Redis: standings.lua compares each chunk inside Redis and returns
    the differing players only (Python does no work per matching player); then, only when Redis holds more
    members than matched, a ZSCAN finds the members ``known_sql`` does not list."""
    matched = 0
    rule = board.rule
    check = client.register_script(script("standings"))
    for part in entries:
        res = check(keys=[zkey], args=["check", part.blob])
        matched += int(res[0])
        listed = res[1:]
        for i in range(0, len(listed), 3):
            player, want, have = _text(listed[i]), int(listed[i + 1]), _text(listed[i + 2])
            if not have:
                yield f"{board.id} {key} {player}: missing in Redis (expected {rule.unpack(want)[0]})"
            else:
                yield (
                    f"{board.id} {key} {player}: Redis {rule.unpack(float(have))} != {truth} "
                    f"{rule.unpack(want)} (value, tie-break)"
                )
    if int(client.zcard(zkey)) == matched:
        return
    for members in _scan(client, zkey):
        known = {str(r[0]) for r in conn.execute(known_sql, (board.id, key, list(members))).fetchall()}
        for player, score in members.items():
            if view is not None and view.held(player, board.id):
                yield f"{board.id} {key} {player}: in Redis ({rule.unpack(score)[0]}), held by moderation"
            elif player not in known:
                yield f"{board.id} {key} {player}: in Redis ({rule.unpack(score)[0]}), not in {truth}"


def _scan(client: SyncClient, zkey: str) -> Iterator[dict[str, float]]:
    cursor = 0
    while True:
        cursor, rows = client.zscan(zkey, cursor, count=checkpoints.CHUNK)
        if rows:
            yield {_text(m): float(s) for m, s in cast("list[tuple[bytes, float]]", rows)}
        if cursor == 0:
            return
