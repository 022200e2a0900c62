"""One timestamp format in every body: leaderboard.timefmt, checked on the function and on every route.

The scan calls each operation of the served OpenAPI document (read API and ingest, live and snapshot
periods, error answers, the SSE stream) on a real uvicorn server and fails on any instant-like text that is
not written the one way, or on a number under a time-like key (an epoch).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from leaderboard import timefmt
from leaderboard.service import build_app
from tests.api_world import BOARDS, World, ties
from tests.test_api_snapshots import PERIOD, close_period
from tests.test_api_stream import Events, running
from tests.test_ingest import AUTH, EVENT, TOKEN

ADMIN_TOKEN = "admin-token-for-the-timestamp-scan"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

LOOSE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2})?([.,]\d+)?([Zz]|[+-]\d{2}:?\d{2})?")
"""Anything a reader would take for an instant, in any of the usual spellings."""
TIME_KEY = re.compile(r"(_at|_ms|_ts|_seconds|^time|^ts|timestamp|epoch)$")  # not "all_time", a period kind
DURATIONS = frozenset({"grace_seconds"})
"""Keys that hold durations, not instants: a board definition's grace window (docs/boards.md)."""


@given(st.datetimes(timezones=st.timezones()))
def test_any_aware_instant_is_written_the_one_way(instant: datetime) -> None:
    text = timefmt.utc(instant)
    assert timefmt.PATTERN.fullmatch(text), text
    back = datetime.fromisoformat(text)
    in_utc = instant.astimezone(UTC)  # before any arithmetic: that would drop a DST fold
    assert back == in_utc - timedelta(microseconds=in_utc.microsecond % 1000)  # cut, never rounded up


@given(st.integers(min_value=0, max_value=253_402_300_799_999))
def test_epoch_milliseconds_are_written_exactly(ms: int) -> None:
    text = timefmt.utc_ms(ms)
    assert timefmt.PATTERN.fullmatch(text), text
    back = datetime.fromisoformat(text)
    assert (back - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1) == ms


def test_examples_and_naive_instants() -> None:
    assert timefmt.utc(datetime(2026, 11, 28, 10, 5, tzinfo=UTC)) == "2026-11-28T10:05:00.000Z"
    plus_two = timezone(timedelta(hours=2))
    assert timefmt.utc(datetime(2026, 1, 1, 1, 0, 0, 999_999, plus_two)) == "2025-12-31T23:00:00.999Z"
    assert timefmt.utc_ms(1_764_324_300_123) == "2025-11-28T10:05:00.123Z"
    with pytest.raises(ValueError, match="naive"):
        timefmt.utc(datetime(2026, 1, 1))


def offenders(body: bytes, content_type: str) -> tuple[list[str], list[str]]:
    """(instants written another way or epochs, instants written the one way) found in a body."""
    text = body.decode()
    bad: list[str] = []
    good: list[str] = []
    for match in LOOSE.finditer(text):
        (good if timefmt.PATTERN.fullmatch(match.group()) else bad).append(match.group())
    if "json" in content_type and body:

        def walk(node: Any, key: str = "") -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, k)
            elif isinstance(node, list):
                for v in node:
                    walk(v, key)
            elif (
                TIME_KEY.search(key)
                and key not in DURATIONS
                and node is not None
                and not (isinstance(node, str) and timefmt.PATTERN.fullmatch(node))
            ):
                bad.append(f"{key}={node!r}")

        walk(orjson.loads(body))
    return bad, good


