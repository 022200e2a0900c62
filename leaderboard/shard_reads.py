"""Reads of a sharded board-period (leaderboard.shards) that answer exactly what one sorted set would.

Each shard is a sorted set on its own slot, so no script can see two of them: the combination happens here,
in a few pipelined rounds (one pipeline per round; a cluster client sends each node its share at once):
- top-k: every shard's first offset + k rows, merged (leaderboard.shards.merged);
- a rank: 1 + the sum of the shards' ZCOUNTs of strictly more points (competition rank, as read_common.lua);
- a position (around-me): the sum of each shard's count of rows before the player in board order (higher
  packed score, then higher member: ZRANGE REV), then each shard's rows next to that boundary, merged;
- a score range: the sum of ZCOUNTs, every shard's first offset + limit rows of the range, merged.
Cost per read: a round trip per round, O(shards * log n) Redis work, O(shards * (offset + k)) rows for a
page.

The reads are written once, as plans without I/O (generators that yield each round's commands and receive
their replies), and run by a sync driver (:func:`run`, :class:`ShardedReads`) or an async one
(:func:`run_async`, the read API). :func:`fenced` makes a plan check every shard's active generation
after its commands in each round, so a read never mixes generations (a flip drops the old keys only after
meta.active moved, and a pipeline runs a node's commands in order).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from leaderboard import ranking, scoring
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.redis_client import AsyncClient, SyncClient
from leaderboard.shards import Row, before, merged, parts, shard_of

T = TypeVar("T")
Call = tuple[str, tuple[Any, ...]]
Plan = Generator[list[Call], list[Any], T]
"""Yields one round's commands (method name, arguments), receives their replies, returns the answer."""


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


@dataclass(frozen=True)
class Known:
    """A player's place when the player is not on the board: the board's size (0: no board at all)."""

    total: int


class Changed(Exception):
    """A shard's active generation is not the one the plan read (a flip): read again with ``gens``."""

    def __init__(self, gens: list[int | None], defs: list[str | None]) -> None:
        super().__init__("a shard's active generation changed during the read")
        self.gens = gens
        self.defs = defs


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _rows(raw: Any) -> list[Row]:
    return [(_text(m), float(s)) for m, s in raw]


def _num(x: float) -> str:
    return str(int(x))


def run(client: SyncClient, plan: Plan[T]) -> T:
    """Run a plan: one pipeline per round."""
    calls = next(plan)
    while True:
        pipe = client.pipeline(transaction=False)
        for name, args in calls:
            getattr(pipe, name)(*args)
        try:
            calls = plan.send(cast("list[Any]", pipe.execute()) if calls else [])
        except StopIteration as stop:
            return cast("T", stop.value)


async def run_async(client: AsyncClient, plan: Plan[T]) -> T:
    """:func:`run` for an asyncio client."""
    calls = next(plan)
    while True:
        pipe = client.pipeline(transaction=False)
        for name, args in calls:
            getattr(pipe, name)(*args)
        try:
            calls = plan.send(await pipe.execute() if calls else [])
        except StopIteration as stop:
            return cast("T", stop.value)


def redefined(defs: Sequence[str | None], version: int | None) -> str | None:
    """A shard's live definition version when it is not ``version`` (a board managed at runtime that was
    activated again: read_common.lua answers ``redefined``); None if all agree or the board has none."""
    if version is None:
        return None
    return next((d for d in defs if d and d not in (str(version), "retired")), None)


def fenced(plan: Plan[T], metas: Sequence[str], gens: Sequence[int], version: int | None = None) -> Plan[T]:
    """``plan``, each round followed by every shard's meta ``active`` and ``def``: raises :class:`Changed`
    (after any round) when one is not in ``gens`` or a definition is not ``version``."""
    try:
        calls = next(plan)
    except StopIteration as stop:
        return cast("T", stop.value)
    while True:
        out = yield [*calls, *(("hmget", (m, ["active", "def"])) for m in metas)]
        n = len(calls)
        seen = [None if a is None else int(a) for a, _ in out[n:]]
        defs = [None if d is None else _text(d) for _, d in out[n:]]
        if seen != list(gens) or redefined(defs, version) is not None:
            raise Changed(seen, defs)
        try:
            calls = plan.send(out[:n])
        except StopIteration as stop:
            return cast("T", stop.value)


