"""The fast path for top / player / around answers exactly as the FastAPI routes do, errors included."""

from __future__ import annotations

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from leaderboard.settings import Settings
from query_api.app import create_app
from tests.test_api_reads import BOARDS, World, make_world, ties

REQUESTS = [
    "/v1/leaderboards/global/entries?period=all_time",
    "/v1/leaderboards/global/entries?period=all_time&limit=2&offset=1",
    "/v1/leaderboards/global/entries",
    "/v1/leaderboards/chess_daily/entries?period=daily:2026-11-28",
    "/v1/leaderboards/global/entries?period=daily:2030-01-01",
    "/v1/leaderboards/global/players/p3?period=all_time",
    "/v1/leaderboards/global/players/p3/around?period=all_time&radius=1",
    "/v1/leaderboards/global/players/p1/around?period=weekly:2026-W48",
    # errors the fast path answers itself ...
    "/v1/leaderboards/nope/entries",
    "/v1/leaderboards/global/entries?period=yearly:2026",
    "/v1/leaderboards/global/entries?period=",
    "/v1/leaderboards/global/players/a%20b?period=all_time",
    "/v1/leaderboards/global/players/ghost?period=all_time",
    "/v1/leaderboards/chess_daily/players/p1?period=monthly:current",
    # ... and the ones it leaves to FastAPI's validation
    "/v1/leaderboards/global/entries?limit=0",
    "/v1/leaderboards/global/entries?limit=abc",
    "/v1/leaderboards/global/entries?limit=5&limit=6",
    "/v1/leaderboards/global/players/p1/around?radius=99",
]


@pytest.fixture
def world(config: Settings, redis_client: redis.Redis, pg: psycopg.Connection) -> World:
    return make_world(config, redis_client, pg)


def test_fast_path_and_fastapi_routes_agree(world: World) -> None:
    ties(world)
    with (
        TestClient(create_app(world.config, BOARDS)) as fast,
        TestClient(create_app(world.config, BOARDS, fast_path=False)) as slow,
    ):
        for url in REQUESTS:
            a, b = fast.get(url), slow.get(url)
            assert (a.status_code, a.json()) == (b.status_code, b.json()), url
            for header in ("content-type", "cache-control", "etag", "retry-after"):
                assert a.headers.get(header) == b.headers.get(header), (url, header)
        etag = fast.get(REQUESTS[0]).headers["etag"]
        assert fast.get(REQUESTS[0], headers={"If-None-Match": etag}).status_code == 304
        assert fast.get(REQUESTS[0], headers={"If-None-Match": 'W/"other", ' + etag}).status_code == 304
