"""Pure batch planning: canonical events -> one Lua payload per board (no I/O here).

Within a batch, a player's events on one board-period-partition fold into one update, so a hot player
costs one ZADD per batch instead of one per win. Folding is leaderboard.aggregate's merge, which commutes
(sum, best, last), so the live boards and any rebuild agree whatever the order of arrival.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Protocol

import msgspec

from leaderboard import scoring
from leaderboard.aggregate import AT, EVENTS, LAST_OFF, LAST_PART, LAST_US, VALUE, micros
from leaderboard.boards import Board
from schemas.model import MatchWon

BUCKET_S = 900  # every timezone offset is a multiple of 15 minutes, so period keys are constant per bucket


class Canonical(msgspec.Struct, frozen=True, gc=False):
    """A valid event that PostgreSQL decided is the one copy to count, with its Kafka coordinates."""

    partition: int
    offset: int
    event: MatchWon


EVENT_COLUMNS = (
    "event_id, match_id, player_id, game, mode, region, points, score, occurred_at, kafka_partition,"
    " kafka_offset"
)
"""The ``events`` columns :func:`canonical_rows` reads (every path that reads stored events selects these)."""


def canonical_rows(rows: Sequence[tuple[object, ...]]) -> list[Canonical]:
    """Rows of ``EVENT_COLUMNS`` as canonical records (every stored row is the canonical copy)."""
    out = []
    for eid, match_id, player_id, game, mode, region, points, score, occurred_at, part, off in rows:
        event = MatchWon(
            event_id=str(eid),
            match_id=str(match_id),
            player_id=str(player_id),
            game=str(game),
            mode=None if mode is None else str(mode),
            region=None if region is None else str(region),
            points=int(points),  # type: ignore[call-overload]
            score=None if score is None else int(score),  # type: ignore[call-overload]
            occurred_at=occurred_at,  # type: ignore[arg-type]
        )
        out.append(Canonical(int(part), int(off), event))  # type: ignore[call-overload]
    return out


@lru_cache(maxsize=65536)
def periods_of(board: Board, bucket: int) -> tuple[tuple[str, int, int], ...]:
    instant = datetime.fromtimestamp(bucket * BUCKET_S, tz=UTC)
    out = []
    for key in board.period_keys(instant):
        origin, unit = board.origin(key)
        out.append((key, int(origin.timestamp()), unit))  # origins are whole minutes in every timezone
    return tuple(out)


def targets(board: Board, event: MatchWon) -> tuple[tuple[str, int, int], ...]:
    """(period key, tie-break origin as epoch seconds, unit seconds) of every period the event feeds:
    none if the board's filter refuses it or the board cannot count it (no value, or past the bounds)."""
    if not board.accepts(event.game, event.mode, event.region):
        return ()
    if board.value_of(event.points, event.score) is None:
        return ()
    return periods_of(board, int(event.occurred_at.timestamp()) // BUCKET_S)


@dataclass(slots=True)
class Slot:
    """Folded updates of one period key and partition: offsets [lo, hi], player -> standing
    (leaderboard.aggregate: [value, at_s, events, last_us, last_partition, last_offset])."""

    lo: int
    hi: int
    players: dict[str, list[int]]


Fold = dict[tuple[str, int], Slot]


def fold(
    board: Board,
    records: Iterable[Canonical],
    *,
    into: Fold | None = None,
    split_partitions: bool = True,
) -> Fold:
    """Fold records per period and partition, with the board's rule (leaderboard.aggregate.Rule.merge).

    ``split_partitions=False`` folds every partition into one slot (partition -1) for snapshot loads;
    ``into`` continues an earlier fold so a large source can be read in chunks.
    Two steps, because every event of one 15-minute bucket feeds the same period keys: first each player's
    standing per (partition, bucket), then one expansion per period. Standings hold instants; the period's
    tie-break is computed from them last (:func:`entries`), so folding first and converting once gives what
    converting every event would (the tie-break falls as time grows).
    """
    rule = board.rule
    merge = rule.merge
    value_of = rule.value_getter()
    last = board.aggregation == "last"  # only last compares exact instants: skip the conversion otherwise
    accepts = board.accepts
    groups: dict[tuple[int, int], tuple[list[int], dict[str, list[int]]]] = {}
    for rec in records:
        event = rec.event
        if not accepts(event.game, event.mode, event.region):
            continue
        value = value_of(event.points, event.score)
        if value is None:
            continue
        instant = event.occurred_at
        ts = int(instant.timestamp())  # whole seconds: the finest tie-break unit
        offset, player = rec.offset, event.player_id
        group_key = (rec.partition if split_partitions else -1, ts // BUCKET_S)
        group = groups.get(group_key)
        if group is None:
            group = groups[group_key] = ([offset, offset], {})
        else:
            span = group[0]
            if offset < span[0]:
                span[0] = offset
            elif offset > span[1]:
                span[1] = offset
        standing = [value, ts, 1, micros(instant) if last else 0, rec.partition, offset]
        cur = group[1].get(player)
        if cur is None:
            group[1][player] = standing
        else:
            merge(cur, standing)
    return _expand(board, groups, {} if into is None else into)


def _expand(
    board: Board, groups: dict[tuple[int, int], tuple[list[int], dict[str, list[int]]]], acc: Fold
) -> Fold:
    """fold's second step: each (partition, bucket) group into the slots of every period it feeds."""
    merge = board.rule.merge
    for (part, bucket), ((lo, hi), players) in groups.items():
        for key, _, _ in periods_of(board, bucket):
            slot = acc.get((key, part))
            if slot is None:
                acc[(key, part)] = Slot(lo, hi, {p: v.copy() for p, v in players.items()})
                continue
            slot.lo, slot.hi = min(slot.lo, lo), max(slot.hi, hi)
            into = slot.players
            for p, v in players.items():
                cur = into.get(p)
                if cur is None:
                    into[p] = v.copy()
                else:
                    merge(cur, v)
    return acc


_SPAN_1 = scoring.TIME_SPAN - 1


def tiebreak_of(ts: int, origin: int, unit: int) -> int:
    """scoring.tiebreak of whole units since the origin, clamped into the field; ts in epoch seconds."""
    units = (ts - origin) // unit
    return _SPAN_1 - (0 if units < 0 else _SPAN_1 if units > _SPAN_1 else units)


@lru_cache(maxsize=4096)
def origin_of(board: Board, period: str) -> tuple[int, int]:
    """(origin as epoch seconds, unit seconds) of a period's tie-break."""
    origin, unit = board.origin(period)
    return int(origin.timestamp()), unit


def latest_mark(last: Sequence[int]) -> str:
    """What a ``last`` board keeps per player beside its score (keys.latest): "us:partition:offset" of
    ``last`` = (us, partition, offset) of the event shown."""
    return f"{last[0]}:{last[1]}:{last[2]}"


def entries(board: Board, period: str, players: dict[str, list[int]]) -> Iterator[tuple[str, int, list[int]]]:
    """(player, Redis score, standing) of folded standings on one period."""
    origin, unit = origin_of(board, period)
    pack = board.rule.pack
    for player, st in players.items():
        yield player, pack(st[VALUE], tiebreak_of(st[AT], origin, unit)), st


class _Positioned(Protocol):
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


def positions(records: Iterable[_Positioned]) -> dict[int, int]:
    """Last offset per partition of a batch (consumed records or canonical ones)."""
    out: dict[int, int] = {}
    for rec in records:
        if rec.offset > out.get(rec.partition, -1):
            out[rec.partition] = rec.offset
    return out


_value, _at, _events = itemgetter(VALUE), itemgetter(AT), itemgetter(EVENTS)


def payload(
    board: Board, folded: Fold, gen: int | None = None, pos: dict[int, int] | None = None
) -> dict[str, object] | None:
    """The apply.lua payload for a fold, or None when it has nothing to apply and no position to record."""
    if not folded and not pos:
        return None
    last = board.aggregation == "last"
    periods: dict[str, list[dict[str, object]]] = {}
    for (key, partition), slot in folded.items():
        values = list(slot.players.values())
        origin, unit = origin_of(board, key)
        ats = list(map(_at, values))
        tbs = {at: tiebreak_of(at, origin, unit) for at in set(ats)}  # few distinct instants in a batch
        part: dict[str, object] = {
            "pt": partition,
            "lo": slot.lo,
            "hi": slot.hi,
            "n": sum(map(_events, values)),
            "m": list(slot.players),
            "v": list(map(_value, values)),
            "t": list(map(tbs.__getitem__, ats)),
        }
        if last:
            part["u"] = [v[LAST_US] for v in values]
            part["q"] = [v[LAST_PART] for v in values]
            part["o"] = [v[LAST_OFF] for v in values]
        periods.setdefault(key, []).append(part)
    body: dict[str, object] = {
        "agg": board.aggregation,
        "asc": board.order == "asc",
        "periods": [{"p": key, "parts": parts} for key, parts in periods.items()],
        "pos": [[p, o] for p, o in (pos or {}).items()],
    }
    if gen is not None:
        body["gen"] = gen
    if board.version is not None:
        body["def"] = board.version
    return body


def scores(board: Board, folded: Fold) -> dict[tuple[str, int], dict[str, int]]:
    """(period, partition) -> player -> Redis score of a fold: what apply.lua writes on an empty board."""
    return {
        (key, part): {player: packed for player, packed, _ in entries(board, key, slot.players)}
        for (key, part), slot in folded.items()
    }