def calls(path: str, method: str) -> list[dict[str, Any]]:
    """The requests made of one operation: live, snapshot and error answers. A new route must add a line."""
    board, player = "global", "p3"
    periods = ["all_time", PERIOD, "yearly:2026"]

    def at(**names: str) -> str:
        return path.format(**{"board": board, "player_id": player, **names})

    url = at()
    reads = [{"params": {"period": p}} for p in periods]
    table: dict[tuple[str, str], list[dict[str, Any]]] = {
        ("GET", "/v1/leaderboards"): [{}],
        ("GET", "/v1/leaderboards/{board}/entries"): reads,
        ("GET", "/v1/leaderboards/{board}/players/{player_id}"): [
            *reads,
            {"url": at(player_id="s3"), "params": {"period": PERIOD}},
            {"url": at(player_id="ghost")},
        ],
        ("GET", "/v1/leaderboards/{board}/players/{player_id}/around"): reads,
        ("POST", "/v1/leaderboards/{board}/players:lookup"): [
            {"params": {"period": p}, "json": {"player_ids": ["p1", "s3", "ghost"]}} for p in periods
        ],
        ("GET", "/v1/leaderboards/{board}/players"): [*reads, {"params": {"min_score": 9, "max_score": 1}}],
        ("GET", "/v1/leaderboards/{board}/stats"): reads,
        ("GET", "/v1/leaderboards/{board}/periods"): [{}, {"url": at(board="nope")}],
        ("GET", "/v1/leaderboards/{board}/entries/stream"): [{"params": {"period": "all_time"}, "sse": True}],
        ("GET", "/healthz"): [{}],
        ("HEAD", "/healthz"): [{}],
        ("GET", "/readyz"): [{}],
        ("HEAD", "/readyz"): [{}],
        ("GET", "/metrics"): [{}],
        ("POST", "/v1/scores"): [
            {"json": EVENT, "headers": AUTH},
            {"json": {**EVENT, "points": -1}, "headers": AUTH},
            {"json": EVENT},
        ],
        # Admin routes (the app below sets an admin token): refusals, and what they answer without the
        # moderation tables (this world does not migrate, so no recorded action is scanned here).
        ("GET", "/v1/admin/moderation"): [{"headers": ADMIN}, {}],
        ("POST", "/v1/admin/moderation"): [{"json": {"kind": "exclude"}, "headers": ADMIN}, {"json": {}}],
        ("GET", "/v1/admin/players/{player_id}/events"): [
            {"params": {"board": "nope"}, "headers": ADMIN},
            {"params": {"board": "global", "period": "bad"}, "headers": ADMIN},
            {"params": {"board": "global"}},
        ],
        # Runtime boards (this world does not migrate: the catalog's tables are absent, a 503 problem).
        ("GET", "/v1/admin/boards"): [{"headers": ADMIN}, {}],
        ("GET", "/v1/admin/boards/{board}"): [{"headers": ADMIN}],
        ("POST", "/v1/admin/boards:plan"): [{"json": {"board": [{"id": "x"}]}, "headers": ADMIN}],
        ("POST", "/v1/admin/boards:apply"): [
            {"json": {"board": [{"id": "x", "order": "up"}]}, "headers": ADMIN}
        ],
        ("GET", "/v1/admin/boards/{board}/diff"): [{"headers": ADMIN}],
        ("POST", "/v1/admin/boards/{board}/activate"): [{"headers": ADMIN}],
        ("POST", "/v1/admin/boards/{board}/retire"): [{}],
        ("POST", "/v1/scores:batch"): [
            {"json": [EVENT, EVENT], "headers": AUTH},
            {"json": [], "headers": AUTH},
        ],
    }
    return [{"url": url, **call} for call in table[(method.upper(), path)]]


def test_every_route_writes_instants_the_one_way(world: World, pg: psycopg.Connection) -> None:
    ties(world)
    close_period(pg)
    app = build_app(replace(world.config, ingest_token=TOKEN, admin_token=ADMIN_TOKEN), BOARDS)

    async def scenario() -> tuple[list[str], list[str], set[str], set[int]]:
        bad: list[str] = []
        good: list[str] = []
        operations: set[str] = set()
        statuses: set[int] = set()
        async with running(app) as base, httpx.AsyncClient(base_url=base, timeout=15) as client:
            openapi = (await client.get("/openapi.json")).json()
            for path, item in openapi["paths"].items():
                for method in item:
                    operations.add(f"{method.upper()} {path}")
                    for call in calls(path, method):
                        if call.get("sse"):
                            async with client.stream("GET", call["url"], params=call["params"]) as resp:
                                event, data = await Events(resp.aiter_lines()).next()
                                assert event == "top", (event, data)
                                status, ctype, body = resp.status_code, "application/json", data.encode()
                        else:
                            resp = await client.request(
                                method,
                                call["url"],
                                params=call.get("params"),
                                json=call.get("json"),
                                headers=call.get("headers"),
                            )
                            status, ctype, body = resp.status_code, resp.headers["content-type"], resp.content
                        statuses.add(status)
                        found_bad, found_good = offenders(body, ctype)
                        bad += [
                            f"{method.upper()} {call['url']} {call.get('params')}: {b}" for b in found_bad
                        ]
                        good += found_good
        return bad, good, operations, statuses

    bad, good, operations, statuses = asyncio.run(scenario())
    assert bad == []
    assert len(operations) >= 16, operations  # every operation was called (calls() raises on a missing one)
    assert {200, 202, 400, 401, 404} <= statuses
    # live reached_at, snapshot reached_at and closed_at, live updated_at (ms), snapshot updated_at
    assert {"2026-11-28T10:10:00.000Z", "2025-01-05T12:00:00.000Z", "2025-02-01T01:00:00.000Z"} <= set(good)
    assert len(set(good)) >= 4, good  # ... and the live updated_at, written from epoch milliseconds
