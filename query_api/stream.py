"""Server-sent events: the top N of a board-period, pushed whenever it changes.

One shared poller per (board, period spec, limit), however many clients watch it: every ``interval`` it
reads the board-period's version (active generation + stats ``updated_ms``, one tiny script call) and
re-reads the top N only when that moved. Clients get the latest page only (coalesced: a slow client skips
intermediate pages), so at most 1/interval events per second each. A comment line every ``heartbeat``
seconds keeps proxies from closing idle streams. The poller stops when its last client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import StreamingResponse

from query_api import metrics
from query_api.context import Context, ctx
from query_api.problems import Problem
from query_api.routes import ERRORS, BoardId, PeriodSpec

log = logging.getLogger(__name__)

INTERVAL_S = 0.25
HEARTBEAT_S = 15.0
_DISCONNECT_CHECK_S = 1.0


class Subscriber:
    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.latest: bytes | None = None

    def offer(self, message: bytes) -> None:
        self.latest = message
        self.ready.set()

    def take(self) -> bytes | None:
        self.ready.clear()
        message, self.latest = self.latest, None
        return message


class Poller:
    def __init__(self, context: Context, board: str, spec: str | None, limit: int, interval: float) -> None:
        self._ctx = context
        self._board = board
        self._spec = spec
        self._limit = limit
        self._interval = interval
        self.subscribers: set[Subscriber] = set()
        self._last_version: object = None
        self._last_body: bytes | None = None
        self._message: bytes | None = None
        self._seq = 0
        self._failing = False
        """A failure streak is logged once (with its traceback), not every interval."""
        self.task: asyncio.Task[None] | None = None

    def add(self, sub: Subscriber) -> None:
        self.subscribers.add(sub)
        if self._message is not None:
            sub.offer(self._message)

    def _publish(self, event: str, body: bytes) -> None:
        if body == self._last_body:
            return
        self._last_body = body
        self._seq += 1
        self._message = b"event: %s\nid: %d\ndata: %s\n\n" % (event.encode(), self._seq, body)
        metrics.SSE_EVENTS.inc(len(self.subscribers))
        for sub in self.subscribers:
            sub.offer(self._message)

    async def _tick(self) -> None:
        board = self._ctx.board(self._board)
        period = self._ctx.period(board, self._spec)
        version = (period, await self._ctx.store.version(board, period))
        if version == self._last_version:
            return
        res = await self._ctx.store.top(board, period, 0, self._limit)
        self._last_version = version
        self._publish("top", orjson.dumps(res.doc))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.subscribers:
            started = loop.time()
            try:
                await self._tick()
                self._failing = False
            except Problem as problem:
                self._last_version = None
                doc = {
                    "type": "/problems/" + problem.kind,
                    "status": problem.status,
                    "detail": problem.detail,
                }
                self._publish("problem", orjson.dumps(doc))
            except Exception:
                if not self._failing:
                    log.exception("SSE poller failed", extra={"board": self._board, "period": self._spec})
                self._failing = True
                self._last_version = None
            await asyncio.sleep(max(0.0, self._interval - (loop.time() - started)))


class Hub:
    def __init__(
        self, context: Context, interval: float | None = None, heartbeat: float | None = None
    ) -> None:
        self._ctx = context
        self.interval = INTERVAL_S if interval is None else interval
        self.heartbeat = HEARTBEAT_S if heartbeat is None else heartbeat
        self._pollers: dict[tuple[str, str | None, int], Poller] = {}

    def subscribe(self, board: str, spec: str | None, limit: int) -> tuple[Poller, Subscriber]:
        key = (board, spec, limit)
        poller = self._pollers.get(key)
        if poller is None:
            poller = self._pollers[key] = Poller(self._ctx, board, spec, limit, self.interval)
        sub = Subscriber()
        poller.add(sub)
        if poller.task is None or poller.task.done():
            poller.task = asyncio.create_task(poller.run(), name=f"sse-{board}-{spec}-{limit}")
            metrics.SSE_POLLERS.inc()
            poller.task.add_done_callback(lambda _t: metrics.SSE_POLLERS.dec())
        return poller, sub

    def unsubscribe(self, poller: Poller, sub: Subscriber) -> None:
        poller.subscribers.discard(sub)
        if not poller.subscribers:
            if poller.task is not None:
                poller.task.cancel()
            for key, value in list(self._pollers.items()):
                if value is poller:
                    del self._pollers[key]

    @property
    def pollers(self) -> int:
        return len(self._pollers)

    async def close(self) -> None:
        tasks = [p.task for p in self._pollers.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pollers.clear()


async def _events(request: Request, hub: Hub, poller: Poller, sub: Subscriber) -> AsyncIterator[bytes]:
    metrics.SSE_CLIENTS.inc()
    loop = asyncio.get_running_loop()
    try:
        yield b"retry: 2000\n\n"
        quiet_since = loop.time()
        while True:
            try:
                await asyncio.wait_for(sub.ready.wait(), _DISCONNECT_CHECK_S)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                if loop.time() - quiet_since >= hub.heartbeat:
                    quiet_since = loop.time()
                    yield b": keep-alive\n\n"
                continue
            message = sub.take()
            if message is not None:
                quiet_since = loop.time()
                yield message
    finally:
        hub.unsubscribe(poller, sub)
        metrics.SSE_CLIENTS.dec()


router = APIRouter(prefix="/v1", tags=["leaderboards"])


# Declared like the routes in routes.py on purpose: FastAPI validates and documents each from its signature.
@router.get(
    "/leaderboards/{board}/entries/stream",
    responses={
        **ERRORS,
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: top` with a Page (as GET .../entries) on every change; "
            "`event: problem` while the board is unavailable; `: keep-alive` comments.",
        },
    },
    response_class=StreamingResponse,
    summary="Top N as server-sent events",
)
async def stream(
    request: Request,
    board: BoardId,
    period: PeriodSpec = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Rows, 1..100.")] = 10,
) -> StreamingResponse:
    c = ctx(request)
    b = c.board(board)
    c.period(b, period)  # 400 now, not as an event
    hub: Hub = request.app.state.hub
    poller, sub = hub.subscribe(b.id, period, limit)
    return StreamingResponse(
        _events(request, hub, poller, sub),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
