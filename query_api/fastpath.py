"""A fast path for the three hottest reads (top N, player, around-me), in front of FastAPI's routing.

FastAPI resolves and validates parameters through pydantic on every request, which costs about as much as
the Redis call itself. Well-formed GETs of these routes are answered here with the same store calls and the
same response builder; anything else (a parameter out of range, not an integer, a repeated one ...) falls
through untouched to the FastAPI route, which validates, answers with its problem document, and remains
the documented source of truth in /openapi.json. ``tests/test_api_fastpath.py`` checks both give the same
bodies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from query_api import http, problems
from query_api.context import Context
from query_api.problems import Problem

_BASE = r"^/v1/leaderboards/(?P<board>[^/]{1,32})"
_PLAYER = r"/players/(?P<player>[^/]{1,64})"
_ROUTES: tuple[tuple[re.Pattern[str], str, dict[str, tuple[int, int, int]]], ...] = (
    # pattern, route template, integer params: name -> (default, min, max) as in routes.py
    (
        re.compile(_BASE + r"/entries$"),
        "/v1/leaderboards/{board}/entries",
        {"limit": (10, 1, 1000), "offset": (0, 0, 10_000_000)},
    ),
    (re.compile(_BASE + _PLAYER + "$"), "/v1/leaderboards/{board}/players/{player_id}", {}),
    (
        re.compile(_BASE + _PLAYER + "/around$"),
        "/v1/leaderboards/{board}/players/{player_id}/around",
        {"radius": (4, 0, 50)},
    ),
)
_MAX_PERIOD = 40


@dataclass(frozen=True)
class _Label:
    """Stands in for the matched route in ``scope["route"]``: metrics read only its ``path``."""

    path: str


_LABELS = {template: _Label(template) for _, template, _ in _ROUTES}


def _params(query: bytes, ints: dict[str, tuple[int, int, int]]) -> dict[str, Any] | None:
    """Parsed parameters, or None whenever FastAPI should decide (and explain) instead."""
    out: dict[str, Any] = {name: spec[0] for name, spec in ints.items()}
    out["period"] = None
    seen: set[str] = set()
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return None
        seen.add(name)
        if name == "period":
            if len(value) > _MAX_PERIOD:
                return None
            out["period"] = value
        elif name in ints:
            if not value.isdigit() or len(value) > 9:
                return None
            number = int(value)
            _, low, high = ints[name]
            if not low <= number <= high:
                return None
            out[name] = number
    return out


class FastReads:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].startswith("/v1/leaderboards/")
        ):
            for pattern, template, ints in _ROUTES:
                match = pattern.match(scope["path"])
                if match is None:
                    continue
                params = _params(scope["query_string"], ints)
                if params is None:
                    break
                scope["route"] = _LABELS[template]  # the metrics label FastAPI's router would set
                await self._answer(scope, send, match.groupdict(), params)
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, send: Send, path: dict[str, str], params: dict[str, Any]) -> None:
        ctx: Context = scope["app"].state.ctx
        try:
            board = ctx.board(path["board"])
            period = ctx.period(board, params["period"])
            if "limit" in params:
                res = await ctx.store.top(board, period, params["offset"], params["limit"])
            elif "radius" in params:
                res = await ctx.store.around(board, period, path["player"], params["radius"])
            else:
                res = await ctx.store.player(board, period, path["player"])
        except Problem as problem:
            body = problems.body(problem.status, problem.kind, problem.detail, scope["path"], **problem.extra)
            headers = {"content-type": problems.MEDIA_TYPE, "cache-control": "no-store", **problem.headers}
            await _send(send, problem.status, headers, body)
            return
        payload = orjson.dumps(res.doc)
        etag = http.etag_of(payload)
        headers = {
            "content-type": "application/json",
            "etag": etag,
            "cache-control": http.SNAPSHOT_CACHE if res.snapshot else http.LIVE_CACHE,
        }
        inm = _header(scope, b"if-none-match")
        if inm is not None and http.matches(inm, etag):
            del headers["content-type"]
            await _send(send, 304, headers, b"")
            return
        await _send(send, 200, headers, payload)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _send(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if status != 304:
        raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
