"""Moderation on the live Redis boards: recompute the players an action touches, from their own events.

Cost: the affected players' stored events (``events_player``) and the board's live period keys, never the
event log. Values are absolute (ZADD of the recomputed score, ZREM of a player with nothing left), so
repeating a recompute is harmless, and ``recompute.lua`` refuses it when a live apply moved a watermark
between the watermark read and the write (then it is read again): any process may run it while the live
consumers apply batches, without double-counting or losing an event.

What counts is decided by :mod:`leaderboard.moderation.view` (the same predicate as every other path).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
import psycopg

from consumers.plan import EVENT_COLUMNS, Canonical, canonical_rows, entries, fold, latest_mark, targets
from leaderboard import shards
from leaderboard.aggregate import LAST_US
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.lua_scripts import script
from leaderboard.moderation import store
from leaderboard.moderation.view import View
from leaderboard.redis_client import SyncClient

log = logging.getLogger(__name__)

PLAYERS_PER_CALL = 500
"""Players per recompute call: bounds the script's time and its Lua stack (ZADD arguments)."""
_MOVED_RETRIES = 50
_MOVED_WAIT_S = 0.02


class Moved(RuntimeError):
    """Watermarks kept moving under a recompute (a hot player on a busy partition): try again later."""


def player_events(conn: psycopg.Connection, players: Sequence[str]) -> list[Canonical]:
    """Every stored event of ``players`` (``events_player``: cost in their events)."""
    rows = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE player_id = ANY(%s)", (list(players),))
    return canonical_rows(rows.fetchall())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def writing(client: SyncClient, keys: Keys, board: str) -> list[int]:
    raw = client.hget(keys.meta(board), "writing")
    return [] if raw is None else [int(g) for g in _text(raw).split(",") if g]


@dataclass(frozen=True, slots=True)
class Standings:
    """A period's recomputed players: Redis scores and, on a ``last`` board, the marks of the events shown."""

    scores: dict[str, int]
    marks: dict[str, str]


def standings(
    board: Board, events: Sequence[Canonical], v: View, marks: dict[str, dict[int, int]]
) -> dict[str, Standings]:
    """Pure: period -> the standings of the events that count on ``board`` under ``v`` and that the
    period's watermarks (``marks``: period -> partition -> offset) already cover, folded and packed by the
    board's rule (consumers.plan.fold and entries: leaderboard.aggregate.Rule)."""
    by_period: dict[str, list[Canonical]] = {}
    for r in events:
        if v.counts(r.event, board.id):
            for period, _, _ in targets(board, r.event):
                if r.offset <= marks.get(period, {}).get(r.partition, -1):
                    by_period.setdefault(period, []).append(r)
    last = board.aggregation == "last"
    out: dict[str, Standings] = {}
    for period in marks:
        slot = fold(board, by_period.get(period, []), split_partitions=False).get((period, -1))
        scores: dict[str, int] = {}
        shown: dict[str, str] = {}
        for player, packed, standing in entries(board, period, {} if slot is None else slot.players):
            scores[player] = packed
            if last:
                shown[player] = latest_mark(standing[LAST_US:])
        out[period] = Standings(scores, shown)
    return out


