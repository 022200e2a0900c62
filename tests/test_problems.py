"""Every error body, from the read API or HTTP ingest, is one RFC 9457 builder's: one `type` scheme."""

from __future__ import annotations

import re
from dataclasses import replace

import httpx
import psycopg
import redis
from fastapi.testclient import TestClient

from leaderboard import problems
from leaderboard.service import build_app
from leaderboard.settings import Settings
from query_api.models import ProblemDetails
from tests.api_world import BOARDS, make_world
from tests.test_ingest import AUTH, EVENT, TOKEN

TYPE = re.compile(r"/problems/([a-z0-9]+(?:-[a-z0-9]+)*)")


def kind_of(resp: httpx.Response) -> str:
    """The problem's kind, after checking the document has the one shape."""
    assert resp.status_code >= 400, resp.text
    assert resp.headers["content-type"] == problems.MEDIA_TYPE
    doc = resp.json()
    ProblemDetails.model_validate(doc)
    assert doc["status"] == resp.status_code
    assert doc["title"]
    assert doc["detail"]
    match = TYPE.fullmatch(doc["type"])
    assert match is not None, doc
    return match.group(1)


def test_read_api_and_ingest_errors_share_one_shape(
    config: Settings, redis_client: redis.Redis, pg: psycopg.Connection
) -> None:
    make_world(config, redis_client, pg)
    kinds: dict[str, str] = {}
    with TestClient(build_app(replace(config, ingest_token=TOKEN), BOARDS)) as client:
        answers = {
            "read: unknown board": client.get("/v1/leaderboards/nope/entries"),
            "read: bad limit": client.get("/v1/leaderboards/global/entries?limit=0"),
            "read: no route": client.get("/v1/nothing"),
            "ingest: no token": client.post("/v1/scores", json=EVENT),
            "ingest: not JSON": client.post("/v1/scores", content=b"{", headers=AUTH),
            "ingest: bad event": client.post("/v1/scores", json={**EVENT, "points": -1}, headers=AUTH),
            "ingest: empty batch": client.post("/v1/scores:batch", json=[], headers=AUTH),
        }
        kinds = {what: kind_of(resp) for what, resp in answers.items()}
    with TestClient(build_app(replace(config, ingest_token=""), BOARDS)) as client:
        kinds["ingest: disabled"] = kind_of(client.post("/v1/scores", json=EVENT, headers=AUTH))
    assert kinds["read: unknown board"] == "unknown-board"
    assert kinds["read: bad limit"] == "invalid-parameter"
    ingest = {what: kind for what, kind in kinds.items() if what.startswith("ingest")}
    assert len(set(ingest.values())) == len(ingest), ingest  # each refusal its own kind
