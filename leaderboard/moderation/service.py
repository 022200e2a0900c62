"""The one way actions are submitted (CLI and admin API): store durably, then publish; and list them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from leaderboard import catalog_store
from leaderboard.boards import Board
from leaderboard.errors import UserError
from leaderboard.moderation import publish, store
from leaderboard.settings import Settings
from schemas import moderation as m
from schemas.model import MatchWon

CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True, slots=True)
class Outcome:
    recorded: store.Recorded
    unpublished: int
    """Actions (this one or earlier) still waiting for Kafka's ack; they go out with the next submission
    or ``leaderboard moderate publish``."""


class Unavailable(UserError):
    """PostgreSQL cannot be reached or did not answer in time: nothing was recorded."""


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def connect(config: Settings) -> psycopg.Connection:
    """A connection whose every statement and lock wait is bounded (store.STATEMENT_TIMEOUT_MS, ...)."""
    try:
        conn = psycopg.connect(config.database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        conn.execute(f"SET statement_timeout = {store.STATEMENT_TIMEOUT_MS}")
        conn.execute(f"SET lock_timeout = {store.LOCK_TIMEOUT_MS}")
    except psycopg.OperationalError as exc:
        raise Unavailable(f"PostgreSQL unavailable: {_first_line(exc)}") from None
    return conn


def board_ids(config: Settings) -> frozenset[str]:
    """The boards served now: the boards file overlaid by the runtime catalog (retired ones included)."""
    return frozenset(b.id for b in catalog_store.current(config).served)


def submit(config: Settings, action: m.AnyAction, boards: frozenset[str] | None = None) -> Outcome:
    """Store ``action`` (raises rules.Refused: nothing changed), then try to publish the outbox."""
    horizon = timedelta(seconds=config.erasure_horizon_s)
    with connect(config) as conn:
        try:
            recorded = store.record(
                conn, action, board_ids(config) if boards is None else boards, horizon=horizon
            )
        except psycopg.errors.UndefinedTable:
            raise Unavailable("the moderation tables are missing: run `leaderboard migrate`") from None
        except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable) as exc:
            raise Unavailable(f"PostgreSQL did not answer in time: {_first_line(exc)}") from None
        except psycopg.OperationalError as exc:
            raise Unavailable(f"PostgreSQL unavailable: {_first_line(exc)}") from None
        return Outcome(recorded, publish.publish_pending(config, conn))


def republish(config: Settings) -> int:
    """Send the outbox again (safe: readers de-duplicate by action_id); returns how many remain."""
    with connect(config) as conn:
        try:
            return publish.publish_pending(config, conn)
        except psycopg.errors.UndefinedTable:
            raise Unavailable("the moderation tables are missing: run `leaderboard migrate`") from None


def forget_digests(config: Settings) -> int:
    with connect(config) as conn:
        try:
            return store.forget_digests(conn, datetime.now(UTC))
        except psycopg.errors.UndefinedTable:
            raise Unavailable("the moderation tables are missing: run `leaderboard migrate`") from None


def entries(config: Settings, *, player: str | None, after: int, limit: int) -> list[store.Entry]:
    with connect(config) as conn:
        try:
            return store.listing(conn, player=player, after=after, limit=limit)
        except psycopg.errors.UndefinedTable:
            raise Unavailable("the moderation tables are missing: run `leaderboard migrate`") from None
        except psycopg.OperationalError as exc:
            raise Unavailable(f"PostgreSQL unavailable: {_first_line(exc)}") from None


def investigate(
    config: Settings,
    player: str,
    board: Board,
    span: tuple[datetime, datetime] | None,
    *,
    offset: int,
    limit: int,
) -> list[dict[str, object]]:
    """The player's stored events in ``span`` (None: all), oldest first, each with whether it counts on
    ``board`` now and why not (``view.View.why_not``; ``not-on-board``: the board's filter refuses it, or
    the board cannot count it: no value for its ``value``, or one past the bounds).
    Keyed by the player index; at most ``limit`` rows from ``offset``."""
    where = "player_id = %s" + ("" if span is None else " AND occurred_at >= %s AND occurred_at < %s")
    params: list[object] = [player, *(span or ())]
    with connect(config) as conn:
        v = store.load_view(conn)
        rows = conn.execute(
            "SELECT event_id::text, match_id, player_id, game, mode, region, points, score, occurred_at"
            " FROM events"
            f" WHERE {where} ORDER BY occurred_at, event_id OFFSET %s LIMIT %s",
            [*params, offset, min(max(limit, 1), store.MAX_LIST)],
        ).fetchall()
    out: list[dict[str, object]] = []
    for eid, match, pid, game, mode, region, points, score, at in rows:
        # One keyword per field, like leaderboard/boards.py's Board(...) by chance: a different record.
        event = MatchWon(
            event_id=eid,
            match_id=match,
            player_id=pid,
            game=game,
            mode=mode,
            region=region,
            points=points,
            score=score,
            occurred_at=at,
        )
        on_board = board.accepts(game, mode, region) and board.value_of(points, score) is not None
        why = v.why_not(event, board.id) if on_board else "not-on-board"
        out.append(
            {
                "event_id": eid,
                "match_id": match,
                "points": points,
                "score": score,
                "occurred_at": m.utc_text(at),
                "counted": why is None,
                "why_not": why,
            }
        )
    return out
