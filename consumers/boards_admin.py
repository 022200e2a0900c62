"""``/v1/admin/boards``: the ``leaderboard boards`` operations over HTTP, behind the admin token.

Mounted by the composition root (``leaderboard.service``) with the moderation routes' auth dependency
(query_api.admin.authorizer: 404 with no admin token configured, 401 / 403). Each operation runs in a
thread (consumers.board_ops, the CLI's code); apply and activate build or switch Redis generations and may
take as long as the board's history needs. A refused definition answers 422 naming the field, nothing
stored; an operation the board's state does not allow answers 409; an unknown board 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
import psycopg
import redis
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from consumers.board_ops import Ops, change_doc, definitions_of, diff_doc
from leaderboard import problems
from leaderboard.boards import Board, BoardsError
from leaderboard.catalog_store import CatalogError, UnknownBoard
from leaderboard.settings import Settings

PREFIX = "/v1/admin/boards"
# 401/403 as query_api/admin.py's _AUTH_RESPONSES: the same admin-token check guards both, and consumers/
# does not import query_api/.
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid parameter (board id, period, top) or a body that is not JSON"},
    401: {"description": "No `Authorization: Bearer <admin token>` header"},
    403: {"description": "Wrong admin token"},
    404: {"description": "Admin API disabled (no LEADERBOARD_ADMIN_TOKEN configured), or no such board"},
    409: {"description": "The board's state does not allow it (no draft to activate, ...)"},
    422: {"description": "A malformed definition: the detail names the field; nothing was stored"},
    503: {"description": "PostgreSQL or Redis unavailable: nothing was changed; retry"},
}
_BODY = {
    "description": 'Definitions shaped like a boards file: {"board": [{"id": "laps", "order": "asc", ...}]}',
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["board"],
                "properties": {"board": {"type": "array", "items": {"type": "object"}, "minItems": 1}},
            }
        }
    },
}
BoardId = Annotated[str, Path(description="Board id", max_length=32)]


def _problem(status: int, kind: str, title: str, detail: str) -> JSONResponse:
    return JSONResponse(
        problems.document(status, kind, title, detail), status_code=status, media_type=problems.MEDIA_TYPE
    )


async def _run(job: Callable[[], object]) -> Any:
    """The blocking operation in a thread; its failures as problem documents (a JSONResponse)."""
    try:
        return await asyncio.to_thread(job)
    except BoardsError as exc:
        return _problem(422, "invalid-board", "Invalid board definition", str(exc))
    except UnknownBoard as exc:
        return _problem(404, "unknown-board", "Unknown board", str(exc))
    except CatalogError as exc:
        return _problem(409, "board-state", "Not allowed in the board's state", str(exc))
    except psycopg.Error as exc:
        return _problem(503, "postgres-unavailable", "PostgreSQL unavailable", str(exc).splitlines()[0])
    except redis.RedisError as exc:
        return _problem(503, "redis-unavailable", "Redis unavailable", str(exc).splitlines()[0])


async def _definitions(request: Request) -> list[Board] | JSONResponse:
    raw = await request.body()
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.MsgspecError as exc:
        return _problem(400, "invalid-parameter", "Invalid request parameter", f"body is not JSON: {exc}")
    if not isinstance(doc, dict):
        return _problem(422, "invalid-board", "Invalid board definition", 'expected {"board": [...]}')
    try:
        return definitions_of(doc, "body")
    except BoardsError as exc:
        return _problem(422, "invalid-board", "Invalid board definition", str(exc))


def _json(body: object, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


def make_router(  # noqa: C901 - one closure per route
    config: Settings, authorize: Callable[[Request], Awaitable[None]]
) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["admin"], dependencies=[Depends(authorize)], responses=_ERRORS)

    def ops() -> Ops:
        return Ops(config)

    @router.get("", summary="Every board: state, source, live and draft versions")
    async def list_boards() -> Response:
        out = await _run(lambda: ops().boards())
        return out if isinstance(out, Response) else _json({"boards": out})

    @router.get("/{board}", summary="A board's state and every stored version of its definition")
    async def show_board(board: BoardId) -> Response:
        out = await _run(lambda: ops().show(board))
        return out if isinstance(out, Response) else _json(out)

    async def _apply(request: Request, *, dry_run: bool) -> Response:
        wanted = await _definitions(request)
        if isinstance(wanted, Response):
            return wanted
        if dry_run:
            out = await _run(lambda: ops().plan(wanted))
            return out if isinstance(out, Response) else _json({"changes": [change_doc(c) for c in out]})
        out = await _run(lambda: ops().apply(wanted))
        if isinstance(out, Response):
            return out
        return _json(
            {
                "changes": [
                    {
                        **change_doc(a.change),
                        "built": None
                        if a.built is None
                        else {"generation": a.built.generation, "events": a.built.events},
                    }
                    for a in out
                ]
            }
        )

    # :plan and :apply are declared alike on purpose: one documented route each; what they share is _apply.
    @router.post(
        ":plan",
        summary="What apply would do with these definitions (nothing is written)",
        openapi_extra={"requestBody": _BODY},
    )
    async def plan_boards(request: Request) -> Response:
        return await _apply(request, dry_run=True)

    @router.post(
        ":apply",
        summary="Store new or changed definitions as drafts and build them",
        openapi_extra={"requestBody": _BODY},
    )
    async def apply_boards(request: Request) -> Response:
        return await _apply(request, dry_run=False)

    @router.get(
        "/{board}/diff", summary="The draft against the live version: top entering/leaving, rank moves"
    )
    async def diff_board(
        board: BoardId,
        period: Annotated[str | None, Query(max_length=64, description="default: all_time")] = None,
        top: Annotated[int, Query(ge=1, le=1000)] = 10,
    ) -> Response:
        out = await _run(lambda: ops().diff(board, period, top))
        return out if isinstance(out, Response) else _json(diff_doc(*out))

    @router.post("/{board}/activate", summary="Make the built draft the live version")
    async def activate_board(board: BoardId) -> Response:
        out = await _run(lambda: ops().activate(board))
        return out if isinstance(out, Response) else _json({"board": board, "result": out})

    @router.post("/{board}/retire", summary="Stop feeding the board; its periods stay readable")
    async def retire_board(board: BoardId) -> Response:
        out = await _run(lambda: ops().retire(board))
        return out if isinstance(out, Response) else _json({"board": board, "retired": True, "changed": out})

    return router
