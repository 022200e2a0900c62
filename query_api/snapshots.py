"""Final standings of closed periods, read from PostgreSQL once Redis has let a period go.

The pool opens on first use: a deployment whose boards are all live never needs PostgreSQL for reads,
and the API starts while PostgreSQL is down. Closed periods never change, so their header rows are cached
for the life of the process; "no snapshot" answers for a few seconds (a period may be closed any time),
so reads of ended periods that exist nowhere do not each cost a PostgreSQL round trip.

Every read is bounded twice: ``statement_timeout`` on the server, and a client-side deadline that also
covers a frozen server (SIGSTOP, a hung network), which a server-side timeout cannot. Past the deadline the
read answers 503 at once; the stuck query is left to psycopg's own bounded cancellation in the background.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from query_api import metrics
from query_api.problems import Problem

_CACHE_MAX = 4096
_POOL_MAX = 4
K = TypeVar("K")
V = TypeVar("V")


def _bounded_put(cache: dict[K, V], key: K, value: V) -> None:
    """Insert, dropping the oldest entry when the cache holds _CACHE_MAX (dicts keep insertion order)."""
    cache.pop(key, None)
    if len(cache) >= _CACHE_MAX:
        del cache[next(iter(cache))]
    cache[key] = value


# Field lines like schemas/model.py's MatchWon by chance: a row of closed_periods, not an event.
@dataclass(frozen=True, slots=True)
class Closed:
    board: str
    period: str
    closed_at: datetime
    players: int
    version: int = 1
    corrected_at: datetime | None = None


def _unavailable(why: str) -> Problem:
    return Problem(
        503,
        "postgres-unavailable",
        f"closed-period snapshots are in PostgreSQL, which is not answering ({why})",
        headers={"Retry-After": "5"},
    )


# One player of a closed period with ``below`` (players strictly worse: a higher competition rank) and its
# index, by index lookups only: positions are 1..players in board order (row_number() at the close and at
# every correction) and ranks never fall along them, so both follow from positions. ``below`` walks the
# player's ties, nothing else. A count(*) over the period cost a read of every row (0.1-0.3 s at 1M).
PLAYER_SQL = """
SELECT s.rank, s.player_id, s.score, s.reached_at, p.display_name,
       coalesce(
           (SELECT max(t.position) FROM period_standings t WHERE t.board = s.board AND t.period = s.period)
           - (SELECT t.position FROM period_standings t
              WHERE t.board = s.board AND t.period = s.period AND t.position > s.position AND t.rank > s.rank
              ORDER BY t.position LIMIT 1) + 1,
           0),
       s.position - 1
FROM period_standings s LEFT JOIN players p ON p.player_id = s.player_id
WHERE s.board = %s AND s.period = %s AND s.player_id = %s
"""


class Snapshots:
    def __init__(
        self,
        conninfo: str,
        *,
        connect_timeout_s: int = 2,
        statement_timeout_ms: int = 2000,
        negative_ttl_s: float = 5.0,
    ) -> None:
        self._conninfo = conninfo
        self._connect_timeout_s = connect_timeout_s
        self._statement_timeout_ms = statement_timeout_ms
        self._deadline_s = connect_timeout_s + statement_timeout_ms / 1000 + 0.5
        """Client-side bound of one read: wait for a connection, run the statement, some slack."""
        self._negative_ttl_s = negative_ttl_s
        self._pool: AsyncConnectionPool | None = None
        self._lock = asyncio.Lock()
        self._closed: dict[tuple[str, str], Closed] = {}
        self._absent: dict[tuple[str, str], float] = {}
        """(board, period) -> monotonic time until which "no snapshot" is believed."""
        self._stuck: set[asyncio.Task[list[tuple[Any, ...]]]] = set()

    async def _get_pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    pool = AsyncConnectionPool(
                        self._conninfo,
                        min_size=1,
                        max_size=_POOL_MAX,
                        open=False,
                        timeout=self._connect_timeout_s,
                        kwargs={"autocommit": True, "connect_timeout": self._connect_timeout_s},
                        configure=self._configure,
                        name="api-snapshots",
                    )
                    await pool.open(wait=False)
                    self._pool = pool
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(f"SET statement_timeout = {int(self._statement_timeout_ms)}")

    async def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        pool = await self._get_pool()
        async with pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if len(self._stuck) >= _POOL_MAX:
            raise _unavailable("earlier reads are still stuck")
        task = asyncio.ensure_future(self._query(sql, params))
        done, _ = await asyncio.wait({task}, timeout=self._deadline_s)
        if not done:
            # Not awaited: psycopg's cancellation of a query to a frozen server takes up to 10 s.
            task.cancel()
            self._stuck.add(task)
            task.add_done_callback(self._unstuck)
            raise _unavailable(f"no answer within {self._deadline_s:g} s")
        try:
            return task.result()
        except psycopg.errors.QueryCanceled as exc:
            raise _unavailable(f"statement timeout of {self._statement_timeout_ms} ms") from exc
        except (psycopg.OperationalError, PoolTimeout, psycopg.errors.UndefinedTable) as exc:
            raise _unavailable(type(exc).__name__) from exc

    def _unstuck(self, task: asyncio.Task[list[tuple[Any, ...]]]) -> None:
        self._stuck.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the client already had its 503

    async def ping(self) -> None:
        """A bounded ``SELECT 1`` for /readyz; raises the 503 Problem when PostgreSQL does not answer."""
        await self._fetch("SELECT 1", ())

    async def closed(self, board: str, period: str) -> Closed | None:
        key = (board, period)
        hit = self._closed.get(key)
        if hit is not None:
            metrics.SNAPSHOT_LOOKUPS.labels("hit").inc()
            return hit
        now = time.monotonic()
        until = self._absent.get(key)
        if until is not None and until > now:
            metrics.SNAPSHOT_LOOKUPS.labels("cached_miss").inc()
            return None
        rows = await self._fetch(
            "SELECT closed_at, players FROM closed_periods WHERE board = %s AND period = %s", (board, period)
        )
        if not rows:
            metrics.SNAPSHOT_LOOKUPS.labels("miss").inc()
            if self._negative_ttl_s > 0:
                _bounded_put(self._absent, key, now + self._negative_ttl_s)
            return None
        metrics.SNAPSHOT_LOOKUPS.labels("hit").inc()
        found = Closed(board, period, rows[0][0], rows[0][1])
        self._absent.pop(key, None)
        _bounded_put(self._closed, key, found)
        return found

    async def all_closed(self, board: str) -> list[Closed]:
        rows = await self._fetch(
            "SELECT period, closed_at, players, version, corrected_at FROM closed_periods WHERE board = %s"
            " ORDER BY closed_at DESC, period",
            (board,),
        )
        return [Closed(board, r[0], r[1], r[2], r[3], r[4]) for r in rows]

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
        rows = await self._fetch(PLAYER_SQL, (board, period, player_id))
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
            "SELECT score FROM period_standings WHERE board = %s AND period = %s ORDER BY position LIMIT 1",
            (board, period),
        )
        return int(rows[0][0]) if rows else None
