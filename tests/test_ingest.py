"""HTTP ingest router on a minimal app, publishing to the real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from confluent_kafka import Consumer
from fastapi import FastAPI

from leaderboard.settings import Settings
from producers.ingest import MAX_BATCH, make_router
from producers.publisher import Publisher
from schemas import model

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVENT = {
    "match_id": "m-1",
    "player_id": "bob",
    "game": "go",
    "points": 2,
    "occurred_at": "2024-05-01T12:00:00Z",
}


def read_values(config: Settings, expected: int, timeout: float = 30.0) -> list[bytes]:
    consumer = Consumer(
        {**config.kafka_common(), "group.id": f"read-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([config.topic])
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out += [m.value() or b"" for m in consumer.consume(500, 0.5) if m.error() is None]
        if expected == 0:
            out += [m.value() or b"" for m in consumer.consume(500, 3.0) if m.error() is None]
    finally:
        consumer.close()
    return out


def call(
    config: Settings, token: str, body: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
) -> httpx.Response:
    async def main() -> httpx.Response:
        app = FastAPI()
        router = make_router(lambda: Publisher(config), token=token, ack_timeout=10.0)
        app.include_router(router)
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test"
            ) as client:
                return await body(client)
        finally:
            router.close()

    return asyncio.run(main())


def problem_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert body["title"]
    assert body["detail"]
    return body


def test_no_or_wrong_token_is_401(config: Settings) -> None:
    response = call(config, TOKEN, lambda c: c.post("/v1/scores", json=EVENT))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    problem_of(response)
    response = call(
        config, TOKEN, lambda c: c.post("/v1/scores", json=EVENT, headers={"Authorization": "Bearer no"})
    )
    assert response.status_code == 401


def test_no_token_configured_is_503(config: Settings) -> None:
    response = call(config, "", lambda c: c.post("/v1/scores", json=EVENT, headers=AUTH))
    assert response.status_code == 503
    assert "disabled" in problem_of(response)["title"].lower()


def test_bad_body_is_a_problem_that_says_what_is_wrong(config: Settings) -> None:
    response = call(config, TOKEN, lambda c: c.post("/v1/scores", json={**EVENT, "points": 0}, headers=AUTH))
    assert response.status_code == 422
    body = problem_of(response)
    assert "points" in body["detail"]
    assert body["errors"][0]["reason"] == "schema_violation"
    response = call(config, TOKEN, lambda c: c.post("/v1/scores", content=b"{oops", headers=AUTH))
    assert response.status_code == 400
    problem_of(response)
    response = call(config, TOKEN, lambda c: c.post("/v1/scores", json=[EVENT], headers=AUTH))
    assert response.status_code == 422
    batch = [EVENT, {**EVENT, "game": "Go!"}, EVENT]
    response = call(config, TOKEN, lambda c: c.post("/v1/scores:batch", json=batch, headers=AUTH))
    assert response.status_code == 422
    assert [e["index"] for e in problem_of(response)["errors"]] == [1]
    response = call(
        config, TOKEN, lambda c: c.post("/v1/scores:batch", json=[EVENT] * (MAX_BATCH + 1), headers=AUTH)
    )
    assert response.status_code == 422
    assert read_values(config, 0) == [], "nothing of a rejected request is published"


def test_accepted_event_is_on_the_topic(config: Settings) -> None:
    event_id = "0190A5E4-7C3B-7DEF-8ABC-0123456789AB"
    response = call(
        config, TOKEN, lambda c: c.post("/v1/scores", json={**EVENT, "event_id": event_id}, headers=AUTH)
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"event_id": event_id.lower()}
    response = call(config, TOKEN, lambda c: c.post("/v1/scores:batch", json=[EVENT] * 3, headers=AUTH))
    assert response.status_code == 202, response.text
    new_ids = response.json()["event_ids"]
    assert len(set(new_ids)) == 3
    assert all(uuid.UUID(i).version == 7 for i in new_ids)
    decoded = [model.decode(v) for v in read_values(config, 4)]
    assert all(isinstance(d, model.MatchWon) for d in decoded)
    assert {d.event_id for d in decoded if isinstance(d, model.MatchWon)} == {event_id.lower(), *new_ids}


def test_openapi_documents_the_contract(config: Settings) -> None:
    app = FastAPI()
    app.include_router(make_router(lambda: Publisher(config), token=TOKEN))
    spec = app.openapi()
    body = spec["paths"]["/v1/scores"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "event_id" not in body["required"]
    assert body["properties"]["points"]["maximum"] == model.MAX_POINTS


def test_poison_bodies_are_problems_never_500(config: Settings) -> None:
    """Bytes msgspec's generic decoder raises on (invalid UTF-8, deep nesting) or cannot hold (1e400)."""
    good = b'{"match_id":"m-1","player_id":"bob","game":"go","occurred_at":"2024-05-01T12:00:00Z"'
    cases = {
        good + b',"display_name":"Jos\xe9"}': (400, "undecodable"),
        good + b',"extra":' + b"[" * 5000 + b"]" * 5000 + b"}": (422, "schema_violation"),
        good + b',"points":1e400}': (422, "schema_violation"),
        good + b',"points":1' + b"0" * 500 + b"}": (422, "schema_violation"),
        good + b',"display_name":"a\\u0000b"}': (422, "schema_violation"),
        good + b',"match_id":"m\x7f"}': (422, "schema_violation"),
        good.replace(b"2024-05-01", b"2049-12-31") + b"}": (422, "future"),
    }
    for body, (status, reason) in cases.items():
        for path, sent in (("/v1/scores", body), ("/v1/scores:batch", b"[" + body + b"]")):

            def post(c: httpx.AsyncClient, p: str = path, b: bytes = sent) -> Awaitable[httpx.Response]:
                return c.post(p, content=b, headers=AUTH)

            response = call(config, TOKEN, post)
            assert response.status_code == status, (body[-60:], path, response.text)
            problem = problem_of(response)
            reasons = {e["reason"] for e in problem.get("errors", [])} | {problem.get("reason")}
            assert reason in reasons, problem
    assert read_values(config, 0) == [], "nothing of a rejected request is published"
