"""Operations side of the API: health, readiness, metrics, outage and bug problems, OpenAPI, docs, CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from leaderboard.net import free_port
from leaderboard.settings import Settings
from query_api import store as store_mod
from query_api.app import STATIC
from tests.api_world import World, problem_of, serving, ties
from tests.conftest import env_of
from tests.procs import stop_process, wait_until

ROUTES = [
    ("get", "/v1/leaderboards/global/entries", None),
    ("get", "/v1/leaderboards/global/players/p1", None),
    ("get", "/v1/leaderboards/global/players/p1/around", None),
    ("post", "/v1/leaderboards/global/players:lookup", {"player_ids": ["p1"]}),
    ("get", "/v1/leaderboards/global/players", None),
    ("get", "/v1/leaderboards/global/stats", None),
    ("get", "/v1/leaderboards/global/periods", None),
]


def call(api: TestClient, method: str, path: str, body: Any) -> httpx.Response:
    resp: httpx.Response = api.post(path, json=body) if method == "post" else api.get(path)
    return resp


def test_healthz_and_readyz(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


def test_missing_active_generation_is_503_never_wrong_ranks(world: World, api: TestClient) -> None:
    ties(world)
    world.redis.hdel(world.keys.meta("global"), "active")  # Redis lost; the consumer is rebuilding
    for method, path, body in ROUTES:
        resp = call(api, method, path, body)
        doc = problem_of(resp, 503, "board-rebuilding")
        assert "being rebuilt" in doc["detail"]
        assert resp.headers["retry-after"] == "5"
        assert resp.headers["cache-control"] == "no-store"
    ready = problem_of(api.get("/readyz"), 503, "not-ready")
    assert ready["boards"] == ["global"]
    world.redis.delete(world.keys.meta("global"))  # meta wiped entirely: same answer
    problem_of(api.get("/v1/leaderboards/global/entries"), 503, "board-rebuilding")
    world.activate("global")
    assert api.get("/v1/leaderboards/global/entries?period=all_time").json()["total"] == 4
    assert api.get("/readyz").status_code == 200


def test_redis_down_is_503_redis_unavailable(config: Settings) -> None:
    down = replace(config, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with serving(down) as api:
        for method, path, body in ROUTES[:-1]:
            doc = problem_of(call(api, method, path, body), 503, "redis-unavailable")
            assert doc["title"] == "Redis unavailable"
        problem_of(api.get("/readyz"), 503, "redis-unavailable")
        assert api.get("/healthz").status_code == 200


def test_a_bug_is_a_logged_problem_500(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*_args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(store_mod.Store, "top", broken)
    doc = problem_of(api.get("/v1/leaderboards/global/entries"), 500, "internal-error")
    assert "boom" not in doc["detail"]  # internals stay in the log
    assert api.get("/healthz").status_code == 200


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_use_route_templates(world: World, api: TestClient) -> None:
    ties(world)
    template = "/v1/leaderboards/{board}/players/{player_id}"
    before = metric(api.get("/metrics").text, "leaderboard_api_requests_total", route=template, status="200")
    for player in ("p1", "p2", "p3"):
        assert api.get(f"/v1/leaderboards/global/players/{player}?period=all_time").status_code == 200
    api.get("/v1/leaderboards/global/players/ghost?period=all_time")
    text = api.get("/metrics").text
    assert metric(text, "leaderboard_api_requests_total", route=template, status="200") == before + 3
    assert metric(text, "leaderboard_api_requests_total", route=template, method="GET", status="404") >= 1
    assert metric(text, "leaderboard_api_request_duration_seconds_count", route=template) >= 4
    assert "/v1/leaderboards/global/players/p1" not in text
    assert "leaderboard_api_sse_clients" in text
    api.get("/no/such/path")
    assert 'route="unmatched"' in api.get("/metrics").text


def test_openapi_is_complete_and_errors_are_problems(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/leaderboards",
        "/v1/leaderboards/{board}/entries",
        "/v1/leaderboards/{board}/players/{player_id}",
        "/v1/leaderboards/{board}/players/{player_id}/around",
        "/v1/leaderboards/{board}/players:lookup",
        "/v1/leaderboards/{board}/players",
        "/v1/leaderboards/{board}/stats",
        "/v1/leaderboards/{board}/periods",
        "/v1/leaderboards/{board}/entries/stream",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    entries = paths["/v1/leaderboards/{board}/entries"]["get"]
    ok = entries["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Page"}
    for code in ("400", "404", "503"):
        content = entries["responses"][code]["content"]
        assert content == {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}
        }
    assert "422" not in entries["responses"]
    for code in ("408", "429", "431", "503"):  # the connection limits, on every operation
        assert entries["responses"][code]["content"] == content, code
    lookup = paths["/v1/leaderboards/{board}/players:lookup"]["post"]["responses"]
    assert "413" in lookup
    assert "413" not in entries["responses"]  # only operations with a body
    assert set(paths["/healthz"]) == {"get", "head"}
    assert set(paths["/readyz"]) == {"get", "head"}
    assert {"Page", "Entry", "PlayerRank", "Around", "LookupResult", "RangePage", "Stats"} <= set(
        spec["components"]["schemas"]
    )


def test_docs_work_offline(api: TestClient) -> None:
    page = api.get("/docs")
    assert page.status_code == 200
    assert "/openapi.json" in page.text
    assert not re.search(r"(src|href)=\"https?://", page.text)  # no CDN assets
    assert "cdn" in api.get("/docs/swagger").text  # the CDN variant stays available


def test_root_and_static(api: TestClient) -> None:
    root = api.get("/")
    assert root.status_code == 200
    assert (STATIC / "index.html").is_file()
    assert root.headers["content-type"].startswith("text/html")
    problem_of(api.get("/static/definitely-missing.js"), 404, "not-found")


def test_cli_serves_with_two_workers(world: World, tmp_path: Path) -> None:
    ties(world)
    port = free_port()
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "leaderboard.cli", "api", "--workers", "2", "--port", str(port)],
        env=env_of(world.config),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> httpx.Response | None:
        try:
            return httpx.get(base + path, timeout=2)
        except httpx.HTTPError:
            return None

    try:
        wait_until(lambda: (r := get("/readyz")) is not None and r.status_code == 200, 30, "API ready")
        for _ in range(20):
            resp = get("/v1/leaderboards/global/entries?period=all_time")
            assert resp is not None
            assert resp.json()["entries"][0]["player_id"] == "p1"
        metrics = get("/metrics")
        assert metrics is not None
        route = "/v1/leaderboards/{board}/entries"
        assert metric(metrics.text, "leaderboard_api_requests_total", route=route, status="200") == 20
    finally:
        stop_process(proc, 20)
        log.close()
    assert proc.returncode == 0, (tmp_path / "api.log").read_text()[-3000:]
