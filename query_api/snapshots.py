"""Final standings of closed periods, read from PostgreSQL once Redis has let a period go.

The pool opens on first use: a deployment whose boards are all live never needs PostgreSQL for reads,
and the API starts (and stays ready) while PostgreSQL is down. Closed periods never change, so their
header rows are cached for the life of the process.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from query_api.problems import Problem

_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Closed:
    board: str
    period: str
    closed_at: datetime
    players: int


def _unavailable(exc: Exception) -> Problem:
    return Problem(
        503,
        "postgres-unavailable",
        f"closed-period snapshots are in PostgreSQL, which is not answering ({type(exc).__name__})",
        headers={"Retry-After": "5"},
    )


class Snapshots:
    def __init__(self, conninfo: str, *, timeout: float = 5.0) -> None:
        self._conninfo = conninfo
        self._timeout = timeout
        self._pool: AsyncConnectionPool | None = None
        self._lock = asyncio.Lock()
        self._closed: dict[tuple[str, str], Closed] = {}

    async def _get_pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    pool = AsyncConnectionPool(
                        self._conninfo,
                        min_size=1,
                        max_size=4,
                        open=False,
                        timeout=self._timeout,
                        kwargs={"autocommit": True, "connect_timeout": max(1, int(self._timeout))},
                        name="api-snapshots",
                    )
                    await pool.open(wait=False)
                    self._pool = pool
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            pool = await self._get_pool()
            async with pool.connection() as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall()
        except (psycopg.OperationalError, PoolTimeout, psycopg.errors.UndefinedTable) as exc:
            raise _unavailable(exc) from exc

    async def closed(self, board: str, period: str) -> Closed | None:
        hit = self._closed.get((board, period))
        if hit is not None:
            return hit
        rows = await self._fetch(
            "SELECT closed_at, players FROM closed_periods WHERE board = %s AND period = %s", (board, period)
        )
        if not rows:
            return None
        found = Closed(board, period, rows[0][0], rows[0][1])
        if len(self._closed) >= _CACHE_MAX:
            self._closed.clear()
        self._closed[(board, period)] = found
        return found

    async def all_closed(self, board: str) -> list[Closed]:
        rows = await self._fetch(
            "SELECT period, closed_at, players FROM closed_periods WHERE board = %s"
            " ORDER BY closed_at DESC, period",
            (board,),
        )
        return [Closed(board, r[0], r[1], r[2]) for r in rows]

    _ROW = (
        "SELECT s.rank, s.player_id, s.score, s.reached_at, p.display_name FROM period_standings s"
        " LEFT JOIN players p ON p.player_id = s.player_id WHERE s.board = %s AND s.period = %s"
    )

    async def page(self, board: str, period: str, offset: int, limit: int) -> list[tuple[Any, ...]]:
        """Rows (rank, player_id, score, reached_at, display_name) in board order."""
        return await self._fetch(
            self._ROW + " ORDER BY s.position OFFSET %s LIMIT %s", (board, period, offset, limit)
        )

    async def player(self, board: str, period: str, player_id: str) -> tuple[Any, ...] | None:
        """(rank, player_id, score, reached_at, display_name, below, index) of one player, or None."""
        rows = await self._fetch(
            "SELECT s.rank, s.player_id, s.score, s.reached_at, p.display_name,"
            " (SELECT count(*) FROM period_standings t"
            "  WHERE t.board = s.board AND t.period = s.period AND t.score < s.score),"
            " (SELECT count(*) FROM period_standings t"
            "  WHERE t.board = s.board AND t.period = s.period AND t.position < s.position)"
            " FROM period_standings s LEFT JOIN players p ON p.player_id = s.player_id"
            " WHERE s.board = %s AND s.period = %s AND s.player_id = %s",
            (board, period, player_id),
        )
        return rows[0] if rows else None

    async def lookup(self, board: str, period: str, player_ids: list[str]) -> list[tuple[Any, ...]]:
        return await self._fetch(
            self._ROW + " AND s.player_id = ANY(%s) ORDER BY s.position", (board, period, player_ids)
        )

    async def score_range(
        self, board: str, period: str, bounds: tuple[int, int], offset: int, limit: int
    ) -> tuple[int, list[tuple[Any, ...]]]:
        low, high = bounds
        rows = await self._fetch(
            self._ROW + " AND s.score BETWEEN %s AND %s ORDER BY s.position OFFSET %s LIMIT %s",
            (board, period, low, high, offset, limit),
        )
        count = await self._fetch(
            "SELECT count(*) FROM period_standings"
            " WHERE board = %s AND period = %s AND score BETWEEN %s AND %s",
            (board, period, low, high),
        )
        return int(count[0][0]), rows

    async def top_score(self, board: str, period: str) -> int | None:
        rows = await self._fetch(
            "SELECT max(score) FROM period_standings WHERE board = %s AND period = %s", (board, period)
        )
        return None if rows[0][0] is None else int(rows[0][0])
