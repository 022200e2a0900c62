"""Pure selection of due periods: end + grace, never all_time, closed ones skipped, the lookback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from consumers import due
from leaderboard import periods
from leaderboard.boards import Board
from leaderboard.periods import PeriodKind

BOARD = Board(id="b", grace_seconds=3600, timezone=ZoneInfo("Europe/Paris"))
KNOWN = [
    "all_time",
    "daily:2026-11-29",
    "daily:2026-11-30",
    "weekly:2026-W48",
    "monthly:2026-11",
    "daily:2020-01-15",
]


def test_due_after_end_plus_grace_oldest_first_and_never_all_time() -> None:
    # 2026-12-01 00:00 in Paris is 2026-11-30T23:00Z; + 1 h grace.
    at = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    # ISO week 48 ends with Sunday the 29th (Monday 00:00 in Paris): due with that day, after it by key.
    assert due.select(BOARD, KNOWN, [], at - timedelta(seconds=1)) == [
        "daily:2020-01-15",
        "daily:2026-11-29",
        "weekly:2026-W48",
    ]
    assert due.select(BOARD, KNOWN, [], at)[3:] == ["daily:2026-11-30", "monthly:2026-11"]
    assert "daily:2026-11-29" not in due.select(BOARD, KNOWN, ["daily:2026-11-29"], at)


def test_the_lookback_leaves_a_backdated_period_to_an_operator() -> None:
    at = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    lookback = timedelta(days=2)
    picked = due.select(BOARD, KNOWN, [], at, lookback)
    assert "daily:2020-01-15" not in picked
    assert "daily:2026-11-30" in picked
    assert due.too_old(BOARD, KNOWN, [], at, lookback) == ["daily:2020-01-15"]


def test_periods_of_kinds_the_board_lacks_or_bad_keys_are_ignored() -> None:
    board = Board(id="b", periods=(PeriodKind.ALL_TIME, PeriodKind.DAILY))
    at = datetime(2027, 1, 1, tzinfo=UTC)
    assert due.select(
        board, ["monthly:2026-11", "daily:2026-11-30", "nonsense", "daily:2026-13-01"], [], at
    ) == ["daily:2026-11-30"]


@given(
    day=st.dates(min_value=datetime(2021, 1, 1).date(), max_value=datetime(2049, 1, 1).date()),
    after_s=st.integers(-86400 * 5, 86400 * 5),
    lookback_s=st.integers(0, 86400 * 4),
)
def test_selected_exactly_when_due_and_within_the_lookback(
    day: object, after_s: int, lookback_s: int
) -> None:
    key = f"daily:{day}"
    span = periods.bounds(key, BOARD.timezone)
    assert span is not None
    now = span[1] + timedelta(seconds=BOARD.grace_seconds + after_s)
    lookback = timedelta(seconds=lookback_s)
    expected = after_s >= 0 and span[1] >= now - lookback
    assert (due.select(BOARD, [key], [], now, lookback) == [key]) is expected
