"""The one way actions are submitted (CLI and admin API): store durably, then publish; and list them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from leaderboard import boards as boards_mod
from leaderboard.errors import UserError
from leaderboard.moderation import publish, store
from leaderboard.settings import Settings
from schemas import moderation as m

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
    return frozenset(b.id for b in boards_mod.load(config.boards_file))


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
