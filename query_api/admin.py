"""``/v1/admin/...``: moderation over HTTP, behind its own bearer token.

The token (``LEADERBOARD_ADMIN_TOKEN``) is not the ingest token. It is compared in constant time; a
missing one answers 401, a wrong one 403; with no admin token configured every admin route answers 404
(never open). Actions go through leaderboard.moderation.service, as the CLI's do: stored in PostgreSQL,
then published to moderation.v1.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any

import msgspec
import psycopg
import uuid_utils
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from leaderboard.boards import Board
from leaderboard.moderation import rules, service, store
from leaderboard.settings import Settings
from query_api import http
from query_api.problems import Problem
from schemas import moderation as m
from schemas.model import check_bytes

PREFIX = "/v1/admin"
_PLAYER = "^[^\x00-\x1f\x7f-\x9f]+$"
"""A player id has no control characters (as schemas.model.PlayerId); PostgreSQL cannot even hold NUL."""
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No `Authorization: Bearer <admin token>` header"},
    403: {"description": "Wrong admin token"},
    404: {"description": "Admin API disabled (no LEADERBOARD_ADMIN_TOKEN configured), or no such action"},
    503: {"description": "PostgreSQL unavailable: nothing was recorded; retry with the same action_id"},
}


def _request_schema() -> dict[str, Any]:
    """moderation.v1 with ``action_id`` and ``at`` optional: the server fills them (UUIDv7, its clock)."""
    text = resources.files("schemas").joinpath("moderation.v1.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    schema.pop("$schema", None)
    schema.pop("$id", None)
    out = copy.deepcopy(schema)
    for branch in out["oneOf"]:
        branch["required"] = [f for f in branch["required"] if f not in ("action_id", "at")]
    # OpenAPI resolves $ref against the whole document: inline the few definitions.
    defs = out.pop("$defs")

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**inline(defs[ref.removeprefix("#/$defs/")]), **rest}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    inlined: dict[str, Any] = inline(out)
    return inlined


def _status(code: str) -> int:
    return 422 if code in rules.UNKNOWN else 409


def _entry(e: store.Entry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "recorded_at": m.utc_text(e.recorded_at),
        "published": e.published,
        "reversed_by": e.reversed_by,
        "action": e.record,
    }


def authorizer(config: Settings) -> Callable[[Request], Awaitable[None]]:
    """The admin routes' dependency (moderation here, boards in consumers.boards_admin): 404 with no admin
    token configured, 401 without a bearer token, 403 with a wrong one (compared in constant time)."""
    token = config.admin_token.encode()

    async def authorize(request: Request) -> None:
        """Runs before any parameter is looked at: without the token nothing else is answered."""
        if not token:
            raise Problem(404, "not-found", f"no route for {request.url.path}; see /docs")
        header = request.headers.get("authorization")
        if header is None:
            raise Problem(
                401,
                "unauthorized",
                "send 'Authorization: Bearer <admin token>'",
                headers={"WWW-Authenticate": 'Bearer realm="admin"'},
            )
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            raise Problem(403, "forbidden", "the admin token is wrong")

    return authorize


def make_router(  # noqa: C901, PLR0915 - one closure per route
    config: Settings, boards: frozenset[str], definitions: Sequence[Board] = ()
) -> APIRouter:
    """The admin routes; mount with ``app.include_router``. ``boards``: the ids the app serves;
    ``definitions``: those boards (for the investigation route's filters and periods)."""
    by_id = {b.id: b for b in definitions}
    authorize = authorizer(config)

    def served(request: Request) -> dict[str, Board]:
        """The boards the app serves now (they follow the runtime catalog), else those it was made with."""
        context = getattr(request.app.state, "ctx", None)
        return by_id if context is None else dict(context.boards)

    router = APIRouter(prefix=PREFIX, tags=["admin"], dependencies=[Depends(authorize)])

    async def read_action(request: Request) -> m.AnyAction:
        raw = await request.body()
        bad = check_bytes(raw)
        if bad is not None:
            raise Problem(400, "invalid-parameter", f"body: {bad.detail}")
        try:
            doc = msgspec.json.decode(raw)
        except msgspec.MsgspecError as exc:
            raise Problem(400, "invalid-parameter", f"body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise Problem(422, "invalid-action", "expected a JSON object (a moderation.v1 action)")
        doc.setdefault("action_id", str(uuid_utils.uuid7()))
        doc.setdefault("at", m.utc_text(datetime.now(UTC)))
        try:
            return m.validate(doc)
        except ValueError as exc:
            raise Problem(422, "invalid-action", str(exc)) from None

    @router.post(
        "/moderation",
        summary="Take a moderation action (exclude, reinstate, void, unvoid, erase)",
        description=(
            "The body is a moderation.v1 action (schemas/moderation.v1.json); `action_id` (the idempotency"
            " key) and `at` are filled by the server when absent. 201 once PostgreSQL holds the action;"
            " the same action_id again answers 200 and changes nothing. `published` says whether Kafka"
            " (topic moderation.v1) acknowledged it already; if not, it goes out with the next action or"
            " `leaderboard moderate publish`."
        ),
        status_code=201,
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": _request_schema()}}}
        },
        responses={
            **_AUTH_RESPONSES,
            200: {"description": "Already recorded (same action_id): nothing changed"},
            201: {"description": "Recorded"},
            400: {"description": "Body is not JSON"},
            409: {
                "description": "Conflicts with the current state (already excluded, overlapping window, ...)"
            },
            422: {
                "description": "Not a valid action, or it names an unknown player, board, event, match"
                " or action"
            },
        },
    )
    async def take_action(request: Request) -> Response:
        action = await read_action(request)
        try:
            known = frozenset(served(request)) | boards
            outcome = await asyncio.to_thread(service.submit, config, action, known)
        except rules.Refused as exc:
            raise Problem(_status(exc.code), exc.code, exc.detail) from None
        except service.Unavailable as exc:
            raise Problem(503, "postgres-unavailable", str(exc), headers={"Retry-After": "5"}) from None
        recorded = outcome.recorded
        body = {
            "action_id": recorded.action_id,
            "seq": recorded.seq,
            "kind": recorded.kind,
            "duplicate": recorded.duplicate,
            "published": outcome.unpublished == 0,
        }
        return http.plain_json(body, status=200 if recorded.duplicate else 201)

    @router.get(
        "/moderation",
        summary="The moderation audit trail, oldest first",
        description="Page on with `after` = the last `seq` seen (`next_after`; null at the end).",
        responses=_AUTH_RESPONSES,
    )
    async def list_actions(
        player: Annotated[str | None, Query(min_length=1, max_length=64, pattern=_PLAYER)] = None,
        after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=store.MAX_LIST)] = 100,
    ) -> Response:
        try:
            rows = await asyncio.to_thread(service.entries, config, player=player, after=after, limit=limit)
        except service.Unavailable as exc:
            raise Problem(503, "postgres-unavailable", str(exc), headers={"Retry-After": "5"}) from None
        next_after = rows[-1].seq if len(rows) == limit else None
        return http.plain_json({"actions": [_entry(e) for e in rows], "next_after": next_after})

    @router.get(
        "/players/{player_id}/events",
        summary="The events behind a player's score on a board-period, counted or why not",
        description=(
            "From PostgreSQL, oldest first: event_id, match_id, points, score, occurred_at, `counted`, and"
            " `why_not` (erased, voided-event, voided-match, voided-window, held, not-on-board). `period`:"
            " a period key of the board, seasons included (default: all the player's events). Page on"
            " with `offset` (`next_offset`; null at the end)."
        ),
        responses={
            **_AUTH_RESPONSES,
            400: {"description": "Invalid parameter (player id, offset, limit)"},
            422: {"description": "Unknown board or invalid period"},
        },
    )
    async def player_events(  # noqa: PLR0917 - FastAPI passes the parameters by name
        request: Request,
        player_id: Annotated[str, Path(min_length=1, max_length=64, pattern=_PLAYER)],
        board: Annotated[str, Query(min_length=1, max_length=64)],
        period: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=store.MAX_LIST)] = 100,
    ) -> Response:
        b = served(request).get(board)
        if b is None:
            raise Problem(422, "unknown-board", f"no such board: {board}")
        span = None
        if period is not None:
            try:
                span = b.bounds(period)
            except ValueError as exc:  # periods.PeriodError included
                raise Problem(422, "invalid-period", f"period {period!r}: {exc}") from None
        try:
            rows = await asyncio.to_thread(
                service.investigate, config, player_id, b, span, offset=offset, limit=limit
            )
        except service.Unavailable as exc:
            raise Problem(503, "postgres-unavailable", str(exc), headers={"Retry-After": "5"}) from None
        except psycopg.Error as exc:
            raise Problem(503, "postgres-unavailable", str(exc).splitlines()[0]) from None
        next_offset = offset + len(rows) if len(rows) == limit else None
        return http.plain_json(
            {
                "player_id": player_id,
                "board": board,
                "period": period,
                "events": rows,
                "next_offset": next_offset,
            }
        )

    return router
