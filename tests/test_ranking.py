"""leaderboard.ranking: competition ranks of a page, percentile, around-me windows (pure, with properties)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leaderboard import ranking


def full_ranks(points: list[int]) -> list[int]:
    """Ground truth: 1 + number of strictly higher scores."""
    return [1 + sum(1 for q in points if q > p) for p in points]


def test_1224() -> None:
    assert ranking.page_ranks([10, 8, 8, 5], 1, 0) == [1, 2, 2, 4]


def test_page_starting_inside_a_tie_keeps_the_tie_rank() -> None:
    # board 10, 8, 8, 8, 5: the page from position 2 starts with a player ranked 2
    assert ranking.page_ranks([8, 8, 5], 2, 2) == [2, 2, 5]


def test_empty_page() -> None:
    assert ranking.page_ranks([], 1, 0) == []


board_points = st.lists(st.integers(0, 20), min_size=1, max_size=60).map(lambda xs: sorted(xs, reverse=True))


@given(board_points, st.data())
def test_any_page_matches_the_ground_truth(points: list[int], data: st.DataObject) -> None:
    truth = full_ranks(points)
    start = data.draw(st.integers(0, len(points) - 1))
    end = data.draw(st.integers(start + 1, len(points)))
    page = ranking.page_ranks(points[start:end], truth[start], start)
    assert page == truth[start:end]
    assert all(a <= b for a, b in pairwise(page))  # non-decreasing
    for i in range(1, len(page)):  # ties share a rank; otherwise the rank is the 1-based position
        tied = points[start + i] == points[start + i - 1]
        assert page[i] == (page[i - 1] if tied else start + i + 1)


def test_percentile() -> None:
    assert ranking.percentile(1, 4) == 25.0
    assert ranking.percentile(0, 1) == 0.0
    assert ranking.percentile(2, 3) == 66.67
    assert ranking.percentile(0, 0) == 0.0


@given(st.integers(1, 500), st.integers(0, 60), st.data())
def test_window_contains_the_player_and_has_min_2r_plus_1_n(
    size: int, radius: int, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, size - 1))
    first, last = ranking.window(index, size, radius)
    assert 0 <= first <= index <= last < size
    assert last - first + 1 == min(2 * radius + 1, size)
    # centred whenever the board allows it
    if radius <= index < size - radius:
        assert (first, last) == (index - radius, index + radius)


def test_window_edges_fill_from_the_other_side() -> None:
    assert ranking.window(0, 100, 4) == (0, 8)
    assert ranking.window(99, 100, 4) == (91, 99)
    assert ranking.window(1, 100, 4) == (0, 8)
    assert ranking.window(50, 100, 4) == (46, 54)
    assert ranking.window(2, 3, 4) == (0, 2)


def test_window_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="outside"):
        ranking.window(3, 3, 1)
    with pytest.raises(ValueError, match="radius"):
        ranking.window(0, 3, -1)
