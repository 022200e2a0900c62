"""/healthz (process alive), /readyz (Redis and PostgreSQL answer, every board has an active generation),
/metrics. HEAD on /healthz and /readyz answers like GET without a body (load-balancer checks use it).

/readyz is bounded: Redis within READY_REDIS_S, PostgreSQL within the snapshot reads' own deadline, so a
frozen server makes it answer 503 (not hang) and the instance leaves the load balancer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from leaderboard.redis_client import FAILURES
from query_api import http, metrics, problems
from query_api.context import ctx
from query_api.models import Health, ProblemDetails

router = APIRouter(tags=["operations"])
_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {
        "model": ProblemDetails,
        "content": {problems.MEDIA_TYPE: {}},
        "description": "Not ready: Redis or PostgreSQL not answering, or a board being rebuilt",
    }
}
READY_REDIS_S = 3.0


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Response:
    return http.plain_json({"status": "ok"})


@router.head("/healthz", summary="The process is alive (no body)")
async def healthz_head() -> Response:
    return await healthz()


@router.get("/readyz", response_model=Health, responses=_NOT_READY, summary="Ready to answer reads")
async def readyz(request: Request) -> Response:
    c = ctx(request)
    try:
        async with asyncio.timeout(READY_REDIS_S):
            missing = await c.store.missing_active(list(c.boards.values()))
    except FAILURES as exc:
        raise problems.Problem(
            503,
            "redis-unavailable",
            f"Redis unavailable ({exc or f'no answer within {READY_REDIS_S:g} s'})",
            headers={"Retry-After": "5"},
        ) from exc
    await c.store.snapshots.ping()
    if missing:
        raise problems.Problem(
            503,
            "not-ready",
            f"boards without an active generation (being rebuilt): {', '.join(missing)}",
            headers={"Retry-After": "5"},
            extra={"boards": missing},
        )
    return http.plain_json({"status": "ready"})


@router.head("/readyz", responses=_NOT_READY, summary="Ready to answer reads (no body)")
async def readyz_head(request: Request) -> Response:
    return await readyz(request)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
