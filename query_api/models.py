"""Response and request shapes, for the OpenAPI document only.

Handlers return pre-serialised orjson responses (no per-request pydantic work on the hot path); these
models describe those bodies. test_api_reads / test_api_snapshots validate real responses against them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from leaderboard import timefmt

Source = Literal["live", "snapshot"]
PlayerId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MAX_LOOKUP = 100


Instant = Annotated[
    str,
    Field(
        pattern=f"^{timefmt.PATTERN.pattern}$",
        description="RFC 3339, UTC, milliseconds, Z (leaderboard/timefmt.py).",
        examples=["2026-11-28T10:05:00.000Z"],
    ),
]
"""Every instant in a body: one format."""


class Entry(BaseModel):
    rank: int = Field(description="Competition rank (1224): tied players share a rank.")
    player_id: str
    score: int = Field(
        description="The player's value on this board-period (points or score, per the board)."
    )
    display_name: str | None


class Span(BaseModel):
    """When a period runs: null for all_time. closes_at = ends_at + the board's grace window."""

    starts_at: Instant | None = Field(description="Start of the period (inclusive).")
    ends_at: Instant | None = Field(description="End of the period (exclusive): the countdown's target.")
    closes_at: Instant | None = Field(description="When late events stop counting and the period may close.")


class PeriodInfo(Span):
    period: str


class BoardInfo(BaseModel):
    id: str
    periods: list[str] = Field(description="Period kinds the board keeps.")
    timezone: str
    aggregation: Literal["sum", "best", "last"]
    order: Literal["desc", "asc"] = Field(description="desc: higher is better; asc: lower is better.")
    value: Literal["points", "score"] = Field(description="The event field the board ranks by.")
    current: dict[str, str] = Field(
        description="Period kind -> key of the current period ('season': the current season, if any)."
    )
    current_periods: list[PeriodInfo]
    seasons: list[PeriodInfo] = Field(description="The board's seasons, with their bounds.")
    default_period: str


class BoardList(BaseModel):
    boards: list[BoardInfo]


class Page(Span):
    board: str
    period: str = Field(description="The resolved period key.")
    source: Source
    total: int = Field(description="Players on the board-period.")
    offset: int
    limit: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last page.")
    entries: list[Entry]


class PlayerRank(Span):
    board: str
    period: str
    source: Source
    player_id: str
    display_name: str | None
    rank: int
    score: int
    percentile: float = Field(description="Share of the board's players strictly behind this one, in %.")
    total: int = Field(description="Players on the board-period.")
    reached_at: Instant = Field(description="When the player reached this score.")


class Around(Span):
    board: str
    period: str
    source: Source
    player_id: str
    radius: int
    total: int
    player_index: int = Field(description="Index of the player within entries.")
    entries: list[Entry]


class LookupRequest(BaseModel):
    player_ids: list[PlayerId] = Field(
        min_length=1, max_length=MAX_LOOKUP, description="Up to 100 player ids."
    )


class LookupResult(Span):
    board: str
    period: str
    source: Source
    total: int
    entries: list[Entry] = Field(description="Players on the board, by rank.")
    absent: list[str] = Field(description="Requested ids with no score on the board-period.")


# Body models list their fields in full on purpose (board, period, source repeat): each reads as its body.
class RangePage(Span):
    board: str
    period: str
    source: Source
    min_score: int
    max_score: int
    total: int
    matching: int = Field(description="Players whose score is within [min_score, max_score].")
    offset: int
    limit: int
    next_offset: int | None
    entries: list[Entry]


class Stats(Span):
    board: str
    period: str
    source: Source
    players: int
    top_score: int | None
    events: int | None = Field(description="Events applied (null for snapshots).")
    updated_at: Instant | None = Field(description="Last write (live) or closing time (snapshot).")


class ClosedPeriod(PeriodInfo):
    closed_at: Instant
    players: int
    version: int = Field(1, description="1 as closed; +1 per correction by later moderation.")
    corrected_at: Instant | None = Field(
        None, description="When moderation last corrected the standings (null: never); see period-corrected."
    )


class Periods(BaseModel):
    board: str
    current: dict[str, str]
    live: list[str] = Field(description="Period keys present in Redis.")
    live_periods: list[PeriodInfo] = Field(description="The live periods with their bounds.")
    closed: list[ClosedPeriod] = Field(description="Closed periods with snapshots in PostgreSQL.")


class ProblemDetails(BaseModel):
    """RFC 9457 problem details (media type application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


class Health(BaseModel):
    status: str
