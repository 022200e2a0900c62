"""SSE: a client gets the top N at once, then a new event whenever the board changes; pollers are shared."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from leaderboard.net import free_port
from query_api import stream
from query_api.app import create_app
from tests.api_world import BOARDS, World, at, ties
from tests.factories import win

DEADLINE_S = 10.0


class Events:
    """Parses an SSE byte stream into (event, data | comment) items, each read under a deadline."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines

    async def next(self, wait_s: float = DEADLINE_S) -> tuple[str, str]:
        async with asyncio.timeout(wait_s):
            event, data = "message", ""
            async for line in self._lines:
                if line.startswith(":"):
                    return "comment", line[1:].strip()
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif line == "" and data:
                    return event, data
        raise AssertionError("stream ended")

    async def next_top(self) -> dict[str, object]:
        async with asyncio.timeout(DEADLINE_S):
            while True:
                event, data = await self.next()
                if event == "top":
                    doc: dict[str, object] = orjson.loads(data)
                    return doc


async def eventually(check: Callable[[], bool], what: str) -> None:
    for _ in range(int(DEADLINE_S / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[str]:
    """The app under a real uvicorn server (httpx's ASGI transport buffers whole bodies: no streaming)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, "uvicorn started")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, DEADLINE_S)


def ids(doc: dict[str, object]) -> list[str]:
    entries = doc["entries"]
    assert isinstance(entries, list)
    return [e["player_id"] for e in entries]


def test_stream_pushes_initial_top_then_updates(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "HEARTBEAT_S", 1.0)
    ties(world)

    async def scenario() -> None:
        app = create_app(world.config, BOARDS)
        async with running(app) as base, httpx.AsyncClient(base_url=base, timeout=5) as client:
            url = "/v1/leaderboards/global/entries/stream?period=all_time&limit=3"
            async with client.stream("GET", url) as resp, client.stream("GET", url) as resp2:
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                events, events2 = Events(resp.aiter_lines()), Events(resp2.aiter_lines())
                first = await events.next_top()
                assert ids(first) == ["p1", "p2", "p3"]
                assert first["total"] == 4
                assert ids(await events2.next_top()) == ["p1", "p2", "p3"]
                world.wins(win("p4", at("12:00"), 10))  # p4: 11 points, now on top
                update = await events.next_top()
                assert ids(update) == ["p4", "p1", "p2"]
                assert ids(await events2.next_top()) == ["p4", "p1", "p2"]
                comment = await events.next(wait_s=5)  # nothing changes: a heartbeat comment
                assert comment == ("comment", "keep-alive")

    asyncio.run(scenario())


def test_stream_shares_one_poller_and_cleans_up_on_disconnect(world: World) -> None:
    ties(world)
    app = create_app(world.config, BOARDS)

    async def scenario() -> None:
        async with running(app) as base, httpx.AsyncClient(base_url=base, timeout=5) as client:
            hub: stream.Hub = app.state.hub
            url = "/v1/leaderboards/global/entries/stream?period=all_time"
            async with client.stream("GET", url) as a, client.stream("GET", url) as b:
                await Events(a.aiter_lines()).next_top()
                await Events(b.aiter_lines()).next_top()
                assert hub.pollers == 1  # same (board, period, limit): one shared poller
            await eventually(lambda: hub.pollers == 0, "the poller to stop after both clients left")
            assert hub.pollers == 0

    asyncio.run(scenario())


def test_stream_reports_a_rebuild_as_a_problem_event(world: World) -> None:
    ties(world)

    async def scenario() -> None:
        app = create_app(world.config, BOARDS)
        async with running(app) as base, httpx.AsyncClient(base_url=base, timeout=5) as client:
            url = "/v1/leaderboards/global/entries/stream?period=all_time&limit=2"
            async with client.stream("GET", url) as resp:
                events = Events(resp.aiter_lines())
                assert ids(await events.next_top()) == ["p1", "p2"]
                world.redis.hdel(world.keys.meta("global"), "active")
                async with asyncio.timeout(DEADLINE_S):
                    while (item := await events.next())[0] != "problem":
                        pass
                assert orjson.loads(item[1])["type"] == "/problems/board-rebuilding"
                world.activate("global")
                assert ids(await events.next_top()) == ["p1", "p2"]
            bad = await client.get("/v1/leaderboards/global/entries/stream?period=yearly:1")
            assert bad.status_code == 400

    asyncio.run(scenario())
