"""The scheduler: a thread beside the consumer's poll loop, with its own connections.

Every ``LEADERBOARD_CLOSE_INTERVAL_S`` one member of the group (a PostgreSQL advisory lock; the others skip
the run) folds the event log's tail into the standings checkpoints (so a rebuild, a recovery or a close
only ever has a short tail to add) and, with ``LEADERBOARD_AUTO_CLOSE_PERIODS``, closes the periods that
are due by the group's recorded clock (``checkpoints.clock``: the latest ingest time folded, so a replay
decides the same) within ``LEADERBOARD_CLOSE_LOOKBACK_S``, announces them and mirrors them into Redis. The
poll loop never waits for any of it: batches only ever queue behind a freeze's brief insert.

Every call it makes is bounded: PostgreSQL by ``statement_timeout`` (``LEADERBOARD_SCHEDULER_PG_TIMEOUT_S``)
and, for a server that answers nothing (frozen: the kernel still ACKs, so no TCP timeout fires), by a watcher
thread that shuts the connection's socket down once work on it has lasted twice that (the batch watchdog's
cut-off); connects by ``connect_timeout``; Redis by socket timeouts; Kafka by the announcement's flush bound.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from confluent_kafka import KafkaException

from consumers import checkpoints, closing, due, period_store
from consumers.announce import new_producer
from consumers.generations import retired_periods
from leaderboard.boards import Board
from leaderboard.redis_client import FAILURES, sync_client
from leaderboard.settings import Settings

log = logging.getLogger(__name__)

_LOCK = 0x1EAD_5C4D  # advisory lock: one scheduler run at a time in the whole group (second key: the schema)
_CONNECT_TIMEOUT_S = 5
_WATCH_EVERY_S = 0.25


def break_connection(conn: psycopg.Connection | None) -> None:
    """Make a call blocked on ``conn`` fail now (from another thread): shut its socket down under libpq."""
    if conn is None or conn.closed:
        return
    try:
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        pass  # already closed: the blocked call fails anyway


class Cutoff:
    """A thread that breaks a connection whose work (a statement or a transaction) outlives ``bound_s``.

    It samples the connection every _WATCH_EVERY_S, so back-to-back statements look like one stretch of
    work; the owner calls :meth:`mark` where new work begins (each run, each step of a fold), and the bound
    starts again there (a starved watcher once timed a new run from the previous run's start).
    """

    def __init__(self, conn: Callable[[], psycopg.Connection | None], bound_s: float) -> None:
        self._conn = conn
        self.bound_s = bound_s
        self.cuts = 0
        self._marks = 0
        # Thread plumbing as in watchdog.Watchdog: two independent daemon threads, too little to share a base.
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler-pg-cutoff", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def mark(self) -> None:
        """New work begins on the connection: its bound counts from now."""
        self._marks += 1

    def _loop(self) -> None:
        since: float | None = None
        watched: psycopg.Connection | None = None
        marks = self._marks
        while not self._stop.wait(_WATCH_EVERY_S):
            if self._marks != marks:
                since, marks = None, self._marks
            conn = self._conn()
            busy = (
                conn is not None
                and not conn.closed
                and conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE
            )
            if not busy:
                since = None
                continue
            if since is None or conn is not watched:
                since, watched = time.monotonic(), conn
                continue
            if time.monotonic() - since > self.bound_s:
                log.warning(
                    "scheduler's postgresql call outlived its bound; breaking the connection",
                    extra={"bound_s": self.bound_s},
                )
                self.cuts += 1  # before the break: the cut call fails at once, and its caller may look
                break_connection(conn)
                since = None


_FAILURES: tuple[type[BaseException], ...] = (psycopg.Error, *FAILURES, KafkaException, RuntimeError)
"""What a round may fail with: logged, and the next round tries again."""


class Scheduler:
    """Run :meth:`run_once` now and then every ``interval``, until :meth:`stop`."""

    def __init__(self, config: Settings, boards: Sequence[Board]) -> None:
        self.config = config
        self.boards = tuple(boards)
        self.lookback = timedelta(seconds=config.close_lookback_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="close-scheduler", daemon=True)
        self._pg: psycopg.Connection | None = None
        self._redis = sync_client(config)
        self._producer = new_producer(config)
        self._warned: set[tuple[str, str]] = set()
        self.runs = 0
        self._timeout_s = config.scheduler_pg_timeout_s
        self.cutoff = Cutoff(lambda: self._pg, 2 * self._timeout_s)

    def start(self) -> None:
        self.cutoff.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=2)
            if self._thread.is_alive():  # blocked on PostgreSQL: stop waiting for it now
                break_connection(self._pg)
                self._thread.join(timeout=30)
        self.cutoff.stop()
        self._producer.flush(5)
        self._redis.close()
        if self._pg is not None:
            self._pg.close()

    def _conn(self) -> psycopg.Connection:
        if self._pg is None or self._pg.closed or self._pg.broken:
            if self._pg is not None:
                self._pg.close()
            self._pg = psycopg.connect(
                self.config.database_url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
            )
            # Folds are cut into steps (checkpoints.STEP) so each statement stays well inside this.
            self._pg.execute(f"SET statement_timeout = {self._timeout_s * 1000}")
        return self._pg

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except _FAILURES as exc:
                log.warning("close scheduler run failed; will retry", extra={"error": str(exc)[:300]})
            if self._stop.wait(self.config.close_interval_s):
                return

    def run_once(self) -> list[tuple[str, str]]:
        """One run if no other member is running one; the (board, period) closed."""
        self.cutoff.mark()
        conn = self._conn()
        # Per schema (advisory locks are per database): a group in another schema never makes this one skip.
        got = conn.execute(
            "SELECT pg_try_advisory_lock(%s::integer, hashtext(current_schema()))", (_LOCK,)
        ).fetchone()
        if not got or not got[0]:
            return []
        try:
            return self._run(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s::integer, hashtext(current_schema()))", (_LOCK,))

    def _run(self, conn: psycopg.Connection) -> list[tuple[str, str]]:
        for board in self.boards:
            checkpoints.advance(conn, board, progress=lambda _steps: self.cutoff.mark())
        self.cutoff.mark()
        now = checkpoints.clock(conn)
        self.runs += 1
        if now is None or not self.config.auto_close_periods:
            return []
        for board in self.boards:
            known = checkpoints.periods_of(conn, board.id)
            for period in due.too_old(board, known, period_store.closed(conn, board.id), now, self.lookback):
                if (board.id, period) not in self._warned:
                    self._warned.add((board.id, period))
                    log.warning(
                        "period left to an operator: it ended before the close lookback",
                        extra={"board": board.id, "period": period, "clock": now.isoformat()},
                    )
        self.cutoff.mark()
        closed, _ = closing.run_closes(  # a failed announcement is retried on the next run
            conn, self._redis, self._producer, self.config, self.boards, now=now, lookback=self.lookback
        )
        self.cutoff.mark()
        wall = datetime.now(UTC)
        for board in self.boards:  # checkpoint rows nothing reads any more: closed, out of Redis retention
            checkpoints.drop_periods(conn, board.id, retired_periods(conn, board, wall))
        return closed
