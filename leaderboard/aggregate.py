"""How a board turns events into standings: which value it ranks by, how values merge, which way is better.

THE definition every path calls (live fold in consumers.plan, Redis merge in apply.lua via the same rules,
checkpoints' SQL, rebuild, verify, close): pure, no I/O. A standing is a list of ints
``[value, at_s, events, last_us, last_partition, last_offset]``:

- ``sum``: values add (saturating at scoring.MAX_SCORE when encoded); ``at_s`` is the latest event's second
  (the instant the total was reached).
- ``best``: the better value wins (higher on ``desc``, lower on ``asc``); of equal values the earliest.
- ``last``: the value of the latest event by ``occurred_at`` (microseconds), ties by Kafka position
  (partition, offset): the same on every replay whatever the order of arrival.

Redis stores a *rank key* instead of the value: the value on ``desc`` boards, ``MAX_SCORE - value`` on
``asc`` ones, so every board sorts "higher key is better" and the read scripts (ZREVRANGE, ZCOUNT of higher
keys for competition ranks) are the same for both orders.

Bounds (per event; docs/boards.md): a board counts an event only if its value is present and within
[0, MAX_SCORE] (536,870,911); ``points`` always is (1..100,000). A ``sum`` saturates at MAX_SCORE (on an
``asc`` board a saturated total is the worst place, tied with every other saturated total).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from leaderboard import scoring

Aggregation = Literal["sum", "best", "last"]
Order = Literal["asc", "desc"]
ValueField = Literal["points", "score"]
AGGREGATIONS: Final[tuple[Aggregation, ...]] = ("sum", "best", "last")
ORDERS: Final[tuple[Order, ...]] = ("desc", "asc")
VALUE_FIELDS: Final[tuple[ValueField, ...]] = ("points", "score")

MAX_VALUE: Final = scoring.MAX_SCORE
"""Largest value one event may carry for a board (and where a sum saturates)."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)

VALUE, AT, EVENTS, LAST_US, LAST_PART, LAST_OFF = range(6)
"""Indexes into a standing list."""


def micros(instant: datetime) -> int:
    """Exact microseconds since the epoch (no float rounding): what ``last`` compares."""
    return (instant - _EPOCH) // _US


def _points(points: int, score: int | None) -> int:
    return points


@dataclass(frozen=True, slots=True)
class Rule:
    """A board's ranking rule; the parts of a board definition that decide its standings."""

    aggregation: Aggregation = "sum"
    order: Order = "desc"
    value: ValueField = "points"

    def value_of(self, points: int, score: int | None) -> int | None:
        """The value this board ranks an event by, or None if the event lacks it or is past the bounds."""
        v = points if self.value == "points" else score
        if v is None or v < 0 or v > MAX_VALUE:
            return None
        return v

    def value_getter(self) -> Callable[[int, int | None], int | None]:
        """:meth:`value_of` as a plain function for hot loops: ``points`` need no check (the contract
        bounds them to 1..100,000, within every board's bounds)."""
        if self.value == "points":
            return _points
        return self.value_of

    def better(self, a: int, b: int) -> bool:
        """Whether value ``a`` is strictly better than ``b``."""
        return a > b if self.order == "desc" else a < b

    def new(self, value: int, at_s: int, us: int, partition: int, offset: int) -> list[int]:
        """The standing of one event."""
        return [value, at_s, 1, us, partition, offset]

    def merge(self, cur: list[int], more: list[int]) -> None:
        """Fold standing ``more`` into ``cur`` in place. Commutative and associative (ties included)."""
        agg = self.aggregation
        if agg == "sum":
            cur[VALUE] += more[VALUE]
            cur[AT] = max(cur[AT], more[AT])
        elif agg == "best":
            if self.better(more[VALUE], cur[VALUE]) or (more[VALUE] == cur[VALUE] and more[AT] < cur[AT]):
                cur[VALUE], cur[AT] = more[VALUE], more[AT]
        elif (more[LAST_US], more[LAST_PART], more[LAST_OFF]) > (cur[LAST_US], cur[LAST_PART], cur[LAST_OFF]):
            cur[VALUE], cur[AT] = more[VALUE], more[AT]
            cur[LAST_US], cur[LAST_PART], cur[LAST_OFF] = more[LAST_US], more[LAST_PART], more[LAST_OFF]
        cur[EVENTS] += more[EVENTS]

    def key(self, value: int) -> int:
        """The rank key Redis stores for a value (saturated into [0, MAX_VALUE]); higher is better."""
        v = min(max(value, 0), MAX_VALUE)
        return v if self.order == "desc" else MAX_VALUE - v

    def value_of_key(self, key: int) -> int:
        """The value a rank key stands for (the inverse of :meth:`key` within the bounds)."""
        return key if self.order == "desc" else MAX_VALUE - key

    def key_range(self, low: int, high: int) -> tuple[int, int]:
        """Rank keys [lowest, highest] of the values in [low, high]."""
        a, b = self.key(low), self.key(high)
        return (a, b) if a <= b else (b, a)

    def pack(self, value: int, tb: int) -> int:
        """The Redis score of a standing: its rank key and the period's tie-break."""
        return scoring.pack(self.key(value), tb)

    def unpack(self, packed: float) -> tuple[int, int]:
        """(value, tie-break) of a Redis score."""
        key, tb = scoring.unpack(packed)
        return self.value_of_key(key), tb
