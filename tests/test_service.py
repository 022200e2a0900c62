"""Composition root: `leaderboard api` serves the read API and HTTP ingest; the read API alone has none."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import redis
from fastapi.testclient import TestClient

from leaderboard import cli
from leaderboard.service import build_app
from leaderboard.settings import Settings
from query_api.app import create_app
from tests.api_world import BOARDS, make_world
from tests.test_ingest import AUTH, EVENT, TOKEN, read_values


def test_the_api_command_serves_reads_and_ingest(
    config: Settings, redis_client: redis.Redis, pg: psycopg.Connection
) -> None:
    make_world(config, redis_client, pg)
    assert cli.COMMANDS["api"] == "leaderboard.service"
    with TestClient(build_app(replace(config, ingest_token=TOKEN), BOARDS)) as client:
        assert client.get("/v1/leaderboards/global/entries?period=all_time").status_code == 200
        accepted = client.post("/v1/scores", json=EVENT, headers=AUTH)
        assert accepted.status_code == 202, accepted.text
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/v1/scores", "/v1/scores:batch", "/v1/leaderboards/{board}/entries"} <= paths.keys()
    values = read_values(config, 1)
    assert [json.loads(v)["event_id"] for v in values] == [accepted.json()["event_id"]]


def test_the_composition_root_passes_the_future_skew_setting_to_ingest(
    config: Settings, redis_client: redis.Redis, pg: psycopg.Connection
) -> None:
    make_world(config, redis_client, pg)
    soon = (datetime.now(UTC) + timedelta(seconds=120)).isoformat()
    cfg = replace(config, ingest_token=TOKEN, max_future_skew_s=60)
    with TestClient(build_app(cfg, BOARDS)) as client:
        refused = client.post("/v1/scores", json={**EVENT, "occurred_at": soon}, headers=AUTH)
    assert refused.status_code == 422, refused.text
    assert [e["reason"] for e in refused.json()["errors"]] == ["future"]


def test_the_read_api_alone_has_no_ingest(
    config: Settings, redis_client: redis.Redis, pg: psycopg.Connection
) -> None:
    make_world(config, redis_client, pg)
    with TestClient(create_app(config, BOARDS)) as client:
        assert client.post("/v1/scores", json=EVENT, headers=AUTH).status_code == 404
        assert "/v1/scores" not in client.get("/openapi.json").json()["paths"]
