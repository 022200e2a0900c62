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

from leaderboard import scoring
from leaderboard.boards import Board
from schemas.model import MatchWon

BUCKET_S = 900  # every timezone offset is a multiple of 15 minutes, so period keys are constant per bucket


@dataclass(frozen=True, slots=True)
class Canonical:
    """A valid event that PostgreSQL decided is the one copy to count, with its Kafka coordinates."""

    partition: int
    offset: int
    event: MatchWon


@lru_cache(maxsize=65536)
def periods_of(board: Board, bucket: int) -> tuple[tuple[str, float, int], ...]:
    instant = datetime.fromtimestamp(bucket * BUCKET_S, tz=UTC)
    out = []
    for key in board.period_keys(instant):
        origin, unit = board.origin(key)
        out.append((key, origin.timestamp(), unit))
    return tuple(out)


def targets(board: Board, event: MatchWon) -> tuple[tuple[str, float, int], ...]:
    """(period key, tie-break origin as epoch seconds, unit seconds) of every period the event feeds."""
    if not board.accepts(event.game, event.mode, event.region):
        return ()
    return periods_of(board, int(event.occurred_at.timestamp()) // BUCKET_S)


def tiebreak(ts: float, origin: float, unit: int) -> int:
    units = int(ts - origin) // unit
    return scoring.TIME_SPAN - 1 - min(max(units, 0), scoring.TIME_SPAN - 1)


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
    above: dict[tuple[str, int], int] | None = None,
    *,
    into: Fold | None = None,
    split_partitions: bool = True,
) -> Fold:
    """Fold records per period and partition; ``above`` keeps only offsets past a watermark.

    ``split_partitions=False`` folds every partition into one slot (partition -1) for snapshot loads;
    ``into`` continues an earlier fold so a large source can be read in chunks.
    """
    best = board.aggregation == "best"
    acc: Fold = {} if into is None else into
    accepts, span_1 = board.accepts, scoring.TIME_SPAN - 1
    for rec in records:
        event = rec.event
        if not accepts(event.game, event.mode, event.region):
            continue
        ts = event.occurred_at.timestamp()
        part = rec.partition if split_partitions else -1
        offset, player, points = rec.offset, event.player_id, event.points
        for key, origin, unit in periods_of(board, int(ts) // BUCKET_S):
            slot = (key, part)
            if above is not None and offset <= above.get(slot, -1):
                continue
            units = int(ts - origin) // unit  # tiebreak(), inlined: this loop runs per event and period
            tb = span_1 - (0 if units < 0 else span_1 if units > span_1 else units)
            entry = acc.get(slot)
            if entry is None:
                entry = acc[slot] = Slot(offset, offset, {})
            elif offset < entry.lo:
                entry.lo = offset
            elif offset > entry.hi:
                entry.hi = offset
            cur = entry.players.get(player)
            if cur is None:
                entry.players[player] = [points, tb, 1]
            elif best:
                if points > cur[0] or (points == cur[0] and tb > cur[1]):
                    cur[0], cur[1] = points, tb
                cur[2] += 1
            else:
                cur[0] += points
                cur[1] = min(cur[1], tb)
                cur[2] += 1
    return acc


def positions(records: Iterable[Canonical]) -> dict[int, int]:
    """Last offset per partition of a batch."""
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
