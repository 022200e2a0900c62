"""Period kinds, period keys and the period grammar of the API.

A period key names one bucket of a board: ``all_time``, ``monthly:2026-11``, ``weekly:2026-W48`` (ISO week),
``daily:2026-11-28``. Keys come from the event's ``occurred_at`` in the board's timezone, never from the
consumer's clock.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

ALL_TIME = "all_time"


class PeriodKind(enum.StrEnum):
    ALL_TIME = "all_time"
    MONTHLY = "monthly"
    WEEKLY = "weekly"
    DAILY = "daily"


class PeriodError(ValueError):
    """A period spec that does not follow the grammar; the message says what is expected."""


GRAMMAR = (
    "period must be 'all_time', '<kind>:current', '<kind>:previous' or an explicit key: "
    "'monthly:YYYY-MM', 'weekly:YYYY-Www' (ISO week), 'daily:YYYY-MM-DD'; "
    "seasons: 'season:<id>', 'season:current', 'season:previous'"
)

MIN_YEAR = 2000
MAX_YEAR = 2099
"""Explicit keys name periods in these years only. Events are accepted for 2020-2049 (schemas.model), so
no data can exist outside; the bound also keeps every date computation (next period, timezone shifts) far
from ``date``'s limits, so an absurd key is a PeriodError (400), never an OverflowError (500)."""

_EXPLICIT = {  # ASCII digits only, whole string (``$`` would accept a trailing newline)
    PeriodKind.MONTHLY: re.compile(r"(\d{4})-(\d{2})", re.ASCII),
    PeriodKind.WEEKLY: re.compile(r"(\d{4})-W(\d{2})", re.ASCII),
    PeriodKind.DAILY: re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII),
}


def local_date(instant: datetime, tz: ZoneInfo) -> date:
    return instant.astimezone(tz).date()


def key_for(kind: PeriodKind, instant: datetime, tz: ZoneInfo) -> str:
    """The period key of ``kind`` that contains ``instant`` (an aware datetime)."""
    if kind is PeriodKind.ALL_TIME:
        return ALL_TIME
    d = local_date(instant, tz)
    if kind is PeriodKind.MONTHLY:
        return f"monthly:{d.year:04d}-{d.month:02d}"
    if kind is PeriodKind.WEEKLY:
        iso = d.isocalendar()
        return f"weekly:{iso.year:04d}-W{iso.week:02d}"
    return f"daily:{d.isoformat()}"


def _first_day(kind: PeriodKind, value: str) -> date:
    match = _EXPLICIT[kind].fullmatch(value)
    if match is None:
        raise PeriodError(GRAMMAR)
    parts = [int(g) for g in match.groups()]
    if not MIN_YEAR <= parts[0] <= MAX_YEAR:
        raise PeriodError(f"no such {kind} period {value!r}: the year must be in {MIN_YEAR}..{MAX_YEAR}")
    try:
        if kind is PeriodKind.MONTHLY:
            return date(parts[0], parts[1], 1)
        if kind is PeriodKind.WEEKLY:
            return date.fromisocalendar(parts[0], parts[1], 1)
        return date(parts[0], parts[1], parts[2])
    except ValueError as exc:
        raise PeriodError(f"no such {kind} period {value!r}: {exc}") from exc


def _next_first_day(kind: PeriodKind, first: date) -> date:
    if kind is PeriodKind.MONTHLY:
        return date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    if kind is PeriodKind.WEEKLY:
        return first + timedelta(days=7)
    return first + timedelta(days=1)


def kind_of(key: str) -> PeriodKind:
    if key == ALL_TIME:
        return PeriodKind.ALL_TIME
    kind, sep, _ = key.partition(":")
    try:
        parsed = PeriodKind(kind)
    except ValueError as exc:
        raise PeriodError(GRAMMAR) from exc
    if not sep or parsed is PeriodKind.ALL_TIME:
        raise PeriodError(GRAMMAR)
    return parsed


def bounds(key: str, tz: ZoneInfo) -> tuple[datetime, datetime] | None:
    """[start, end) of a period key as UTC instants; None for all_time."""
    kind = kind_of(key)
    if kind is PeriodKind.ALL_TIME:
        return None
    first = _first_day(kind, key.partition(":")[2])
    nxt = _next_first_day(kind, first)
    start = datetime(first.year, first.month, first.day, tzinfo=tz).astimezone(UTC)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).astimezone(UTC)
    return start, end


def resolve(spec: str, now: datetime, tz: ZoneInfo) -> str:
    """Turn an API period spec into a canonical period key (validates explicit keys)."""
    if spec == ALL_TIME:
        return ALL_TIME
    kind_text, sep, value = spec.partition(":")
    try:
        kind = PeriodKind(kind_text)
    except ValueError as exc:
        raise PeriodError(GRAMMAR) from exc
    if kind is PeriodKind.ALL_TIME:
        if sep and value not in ("", "current"):
            raise PeriodError(GRAMMAR)
        return ALL_TIME
    if value == "current":
        return key_for(kind, now, tz)
    if value == "previous":
        span = bounds(key_for(kind, now, tz), tz)
        assert span is not None
        return key_for(kind, span[0] - timedelta(seconds=1), tz)
    _first_day(kind, value)
    return f"{kind}:{value}"
