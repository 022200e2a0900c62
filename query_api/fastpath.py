"""A fast path for the three hottest reads (top N, player, around-me), in front of FastAPI's routing.

FastAPI resolves and validates parameters through pydantic on every request, which costs about as much as
the Redis call itself. Well-formed GETs of these routes are answered here with the same store calls and the
same response builder; anything else (a parameter out of range, not an integer, a repeated one ...) falls
through untouched to the FastAPI route, which validates, answers with its problem document, and remains
the documented source of truth in /openapi.json. The bounds and defaults it checks are read from those
routes' declarations at import, never restated. ``tests/test_api_fastpath.py`` checks both give the same
bodies, boundary values included.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson
from fastapi.routing import APIRoute
from pydantic.fields import FieldInfo
from starlette.types import ASGIApp, Receive, Scope, Send

from query_api import http, problems, routes
from query_api.context import Context
from query_api.problems import Problem


@dataclass(frozen=True)
class _IntParam:
    default: int
    low: int
    high: int


@dataclass(frozen=True)
class _Spec:
    """What the fast path may answer of one route, read from that route's own declarations."""

    template: str
    pattern: re.Pattern[str]
    ints: dict[str, _IntParam]
    max_period: int


def _bounds(info: FieldInfo) -> dict[str, int]:
    """The ge / le / min_length / max_length a declaration carries (pydantic keeps them as metadata)."""
    out: dict[str, int] = {}
    for constraint in info.metadata:
        for name in ("ge", "le", "min_length", "max_length"):
            if isinstance(value := getattr(constraint, name, None), int):
                out[name] = value
    return out


def _spec(route: APIRoute) -> _Spec:
    """Bounds and defaults from the route's parameter declarations (routes.py); unknown shapes raise."""
    segments: dict[str, str] = {}
    for field in route.dependant.path_params:
        lengths = _bounds(field.field_info)
        if field.field_info.annotation is not str or "max_length" not in lengths:
            raise TypeError(f"fast path: {route.path} path parameter {field.name} is not a bounded str")
        shortest = max(1, lengths.get("min_length", 1))  # a path segment is never empty
        segments[field.name] = rf"(?P<{field.name}>[^/]{{{shortest},{lengths['max_length']}}})"
    ints: dict[str, _IntParam] = {}
    max_period: int | None = None
    for field in route.dependant.query_params:
        info, bounds = field.field_info, _bounds(field.field_info)
        if field.alias == "period":
            max_period = bounds.get("max_length")
        elif info.annotation is int and {"ge", "le"} <= bounds.keys() and isinstance(info.default, int):
            ints[field.alias] = _IntParam(info.default, bounds["ge"], bounds["le"])
        else:
            raise TypeError(f"fast path: {route.path} query parameter {field.alias} is not a bounded int")
    if max_period is None:
        raise TypeError(f"fast path: {route.path} declares no bounded period")
    parts = re.split(r"\{(\w+)\}", route.path)  # literal, name, literal, name, ..., literal
    regex = "".join(segments[p] if odd else re.escape(p) for odd, p in zip(itertools.cycle((0, 1)), parts))
    return _Spec(route.path, re.compile(f"^{regex}$"), ints, max_period)


FAST_ROUTES: Final = (
    "/v1/leaderboards/{board}/entries",
    "/v1/leaderboards/{board}/players/{player_id}",
    "/v1/leaderboards/{board}/players/{player_id}/around",
)
_SPECS: Final = tuple(
    _spec(r)
    for path in FAST_ROUTES
    for r in routes.router.routes
    if isinstance(r, APIRoute) and r.path == path
)
if len(_SPECS) != len(FAST_ROUTES):
    raise RuntimeError("fast path: a route it answers for is not declared in query_api/routes.py")


@dataclass(frozen=True)
class _Label:
    """Stands in for the matched route in ``scope["route"]``: metrics read only its ``path``."""

    path: str


_LABELS = {spec.template: _Label(spec.template) for spec in _SPECS}


def _params(query: bytes, spec: _Spec) -> dict[str, Any] | None:
    """Parsed parameters, or None whenever FastAPI should decide (and explain) instead."""
    out: dict[str, Any] = {name: param.default for name, param in spec.ints.items()}
    out["period"] = None
    seen: set[str] = set()
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return None
        seen.add(name)
        if name == "period":
            if len(value) > spec.max_period:
                return None
            out["period"] = value
        elif (param := spec.ints.get(name)) is not None:
            # ASCII digits only: isdigit() also takes superscripts (int() raises) and other scripts' digits
            if not (value.isascii() and value.isdigit()) or len(value) > len(str(param.high)):
                return None
            number = int(value)
            if not param.low <= number <= param.high:
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
            for spec in _SPECS:
                match = spec.pattern.match(scope["path"])
                if match is None:
                    continue
                params = _params(scope["query_string"], spec)
                if params is None:
                    break
                scope["route"] = _LABELS[spec.template]  # the metrics label FastAPI's router would set
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
                res = await ctx.store.around(board, period, path["player_id"], params["radius"])
            else:
                res = await ctx.store.player(board, period, path["player_id"])
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
