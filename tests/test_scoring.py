from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from leaderboard import scoring

points = st.integers(min_value=0, max_value=scoring.MAX_SCORE)
tbs = st.integers(min_value=0, max_value=scoring.TIME_SPAN - 1)


@given(points, tbs)
def test_pack_round_trips_and_is_exact_in_a_double(p: int, tb: int) -> None:
    packed = scoring.pack(p, tb)
    assert packed < 2**53
    assert float(packed) == packed
    assert scoring.unpack(float(packed)) == (p, tb)


@given(points, points, tbs, tbs)
def test_more_points_always_rank_higher_whatever_the_tiebreak(a: int, b: int, ta: int, tb: int) -> None:
    if a > b:
        assert scoring.pack(a, ta) > scoring.pack(b, tb)
        assert scoring.pack(a, ta) >= scoring.higher_than(b)
    assert scoring.pack(b, tb) < scoring.higher_than(b)


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_earlier_reach_sorts_first_within_a_tie(earlier: int, later: int) -> None:
    if earlier < later:
        assert scoring.pack(5, scoring.tiebreak(earlier)) > scoring.pack(5, scoring.tiebreak(later))


def test_scores_saturate_at_the_documented_bound() -> None:
    assert scoring.MAX_SCORE == 536_870_911
    assert scoring.unpack(scoring.pack(scoring.MAX_SCORE + 10, 0))[0] == scoring.MAX_SCORE


def test_all_time_field_lasts_past_the_accepted_event_range() -> None:
    last = datetime(2050, 1, 1, tzinfo=UTC)
    units = scoring.time_units(last, scoring.ALL_TIME_ORIGIN, scoring.ALL_TIME_UNIT_S)
    assert units < scoring.TIME_SPAN - 1
    when = scoring.reached_at(scoring.tiebreak(units), scoring.ALL_TIME_ORIGIN, scoring.ALL_TIME_UNIT_S)
    assert when == last
