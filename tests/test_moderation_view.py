"""The pure moderation predicate (leaderboard/moderation/view.py) against a naive restatement of the rules.

Its SQL twin (view.VOIDED_SQL, in the checkpoint fold) is checked against the same oracle with the real
PostgreSQL in tests/test_moderation_boards.py (verify's comparison and the rebuilds there).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from leaderboard.moderation import view
from schemas.model import MatchWon

T0 = datetime(2026, 11, 1, tzinfo=UTC)
PLAYERS = ("a", "b", "c")
BOARDS = ("x", "y")


def win(player: str, minute: int, match: str) -> MatchWon:
    return MatchWon(
        event_id=str(uuid.UUID(int=minute * 7 + len(player))),
        match_id=match,
        player_id=player,
        game="chess",
        occurred_at=T0 + timedelta(minutes=minute),
    )


def disjoint(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Windows of one player never overlap (rules.plan refuses it): keep the first of overlapping ones."""
    kept: list[tuple[int, int]] = []
    for lo, length in spans:
        hi = lo + length
        if all(hi <= a or b <= lo for a, b in kept):
            kept.append((lo, hi))
    return kept


@given(
    holds=st.lists(st.tuples(st.sampled_from(PLAYERS), st.sampled_from((*BOARDS, "*"))), max_size=4),
    windows=st.dictionaries(
        st.sampled_from(PLAYERS),
        st.lists(st.tuples(st.integers(0, 100), st.integers(1, 30)), max_size=4),
        max_size=3,
    ),
    void_matches=st.sets(st.sampled_from(("m1", "m2", "m3")), max_size=2),
    erased=st.sets(st.sampled_from(PLAYERS), max_size=1),
    events=st.lists(
        st.tuples(st.sampled_from(PLAYERS), st.integers(0, 130), st.sampled_from(("m1", "m2", "m3", "m4"))),
        min_size=1,
        max_size=20,
    ),
    void_first=st.booleans(),
)
def test_counts_and_why_not_agree_with_the_rules(
    holds: list[tuple[str, str]],
    windows: dict[str, list[tuple[int, int]]],
    void_matches: set[str],
    erased: set[str],
    events: list[tuple[str, int, str]],
    void_first: bool,
) -> None:
    wins = [win(p, minute, match) for p, minute, match in events]
    void_events = {wins[0].event_id} if void_first else set()
    spans = {p: disjoint(s) for p, s in windows.items()}
    v = view.build(
        7,
        holds,
        void_events,
        void_matches,
        [
            (p, T0 + timedelta(minutes=lo), T0 + timedelta(minutes=hi))
            for p, s in spans.items()
            for lo, hi in s
        ],
        erased,
    )
    assert v.seq == 7
    for e, (player, minute, match) in zip(wins, events, strict=True):
        in_window = any(lo <= minute < hi for lo, hi in spans.get(player, []))
        voided = player in erased or e.event_id in void_events or match in void_matches or in_window
        assert v.voided(e) == voided
        for board in BOARDS:
            held = (player, board) in holds or (player, "*") in holds
            assert v.counts(e, board) == (not voided and not held)
            assert (v.why_not(e, board) is None) == v.counts(e, board)
            if player in erased:
                assert v.why_not(e, board) == "erased"


def test_a_late_raw_record_of_an_erased_id_is_stored_under_the_pseudonym_and_counts_nowhere() -> None:
    v = view.build(1, [], [], [], [], ["erased-00"], [(view.digest("alice"), "erased-00")])
    raw = MatchWon(
        event_id=str(uuid.uuid4()),
        match_id="m",
        player_id="alice",
        game="chess",
        occurred_at=T0,
        display_name="Alice",
    )
    stored = view.pseudonymised(v, raw)
    assert (stored.player_id, stored.display_name) == ("erased-00", None)
    assert not v.counts(raw, "x")
    assert not v.counts(stored, "x")
    other = MatchWon(event_id=str(uuid.uuid4()), match_id="m", player_id="bob", game="chess", occurred_at=T0)
    assert view.pseudonymised(v, other) is other
    assert v.counts(other, "x")
