"""RFC 9457 problem details: every error the API returns is ``application/problem+json``.

Handlers are installed for our own :class:`Problem`, Starlette's HTTP errors (404 route, 405) and FastAPI's
request-validation errors, so no client mistake ever surfaces as FastAPI's default shape or as a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from leaderboard import problems as shared

MEDIA_TYPE: Final = shared.MEDIA_TYPE

log = logging.getLogger(__name__)

TITLES: dict[str, str] = {
    "invalid-parameter": "Invalid request parameter",
    "invalid-period": "Invalid period",
    "unknown-board": "Unknown board",
    "player-not-ranked": "Player not ranked",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "board-rebuilding": "Board is being rebuilt",
    "redis-unavailable": "Redis unavailable",
    "postgres-unavailable": "PostgreSQL unavailable",
    "not-ready": "Not ready",
    "headers-too-large": "Request headers too large",
    "body-too-large": "Request body too large",
    "request-timeout": "Request headers too slow",
    "too-many-connections": "Too many connections",
    "internal-error": "Internal server error",
    # admin API (query_api/admin.py); refusal codes from leaderboard.moderation.rules
    "unauthorized": "Admin token missing",
    "forbidden": "Admin token wrong",
    "invalid-action": "Invalid moderation action",
    "unknown-player": "Unknown player",
    "unknown-event": "Unknown event",
    "unknown-match": "Unknown match",
    "unknown-action": "Unknown moderation action",
    "already-excluded": "Player already excluded",
    "not-excluded": "Player not excluded",
    "overlapping-window": "Overlapping void window",
    "not-a-void": "Not a void",
    "already-unvoided": "Void already reversed",
    "action-id-reused": "action_id already used for another action",
}


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def body(status: int, kind: str, detail: str, instance: str | None = None, **extra: Any) -> bytes:
    """The encoded document (``leaderboard.problems``), titled from TITLES."""
    return orjson.dumps(shared.document(status, kind, TITLES.get(kind, kind), detail, instance, **extra))


def response(problem: Problem, instance: str | None = None) -> Response:
    headers = {"Cache-Control": "no-store", **problem.headers}
    return Response(
        body(problem.status, problem.kind, problem.detail, instance, **problem.extra),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def _loc(loc: tuple[int | str, ...] | list[int | str]) -> str:
    parts = [str(p) for p in loc]
    return ".".join(parts) if parts else "request"


def validation_detail(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    """One readable line plus a per-field list, from pydantic error dicts."""
    items = [{"field": _loc(e.get("loc", ())), "message": str(e.get("msg", "invalid"))} for e in errors]
    return "; ".join(f"{i['field']}: {i['message']}" for i in items) or "invalid request", items


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return response(exc, request.url.path)


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail, items = validation_detail(list(exc.errors()))
    return response(Problem(400, "invalid-parameter", detail, extra={"errors": items}), request.url.path)


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        kind, detail = "not-found", f"no route for {request.url.path}; see /docs"
    elif exc.status_code == 405:
        kind, detail = "method-not-allowed", f"{request.method} is not allowed on {request.url.path}"
    else:
        kind, detail = "invalid-parameter", str(exc.detail)
    headers = dict(exc.headers or {})
    return response(Problem(exc.status_code, kind, detail, headers=headers), request.url.path)


def install(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)


def internal_error_body(path: str) -> bytes:
    return body(500, "internal-error", "an unexpected error occurred; it has been logged", path)
