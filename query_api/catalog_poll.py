"""Keeps the API's boards current: polls the runtime board catalog (leaderboard.catalog_watch) every second.

Each poll runs in a thread on its own PostgreSQL connection, bounded by the API's connect and statement
timeouts; a failed poll keeps the boards the API has and is retried on the next tick. The boards are
swapped in one assignment, so a request sees either the old set or the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from leaderboard.boards import Board
from leaderboard.catalog_watch import POLL_S, Watch
from leaderboard.settings import Settings
from query_api.context import Context

log = logging.getLogger(__name__)


class CatalogPoll:
    def __init__(
        self, config: Settings, file_boards: tuple[Board, ...], context: Context, *, enabled: bool = True
    ) -> None:
        self._enabled = enabled
        self._config = config
        self._watch = Watch(file_boards)
        self._ctx = context
        self._conn: psycopg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def _connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            conn = psycopg.connect(
                self._config.database_url,
                autocommit=True,
                connect_timeout=self._config.api_pg_connect_timeout_s,
            )
            conn.execute(f"SET statement_timeout = {self._config.api_pg_statement_timeout_ms}")
            self._conn = conn
        return self._conn

    def poll_once(self) -> bool:
        """One poll (blocking, bounded); True if the boards changed."""
        try:
            fresh = self._watch.poll(self._connect())
        except psycopg.Error as exc:
            log.warning("cannot read the board catalog; keeping the boards", extra={"error": str(exc)[:300]})
            if self._conn is not None:
                self._conn.close()
            return False
        if fresh is None:
            return False
        self._ctx.boards = {b.id: b for b in fresh.served}
        self._ctx.forget_resolved()
        log.info("boards reloaded", extra={"boards": {b.id: b.version for b in fresh.served}})
        return True

    async def _loop(self) -> None:
        while True:
            await asyncio.to_thread(self.poll_once)
            await asyncio.sleep(POLL_S)

    async def start(self) -> None:
        if not self._enabled:
            return
        await asyncio.to_thread(self.poll_once)
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await asyncio.to_thread(self._conn.close)
