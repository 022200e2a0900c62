"""The read routes under /v1. Handlers validate, call the store once and return pre-built JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from starlette.responses import Response

from leaderboard import periods, scoring, timefmt
from leaderboard.boards import Board
from query_api import http
from query_api.context import ctx, current_keys, default_spec
from query_api.models import (
    Around,
    BoardList,
    LookupRequest,
    LookupResult,
    Page,
    Periods,
    PlayerRank,
    ProblemDetails,
    RangePage,
    Stats,
)
from query_api.problems import MEDIA_TYPE, Problem
from query_api.store import Result, Store, period_doc


def _known(board: Board, period: str) -> bool:
    """Whether a stored period key is one the board still defines (a season may have been removed)."""
    try:
        board.bounds(period)
    except periods.PeriodError:
        return False
    return True


async def _read(
    request: Request,
    board: str,
    period: str | None,
    read: Callable[[Store, Board, str], Awaitable[Result]],
    cache: str | None = None,
) -> Response:
    """A board read: the board (404) and the period key (400) the request names, one store call, its JSON."""
    c = ctx(request)
    b = c.board(board)
    res = await read(c.store, b, c.period(b, period))
    return http.json(request, res.doc, snapshot=res.snapshot, cache=cache)


PROBLEM = {"model": ProblemDetails, "content": {MEDIA_TYPE: {}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {**PROBLEM, "description": "Invalid parameter (limit, period, ids ...)"},
    404: {**PROBLEM, "description": "Unknown board, or player not on the board"},
    503: {**PROBLEM, "description": "Board being rebuilt, or Redis / PostgreSQL unavailable"},
}

BoardId = Annotated[str, Path(description="Board id (see GET /v1/leaderboards).", max_length=32)]
PlayerIdPath = Annotated[str, Path(min_length=1, max_length=64)]
PeriodSpec = Annotated[
    str | None,
    Query(
        description=periods.GRAMMAR + ". Default: monthly:current (or the board's first period kind).",
        max_length=40,
        examples=["monthly:current", "all_time", "weekly:2026-W48", "daily:2026-11-28", "monthly:previous"],
    ),
]
Limit = Annotated[int, Query(ge=1, le=1000, description="Rows per page, 1..1000.")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip.")]
ScoreBound = Annotated[int, Query(ge=0, le=scoring.MAX_SCORE)]

router = APIRouter(prefix="/v1", tags=["leaderboards"])
# The routes' decorators and signatures look alike on purpose: FastAPI validates and documents each route
# from its own signature (the fast path derives its bounds from them); what they do in common is _read.


@router.get(
    "/leaderboards", response_model=BoardList, summary="Boards, their periods and current period keys"
)
async def list_boards(request: Request) -> Response:
    boards = ctx(request).boards.values()
    doc = {
        "boards": [
            {
                "id": b.id,
                "periods": [str(k) for k in b.periods],
                "timezone": b.timezone.key,
                "aggregation": b.aggregation,
                "order": b.order,
                "value": b.value,
                "current": current,
                "current_periods": [period_doc(b, key) for key in current.values()],
                "seasons": [period_doc(b, x.key) for x in b.seasons],
                "default_period": default_spec(b),
            }
            for b, current in ((b, current_keys(b)) for b in boards)
        ]
    }
    return http.json(request, doc)


@router.get("/leaderboards/{board}/entries", response_model=Page, responses=ERRORS, summary="Top of a board")
async def top(
    request: Request, board: BoardId, period: PeriodSpec = None, limit: Limit = 10, offset: Offset = 0
) -> Response:
    return await _read(request, board, period, lambda store, b, key: store.top(b, key, offset, limit))


@router.get(
    "/leaderboards/{board}/players/{player_id}",
    response_model=PlayerRank,
    responses=ERRORS,
    summary="One player's rank, score, percentile",
)
async def player(
    request: Request, board: BoardId, player_id: PlayerIdPath, period: PeriodSpec = None
) -> Response:
    return await _read(request, board, period, lambda store, b, key: store.player(b, key, player_id))


@router.get(
    "/leaderboards/{board}/players/{player_id}/around",
    response_model=Around,
    responses=ERRORS,
    summary="The players around one player",
)
async def around(
    request: Request,
    board: BoardId,
    player_id: PlayerIdPath,
    period: PeriodSpec = None,
    radius: Annotated[int, Query(ge=0, le=50, description="Rows above and below, 0..50.")] = 4,
) -> Response:
    return await _read(request, board, period, lambda store, b, key: store.around(b, key, player_id, radius))


@router.post(
    "/leaderboards/{board}/players:lookup",
    response_model=LookupResult,
    responses=ERRORS,
    summary="Ranks of a list of players (friends)",
)
async def lookup(
    request: Request, board: BoardId, body: Annotated[LookupRequest, Body()], period: PeriodSpec = None
) -> Response:
    ids = body.player_ids
    return await _read(request, board, period, lambda store, b, key: store.lookup(b, key, ids), "no-store")


@router.get(
    "/leaderboards/{board}/players",
    response_model=RangePage,
    responses=ERRORS,
    summary="Players within a score range, in board order",
)
async def score_range(
    request: Request,
    board: BoardId,
    *,
    period: PeriodSpec = None,
    min_score: ScoreBound = 0,
    max_score: ScoreBound = scoring.MAX_SCORE,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    if min_score > max_score:
        raise Problem(400, "invalid-parameter", f"min_score ({min_score}) is above max_score ({max_score})")
    span = (min_score, max_score)
    return await _read(
        request, board, period, lambda store, b, key: store.score_range(b, key, span, offset, limit)
    )


@router.get("/leaderboards/{board}/stats", response_model=Stats, responses=ERRORS, summary="Board statistics")
async def stats(request: Request, board: BoardId, period: PeriodSpec = None) -> Response:
    return await _read(request, board, period, lambda store, b, key: store.stats(b, key))


@router.get(
    "/leaderboards/{board}/periods",
    response_model=Periods,
    responses=ERRORS,
    summary="Period keys live in Redis and closed ones in PostgreSQL",
)
async def list_periods(request: Request, board: BoardId) -> Response:
    c = ctx(request)
    b = c.board(board)
    live = await c.store.live_periods(b)
    closed = await c.store.snapshots.all_closed(b.id)
    doc = {
        "board": b.id,
        "current": current_keys(b),
        "live": live,
        "live_periods": [period_doc(b, key) for key in live if _known(b, key)],
        "closed": [
            {
                **period_doc(b, x.period),
                "closed_at": timefmt.utc(x.closed_at),
                "players": x.players,
                "version": x.version,
                "corrected_at": None if x.corrected_at is None else timefmt.utc(x.corrected_at),
            }
            for x in closed
            if _known(b, x.period)
        ],
    }
    return http.json(request, doc)
