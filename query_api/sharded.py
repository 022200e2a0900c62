"""The read scripts' replies for a sharded board (leaderboard.shards), from leaderboard.shard_reads' plans.

query_api.store calls a board's read script, or, for a board of several shards, :meth:`ShardedCalls.call`
with the same name and arguments, and gets the same reply (``s``: ok, absent, missing, nometa, redefined, and
the script's fields), so every route, the snapshot fallback and the error mapping are shared. The shards'
active generations are remembered per board; each round of a read re-reads them (leaderboard.shard_reads.
fenced) and a flip mid-read reads again. Names are never in these replies: the store reads them with an
HMGET, as on a cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from leaderboard import shard_reads as plans
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.redis_client import AsyncClient
from leaderboard.shards import Row, parts, shard_of

_FLIP_ATTEMPTS = 3


def _flat(rows: list[Row]) -> list[str]:
    """Rows as a script gives them: member, packed score (an integer's text), ..."""
    return [x for m, s in rows for x in (m, str(int(s)))]


def _absent(updated: str = "") -> dict[str, Any]:
    return {"s": "absent", "updated": updated}


@dataclass(frozen=True)
class Layout:
    """A sharded board-period at the shards' generations: its keys, in shard order."""

    board: Board
    zs: list[str]
    stat_keys: list[str]
    sets: list[str]


Reply = plans.Plan[dict[str, Any]]


def _top(at: Layout, offset: int, limit: int) -> Reply:
    page = yield from plans.top(at.zs, int(offset), int(limit))
    if not page.total:
        return _absent()
    return {"s": "ok", "total": page.total, "first_rank": page.first_rank, "rows": _flat(page.rows)}


def _known(got: plans.Known) -> dict[str, Any]:
    return {"s": "missing", "total": got.total} if got.total else _absent()


def _player(at: Layout, player_id: str) -> Reply:
    got = yield from plans.player(at.zs, shard_of(player_id, at.board.shards), player_id)
    if isinstance(got, plans.Known):
        return _known(got)
    return {"s": "ok", "total": got.total, "score": str(int(got.score)), "rank": got.rank, "below": got.below}


def _around(at: Layout, player_id: str, radius: int) -> Reply:
    got = yield from plans.around(at.zs, shard_of(player_id, at.board.shards), player_id, int(radius))
    if isinstance(got, plans.Known):
        return _known(got)
    return {
        "s": "ok",
        "total": got.total,
        "first_rank": got.first_rank,
        "first": got.first,
        "index": got.index,
        "rows": _flat(got.rows),
    }


def _lookup(at: Layout, *ids: str) -> Reply:
    count, found = yield from plans.lookup(at.zs, at.board.shards, [str(i) for i in ids])
    if not count:
        return _absent()
    return {
        "s": "ok",
        "total": count,
        "scores": [False if s is None else str(int(s)) for s, _ in found],
        "ranks": [r for _, r in found],
    }


def _range(at: Layout, lo: int, hi: int, offset: int, limit: int) -> Reply:
    got = yield from plans.score_range(at.zs, float(lo), float(hi), int(offset), int(limit))
    if not got.total:
        return _absent()
    return {
        "s": "ok",
        "total": got.total,
        "matching": got.matching,
        "first_rank": got.first_rank,
        "first": got.first,
        "rows": _flat(got.rows),
    }


def _stats(at: Layout) -> Reply:
    got = yield from plans.stats(at.zs, at.stat_keys)
    if not got.total or got.top is None:
        return _absent(got.updated_ms)
    return {
        "s": "ok",
        "total": got.total,
        "top": str(int(got.top)),
        "events": str(got.events),
        "updated": got.updated_ms,
    }


def _periods(at: Layout) -> Reply:
    return {"s": "ok", "keys": (yield from plans.periods(at.sets))}


def _version(at: Layout) -> Reply:
    return {"s": "ok", "updated": (yield from plans.updated(at.stat_keys))}


READS: dict[str, Callable[..., Reply]] = {
    "top": _top,
    "player": _player,
    "around": _around,
    "lookup": _lookup,
    "range": _range,
    "stats": _stats,
    "periods": _periods,
    "version": _version,
}
"""Read script name -> the plan answering it, called with the script's ARGV after the generation."""


class ShardedCalls:
    """Read-script replies for sharded boards, over one asyncio client."""

    def __init__(self, client: AsyncClient, keys: Keys) -> None:
        self._r = client
        self._keys = keys
        self._gens: dict[str, list[int]] = {}
        """board -> each shard's generation last seen active."""

    async def _read_gens(self, metas: list[str]) -> tuple[list[int | None], list[str | None]]:
        pipe = self._r.pipeline(transaction=False)
        for m in metas:
            pipe.hmget(m, ["active", "def"])
        out = await pipe.execute()
        return (
            [None if a is None else int(a) for a, _ in out],
            [None if d is None else d.decode() for _, d in out],
        )

    async def call(self, name: str, board: Board, period: str, *args: Any) -> dict[str, Any]:
        """What read script ``name`` would answer on one sorted set holding all the board's shards, plus
        ``gen`` (the shards' generations, dot-joined: it changes with any shard's flip)."""
        k = self._keys
        shards = parts(board)
        metas = [k.meta(p.id) for p in shards]
        gens: list[int | None] | None = list(self._gens.get(board.id, [])) or None
        defs: list[str | None] = []
        for _ in range(_FLIP_ATTEMPTS):
            if gens is None:
                gens, defs = await self._read_gens(metas)
            known = [g for g in gens if g is not None]
            if len(known) < len(gens):
                self._gens.pop(board.id, None)
                return {"s": "nometa"}
            moved = plans.redefined(defs, board.version)
            if moved is not None:
                return {"s": "redefined", "def": moved}
            at = Layout(
                board,
                [k.board(p.id, g, period) for p, g in zip(shards, known, strict=True)],
                [k.stats(p.id, g, period) for p, g in zip(shards, known, strict=True)],
                [k.periods(p.id, g) for p, g in zip(shards, known, strict=True)],
            )
            plan = plans.fenced(READS[name](at, *args), metas, known, board.version)
            try:
                res = await plans.run_async(self._r, plan)
            except plans.Changed as changed:
                gens, defs = changed.gens, changed.defs
                self._gens.pop(board.id, None)
                continue
            self._gens[board.id] = known
            res["gen"] = ".".join(str(g) for g in known)
            return res
        return {"s": "stale"}
