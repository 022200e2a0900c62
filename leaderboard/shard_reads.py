"""Reads of a sharded board-period (leaderboard.shards) that answer exactly what one sorted set would.

Each shard is a sorted set on its own slot, so no script can see two of them: the combination happens here,
in a few pipelined rounds (one pipeline per round; a cluster client sends each node its share at once):
- top-k: every shard's first offset + k rows, merged (leaderboard.shards.merged);
- a rank: 1 + the sum of the shards' ZCOUNTs of strictly more points (competition rank, as read_common.lua);
- a position (around-me): the sum of each shard's count of rows before the player in board order (higher
  packed score, then higher member: ZRANGE REV), then each shard's rows next to that boundary, merged;
- a score range: the sum of ZCOUNTs, every shard's first offset + limit rows of the range, merged.
Cost per read: a round trip per round, O(shards * log n) Redis work, O(shards * (offset + k)) rows for a
page. Generations: each shard's active one, read by :meth:`ShardedReads.refresh` (a flip mid-read is the
API's concern: its scripts answer ``stale``; these reads are for callers that hold the board still).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from leaderboard import ranking, scoring
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.redis_client import SyncClient
from leaderboard.shards import Row, before, merged, parts, shard_of


@dataclass(frozen=True)
class Player:
    score: float
    rank: int
    below: int
    """Players with strictly fewer points (leaderboard.ranking.percentile)."""
    total: int


@dataclass(frozen=True)
class Page:
    total: int
    first_rank: int
    first: int
    """0-based position of the first row."""
    rows: list[Row]


@dataclass(frozen=True)
class Window:
    total: int
    first_rank: int
    first: int
    index: int
    """0-based position of the player."""
    rows: list[Row]


@dataclass(frozen=True)
class Matching:
    total: int
    matching: int
    first_rank: int
    first: int
    rows: list[Row]


def _rows(raw: Any) -> list[Row]:
    return [(m.decode() if isinstance(m, bytes) else str(m), float(s)) for m, s in raw]


def _num(x: float) -> str:
    return str(int(x))


class ShardedReads:
    """Reads of one board's period keys across its shards (a board of one shard works too)."""

    def __init__(self, client: SyncClient, keys: Keys, board: Board) -> None:
        self._r = client
        self._keys = keys
        self._board = board
        self._parts = parts(board)
        self._gens: list[int] = []
        self.refresh()

    def refresh(self) -> None:
        """Read every shard's active generation (raises if a shard has none)."""
        pipe = self._r.pipeline(transaction=False)
        for part in self._parts:
            pipe.hget(self._keys.meta(part.id), "active")
        got = pipe.execute()
        missing = [p.id for p, g in zip(self._parts, got, strict=True) if g is None]
        if missing:
            raise LookupError(f"no active generation for {missing}")
        self._gens = [int(g) for g in got]

    def _z(self, period: str) -> list[str]:
        return [self._keys.board(p.id, g, period) for p, g in zip(self._parts, self._gens, strict=True)]

    def _run(self, calls: Sequence[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        pipe = self._r.pipeline(transaction=False)
        for name, args in calls:
            getattr(pipe, name)(*args)
        return cast("list[Any]", pipe.execute())

    def _shard(self, player: str) -> int:
        return shard_of(player, self._board.shards)

    def _rank_calls(self, zs: list[str], packed: float) -> list[tuple[str, tuple[Any, ...]]]:
        higher = scoring.higher_than(scoring.points_of(packed))
        return [("zcount", (z, str(higher), "+inf")) for z in zs]

    def total(self, period: str) -> int:
        return sum(int(n) for n in self._run([("zcard", (z,)) for z in self._z(period)]))

    def rank_of(self, period: str, packed: float) -> int:
        """Competition rank of a packed score: 1 + players with strictly more points, over all shards."""
        return 1 + sum(int(n) for n in self._run(self._rank_calls(self._z(period), packed)))

    def top(self, period: str, offset: int, limit: int) -> Page:
        zs = self._z(period)
        out = self._run(
            [("zcard", (z,)) for z in zs] + [("zrange", (z, 0, offset + limit - 1, True, True)) for z in zs]
        )
        total = sum(int(n) for n in out[: len(zs)])
        rows = merged([_rows(r) for r in out[len(zs) :]], offset, limit)
        if not rows:
            first_rank = 0
        elif offset == 0:  # nobody has more points than the top row: no second round
            first_rank = 1
        else:
            first_rank = self.rank_of(period, rows[0][1])
        return Page(total, first_rank, offset, rows)

    def player(self, period: str, player: str) -> Player | None:
        zs = self._z(period)
        score = self._r.zscore(zs[self._shard(player)], player)
        if score is None:
            return None
        pts = scoring.points_of(score)
        out = self._run(
            [("zcard", (z,)) for z in zs]
            + [("zcount", (z, str(scoring.higher_than(pts)), "+inf")) for z in zs]
            + [("zcount", (z, str(pts * scoring.TIME_SPAN), "+inf")) for z in zs]
        )
        n = len(zs)
        total = sum(int(x) for x in out[:n])
        above = sum(int(x) for x in out[n : 2 * n])
        atleast = sum(int(x) for x in out[2 * n :])
        return Player(float(score), above + 1, total - atleast, total)

    def lookup(self, period: str, players: Sequence[str]) -> list[tuple[float | None, int]]:
        """(packed score or None, rank or 0) per player, in the order asked."""
        zs = self._z(period)
        scores = self._run([("zscore", (zs[self._shard(p)], p)) for p in players])
        known = [float(s) for s in scores if s is not None]
        counts = iter(self._run([c for s in known for c in self._rank_calls(zs, s)]))
        out: list[tuple[float | None, int]] = []
        for s in scores:
            if s is None:
                out.append((None, 0))
            else:
                out.append((float(s), 1 + sum(int(next(counts)) for _ in zs)))
        return out

    def _positions(self, zs: list[str], own: int, player: str, score: float) -> list[int]:
        """Per shard, how many of its rows come before the player in board order (the player's own shard:
        its ZREVRANK)."""
        calls: list[tuple[str, tuple[Any, ...]]] = []
        for i, z in enumerate(zs):
            if i == own:
                calls.append(("zrevrank", (z, player)))
            else:
                calls += [("zcount", (z, f"({_num(score)}", "+inf")), ("zrangebyscore", (z, score, score))]
        out = iter(self._run(calls))
        local: list[int] = []
        for i in range(len(zs)):
            if i == own:
                local.append(int(next(out)))
            else:
                higher = int(next(out))
                ties = [m.decode() for m in next(out)]
                local.append(higher + sum(1 for m in ties if m > player))
        return local

    def around(self, period: str, player: str, radius: int) -> Window | None:
        zs = self._z(period)
        own = self._shard(player)
        first_round = self._run([("zscore", (zs[own], player))] + [("zcard", (z,)) for z in zs])
        if first_round[0] is None:
            return None
        score = float(first_round[0])
        total = sum(int(n) for n in first_round[1:])
        local = self._positions(zs, own, player, score)
        index = sum(local)
        first, last = ranking.window(index, total, radius)
        up, down = index - first, last - index
        # Index ranges only where non-empty: ZRANGE 0 -1 would be the whole set.
        calls: list[tuple[str, tuple[Any, ...]]] = []
        sides: list[tuple[bool, int]] = []
        for i, z in enumerate(zs):
            start = local[i] + (1 if i == own else 0)
            if up > 0 and local[i] > 0:
                calls.append(("zrange", (z, max(0, local[i] - up), local[i] - 1, True, True)))
                sides.append((True, i))
            if down > 0:
                calls.append(("zrange", (z, start, start + down - 1, True, True)))
                sides.append((False, i))
        above: list[list[Row]] = []
        below: list[list[Row]] = []
        for (is_above, _), raw in zip(sides, self._run(calls) if calls else [], strict=True):
            (above if is_above else below).append(_rows(raw))
        rows = [*before(above, up), (player, score), *merged(below, 0, down)]
        return Window(total, self.rank_of(period, rows[0][1]), first, index, rows)

    def range(self, period: str, lo: float, hi: float, offset: int, limit: int) -> Matching:
        """Rows with packed scores in [lo, hi], descending, from ``offset``: as read_range.lua."""
        zs = self._z(period)
        n = len(zs)
        out = self._run(
            [("zcard", (z,)) for z in zs]
            + [("zcount", (z, _num(lo), _num(hi))) for z in zs]
            + [("zrevrangebyscore", (z, _num(hi), _num(lo), 0, offset + limit, True)) for z in zs]
        )
        total = sum(int(x) for x in out[:n])
        matching = sum(int(x) for x in out[n : 2 * n])
        rows = merged([_rows(r) for r in out[2 * n :]], offset, limit)
        if not rows:
            return Matching(total, matching, 0, 0, rows)
        top = rows[0][1]
        ahead = self._run([("zcount", (z, f"({_num(top)}", "+inf")) for z in zs])
        return Matching(total, matching, self.rank_of(period, top), sum(int(x) for x in ahead), rows)
