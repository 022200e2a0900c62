"""Folding a batch: checked against a plain recomputation, and for order independence."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.plan import Canonical, fold, payload, scores
from leaderboard import scoring
from leaderboard.boards import Board
from tests.factories import win

BASE = datetime(2026, 11, 1, tzinfo=UTC)
event_st = st.tuples(
    st.sampled_from(["ann", "bob", "cy", "dee"]),
    st.integers(min_value=0, max_value=40 * 86400),
    st.integers(min_value=1, max_value=50),
    st.sampled_from(["chess", "go"]),
)


def records(raw: list[tuple[str, int, int, str]]) -> list[Canonical]:
    return [
        Canonical(i % 3, i, win(p, BASE + timedelta(seconds=s), pts, game=g))
        for i, (p, s, pts, g) in enumerate(raw)
    ]


def snapshot(board: Board, recs: list[Canonical]) -> dict[str, dict[str, int]]:
    """period -> player -> packed score, folding each partition slot into one value."""
    return {period: s for (period, _), s in scores(board, fold(board, recs, split_partitions=False)).items()}


@settings(max_examples=60)
@given(st.lists(event_st, max_size=40), st.randoms(use_true_random=False))
def test_fold_is_independent_of_arrival_order(
    raw: list[tuple[str, int, int, str]], rnd: random.Random
) -> None:
    for board in (Board(id="s"), Board(id="b", aggregation="best")):
        recs = records(raw)
        shuffled = list(recs)
        rnd.shuffle(shuffled)
        assert snapshot(board, recs) == snapshot(board, shuffled)


@given(st.lists(event_st, min_size=1, max_size=40))
def test_sum_board_all_time_equals_plain_sums(raw: list[tuple[str, int, int, str]]) -> None:
    board = Board(id="s")
    expected: dict[str, int] = defaultdict(int)
    latest: dict[str, int] = {}
    for p, s, pts, _ in raw:
        expected[p] += pts
        latest[p] = max(latest.get(p, 0), s)
    got = snapshot(board, records(raw))["all_time"]
    assert {p: scoring.unpack(v)[0] for p, v in got.items()} == expected
    for p, v in got.items():  # tie-break = when the total was reached = the player's last win (to the minute)
        reached = scoring.reached_at(scoring.unpack(v)[1], scoring.ALL_TIME_ORIGIN, scoring.ALL_TIME_UNIT_S)
        assert reached == (BASE + timedelta(seconds=latest[p])).replace(second=0)


@given(st.lists(event_st, min_size=1, max_size=40))
def test_best_board_keeps_the_best_win_and_when_it_first_happened(
    raw: list[tuple[str, int, int, str]],
) -> None:
    board = Board(id="b", aggregation="best")
    best: dict[str, tuple[int, int]] = {}
    for p, s, pts, _ in raw:
        cur = best.get(p)
        if cur is None or pts > cur[0] or (pts == cur[0] and s < cur[1]):
            best[p] = (pts, s)
    got = snapshot(board, records(raw))["all_time"]
    assert {p: scoring.unpack(v)[0] for p, v in got.items()} == {p: v[0] for p, v in best.items()}


def test_filters_and_periods() -> None:
    board = Board(id="chess", games=frozenset({"chess"}))
    recs = records([("ann", 0, 3, "chess"), ("bob", 10, 2, "go")])
    got = snapshot(board, recs)
    assert set(got) == {"all_time", "monthly:2026-11", "weekly:2026-W44", "daily:2026-11-01"}
    assert all(set(v) == {"ann"} for v in got.values())


def test_payload_carries_offsets_per_partition_and_counts() -> None:
    board = Board(id="g", periods=(Board(id="x").periods[0],))
    recs = [Canonical(4, 10, win("ann")), Canonical(4, 12, win("ann", points=2)), Canonical(5, 3, win("bob"))]
    body = payload(board, fold(board, recs), pos={4: 13, 5: 3})
    assert body is not None
    (period,) = cast("list[dict[str, Any]]", body["periods"])
    parts = {p["pt"]: p for p in period["parts"]}
    assert parts[4]["lo"] == 10
    assert parts[4]["hi"] == 12
    assert (parts[4]["m"], parts[4]["v"], parts[4]["n"]) == (["ann"], [3], 2)
    assert body["pos"] == [[4, 13], [5, 3]]


def reference(board: Board, recs: list[Canonical]) -> dict[tuple[str, int], dict[str, tuple[int, int]]]:
    """Straight from the definitions: every event, every period it feeds, one score update at a time."""
    out: dict[tuple[str, int], dict[str, tuple[int, int]]] = defaultdict(dict)
    for rec in recs:
        e = rec.event
        if not board.accepts(e.game, e.mode, e.region):
            continue
        for key in board.period_keys(e.occurred_at):
            origin, unit = board.origin(key)
            tb = scoring.tiebreak(scoring.time_units(e.occurred_at, origin, unit))
            slot = out[(key, rec.partition)]
            cur = slot.get(e.player_id)
            if cur is None:
                slot[e.player_id] = (e.points, tb)
            elif board.aggregation == "best":
                slot[e.player_id] = max(cur, (e.points, tb))
            else:
                slot[e.player_id] = (cur[0] + e.points, min(cur[1], tb))
    return dict(out)


@settings(max_examples=80)
@given(
    st.lists(event_st, max_size=60),
    st.lists(st.integers(0, 999_999), min_size=1, max_size=5),
    st.integers(0, 60),
    st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"]),
    st.sampled_from([120, 5400, 40 * 86400]),
)
def test_fold_in_chunks_equals_the_event_by_event_definition(
    raw: list[tuple[str, int, int, str]], micros: list[int], cut: int, tz: str, spread: int
) -> None:
    """Every period and partition, tie-breaks included, sub-second instants, a fold continued with `into`.

    ``spread`` packs the events into 2 minutes, 1.5 hours or 40 days: one bucket, a few, or many.
    """
    recs = [
        Canonical(
            i % 3,
            i,
            win(p, BASE + timedelta(seconds=s % spread, microseconds=micros[i % len(micros)]), pts, game=g),
        )
        for i, (p, s, pts, g) in enumerate(raw)
    ]
    zone = ZoneInfo(tz)
    for board in (
        Board(id="s", timezone=zone),
        Board(id="b", aggregation="best", games=frozenset({"chess"})),
    ):
        acc = fold(board, recs[:cut])
        fold(board, recs[cut:], into=acc)
        want = {s: {p: scoring.pack(*v) for p, v in d.items()} for s, d in reference(board, recs).items()}
        assert scores(board, acc) == want
        for (key, part), s in acc.items():
            feeding = [
                r.offset
                for r in recs
                if r.partition == part
                and board.accepts(r.event.game, None, None)
                and key in board.period_keys(r.event.occurred_at)
            ]
            assert (s.lo, s.hi) == (min(feeding), max(feeding))