class Recomputer:
    """Recomputes players on every generation the live consumers write (and on a given one)."""

    def __init__(self, client: SyncClient, keys: Keys, boards: Sequence[Board]) -> None:
        self._r = client
        self._keys = keys
        self._boards = tuple(boards)
        self._script = client.register_script(script("recompute"))

    def players(
        self,
        conn: psycopg.Connection,
        players: Iterable[str],
        v: View,
        *,
        gens: dict[str, list[int]] | None = None,
    ) -> int:
        """Set ``players`` on every board to what their counted events give; the updates made.

        ``gens``: board -> generations to write (default: the board's ``writing`` generations).
        """
        todo = sorted(set(players))
        updates = 0
        for i in range(0, len(todo), PLAYERS_PER_CALL):
            chunk = todo[i : i + PLAYERS_PER_CALL]
            for board in self._boards:
                # A sharded board: each shard its own players (the shards share generation numbers).
                for shard, part in enumerate(shards.parts(board)):
                    mine = [p for p in chunk if shards.shard_of(p, board.shards) == shard]
                    if not mine:
                        continue
                    targets_ = (
                        writing(self._r, self._keys, part.id) if gens is None else gens.get(board.id, [])
                    )
                    for gen in targets_:
                        updates += self._one(conn, board, part.id, gen, mine, v)
        return updates

    def _one(  # noqa: PLR0917 - one stored board's generation
        self, conn: psycopg.Connection, board: Board, part: str, gen: int, players: list[str], v: View
    ) -> int:
        """Recompute ``players`` on generation ``gen`` of ``part``: the board's id, or its shard's."""
        keys = self._keys
        closed = {_text(p) for p in self._r.smembers(keys.closed(board.id))}
        for _ in range(_MOVED_RETRIES):
            # Closed periods follow their stored standings (consumers.corrections), not the live state.
            periods = sorted(
                p for p in (_text(x) for x in self._r.smembers(keys.periods(part, gen))) if p not in closed
            )
            pipe = self._r.pipeline(transaction=False)
            pipe.hgetall(keys.floor(part, gen))
            for period in periods:
                pipe.hgetall(keys.watermark(part, gen, period))
            raw = pipe.execute()
            floor = {int(k): int(x) for k, x in raw[0].items()}
            marks: dict[str, dict[int, int]] = {}
            read: dict[str, dict[int, int]] = {}
            for period, wm in zip(periods, raw[1:], strict=True):
                read[period] = {int(k): int(x) for k, x in wm.items()}
                have = read[period]
                marks[period] = {p: max(have.get(p, -1), floor.get(p, -1)) for p in set(have) | set(floor)}
            events = player_events(conn, players)  # after the marks: see recompute.lua
            parts = sorted({r.partition for r in events})
            scores = standings(board, events, v, marks)
            body = {
                "floor": {str(p): str(floor[p]) if p in floor else "" for p in parts},
                "last": board.aggregation == "last",
                "periods": [
                    {
                        "p": period,
                        "wm": {str(p): str(read[period][p]) if p in read[period] else "" for p in parts},
                        "set": [x for p, s in scores[period].scores.items() for x in (str(s), p)],
                        "lt": [x for p, m in scores[period].marks.items() for x in (p, m)],
                        "rem": [p for p in players if p not in scores[period].scores],
                    }
                    for period in periods
                ],
            }
            declared = [
                keys.meta(part),
                *keys.generation(part, gen, periods, latest=board.aggregation == "last"),
            ]
            res = self._script(keys=declared, args=[keys.base(part), str(gen), orjson.dumps(body)])
            if res[0] == b"ok":
                return int(res[1])
            if res[0] == b"gone":
                return 0
            time.sleep(_MOVED_WAIT_S)
        raise Moved(f"board {board.id}: watermarks kept moving while recomputing {len(players)} player(s)")

    def forget(self, ids: Iterable[str]) -> None:
        """Drop erased ids from every live key of every board and from the names hash."""
        gone = sorted(set(ids))
        if not gone:
            return
        pipe = self._r.pipeline(transaction=False)
        for board in self._boards:
            for part in shards.parts(board):
                for gen in writing(self._r, self._keys, part.id):
                    for period in self._r.smembers(self._keys.periods(part.id, gen)):
                        pipe.zrem(self._keys.board(part.id, gen, _text(period)), *gone)
                        if board.aggregation == "last":
                            pipe.hdel(self._keys.latest(part.id, gen, _text(period)), *gone)
        pipe.hdel(self._keys.names(), *gone)
        pipe.execute()


def replace_closed(client: SyncClient, keys: Keys, board: Board, period: str, scores: dict[str, int]) -> None:
    """A corrected closed period's Redis copy (if still there) becomes its stored standings (each shard's
    players on their shard)."""
    for shard, part in enumerate(shards.parts(board)):
        mine = {p: s for p, s in scores.items() if shards.shard_of(p, board.shards) == shard}
        for gen in writing(client, keys, part.id):
            zkey = keys.board(part.id, gen, period)
            if not client.exists(zkey):
                continue
            ttl = client.pttl(zkey)
            pipe = client.pipeline(transaction=True)
            pipe.delete(zkey)
            if mine:
                pipe.zadd(zkey, mine)
                if int(ttl) > 0:
                    pipe.pexpire(zkey, int(ttl))
            pipe.execute()


def catch_up(
    conn: psycopg.Connection,
    recomputer: Recomputer,
    after: int,
    v: View,
    gens: dict[str, list[int]] | None = None,
) -> store.Affected | None:
    """Apply to Redis every action with seq in (``after``, ``v.seq``]: recompute their players, drop
    erased ids. Returns what it applied (None: nothing new); the caller records ``v.seq``."""
    if v.seq <= after:
        return None
    affected = store.affected_players(conn, after, v.seq)
    started = time.monotonic()
    updates = recomputer.players(conn, affected.players, v, gens=gens)
    recomputer.forget(affected.redis_ids)
    log.info(
        "moderation applied to Redis",
        extra={
            "after": after,
            "upto": v.seq,
            "players": len(affected.players),
            "updates": updates,
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return affected


def sync(conn: psycopg.Connection, recomputer: Recomputer, current: View | None) -> View:
    """The live consumer's step: when a newer action exists than ``current`` reflects (one indexed
    ``max(seq)``), load the view, apply the new actions to every board's live generations, forget the
    erased ids Redis held (their last PostgreSQL rows go) and record the seq Redis reflects. ``current``
    None (a member starting): from the seq Redis last reflected (``moderation_applied``)."""
    if current is not None and store.last_seq(conn) <= current.seq:
        return current
    fresh = store.load_view(conn)
    after = store.applied_seq(conn) if current is None else current.seq
    done = catch_up(conn, recomputer, after, fresh)
    if done is not None:
        store.erased_from_redis(conn, done.redis_ids)  # gone from every board's live keys and the names
        store.mark_applied(conn, fresh.seq)
    return fresh
