"""Closed periods that Redis has let go are served from PostgreSQL's final standings (source: snapshot)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import psycopg
from fastapi.testclient import TestClient

from leaderboard import ranking
from leaderboard.net import free_port
from leaderboard.settings import Settings
from query_api import models
from query_api.app import create_app
from tests.api_world import BOARDS, World, at, problem_of, rows
from tests.factories import win

PERIOD = "monthly:2025-01"


def close_period(pg: psycopg.Connection, board: str = "global", period: str = PERIOD) -> None:
    """Standings 50, 30, 30, 10 -> ranks 1 2 2 4; s2 reached 30 before s3."""
    standings = [(1, "s1", 50, "2025-01-03"), (2, "s2", 30, "2025-01-04"), (2, "s3", 30, "2025-01-05")]
    standings.append((4, "s4", 10, "2025-01-06"))
    pg.execute(
        "INSERT INTO closed_periods (board, period, closed_at, players) VALUES (%s, %s, %s, %s)",
        (board, period, datetime(2025, 2, 1, 1, tzinfo=UTC), len(standings)),
    )
    for position, (rank, player, score, day) in enumerate(standings, start=1):
        pg.execute(
            "INSERT INTO period_standings (board, period, rank, position, player_id, score, reached_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (board, period, rank, position, player, score, f"{day}T12:00:00Z"),
        )
    pg.execute(
        "INSERT INTO players (player_id, display_name, updated_at) VALUES ('s1', 'Sam', now())"
        " ON CONFLICT (player_id) DO NOTHING"
    )


def test_entries_and_player_from_a_snapshot(world: World, api: TestClient, pg: psycopg.Connection) -> None:
    close_period(pg)
    resp = api.get("/v1/leaderboards/global/entries", params={"period": PERIOD})
    assert resp.status_code == 200
    doc = resp.json()
    models.Page.model_validate(doc)
    assert (doc["source"], doc["total"], doc["period"]) == ("snapshot", 4, PERIOD)
    assert rows(doc) == [(1, "s1", 50), (2, "s2", 30), (2, "s3", 30), (4, "s4", 10)]
    assert doc["entries"][0]["display_name"] == "Sam"
    assert resp.headers["cache-control"] == "public, max-age=86400"
    page = api.get(
        "/v1/leaderboards/global/entries", params={"period": PERIOD, "limit": 2, "offset": 2}
    ).json()
    assert (rows(page), page["next_offset"]) == ([(2, "s3", 30), (4, "s4", 10)], None)

    player = api.get("/v1/leaderboards/global/players/s3", params={"period": PERIOD}).json()
    models.PlayerRank.model_validate(player)
    assert (player["source"], player["rank"], player["score"], player["percentile"]) == (
        "snapshot",
        2,
        30,
        25.0,
    )
    assert player["reached_at"] == "2025-01-05T12:00:00.000Z"
    problem_of(
        api.get("/v1/leaderboards/global/players/ghost", params={"period": PERIOD}), 404, "player-not-ranked"
    )


def test_around_lookup_range_stats_from_a_snapshot(api: TestClient, pg: psycopg.Connection) -> None:
    close_period(pg)
    base = "/v1/leaderboards/global"
    around = api.get(f"{base}/players/s4/around", params={"period": PERIOD, "radius": 1}).json()
    models.Around.model_validate(around)
    assert (around["source"], around["player_index"]) == ("snapshot", 2)
    assert rows(around) == [(2, "s2", 30), (2, "s3", 30), (4, "s4", 10)]

    found = api.post(
        f"{base}/players:lookup", params={"period": PERIOD}, json={"player_ids": ["s4", "x", "s1"]}
    )
    doc = found.json()
    assert (doc["source"], rows(doc), doc["absent"]) == ("snapshot", [(1, "s1", 50), (4, "s4", 10)], ["x"])

    ranged = api.get(f"{base}/players", params={"period": PERIOD, "min_score": 20, "max_score": 40}).json()
    assert (ranged["source"], ranged["matching"], rows(ranged)) == (
        "snapshot",
        2,
        [(2, "s2", 30), (2, "s3", 30)],
    )

    stats = api.get(f"{base}/stats", params={"period": PERIOD}).json()
    models.Stats.model_validate(stats)
    assert (stats["source"], stats["players"], stats["top_score"], stats["events"]) == (
        "snapshot",
        4,
        50,
        None,
    )
    assert stats["updated_at"] == "2025-02-01T01:00:00.000Z"

    periods_doc = api.get(f"{base}/periods").json()
    assert [c["period"] for c in periods_doc["closed"]] == [PERIOD]
    assert periods_doc["closed"][0]["players"] == 4


def test_a_closed_period_still_in_redis_is_served_live(
    world: World, api: TestClient, pg: psycopg.Connection
) -> None:
    world.wins(win("live1", at("10:00"), 7))
    pg.execute("INSERT INTO closed_periods (board, period, players) VALUES ('global', 'daily:2026-11-28', 1)")
    doc = api.get("/v1/leaderboards/global/entries", params={"period": "daily:2026-11-28"}).json()
    assert (doc["source"], rows(doc)) == ("live", [(1, "live1", 7)])


def test_postgres_down_only_matters_for_ended_absent_periods(config: Settings, world: World) -> None:
    broken = replace(
        config, database_url=f"postgresql://nobody:x@127.0.0.1:{free_port()}/none?connect_timeout=1"
    )
    world.wins(win("now", datetime.now(UTC), 1))
    with TestClient(create_app(broken, BOARDS)) as api:
        live = api.get("/v1/leaderboards/global/entries", params={"period": "monthly:current"})
        assert live.status_code == 200
        assert rows(live.json()) == [(1, "now", 1)]
        future = api.get("/v1/leaderboards/global/entries", params={"period": "daily:2030-01-01"})
        assert future.status_code == 200
        resp = api.get("/v1/leaderboards/global/entries", params={"period": PERIOD})
        doc = problem_of(resp, 503, "postgres-unavailable")
        assert "PostgreSQL" in doc["detail"]
        assert resp.headers["retry-after"] == "5"


def test_every_players_percentile_and_index_follow_the_stored_ranks(
    api: TestClient, pg: psycopg.Connection
) -> None:
    """below and index come from positions (index lookups, no count over the period): checked for the first
    and the last of a tie, the top and the bottom against the definitions (count of worse ranks, position)."""
    close_period(pg)
    ranks = {"s1": 1, "s2": 2, "s3": 2, "s4": 4}
    for index, (player, rank) in enumerate(ranks.items()):
        doc = api.get(f"/v1/leaderboards/global/players/{player}", params={"period": PERIOD}).json()
        below = sum(1 for r in ranks.values() if r > rank)
        assert (doc["rank"], doc["percentile"]) == (rank, ranking.percentile(below, len(ranks))), player
        around = api.get(
            f"/v1/leaderboards/global/players/{player}/around", params={"period": PERIOD, "radius": 10}
        ).json()
        assert around["player_index"] == index, player
