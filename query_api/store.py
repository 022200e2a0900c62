"""Reads of one board-period: Redis through the read_*.lua scripts, PostgreSQL snapshots as the fallback.

Every live read is one EVALSHA that checks the active generation and computes the answer (ranks included)
atomically, so a read never mixes two generations. The script's keys are all declared and all in the
board's ``{board}`` slot (Redis Cluster): the store remembers each board's active generation, names that
generation's keys, and calls again if the script answers that another generation is now active (a flip).
Display names live in one shared hash: on a single node the script declares and reads it too (one round
trip); on a Redis Cluster it is in another slot, so names are read with an HMGET of their own, in
parallel with the script when the players are known up front (player, lookup), after it otherwise.
No active generation (Redis lost, rebuild under way) answers 503 with Retry-After rather than ranks from
a half-built board; so does every Redis or Redis Cluster failure (never 500). A period whose key is absent in
Redis, and that has ended, is looked up in PostgreSQL's closed periods and served from there
(``source: snapshot``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from leaderboard import ranking, scoring, timefmt
from leaderboard.aggregate import Rule
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.lua_scripts import script
from leaderboard.redis_client import FAILURES, AsyncClient
from leaderboard.shards import parts
from query_api.problems import Problem
from query_api.sharded import ShardedCalls
from query_api.snapshots import Closed, Snapshots

SCRIPTS = ("top", "player", "around", "lookup", "range", "stats", "periods", "version")
RETRY_AFTER_S = "5"
CALL_TIMEOUT_S = 3.0
"""Bound on one read's Redis work (a failover's retries included): past it, 503."""
_FLIP_ATTEMPTS = 3


def script_text(name: str) -> str:
    """A read script with the shared prelude (generation lookup, rank helpers) in front."""
    return script("read_common", f"read_{name}")


@dataclass(frozen=True, slots=True)
class Result:
    doc: dict[str, Any]
    snapshot: bool


def _name(raw: object) -> str | None:
    """A display name from a script reply (false/absent when unknown)."""
    return raw if isinstance(raw, str) else None


def _updated_at(raw: str | None) -> str | None:
    """The stats hash's last-write time (epoch ms, absent before the first write)."""
    return timefmt.utc_ms(int(raw)) if raw else None


def unavailable(exc: BaseException) -> Problem:
    """503 for any Redis failure: down, timed out, or a cluster slot without a reachable master."""
    text = str(exc) or f"no answer within {CALL_TIMEOUT_S:g} s"
    return Problem(
        503,
        "redis-unavailable",
        f"Redis unavailable ({type(exc).__name__}: {text})",
        headers={"Retry-After": RETRY_AFTER_S},
    )


def rebuilding(board: str) -> Problem:
    return Problem(
        503,
        "board-rebuilding",
        f"board {board!r} has no active generation: its Redis data is being rebuilt; retry shortly",
        headers={"Retry-After": RETRY_AFTER_S},
    )


def not_ranked(board: str, period: str, player_id: str) -> Problem:
    return Problem(
        404, "player-not-ranked", f"player {player_id!r} has no score on board {board!r} for {period}"
    )


def rows_of(res: dict[str, Any]) -> list[str]:
    """A script reply's ``rows`` (member, score, ...); cjson encodes an empty array as {}."""
    rows: list[str] = res["rows"] or []
    return rows


def entries(res: dict[str, Any], start: int, names: Sequence[object], rule: Rule) -> list[dict[str, Any]]:
    """Entry objects from a script reply's ``rows`` and ``first_rank``, with the rows' display names."""
    rows = rows_of(res)
    rank_keys = [int(float(s)) >> scoring.TIME_BITS for s in rows[1::2]]
    ranks = ranking.page_ranks(rank_keys, int(res["first_rank"]), start)
    value = rule.value_of_key
    return [
        {"rank": r, "player_id": m, "score": value(k), "display_name": _name(n)}
        for r, m, k, n in zip(ranks, rows[0::2], rank_keys, names, strict=True)
    ]


def _script_names(res: dict[str, Any]) -> list[object]:
    """Names a script read itself (false where unknown; cjson encodes an empty array as {})."""
    names: list[object] = res.get("names") or []
    return names


def _snap_entry(row: Sequence[Any]) -> dict[str, Any]:
    return {"rank": row[0], "player_id": row[1], "score": int(row[2]), "display_name": row[4]}