def total(zs: list[str]) -> Plan[int]:
    out = yield [("zcard", (z,)) for z in zs]
    return sum(int(n) for n in out)


def _rank_calls(zs: list[str], packed: float) -> list[Call]:
    higher = scoring.higher_than(scoring.points_of(packed))
    return [("zcount", (z, str(higher), "+inf")) for z in zs]


def rank_of(zs: list[str], packed: float) -> Plan[int]:
    """Competition rank of a packed score: 1 + players with strictly more points, over all shards."""
    out = yield _rank_calls(zs, packed)
    return 1 + sum(int(n) for n in out)


def top(zs: list[str], offset: int, limit: int) -> Plan[Page]:
    out = yield [("zcard", (z,)) for z in zs] + [
        ("zrange", (z, 0, offset + limit - 1, True, True)) for z in zs
    ]
    n = len(zs)
    count = sum(int(x) for x in out[:n])
    rows = merged([_rows(r) for r in out[n:]], offset, limit)
    if not rows:
        first_rank = 0
    elif offset == 0:  # nobody has more points than the top row: no second round
        first_rank = 1
    else:
        first_rank = yield from rank_of(zs, rows[0][1])
    return Page(count, first_rank, offset, rows)


def player(zs: list[str], own: int, player_id: str) -> Plan[Player | Known]:
    first = yield [("zscore", (zs[own], player_id))] + [("zcard", (z,)) for z in zs]
    count = sum(int(x) for x in first[1:])
    if first[0] is None:
        return Known(count)
    score = float(first[0])
    pts = scoring.points_of(score)
    out = yield [("zcount", (z, str(scoring.higher_than(pts)), "+inf")) for z in zs] + [
        ("zcount", (z, str(pts * scoring.TIME_SPAN), "+inf")) for z in zs
    ]
    n = len(zs)
    above = sum(int(x) for x in out[:n])
    atleast = sum(int(x) for x in out[n:])
    return Player(score, above + 1, count - atleast, count)


def lookup(
    zs: list[str], shards: int, players: Sequence[str]
) -> Plan[tuple[int, list[tuple[float | None, int]]]]:
    """The board's size and, per player in the order asked, (packed score or None, rank or 0)."""
    first = yield [("zscore", (zs[shard_of(p, shards)], p)) for p in players] + [("zcard", (z,)) for z in zs]
    scores = first[: len(players)]
    count = sum(int(x) for x in first[len(players) :])
    known = [float(s) for s in scores if s is not None]
    counts = iter((yield [c for s in known for c in _rank_calls(zs, s)]) if known else [])
    out: list[tuple[float | None, int]] = []
    for s in scores:
        if s is None:
            out.append((None, 0))
        else:
            out.append((float(s), 1 + sum(int(next(counts)) for _ in zs)))
    return count, out


def _positions(zs: list[str], own: int, player_id: str, score: float) -> Plan[list[int]]:
    """Per shard, how many of its rows come before the player in board order (the player's own shard:
    its ZREVRANK)."""
    calls: list[Call] = []
    for i, z in enumerate(zs):
        if i == own:
            calls.append(("zrevrank", (z, player_id)))
        else:
            calls += [("zcount", (z, f"({_num(score)}", "+inf")), ("zrangebyscore", (z, score, score))]
    out = iter((yield calls))
    local: list[int] = []
    for i in range(len(zs)):
        if i == own:
            local.append(int(next(out)))
        else:
            higher = int(next(out))
            ties = [_text(m) for m in next(out)]
            local.append(higher + sum(1 for m in ties if m > player_id))
    return local


def around(zs: list[str], own: int, player_id: str, radius: int) -> Plan[Window | Known]:
    first_round = yield [("zscore", (zs[own], player_id))] + [("zcard", (z,)) for z in zs]
    count = sum(int(n) for n in first_round[1:])
    if first_round[0] is None:
        return Known(count)
    score = float(first_round[0])
    local = yield from _positions(zs, own, player_id, score)
    index = sum(local)
    first, last = ranking.window(index, count, radius)
    up, down = index - first, last - index
    # Index ranges only where non-empty: ZRANGE 0 -1 would be the whole set.
    calls: list[Call] = []
    sides: list[bool] = []
    for i, z in enumerate(zs):
        start = local[i] + (1 if i == own else 0)
        if up > 0 and local[i] > 0:
            calls.append(("zrange", (z, max(0, local[i] - up), local[i] - 1, True, True)))
            sides.append(True)
        if down > 0:
            calls.append(("zrange", (z, start, start + down - 1, True, True)))
            sides.append(False)
    above: list[list[Row]] = []
    below: list[list[Row]] = []
    for is_above, raw in zip(sides, (yield calls) if calls else [], strict=True):
        (above if is_above else below).append(_rows(raw))
    rows = [*before(above, up), (player_id, score), *merged(below, 0, down)]
    first_rank = yield from rank_of(zs, rows[0][1])
    return Window(count, first_rank, first, index, rows)


