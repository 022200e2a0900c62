"""Display names: PostgreSQL decides them, Redis copies what PostgreSQL changed.

The rule, in one place: a player's name is the one carried by their latest win, by ``occurred_at``, ties
broken by Kafka position (partition, then offset). The players upsert in consumers/pg_sink.py (``_PLAYERS``)
applies it against the stored row's own (occurred_at, partition, offset), so batches in any order, replays
and late copies all end at the same name; it returns the rows whose name it changed (``Outcome.names``) and
only those are written to the Redis names hash, in the batch's pipeline. Redis never decides: a rebuild,
a recovery or a check that found lost writes copies the players table as it is (``load``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from leaderboard.keys import Keys
from leaderboard.redis_client import SyncClient

PER_CALL = 500
"""Fields per HSET: a few hundred µs of Redis time, like one apply.lua chunk."""
_FETCH = 10_000


def queue(
    pipe: Any,
    keys: Keys,
    names: Mapping[str, str],
    pos: Mapping[int, int] | None = None,
    *,
    check: bool = False,
    per_call: int = PER_CALL,
) -> int:
    """Queue on ``pipe`` (a pipeline) HSETs of ``names``, then the batch's positions ``pos`` in the names
    position hash (same slot, written after the names: a replica that has it has them); first, with
    ``check``, a read of that position hash (for ``behind``). Returns the number of commands queued."""
    queued = 0
    if check:
        pipe.hgetall(keys.names_position())
        queued += 1
    items = list(names.items())
    for i in range(0, len(items), per_call):
        pipe.hset(keys.names(), mapping=dict(items[i : i + per_call]))
        queued += 1
    if items and pos:
        pipe.hset(keys.names_position(), mapping=dict(pos))
        queued += 1
    return queued


def behind(stored: Mapping[bytes, bytes], seen: Mapping[int, int]) -> bool:
    """Whether the names position hash read by ``queue(check=True)`` lacks writes this process saw land."""
    have = {int(p): int(o) for p, o in stored.items()}
    return any(have.get(p, -1) < o for p, o in seen.items())


def load(conn: psycopg.Connection, client: SyncClient, keys: Keys) -> int:
    """Copy every player's name from PostgreSQL (the canonical copy) into Redis; returns how many.
    Cost: the players, in pipelines of ``_FETCH`` rows."""
    count = 0
    with conn.cursor() as cur:
        cur.execute("SELECT player_id, display_name FROM players WHERE display_name IS NOT NULL")
        while rows := cur.fetchmany(_FETCH):
            pipe = client.pipeline(transaction=False)
            queue(pipe, keys, {str(p): str(n) for p, n in rows})
            pipe.execute()
            count += len(rows)
    return count