def span(board: Board, period: str) -> dict[str, str | None]:
    """starts_at, ends_at and closes_at (end + grace: when it may be closed) of a period; null for all_time.
    Clients show a countdown from them."""
    bounds = board.bounds(period)
    closes = board.closes_at(period)
    if bounds is None or closes is None:
        return {"starts_at": None, "ends_at": None, "closes_at": None}
    return {
        "starts_at": timefmt.utc(bounds[0]),
        "ends_at": timefmt.utc(bounds[1]),
        "closes_at": timefmt.utc(closes),
    }


def period_doc(board: Board, period: str) -> dict[str, str | None]:
    """A period as every listing shows it: its key and :func:`span`."""
    return {"period": period, **span(board, period)}


def _paged(
    doc: dict[str, Any], count: int, offset: int, limit: int, rows: list[Any], *, field: str = "total"
) -> dict[str, Any]:
    """Add paging fields; ``count`` is how many rows the query has in all (stored under ``field``)."""
    end = offset + len(rows)
    doc[field] = count
    doc.update(offset=offset, limit=limit, next_offset=end if rows and end < count else None, entries=rows)
    return doc


def _settled(board: str, res: dict[str, Any]) -> dict[str, Any]:
    """A read's reply, or the 503 it means: no active generation, a definition the process has not loaded
    yet, or a generation that kept flipping (``stale`` after every attempt)."""
    if res["s"] == "nometa":
        raise rebuilding(board)
    if res["s"] == "redefined":
        raise Problem(
            503,
            "board-rebuilding",
            f"board {board!r} switched to definition version {res['def']}; retry shortly",
            headers={"Retry-After": RETRY_AFTER_S},
        )
    if res["s"] == "stale":
        raise Problem(
            503,
            "board-rebuilding",
            f"board {board!r} changed generation {_FLIP_ATTEMPTS} times during one read; retry shortly",
            headers={"Retry-After": RETRY_AFTER_S},
        )
    return res


