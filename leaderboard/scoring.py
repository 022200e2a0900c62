"""Score encoding: one Redis sorted-set score carries both the points and the tie-break.

``packed = points * 2**TIME_BITS + (2**TIME_BITS - 1 - t)`` where ``t`` is when the player reached the
score, in units since the period's origin. Descending order then lists higher points first and, within a
tie, whoever got there first. Doubles hold integers exactly up to 2**53, hence the bounds below
(docs/adr/0003-score-encoding.md). Competition rank ("1224") = ZCOUNT of packed >= (points + 1) * 2**TIME_BITS
plus one: O(log n).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

TIME_BITS: Final = 24
TIME_SPAN: Final = 1 << TIME_BITS
POINTS_BITS: Final = 53 - TIME_BITS
MAX_SCORE: Final = (1 << POINTS_BITS) - 1
"""A player's score on one board-period saturates here (536,870,911); docs say so."""

ALL_TIME_ORIGIN: Final = datetime(2020, 1, 1, tzinfo=UTC)
ALL_TIME_UNIT_S: Final = 60
"""all_time tie-breaks count minutes from 2020 (24 bits last until 2051-11); periods count seconds."""


def time_units(instant: datetime, origin: datetime, unit_s: int) -> int:
    """Whole units from origin to instant, clamped into the field."""
    units = int((instant - origin).total_seconds()) // unit_s
    return min(max(units, 0), TIME_SPAN - 1)


def tiebreak(units: int) -> int:
    """Earlier is larger, so it sorts first under descending order."""
    return TIME_SPAN - 1 - units


def pack(points: int, tb: int) -> int:
    return min(points, MAX_SCORE) * TIME_SPAN + tb


def unpack(packed: float) -> tuple[int, int]:
    """(points, tiebreak) of a packed score."""
    value = int(packed)
    return value >> TIME_BITS, value & (TIME_SPAN - 1)


def points_of(packed: float) -> int:
    return int(packed) >> TIME_BITS


def higher_than(points: int) -> int:
    """Lowest packed value strictly above every packed value with ``points`` points."""
    return (points + 1) * TIME_SPAN


def reached_at(tb: int, origin: datetime, unit_s: int) -> datetime:
    """When the score was reached (to the unit), from its tie-break."""
    return origin + timedelta(seconds=(TIME_SPAN - 1 - tb) * unit_s)
