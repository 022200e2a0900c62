"""Dating events against their record's broker timestamp (pure: records built here, no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.decoded import Record, _mark_future
from schemas.model import Invalid, MatchWon, Reason
from tests.factories import win

BROKER = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def record(offset: int, at: datetime, broker: datetime = BROKER) -> Record:
    ms = int(broker.timestamp() * 1000)
    return Record("t", 0, offset, None, b"{}", ms, win("p", at))


def marked(records: list[Record], skew: float = 300, untimed: frozenset[int] = frozenset()) -> list[bool]:
    lowest = min(r.timestamp_ms for r in records)
    _mark_future(records, lowest, skew, set(untimed))
    return [isinstance(r.decoded, Invalid) and r.decoded.reason is Reason.FUTURE for r in records]


def test_the_skew_is_inclusive_and_measured_from_the_records_own_timestamp() -> None:
    later = BROKER + timedelta(hours=1)
    records = [
        record(0, BROKER + timedelta(seconds=300)),  # exactly the skew: allowed
        record(1, BROKER + timedelta(seconds=300, microseconds=1)),
        record(2, BROKER - timedelta(days=400)),  # the past is not this check's business
        record(3, later + timedelta(seconds=200), broker=later),  # ahead of the batch's lowest, not its own
        record(4, later + timedelta(seconds=301), broker=later),
    ]
    assert marked(records) == [False, True, False, False, True]
    detail = records[1].decoded
    assert isinstance(detail, Invalid)
    assert "broker timestamp 2026-12-01T12:00:00+00:00" in detail.detail


def test_records_without_a_broker_timestamp_are_not_dated_by_the_wall_clock() -> None:
    records = [record(0, BROKER + timedelta(days=1)), record(1, BROKER + timedelta(days=1))]
    assert marked(records, untimed=frozenset({0})) == [False, True]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-10_000, 10_000), st.integers(0, 5_000)), min_size=1, max_size=30),
    st.integers(0, 3_600),
)
def test_the_batch_shortcut_decides_as_checking_each_record(cases: list[tuple[int, int]], skew: int) -> None:
    """Whatever the batch around it, a record is future iff occurred_at > its own timestamp + skew."""
    records = [
        record(i, BROKER + timedelta(seconds=ahead + late), broker=BROKER + timedelta(seconds=late))
        for i, (ahead, late) in enumerate(cases)
    ]
    expected = [ahead > skew for ahead, _ in cases]
    assert marked(records, skew) == expected
    for rec, (ahead, _) in zip(records, cases, strict=True):
        if ahead <= skew:
            assert isinstance(rec.decoded, MatchWon)
