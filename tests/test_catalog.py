"""Boards managed at runtime, the pure part (leaderboard.catalog): definitions, plans, what is served,
diff."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leaderboard import catalog
from leaderboard.boards import Board, BoardsError
from leaderboard.catalog import Catalog, Entry

RICH = {
    "id": "laps",
    "periods": ["all_time", "weekly"],
    "timezone": "Asia/Kathmandu",
    "aggregation": "best",
    "order": "asc",
    "value": "score",
    "filter": {"game": ["racing", "karts"], "region": "eu"},
    "season": [{"id": "s1", "start": "2027-01-01T00:00:00Z", "end": "2027-04-01T00:00:00Z"}],
    "grace_seconds": 60,
    "retention_days": 7,
    "reward_top": 3,
}


def test_a_definition_round_trips_through_its_canonical_mapping() -> None:
    board = catalog.parse(RICH)
    doc = catalog.definition(board)
    assert catalog.parse(doc) == board
    assert doc["filter"] == {"game": ["karts", "racing"], "region": ["eu"]}
    assert doc["season"] == [
        {"id": "s1", "start": "2027-01-01T00:00:00.000Z", "end": "2027-04-01T00:00:00.000Z"}
    ]
    assert catalog.definition(catalog.parse(catalog.definition(Board(id="plain")))) == catalog.definition(
        Board(id="plain")
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"aggregation": "median"}, "aggregation"),
        ({"order": "up"}, "order"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"ordr": "asc"}, "'ordr'"),
        ({"filter": {"games": ["x"]}}, "filter.games"),
        ({"reward_top": -1}, "reward_top"),
        ({"periods": ["hourly"]}, "periods"),
        ({"id": "Bad Id"}, "id"),
        (
            {
                "season": [
                    {"id": "s1", "start": "2027-01-01T00:00:00Z", "end": "2027-04-01T00:00:00Z", "x": 1}
                ]
            },
            "season.x",
        ),
    ],
)
def test_a_malformed_definition_is_refused_naming_the_field(change: dict[str, object], named: str) -> None:
    with pytest.raises(BoardsError) as err:
        catalog.parse({**RICH, **change})
    assert named in str(err.value)


def _entry(board: Board, state: str = "active", draft: Board | None = None) -> Entry:
    return Entry(board.id, state, board if state != "draft" else None, draft)  # type: ignore[arg-type]


def test_plan_says_new_changed_or_unchanged_against_the_latest_stored_version() -> None:
    live = catalog.versioned({"id": "a"}, 1)
    draft = catalog.versioned({"id": "b", "order": "asc"}, 2)
    cat = Catalog(5, {"a": _entry(live), "b": _entry(catalog.versioned({"id": "b"}, 1), draft=draft)})
    got = catalog.plan(
        cat, [Board(id="a"), Board(id="b", order="asc"), Board(id="a2"), Board(id="a", aggregation="best")]
    )
    assert [(c.board, c.action, c.fields) for c in got][:3] == [
        ("a", "unchanged", ()),
        ("b", "unchanged", ()),  # equal to its draft: nothing new
        ("a2", "create", tuple(sorted(catalog.definition(Board(id="a2"))))),
    ]
    assert (got[3].action, got[3].fields) == ("change", ("aggregation",))
    retired = Catalog(6, {"a": _entry(live, "retired")})
    [back] = catalog.plan(retired, [Board(id="a")])
    assert (back.action, back.fields) == ("change", ())
    assert "comes back" in back.line()


def test_the_catalog_overlays_the_file_and_retired_boards_stay_served_not_fed() -> None:
    file_boards = (Board(id="global"), Board(id="chess", games=frozenset({"chess"})))
    chess_v2 = catalog.versioned({"id": "chess", "aggregation": "best"}, 2)
    cat = Catalog(
        3,
        {
            "chess": _entry(chess_v2),
            "old": _entry(catalog.versioned({"id": "old"}, 1), "retired"),
            "new": Entry("new", "draft", None, catalog.versioned({"id": "new"}, 1)),
        },
    )
    served = catalog.effective(file_boards, cat)
    assert [b.id for b in served.fed] == ["global", "chess"]
    assert served.fed[1] == chess_v2
    assert [b.id for b in served.served] == ["global", "chess", "old"]


def _naive_ranks(rows: list[tuple[str, int]]) -> dict[str, int]:
    return {p: 1 + sum(1 for _, w in rows if w > v) for p, v in rows}


@given(seed=st.integers(0, 2**32 - 1), top=st.integers(1, 8))
def test_diff_lists_exactly_the_players_whose_rank_changes(seed: int, top: int) -> None:
    rnd = random.Random(seed)

    def board() -> list[tuple[str, int]]:
        players = rnd.sample([f"p{i}" for i in range(20)], rnd.randint(0, 20))
        rows = [(p, rnd.randint(0, 6)) for p in players]
        return sorted(rows, key=lambda r: -r[1])

    before, after = board(), board()
    d = catalog.diff(before, after, top)
    old, new = _naive_ranks(before), _naive_ranks(after)
    assert {m.player for m in d.moves} == {p for p in set(old) | set(new) if old.get(p) != new.get(p)}
    for m in d.moves:
        assert (m.before, m.after) == (old.get(m.player), new.get(m.player))
    assert set(d.entering) == {p for p, r in new.items() if r <= top} - {
        p for p, r in old.items() if r <= top
    }
    assert set(d.leaving) == {p for p, r in old.items() if r <= top} - {p for p, r in new.items() if r <= top}
    assert (d.players_before, d.players_after) == (len(before), len(after))


def test_the_example_boards_file_is_a_valid_catalog_input() -> None:
    path = Path(__file__).resolve().parents[1] / "docs" / "boards.example.toml"
    boards = catalog.parse_file(tomllib.loads(path.read_text(encoding="utf-8")), str(path))
    assert len(boards) >= 4
    assert {b.order for b in boards} == {"asc", "desc"}
