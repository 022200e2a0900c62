"""/healthz (process alive), /readyz (Redis answers and every board has an active generation), /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.responses import Response

from query_api import http, metrics, problems
from query_api.context import ctx
from query_api.models import Health, ProblemDetails

router = APIRouter(tags=["operations"])
_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ProblemDetails, "content": {problems.MEDIA_TYPE: {}}, "description": "Not ready"}
}


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Response:
    return http.plain_json({"status": "ok"})


@router.get("/readyz", response_model=Health, responses=_NOT_READY, summary="Ready to answer reads")
async def readyz(request: Request) -> Response:
    c = ctx(request)
    try:
        missing = await c.store.missing_active(list(c.boards.values()))
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise problems.Problem(
            503, "redis-unavailable", f"Redis unavailable ({exc})", headers={"Retry-After": "5"}
        ) from exc
    if missing:
        raise problems.Problem(
            503,
            "not-ready",
            f"boards without an active generation (being rebuilt): {', '.join(missing)}",
            headers={"Retry-After": "5"},
            extra={"boards": missing},
        )
    return http.plain_json({"status": "ready"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
