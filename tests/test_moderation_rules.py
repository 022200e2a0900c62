"""leaderboard.moderation.rules (pure): holds follow the last accepted action per board; windows never
overlap; a refused action changes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leaderboard.moderation import rules
from schemas import moderation as m

BOARDS = frozenset({"a", "b", "c"})
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def act(kind: str, **fields: object) -> m.AnyAction:
    doc = {
        "kind": kind,
        "action_id": str(uuid.uuid4()),
        "actor": "t",
        "reason": "r",
        "at": "2026-01-01T00:00:00Z",
    }
    return m.validate({**doc, **fields})


def held(excluded: frozenset[str], board: str) -> bool:
    return board in excluded or rules.EVERY_BOARD in excluded


def apply(excluded: frozenset[str], plan: rules.Plan) -> frozenset[str]:
    out = set() if plan.reinstate == (rules.EVERY_BOARD,) else set(excluded) - set(plan.reinstate)
    return frozenset(out | set(plan.exclude))


holds = st.lists(
    st.tuples(
        st.sampled_from(["exclude", "reinstate"]),
        st.one_of(
            st.just("all"), st.lists(st.sampled_from(sorted(BOARDS)), min_size=1, max_size=3, unique=True)
        ),
    ),
    max_size=12,
)


def attempt(action: m.AnyAction, state: rules.State) -> rules.Plan | rules.Refused:
    try:
        return rules.plan(action, state, BOARDS)
    except rules.Refused as refused:
        return refused


@settings(max_examples=400, deadline=None)
@given(holds)
def test_each_board_is_held_as_the_last_accepted_action_covering_it_says(
    steps: list[tuple[str, object]],
) -> None:
    """Refused exactly when the action would change nothing (exclude), or names a board without a hold
    of its own (reinstate: nothing half-applied); else each board covered takes the action's side."""
    excluded: frozenset[str] = frozenset()
    truth = dict.fromkeys(BOARDS, False)
    for kind, boards in steps:
        covered = sorted(BOARDS) if boards == "all" else list(boards)  # type: ignore[call-overload]
        if kind == "exclude" and boards == "all":  # "all" holds future boards too: a change unless held so
            should_refuse = rules.EVERY_BOARD in excluded
        elif kind == "exclude":
            should_refuse = all(truth[b] for b in covered)
        elif boards == "all":
            should_refuse = not any(truth.values())
        else:
            should_refuse = rules.EVERY_BOARD in excluded or not all(b in excluded for b in covered)
        result = attempt(
            act(kind, player_id="p", boards=boards), rules.State(player_known=True, excluded=excluded)
        )
        assert isinstance(result, rules.Refused) == should_refuse, (kind, boards, excluded, result)
        if isinstance(result, rules.Plan):
            excluded = apply(excluded, result)
            for b in covered:
                truth[b] = kind == "exclude"
        assert {b: held(excluded, b) for b in BOARDS} == truth


windows = st.lists(st.tuples(st.integers(0, 50), st.integers(1, 10)), max_size=15)


@settings(max_examples=300, deadline=None)
@given(windows)
def test_accepted_windows_never_overlap(spans: list[tuple[int, int]]) -> None:
    accepted: list[rules.Window] = []
    for start, length in spans:
        begin, end = T0 + timedelta(hours=start), T0 + timedelta(hours=start + length)
        action = act("void", player_id="p", **{"from": m.utc_text(begin), "until": m.utc_text(end)})
        result = attempt(action, rules.State(player_known=True, windows=tuple(accepted)))
        overlaps = any(w.starts_at < end and begin < w.ends_at for w in accepted)
        if isinstance(result, rules.Refused):
            assert result.code == "overlapping-window"
            assert overlaps
            continue
        assert not overlaps
        assert result.void_window == (begin, end)
        accepted.append(rules.Window(action.action_id, begin, end))
    for i, x in enumerate(accepted):
        for y in accepted[i + 1 :]:
            assert x.ends_at <= y.starts_at or y.ends_at <= x.starts_at


@pytest.mark.parametrize(
    ("action", "state", "code"),
    [
        (act("exclude", player_id="p", boards="all"), rules.State(), "unknown-player"),
        (act("erase", player_id="p"), rules.State(), "unknown-player"),
        (act("exclude", player_id="p", boards=["z"]), rules.State(player_known=True), "unknown-board"),
        (act("void", event_ids=[str(uuid.uuid4())]), rules.State(), "unknown-event"),
        (act("void", match_ids=["m"]), rules.State(known_matches=frozenset({"n"})), "unknown-match"),
        (act("unvoid", target=str(uuid.uuid4())), rules.State(), "unknown-action"),
        (act("unvoid", target=str(uuid.uuid4())), rules.State(target_kind="erase"), "not-a-void"),
        (
            act("unvoid", target=str(uuid.uuid4())),
            rules.State(target_kind="void", target_unvoided=True),
            "already-unvoided",
        ),
    ],
)
def test_refusals(action: m.AnyAction, state: rules.State, code: str) -> None:
    with pytest.raises(rules.Refused) as refused:
        rules.plan(action, state, BOARDS)
    assert refused.value.code == code
    assert (code in rules.UNKNOWN) == code.startswith("unknown-")


def test_kafka_keys() -> None:
    assert rules.kafka_key(act("exclude", player_id="p", boards="all")) == b"p"
    void = act("void", match_ids=["m"])
    assert rules.kafka_key(void) == void.action_id.encode()
    assert rules.kafka_key(act("unvoid", target=void.action_id), b"p") == b"p"


def test_same_action_ignores_only_the_time() -> None:
    stored: dict[str, object] = {
        "kind": "exclude",
        "player_id": "p",
        "boards": "all",
        "at": "2026-01-01T00:00:00Z",
    }
    assert rules.same_action(stored, {**stored, "at": "2026-02-01T00:00:00Z"})
    assert not rules.same_action(stored, {**stored, "boards": ["a"]})
    erased: dict[str, object] = {"kind": "erase", "player_id": "erased-1", "reason": "r"}
    assert rules.same_action(erased, {**erased, "player_id": "the real id"})
