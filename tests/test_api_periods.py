"""Period specs from the outside world: any text is a key or a PeriodError (an API 400), never a crash."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from leaderboard import periods
from leaderboard.periods import PeriodError, PeriodKind

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
zones = st.sampled_from(["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kolkata", "Europe/Berlin"])
number = st.integers(min_value=0, max_value=10**7).map(str) | st.sampled_from(
    ["", "0", "00", "-1", "\uff11\uff12"]
)
kind_text = st.sampled_from(["monthly", "weekly", "daily", "all_time", "yearly", "MONTHLY", ""])


@st.composite
def spec_texts(draw: st.DrawFn) -> str:
    """Specs shaped like the grammar with absurd numbers, plus any text at all."""
    kind = draw(kind_text)
    year, a, b = draw(number), draw(number), draw(number)
    shaped = draw(st.sampled_from([f"{year}-{a}", f"{year}-W{a}", f"{year}-{a}-{b}", "current", "previous"]))
    tail = draw(st.sampled_from(["", "\n", " ", "x"]))
    return draw(st.sampled_from([f"{kind}:{shaped}{tail}", draw(st.text(max_size=40))]))


def _check(spec: str, tz: ZoneInfo) -> None:
    try:
        key = periods.resolve(spec, NOW, tz)
    except PeriodError:
        return
    kind = periods.kind_of(key)
    span = periods.bounds(key, tz)
    if kind is PeriodKind.ALL_TIME:
        assert span is None
        return
    assert span is not None
    start, end = span
    assert start < end <= start + timedelta(days=32)
    # canonical: the key is the one its own start instant maps to (no odd digits, no trailing text)
    assert periods.key_for(kind, start, tz) == key
    assert periods.key_for(kind, end - timedelta(microseconds=1), tz) == key


@given(spec_texts(), zones)
@example("monthly:9999-12", "UTC")
@example("daily:9999-12-31", "Pacific/Kiritimati")
@example("weekly:9999-W52", "UTC")
@example("daily:0001-01-01", "Pacific/Kiritimati")
@example("monthly:0000-01", "UTC")
@example("weekly:2026-W99", "UTC")
@example("daily:2026-02-30", "UTC")
def test_any_spec_is_a_key_or_a_period_error(spec: str, zone: str) -> None:
    _check(spec, ZoneInfo(zone))


@given(
    st.dates(min_value=date(periods.MIN_YEAR, 1, 1), max_value=date(periods.MAX_YEAR, 12, 31)),
    zones,
    st.sampled_from([PeriodKind.MONTHLY, PeriodKind.WEEKLY, PeriodKind.DAILY]),
)
@example(date(2000, 1, 1), "UTC", PeriodKind.WEEKLY)  # ISO week 1999-W52
@example(date(2099, 12, 31), "UTC", PeriodKind.WEEKLY)
def test_every_period_inside_the_year_range_resolves(day: date, zone: str, kind: PeriodKind) -> None:
    tz = ZoneInfo(zone)
    key = periods.key_for(kind, datetime(day.year, day.month, day.day, 12, tzinfo=tz), tz)
    # An ISO week at either edge can belong to the year outside the range (1999-W52, 2100-W01): its key is
    # refused like any key of that year.
    if not periods.MIN_YEAR <= int(key.partition(":")[2][:4]) <= periods.MAX_YEAR:
        with pytest.raises(PeriodError):
            periods.resolve(key, NOW, tz)
        return
    assert periods.resolve(key, NOW, tz) == key
    _check(key, tz)


@pytest.mark.parametrize(
    "spec",
    [
        "monthly:9999-12",
        "monthly:1999-12",
        "monthly:2100-01",
        "daily:2026-13-01",
        "weekly:2026-W54",
        "daily:99999-01-01",
    ],
)
def test_years_outside_the_range_are_rejected_with_a_reason(spec: str) -> None:
    with pytest.raises(PeriodError, match=r"year must be in 2000\.\.2099|no such|period must be"):
        periods.resolve(spec, NOW, ZoneInfo("UTC"))


def test_the_range_covers_every_year_events_may_carry() -> None:
    from schemas.model import EARLIEST, LATEST  # noqa: PLC0415

    assert EARLIEST.year > periods.MIN_YEAR
    assert LATEST.year < periods.MAX_YEAR
