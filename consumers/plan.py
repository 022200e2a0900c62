"""Pure batch planning: canonical events -> one Lua payload per board (no I/O here).

Within a batch, a player's events on one board-period-partition fold into one update, so a hot player
costs one ZADD per batch instead of one per win. Folding commutes (sum / min tie-break, or max), so the
live boards and any rebuild agree whatever the order of arrival.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol

import msgspec

from leaderboard import scoring
from leaderboard.boards import Board
from schemas.model import MatchWon

BUCKET_S = 900  # every timezone offset is a multiple of 15 minutes, so period keys are constant per bucket


class Canonical(msgspec.Struct, frozen=True, gc=False):
    """A valid event that PostgreSQL decided is the one copy to count, with its Kafka coordinates."""

    partition: int
    offset: int
    event: MatchWon


@lru_cache(maxsize=65536)
def periods_of(board: Board, bucket: int) -> tuple[tuple[str, int, int], ...]:
    instant = datetime.fromtimestamp(bucket * BUCKET_S, tz=UTC)
    out = []
    for key in board.period_keys(instant):
        origin, unit = board.origin(key)
        out.append((key, int(origin.timestamp()), unit))  # origins are whole minutes in every timezone
    return tuple(out)


def targets(board: Board, event: MatchWon) -> tuple[tuple[str, int, int], ...]:
    """(period key, tie-break origin as epoch seconds, unit seconds) of every period the event feeds."""
    if not board.accepts(event.game, event.mode, event.region):
        return ()
    return periods_of(board, int(event.occurred_at.timestamp()) // BUCKET_S)


@dataclass(slots=True)
class Slot:
    """Folded updates of one period key and partition: offsets [lo, hi], player -> [points, tb, events]."""

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
    """Fold records per period and partition.

    ``split_partitions=False`` folds every partition into one slot (partition -1) for snapshot loads;
    ``into`` continues an earlier fold so a large source can be read in chunks.
    Two steps, because every event of one 15-minute bucket feeds the same period keys: first each player's
    wins per (partition, bucket), keeping the instant that decides the tie-break (the latest for ``sum``, the
    earliest best win for ``best``), then one expansion per period. The tie-break falls as time grows, so
    folding instants first and converting once gives what converting every event would.
    """
    best = board.aggregation == "best"
    accepts = board.accepts
    groups: dict[tuple[int, int], tuple[list[int], dict[str, list[int]]]] = {}
    for rec in records:
        event = rec.event
        if not accepts(event.game, event.mode, event.region):
            continue
        ts = int(event.occurred_at.timestamp())  # whole seconds: the finest tie-break unit
        offset, player, points = rec.offset, event.player_id, event.points
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
        cur = group[1].get(player)
        if cur is None:
            group[1][player] = [points, ts, 1]
        elif best:
            if points > cur[0] or (points == cur[0] and ts < cur[1]):
                cur[0], cur[1] = points, ts
            cur[2] += 1
        else:
            cur[0] += points
            cur[1] = max(cur[1], ts)
            cur[2] += 1
    return _expand(board, groups, {} if into is None else into)


def _expand(
    board: Board, groups: dict[tuple[int, int], tuple[list[int], dict[str, list[int]]]], acc: Fold
) -> Fold:
    """fold's second step: each (partition, bucket) group into the slots of every period it feeds."""
    best = board.aggregation == "best"
    for (part, bucket), ((lo, hi), players) in groups.items():
        instants = {v[1] for v in players.values()}  # few: a batch spans seconds of play
        for key, origin, unit in periods_of(board, bucket):
            tb = {ts: tiebreak_of(ts, origin, unit) for ts in instants}
            expanded = {p: [v[0], tb[v[1]], v[2]] for p, v in players.items()}
            slot = acc.get((key, part))
            if slot is None:
                acc[(key, part)] = Slot(lo, hi, expanded)
            else:
                slot.lo, slot.hi = min(slot.lo, lo), max(slot.hi, hi)
                _merge(slot.players, expanded, best)
    return acc


_SPAN_1 = scoring.TIME_SPAN - 1


def tiebreak_of(ts: int, origin: int, unit: int) -> int:
    """scoring.tiebreak of whole units since the origin, clamped into the field; ts in epoch seconds."""
    units = (ts - origin) // unit
    return _SPAN_1 - (0 if units < 0 else _SPAN_1 if units > _SPAN_1 else units)


def _merge(into: dict[str, list[int]], more: dict[str, list[int]], best: bool) -> None:
    for p, (points, tb, n) in more.items():
        cur = into.get(p)
        if cur is None:
            into[p] = [points, tb, n]
        elif best:
            if points > cur[0] or (points == cur[0] and tb > cur[1]):
                cur[0], cur[1] = points, tb
            cur[2] += n
        else:
            cur[0] += points
            cur[1] = min(cur[1], tb)
            cur[2] += n


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


def payload(
    board: Board, folded: Fold, gen: int | None = None, pos: dict[int, int] | None = None
) -> dict[str, object] | None:
    """The apply.lua payload for a fold, or None when it has nothing to apply and no position to record."""
    if not folded and not pos:
        return None
    periods: dict[str, list[dict[str, object]]] = {}
    for (key, partition), slot in folded.items():
        values = slot.players.values()
        periods.setdefault(key, []).append(
            {
                "pt": partition,
                "lo": slot.lo,
                "hi": slot.hi,
                "n": sum(v[2] for v in values),
                "m": list(slot.players),
                "v": [v[0] for v in values],
                "t": [v[1] for v in values],
            }
        )
    body: dict[str, object] = {
        "agg": board.aggregation,
        "periods": [{"p": key, "parts": parts} for key, parts in periods.items()],
        "pos": [[p, o] for p, o in (pos or {}).items()],
    }
    if gen is not None:
        body["gen"] = gen
    return body
