"""The read API: ``create_app(config)`` builds it; clients are made in the lifespan, never at import.

This package never imports the write path (producers/, consumers/; tests/test_boundaries.py): HTTP ingest
is mounted by the composition root, ``leaderboard.service``, through ``routers`` and ``on_shutdown``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from leaderboard import boards as boards_mod
from leaderboard import redis_client
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.settings import Settings
from query_api import admin, docs_page, health, http, problems, routes, stream
from query_api.catalog_poll import CatalogPoll
from query_api.context import Context
from query_api.fastpath import FastReads
from query_api.limits import BodyLimit
from query_api.metrics import Observe
from query_api.snapshots import Snapshots
from query_api.store import Store

STATIC = Path(__file__).parent / "static"
REDIS_POOL_SIZE = 64
log = logging.getLogger(__name__)

DESCRIPTION = """Read API of the real-time leaderboard.

Ranks are competition ranks ("1224"); within a tie, whoever reached the score first is listed first.
Every error is an RFC 9457 `application/problem+json` document. Closed periods that Redis no longer holds
are served from PostgreSQL snapshots (`source: "snapshot"`). See docs/api.md.
"""


LIMIT_RESPONSES = {
    "408": "Request headers not received within LEADERBOARD_API_HEADER_TIMEOUT_S; connection closed",
    "413": "Request body larger than LEADERBOARD_API_MAX_BODY_BYTES; connection closed",
    "429": "Too many open connections from this client (LEADERBOARD_API_MAX_CONNECTIONS_PER_CLIENT)",
    "431": "Request line and headers larger than LEADERBOARD_API_MAX_HEADER_BYTES; connection closed",
    "503": "Server at LEADERBOARD_API_MAX_CONNECTIONS, or a store it needs is not answering; see Retry-After",
}
"""Answers any operation may get from the connection limits (query_api/limits.py), documented on each."""
PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}


def _problem_responses(op: dict[str, Any]) -> None:
    """One operation's error answers: 400 for FastAPI's 422, the limit answers, problem+json bodies."""
    responses = op.setdefault("responses", {})
    if (
        responses.get("422", {}).get("description") == "Validation Error"
    ):  # FastAPI's own, not a documented 422
        del responses["422"]
        responses.setdefault("400", {"description": "Invalid parameter"})
    for code, text in LIMIT_RESPONSES.items():
        if code != "413" or "requestBody" in op:
            responses.setdefault(code, {"description": text})
    for code, resp in responses.items():
        if code[0] in "45":
            content = resp.setdefault("content", {})
            content.pop(problems.MEDIA_TYPE, None)
            content[problems.MEDIA_TYPE] = content.pop("application/json", None) or {"schema": PROBLEM_REF}


def _problem_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """OpenAPI with error bodies under application/problem+json and 400 (not FastAPI's 422) for bad input."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for item in schema.get("paths", {}).values():
            for op in item.values():
                _problem_responses(op)
        comps = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            comps.pop(unused, None)
        app.openapi_schema = schema
        return schema

    return build


def create_app(
    config: Settings,
    boards: Sequence[Board] | None = None,
    *,
    fast_path: bool = True,
    routers: Sequence[APIRouter] = (),
    on_shutdown: Sequence[Callable[[], None]] = (),
    catalog: bool | None = None,
) -> FastAPI:
    """The app. ``boards`` overrides the boards file (tests); ``fast_path=False``: every read via FastAPI.

    routers: mounted after the read routes (``leaderboard.service`` passes HTTP ingest);
    on_shutdown: blocking closers run in a thread at shutdown, before the read clients close.
    catalog: follow the runtime board catalog (leaderboard.catalog_watch); default: unless ``boards`` given.
    """
    board_list = tuple(boards) if boards is not None else boards_mod.load(config.boards_file)
    follow = boards is None if catalog is None else catalog

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = redis_client.async_client(config, max_connections=REDIS_POOL_SIZE)
        snapshots = Snapshots(
            config.database_url,
            connect_timeout_s=config.api_pg_connect_timeout_s,
            statement_timeout_ms=config.api_pg_statement_timeout_ms,
            negative_ttl_s=config.api_negative_cache_s,
        )
        context = Context.build(board_list, Store(client, Keys(config.redis_prefix), snapshots))
        app.state.ctx = context
        app.state.hub = stream.Hub(context)
        poll = CatalogPoll(config, board_list, context, enabled=follow)
        await poll.start()
        try:
            yield
        finally:
            await poll.close()
            await app.state.hub.close()
            for close in on_shutdown:
                await asyncio.to_thread(close)
            await snapshots.close()
            await client.aclose()

    app = FastAPI(
        title="Leaderboard API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    app.openapi = _problem_openapi(app)  # type: ignore[method-assign]
    if fast_path:
        app.add_middleware(FastReads)
    app.add_middleware(BodyLimit, max_bytes=config.api_max_body_bytes)  # inside Observe: counted as a 413
    app.add_middleware(Observe)
    app.include_router(routes.router)
    app.include_router(stream.router)
    app.include_router(health.router)
    app.include_router(
        admin.make_router(config, frozenset(b.id for b in board_list), board_list)
    )  # moderation
    for router in routers:
        app.include_router(router)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page.HTML)

    @app.get("/docs/swagger", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Leaderboard API")

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = STATIC / "index.html"
        if page.is_file():
            return FileResponse(page)
        return http.plain_json({"docs": "/docs", "openapi": "/openapi.json", "boards": "/v1/leaderboards"})

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    return app
