"""The read API against the real Redis and PostgreSQL, with boards written through the real write path
(the ``world`` and ``api`` fixtures, tests/api_world.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from leaderboard import periods
from leaderboard.periods import PeriodKind
from query_api import models
from tests.api_world import BOARDS, DAY, World, at, problem_of, rows, ties
from tests.factories import win


def test_list_boards(api: TestClient) -> None:
    resp = api.get("/v1/leaderboards")
    assert resp.status_code == 200
    doc = models.BoardList.model_validate(resp.json())
    by_id = {b.id: b for b in doc.boards}
    assert set(by_id) == {"global", "chess_daily"}
    now = datetime.now(UTC)
    assert by_id["global"].current["monthly"] == periods.key_for(PeriodKind.MONTHLY, now, BOARDS[0].timezone)
    assert by_id["global"].default_period == "monthly:current"
    assert by_id["chess_daily"].default_period == "daily:current"
    assert by_id["chess_daily"].periods == ["daily", "all_time"]


def test_top_ranks_ties_1224_first_to_reach_first(world: World, api: TestClient) -> None:
    ties(world)
    resp = api.get("/v1/leaderboards/global/entries", params={"period": f"daily:{DAY}"})
    assert resp.status_code == 200
    doc = resp.json()
    models.Page.model_validate(doc)
    assert rows(doc) == [(1, "p1", 5), (2, "p2", 3), (2, "p3", 3), (4, "p4", 1)]
    assert [e["display_name"] for e in doc["entries"]] == ["Ada", "Bob", None, None]
    assert (doc["total"], doc["period"], doc["source"], doc["next_offset"]) == (
        4,
        f"daily:{DAY}",
        "live",
        None,
    )
    assert resp.headers["cache-control"] == "public, max-age=1"


def test_pages_start_inside_a_tie(world: World, api: TestClient) -> None:
    ties(world)
    url = "/v1/leaderboards/global/entries"
    first = api.get(url, params={"period": "all_time", "limit": 2}).json()
    assert rows(first) == [(1, "p1", 5), (2, "p2", 3)]
    assert first["next_offset"] == 2
    second = api.get(url, params={"period": "all_time", "limit": 2, "offset": first["next_offset"]}).json()
    assert rows(second) == [(2, "p3", 3), (4, "p4", 1)]
    assert second["next_offset"] is None
    past = api.get(url, params={"period": "all_time", "offset": 10}).json()
    assert (past["entries"], past["total"], past["next_offset"]) == ([], 4, None)


def test_default_period_is_monthly_current_or_the_first_kind(world: World, api: TestClient) -> None:
    now = datetime.now(UTC) - timedelta(seconds=2)
    world.wins(win("now1", now, 2), win("now2", now, 1))
    doc = api.get("/v1/leaderboards/global/entries").json()
    assert doc["period"] == periods.key_for(PeriodKind.MONTHLY, now, BOARDS[0].timezone)
    assert rows(doc) == [(1, "now1", 2), (2, "now2", 1)]
    daily = api.get("/v1/leaderboards/chess_daily/entries").json()
    assert daily["period"] == periods.key_for(PeriodKind.DAILY, now, BOARDS[1].timezone)


@pytest.mark.parametrize(
    "spec",
    ["all_time", "monthly:2026-11", "weekly:2026-W48", f"daily:{DAY}", "all_time:current", "daily:previous"],
)
def test_period_grammar(world: World, api: TestClient, spec: str) -> None:
    ties(world)
    key = periods.resolve(spec, datetime.now(UTC), BOARDS[0].timezone)
    doc = api.get("/v1/leaderboards/global/entries", params={"period": spec}).json()
    assert doc["period"] == key
    if key in ("all_time", "monthly:2026-11", "weekly:2026-W48", f"daily:{DAY}"):  # daily:previous on 11-29
        assert rows(doc) == [(1, "p1", 5), (2, "p2", 3), (2, "p3", 3), (4, "p4", 1)]
    else:
        assert rows(doc) == []


@pytest.mark.parametrize(
    "spec",
    [
        "yearly:2026",
        "monthly",
        "monthly:2026-13",
        "weekly:2026-W60",
        "daily:2026-02-30",
        "daily:28-11-2026",
        "",
    ],
)
def test_bad_periods_are_400_with_the_grammar(api: TestClient, spec: str) -> None:
    doc = problem_of(
        api.get("/v1/leaderboards/global/entries", params={"period": spec}), 400, "invalid-period"
    )
    assert periods.GRAMMAR in doc["detail"]
    assert repr(spec) in doc["detail"]


def test_period_kind_the_board_does_not_keep_is_400(api: TestClient) -> None:
    doc = problem_of(
        api.get("/v1/leaderboards/chess_daily/entries", params={"period": "weekly:current"}),
        400,
        "invalid-period",
    )
    assert "keeps no weekly" in doc["detail"]


def test_unknown_board_is_404_on_every_route(api: TestClient) -> None:
    for path in (
        "entries",
        "players/p1",
        "players/p1/around",
        "players",
        "stats",
        "periods",
        "entries/stream",
    ):
        doc = problem_of(api.get(f"/v1/leaderboards/nope/{path}"), 404, "unknown-board")
        assert "'nope'" in doc["detail"]
        assert "global" in doc["detail"]
    problem_of(
        api.post("/v1/leaderboards/nope/players:lookup", json={"player_ids": ["a"]}), 404, "unknown-board"
    )


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("entries", {"limit": 0}, "limit"),
        ("entries", {"limit": 1001}, "limit"),
        ("entries", {"limit": "ten"}, "limit"),
        ("entries", {"offset": -1}, "offset"),
        ("players/p1/around", {"radius": 51}, "radius"),
        ("players/p1/around", {"radius": -1}, "radius"),
        ("players", {"min_score": -5}, "min_score"),
        ("entries/stream", {"limit": 101}, "limit"),
    ],
)
def test_bad_parameters_are_400_problems(
    api: TestClient, path: str, params: dict[str, Any], field: str
) -> None:
    doc = problem_of(api.get(f"/v1/leaderboards/global/{path}", params=params), 400, "invalid-parameter")
    assert f"query.{field}" in doc["detail"]
    assert doc["errors"][0]["field"] == f"query.{field}"


def test_unknown_route_and_method_are_problems(api: TestClient) -> None:
    problem_of(api.get("/v2/nothing"), 404, "not-found")
    problem_of(api.delete("/v1/leaderboards"), 405, "method-not-allowed")


# Same arrange-request-validate steps as the top test on purpose: each read test names its route and model.
def test_player_rank_score_percentile(world: World, api: TestClient) -> None:
    ties(world)
    resp = api.get("/v1/leaderboards/global/players/p3", params={"period": f"daily:{DAY}"})
    assert resp.status_code == 200
    doc = resp.json()
    models.PlayerRank.model_validate(doc)
    assert (doc["rank"], doc["score"], doc["total"], doc["percentile"]) == (2, 3, 4, 25.0)
    assert doc["reached_at"] == "2026-11-28T10:10:00.000Z"
    assert doc["display_name"] is None
    top = api.get("/v1/leaderboards/global/players/p1", params={"period": f"daily:{DAY}"}).json()
    assert (top["rank"], top["percentile"], top["display_name"]) == (1, 75.0, "Ada")
    last = api.get("/v1/leaderboards/global/players/p4", params={"period": f"daily:{DAY}"}).json()
    assert (last["rank"], last["percentile"]) == (4, 0.0)
    alltime = api.get("/v1/leaderboards/global/players/p2", params={"period": "all_time"}).json()
    assert alltime["reached_at"] == "2026-11-28T10:05:00.000Z"  # all_time tie-breaks count minutes


def test_player_without_wins_and_empty_board_are_404(world: World, api: TestClient) -> None:
    ties(world)
    doc = problem_of(
        api.get("/v1/leaderboards/global/players/ghost?period=all_time"), 404, "player-not-ranked"
    )
    assert "'ghost'" in doc["detail"]
    problem_of(
        api.get("/v1/leaderboards/global/players/p1?period=daily:2030-01-01"), 404, "player-not-ranked"
    )
    problem_of(
        api.get("/v1/leaderboards/global/players/ghost/around?period=all_time"), 404, "player-not-ranked"
    )


def test_empty_board(api: TestClient) -> None:
    doc = api.get("/v1/leaderboards/global/entries", params={"period": "daily:2030-01-01"}).json()
    assert (doc["entries"], doc["total"], doc["source"], doc["next_offset"]) == ([], 0, "live", None)
    stats = api.get("/v1/leaderboards/global/stats", params={"period": "daily:2030-01-01"}).json()
    assert (stats["players"], stats["top_score"], stats["events"]) == (0, None, 0)
    found = api.post(
        "/v1/leaderboards/global/players:lookup?period=all_time", json={"player_ids": ["a"]}
    ).json()
    assert (found["entries"], found["absent"]) == ([], ["a"])


def ten(world: World) -> None:
    """q0 .. q9 with 10 .. 1 points."""
    world.wins(*(win(f"q{i}", at("09:00"), 10 - i) for i in range(10)))


def test_around_middle_and_edges(world: World, api: TestClient) -> None:
    ten(world)
    url = "/v1/leaderboards/global/players/{}/around"

    def window(player: str, radius: int) -> list[str]:
        resp = api.get(url.format(player), params={"period": "all_time", "radius": radius})
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        models.Around.model_validate(doc)
        assert doc["entries"][doc["player_index"]]["player_id"] == player
        assert [e["rank"] for e in doc["entries"]] == [int(e["player_id"][1:]) + 1 for e in doc["entries"]]
        return [e["player_id"] for e in doc["entries"]]

    assert window("q5", 2) == ["q3", "q4", "q5", "q6", "q7"]
    assert window("q0", 2) == ["q0", "q1", "q2", "q3", "q4"]  # top edge: filled from below
    assert window("q9", 2) == ["q5", "q6", "q7", "q8", "q9"]  # bottom edge: filled from above
    assert window("q1", 4) == [f"q{i}" for i in range(9)]
    assert window("q4", 50) == [f"q{i}" for i in range(10)]
    assert window("q4", 0) == ["q4"]
    default = api.get(url.format("q5"), params={"period": "all_time"}).json()
    assert len(default["entries"]) == 9  # radius 4


def test_around_with_ties(world: World, api: TestClient) -> None:
    ties(world)
    doc = api.get(
        "/v1/leaderboards/global/players/p4/around", params={"period": "all_time", "radius": 1}
    ).json()
    assert rows(doc) == [(2, "p2", 3), (2, "p3", 3), (4, "p4", 1)]


def test_lookup_sorted_by_rank_with_absent(world: World, api: TestClient) -> None:
    ties(world)
    body = {"player_ids": ["p4", "p1", "ghost", "p3", "p1"]}
    resp = api.post("/v1/leaderboards/global/players:lookup", params={"period": "all_time"}, json=body)
    assert resp.status_code == 200
    doc = resp.json()
    models.LookupResult.model_validate(doc)
    assert rows(doc) == [(1, "p1", 5), (2, "p3", 3), (4, "p4", 1)]
    assert doc["absent"] == ["ghost"]
    assert doc["entries"][0]["display_name"] == "Ada"


def test_lookup_limits(api: TestClient) -> None:
    url = "/v1/leaderboards/global/players:lookup"
    doc = problem_of(
        api.post(url, json={"player_ids": [f"x{i}" for i in range(101)]}), 400, "invalid-parameter"
    )
    assert "body.player_ids" in doc["detail"]
    assert "100" in doc["detail"]
    problem_of(api.post(url, json={"player_ids": []}), 400, "invalid-parameter")
    problem_of(api.post(url, json={"ids": ["a"]}), 400, "invalid-parameter")
    problem_of(
        api.post(url, content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "invalid-parameter",
    )
    ok = api.post(url, json={"player_ids": [f"x{i}" for i in range(100)]})
    assert ok.status_code == 200


def test_players_in_a_score_range(world: World, api: TestClient) -> None:
    ties(world)
    url = "/v1/leaderboards/global/players"
    resp = api.get(url, params={"period": "all_time", "min_score": 2, "max_score": 4})
    assert resp.status_code == 200
    doc = resp.json()
    models.RangePage.model_validate(doc)
    assert rows(doc) == [(2, "p2", 3), (2, "p3", 3)]
    assert (doc["matching"], doc["total"]) == (2, 4)
    paged = api.get(url, params={"period": "all_time", "min_score": 1, "limit": 2, "offset": 2}).json()
    assert rows(paged) == [(2, "p3", 3), (4, "p4", 1)]
    assert paged["matching"] == 4
    everyone = api.get(url, params={"period": "all_time"}).json()
    assert [e["player_id"] for e in everyone["entries"]] == ["p1", "p2", "p3", "p4"]
    problem_of(api.get(url, params={"min_score": 5, "max_score": 1}), 400, "invalid-parameter")


def test_stats(world: World, api: TestClient) -> None:
    ties(world)
    resp = api.get("/v1/leaderboards/global/stats", params={"period": "all_time"})
    doc = resp.json()
    models.Stats.model_validate(doc)
    assert (doc["players"], doc["top_score"], doc["events"], doc["source"]) == (4, 5, 5, "live")
    updated = datetime.fromisoformat(doc["updated_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - updated).total_seconds()) < 120


def test_periods_live_and_closed(world: World, api: TestClient, pg: psycopg.Connection) -> None:
    ties(world)
    pg.execute("INSERT INTO closed_periods (board, period, players) VALUES ('global', 'monthly:2025-01', 0)")
    resp = api.get("/v1/leaderboards/global/periods")
    doc = resp.json()
    models.Periods.model_validate(doc)
    assert doc["live"] == sorted(["all_time", "monthly:2026-11", "weekly:2026-W48", f"daily:{DAY}"])
    assert [c["period"] for c in doc["closed"]] == ["monthly:2025-01"]
    assert set(doc["current"]) == {"all_time", "monthly", "weekly", "daily"}
    chess = api.get("/v1/leaderboards/chess_daily/periods").json()
    assert chess["live"] == ["all_time", f"daily:{DAY}"]


def test_etag_and_304(world: World, api: TestClient) -> None:
    ties(world)
    url = "/v1/leaderboards/global/entries?period=all_time"
    first = api.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    again = api.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    world.wins(win("p4", at("11:00"), 9))
    changed = api.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert rows(changed.json())[0] == (1, "p4", 10)