class Store:
    def __init__(self, client: AsyncClient, keys: Keys, snapshots: Snapshots) -> None:
        self._r = client
        self._keys = keys
        self._names = keys.names()
        self.snapshots = snapshots
        self._scripts = {name: client.register_script(script_text(name)) for name in SCRIPTS}
        self._gen: dict[str, str] = {}
        """board -> the generation last seen active (names the scripts' keys)."""
        self._names_in_script = not isinstance(client, AsyncRedisCluster)
        """One node: the scripts read names too. A cluster: the names hash is in another slot."""
        self._sharded = ShardedCalls(client, keys)

    def _script_keys(self, board: str, gen: str, period: str) -> list[str]:
        g = int(gen)
        k = self._keys
        out = [k.meta(board), k.board(board, g, period), k.stats(board, g, period), k.periods(board, g)]
        if self._names_in_script:
            out.append(self._names)
        return out

    async def _bounded(self, call: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                return await call
        except FAILURES as exc:
            raise unavailable(exc) from exc

    async def _call(self, name: str, b: Board, period: str, *args: str | int) -> dict[str, Any]:
        """Read script ``name``'s reply (query_api.sharded's for a board of several shards); raises the
        503s of a board without an active generation, redefined, or flipping throughout the read."""
        board = b.id
        if b.shards > 1:
            return _settled(board, await self._bounded(self._sharded.call(name, b, period, *args)))
        gen = self._gen.get(board)
        if gen is None:
            active = await self._bounded(self._r.hget(self._keys.meta(board), "active"))
            if active is None:
                raise rebuilding(board)
            gen = active.decode()
        for _ in range(_FLIP_ATTEMPTS):
            keys = self._script_keys(board, gen, period)
            want = gen if b.version is None else f"{gen}:{b.version}"
            raw = await self._bounded(self._scripts[name](keys=keys, args=[want, *args]))
            res: dict[str, Any] = orjson.loads(raw)
            if res["s"] == "nometa":
                self._gen.pop(board, None)
            if res["s"] != "stale":
                self._gen[board] = gen
                return _settled(board, res)
            gen = str(res["gen"])
        return _settled(board, {"s": "stale"})

    async def _names_of(self, members: Sequence[str]) -> list[object]:
        """Display names of ``members`` (None where unknown): one HMGET on the shared names hash."""
        if not members:
            return []
        raw: list[bytes | None] = await self._bounded(self._r.hmget(self._names, list(members)))
        return [v.decode() if v is not None else None for v in raw]

    async def _with_names(
        self, call: Awaitable[dict[str, Any]], members: Sequence[str], board: Board
    ) -> tuple[dict[str, Any], list[object]]:
        """A script call and the names of players known up front (on a cluster or a sharded board:
        concurrently)."""
        if self._names_in_script and board.shards == 1:
            res = await call
            return res, _script_names(res)
        names = asyncio.ensure_future(self._names_of(members))
        try:
            res = await call
        except BaseException:
            names.cancel()
            raise
        return res, await names

    async def _rows_named(self, res: dict[str, Any]) -> list[object]:
        """The names of a reply's rows: from the reply (one node), else one HMGET (a cluster)."""
        if "names" in res:
            return _script_names(res)
        return await self._names_of(rows_of(res)[0::2]) if res["s"] == "ok" else []

    async def _closed(self, board: Board, period: str) -> bool:
        """Whether an absent period is a closed one with a snapshot (only periods that have ended can be)."""
        span = board.bounds(period)
        if span is None or span[1] > datetime.now(UTC):
            return False
        return await self.snapshots.closed(board.id, period) is not None

    async def _closed_row(self, board: Board, period: str, player_id: str) -> tuple[tuple[Any, ...], Closed]:
        """The player's snapshot row of a closed period, and the period; 404 when the player is not in it."""
        row = await self.snapshots.player(board.id, period, player_id)
        closed = await self.snapshots.closed(board.id, period)
        if row is None or closed is None:
            raise not_ranked(board.id, period, player_id)
        return row, closed

    def _head(self, board: Board, period: str, snapshot: bool) -> dict[str, Any]:
        return {
            "board": board.id,
            "period": period,
            **span(board, period),
            "source": "snapshot" if snapshot else "live",
        }

    async def top(self, board: Board, period: str, offset: int, limit: int) -> Result:
        res = await self._call("top", board, period, offset, limit)
        if res["s"] == "ok":
            doc = self._head(board, period, False)
            rows = entries(res, offset, await self._rows_named(res), board.rule)
            return Result(_paged(doc, res["total"], offset, limit, rows), False)
        if await self._closed(board, period):
            closed = await self.snapshots.closed(board.id, period)
            assert closed is not None
            snap = [_snap_entry(r) for r in await self.snapshots.page(board.id, period, offset, limit)]
            return Result(_paged(self._head(board, period, True), closed.players, offset, limit, snap), True)
        return Result(_paged(self._head(board, period, False), 0, offset, limit, []), False)

    async def player(self, board: Board, period: str, player_id: str) -> Result:
        res, names = await self._with_names(
            self._call("player", board, period, player_id), [player_id], board
        )
        if res["s"] == "ok":
            total, packed = int(res["total"]), int(float(res["score"]))
            points, tb = board.rule.unpack(packed)
            doc = self._head(board, period, False)
            doc.update(
                player_id=player_id,
                display_name=_name(names[0]),
                rank=int(res["rank"]),
                score=points,
                percentile=ranking.percentile(int(res["below"]), total),
                total=total,
                reached_at=timefmt.utc(scoring.reached_at(tb, *board.origin(period))),
            )
            return Result(doc, False)
        if res["s"] == "absent" and await self._closed(board, period):
            row, closed = await self._closed_row(board, period, player_id)
            doc = self._head(board, period, True)
            doc.update(
                player_id=player_id,
                display_name=row[4],
                rank=row[0],
                score=int(row[2]),
                percentile=ranking.percentile(int(row[5]), closed.players),
                total=closed.players,
                reached_at=timefmt.utc(row[3]),
            )
            return Result(doc, True)
        raise not_ranked(board.id, period, player_id)

    async def around(self, board: Board, period: str, player_id: str, radius: int) -> Result:
        res = await self._call("around", board, period, player_id, radius)
        if res["s"] == "ok":
            total, first, index = int(res["total"]), int(res["first"]), int(res["index"])
            doc = self._head(board, period, False)
            doc.update(player_id=player_id, radius=radius, total=total, player_index=index - first)
            doc["entries"] = entries(res, first, await self._rows_named(res), board.rule)
            return Result(doc, False)
        if res["s"] == "absent" and await self._closed(board, period):
            me, closed = await self._closed_row(board, period, player_id)
            index = int(me[6])
            lo, hi = ranking.window(index, closed.players, radius)
            doc = self._head(board, period, True)
            doc.update(player_id=player_id, radius=radius, total=closed.players, player_index=index - lo)
            doc["entries"] = [
                _snap_entry(r) for r in await self.snapshots.page(board.id, period, lo, hi - lo + 1)
            ]
            return Result(doc, True)
        raise not_ranked(board.id, period, player_id)

    async def lookup(self, board: Board, period: str, player_ids: list[str]) -> Result:
        ids = list(dict.fromkeys(player_ids))
        res, names = await self._with_names(self._call("lookup", board, period, *ids), ids, board)
        doc = self._head(board, period, False)
        if res["s"] == "ok":
            found: list[tuple[float, dict[str, Any]]] = []
            absent: list[str] = []
            for pid, score, rank, name in zip(ids, res["scores"], res["ranks"], names, strict=True):
                if not isinstance(score, str):
                    absent.append(pid)
                    continue
                packed = int(float(score))
                entry = {
                    "rank": int(rank),
                    "player_id": pid,
                    "score": board.rule.value_of_key(packed >> scoring.TIME_BITS),
                    "display_name": _name(name),
                }
                found.append((-packed, entry))
            found.sort(key=lambda item: (item[0], item[1]["player_id"]))
            doc.update(total=int(res["total"]), entries=[e for _, e in found], absent=absent)
            return Result(doc, False)
        if await self._closed(board, period):
            closed = await self.snapshots.closed(board.id, period)
            assert closed is not None
            rows = await self.snapshots.lookup(board.id, period, ids)
            present = {r[1] for r in rows}
            doc = self._head(board, period, True)
            doc.update(
                total=closed.players,
                entries=[_snap_entry(r) for r in rows],
                absent=[pid for pid in ids if pid not in present],
            )
            return Result(doc, True)
        doc.update(total=0, entries=[], absent=ids)
        return Result(doc, False)

    async def score_range(
        self, board: Board, period: str, bounds: tuple[int, int], offset: int, limit: int
    ) -> Result:
        """Players with ``bounds[0] <= value <= bounds[1]``, in board order."""
        low, high = bounds
        key_low, key_high = board.rule.key_range(low, high)
        lo_packed = key_low * scoring.TIME_SPAN
        hi_packed = (key_high + 1) * scoring.TIME_SPAN - 1
        res = await self._call("range", board, period, lo_packed, hi_packed, offset, limit)
        if res["s"] == "ok":
            doc = self._head(board, period, False)
            doc.update(min_score=low, max_score=high, total=int(res["total"]))
            rows = entries(res, int(res["first"]), await self._rows_named(res), board.rule)
            return Result(_paged(doc, int(res["matching"]), offset, limit, rows, field="matching"), False)
        if await self._closed(board, period):
            closed = await self.snapshots.closed(board.id, period)
            assert closed is not None
            matching, snap_rows = await self.snapshots.score_range(board.id, period, bounds, offset, limit)
            doc = self._head(board, period, True)
            doc.update(min_score=low, max_score=high, total=closed.players)
            snap = [_snap_entry(r) for r in snap_rows]
            return Result(_paged(doc, matching, offset, limit, snap, field="matching"), True)
        doc = self._head(board, period, False)
        doc.update(min_score=low, max_score=high, total=0)
        return Result(_paged(doc, 0, offset, limit, [], field="matching"), False)

    async def stats(self, board: Board, period: str) -> Result:
        res = await self._call("stats", board, period)
        doc = self._head(board, period, False)
        if res["s"] == "ok":
            doc.update(
                players=int(res["total"]),
                top_score=board.rule.value_of_key(int(float(res["top"])) >> scoring.TIME_BITS),
                events=int(res["events"]),
                updated_at=_updated_at(res["updated"]),
            )
            return Result(doc, False)
        if await self._closed(board, period):
            closed = await self.snapshots.closed(board.id, period)
            assert closed is not None
            doc = self._head(board, period, True)
            doc.update(
                players=closed.players,
                top_score=await self.snapshots.top_score(board.id, period),
                events=None,
                updated_at=timefmt.utc(closed.closed_at),
            )
            return Result(doc, True)
        doc.update(players=0, top_score=None, events=0, updated_at=_updated_at(res["updated"]))
        return Result(doc, False)

    async def live_periods(self, board: Board) -> list[str]:
        res = await self._call("periods", board, "")
        return sorted(res["keys"] or [])

    async def version(self, board: Board, period: str) -> tuple[str, str]:
        """(generation, updated_ms) of a board-period: changes whenever its standings may have changed."""
        res = await self._call("version", board, period)
        return str(res["gen"]), str(res["updated"])

    async def missing_active(self, boards: Sequence[Board]) -> list[str]:
        """Boards with a meta hash (any shard's, for a sharded board) without an active generation (raises
        on Redis errors)."""
        pipe = self._r.pipeline(transaction=False)
        stored = [(b.id, part.id) for b in boards for part in parts(b)]
        for _, part_id in stored:
            pipe.hget(self._keys.meta(part_id), "active")
        values = await pipe.execute()
        return list(dict.fromkeys(b for (b, _), v in zip(stored, values, strict=True) if v is None))