def score_range(zs: list[str], lo: float, hi: float, offset: int, limit: int) -> Plan[Matching]:
    """Rows with packed scores in [lo, hi], descending, from ``offset``: as read_range.lua."""
    n = len(zs)
    out = yield (
        [("zcard", (z,)) for z in zs]
        + [("zcount", (z, _num(lo), _num(hi))) for z in zs]
        + [("zrevrangebyscore", (z, _num(hi), _num(lo), 0, offset + limit, True)) for z in zs]
    )
    count = sum(int(x) for x in out[:n])
    matching = sum(int(x) for x in out[n : 2 * n])
    rows = merged([_rows(r) for r in out[2 * n :]], offset, limit)
    if not rows:
        return Matching(count, matching, 0, 0, rows)
    head = rows[0][1]
    ahead = yield [("zcount", (z, f"({_num(head)}", "+inf")) for z in zs] + _rank_calls(zs, head)
    return Matching(count, matching, 1 + sum(int(x) for x in ahead[n:]), sum(int(x) for x in ahead[:n]), rows)


@dataclass(frozen=True)
class Stats:
    total: int
    top: float | None
    events: int
    updated_ms: str
    """The latest write of any shard ('' if none)."""


def stats(zs: list[str], stat_keys: list[str]) -> Plan[Stats]:
    out = yield (
        [("zcard", (z,)) for z in zs]
        + [("zrange", (z, 0, 0, True, True)) for z in zs]
        + [("hmget", (s, ["events", "updated_ms"])) for s in stat_keys]
    )
    n = len(zs)
    tops = [float(r[0][1]) for r in out[n : 2 * n] if r]
    events = sum(int(e or 0) for e, _ in out[2 * n :])
    updated = max((int(u) for _, u in out[2 * n :] if u), default=None)
    return Stats(
        sum(int(x) for x in out[:n]), max(tops, default=None), events, "" if updated is None else str(updated)
    )


def periods(period_sets: list[str]) -> Plan[list[str]]:
    """The periods any shard holds (a shard without players of a period has no key for it)."""
    out = yield [("smembers", (k,)) for k in period_sets]
    return sorted({_text(p) for members in out for p in members})


def updated(stat_keys: list[str]) -> Plan[str]:
    """The latest write of any shard to the period (epoch ms, '' if none)."""
    out = yield [("hget", (s, "updated_ms")) for s in stat_keys]
    return max((str(int(u)) for u in out if u), key=int, default="")


class ShardedReads:
    """Reads of one board's period keys across its shards (a board of one shard works too), synchronously,
    at the active generations read by :meth:`refresh` (callers that hold the board still: tests, benches)."""

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

    def _own(self, player_id: str) -> int:
        return shard_of(player_id, self._board.shards)

    def total(self, period: str) -> int:
        return run(self._r, total(self._z(period)))

    def rank_of(self, period: str, packed: float) -> int:
        return run(self._r, rank_of(self._z(period), packed))

    def top(self, period: str, offset: int, limit: int) -> Page:
        return run(self._r, top(self._z(period), offset, limit))

    def player(self, period: str, player_id: str) -> Player | None:
        got = run(self._r, player(self._z(period), self._own(player_id), player_id))
        return got if isinstance(got, Player) else None

    def lookup(self, period: str, players: Sequence[str]) -> list[tuple[float | None, int]]:
        """(packed score or None, rank or 0) per player, in the order asked."""
        return run(self._r, lookup(self._z(period), self._board.shards, players))[1]

    def around(self, period: str, player_id: str, radius: int) -> Window | None:
        got = run(self._r, around(self._z(period), self._own(player_id), player_id, radius))
        return got if isinstance(got, Window) else None

    def range(self, period: str, lo: float, hi: float, offset: int, limit: int) -> Matching:
        return run(self._r, score_range(self._z(period), lo, hi, offset, limit))
