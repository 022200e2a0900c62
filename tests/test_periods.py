from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leaderboard import periods
from leaderboard.periods import PeriodError, PeriodKind

UTC_TZ = ZoneInfo("UTC")
instants = st.datetimes(
    min_value=datetime(2020, 1, 2), max_value=datetime(2049, 12, 30), timezones=st.just(UTC)
)
zones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"])


@given(instants, zones, st.sampled_from([PeriodKind.MONTHLY, PeriodKind.WEEKLY, PeriodKind.DAILY]))
def test_a_period_key_contains_the_instant_it_came_from(
    instant: datetime, zone: str, kind: PeriodKind
) -> None:
    tz = ZoneInfo(zone)
    key = periods.key_for(kind, instant, tz)
    span = periods.bounds(key, tz)
    assert span is not None
    assert span[0] <= instant < span[1]
    assert periods.resolve(key, instant, tz) == key


def test_iso_weeks_cross_the_year() -> None:
    assert periods.key_for(PeriodKind.WEEKLY, datetime(2027, 1, 1, tzinfo=UTC), UTC_TZ) == "weekly:2026-W53"
    assert periods.key_for(PeriodKind.WEEKLY, datetime(2026, 11, 28, tzinfo=UTC), UTC_TZ) == "weekly:2026-W48"


def test_timezone_decides_the_day() -> None:
    instant = datetime(2026, 11, 28, 23, 30, tzinfo=UTC)
    assert periods.key_for(PeriodKind.DAILY, instant, UTC_TZ) == "daily:2026-11-28"
    assert periods.key_for(PeriodKind.DAILY, instant, ZoneInfo("Europe/Berlin")) == "daily:2026-11-29"


def test_grammar_current_previous_and_explicit() -> None:
    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    assert periods.resolve("all_time", now, UTC_TZ) == "all_time"
    assert periods.resolve("monthly:current", now, UTC_TZ) == "monthly:2026-11"
    assert periods.resolve("monthly:previous", now, UTC_TZ) == "monthly:2026-10"
    assert periods.resolve("weekly:current", now, UTC_TZ) == "weekly:2026-W48"
    assert periods.resolve("daily:previous", now, UTC_TZ) == "daily:2026-11-27"
    assert periods.resolve("daily:2024-02-29", now, UTC_TZ) == "daily:2024-02-29"


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "monthly",
        "monthly:",
        "monthly:2026-13",
        "daily:2025-02-29",
        "weekly:2026-W54",
        "yearly:2026",
        "monthly:26-11",
        "all_time:2026",
        "weekly:2026-48",
    ],
)
def test_bad_specs_name_the_grammar(spec: str) -> None:
    with pytest.raises(PeriodError):
        periods.resolve(spec, datetime(2026, 11, 28, tzinfo=UTC), UTC_TZ)


def test_bounds_of_a_month_in_a_timezone() -> None:
    start, end = periods.bounds("monthly:2026-03", ZoneInfo("Europe/Berlin")) or (None, None)
    assert start == datetime(2026, 2, 28, 23, tzinfo=UTC)
    assert end == datetime(2026, 3, 31, 22, tzinfo=UTC)
    assert end - start == timedelta(days=31, hours=-1)
