"""The scheduler thread against a PostgreSQL that stops answering (a private server, SIGSTOP): every call it
makes ends within its bound, and it carries on by itself once the server answers again."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import psycopg
import pytest

from consumers import pg_sink
from consumers.migrate import migrate
from consumers.plan import Canonical
from consumers.scheduler import Cutoff, Scheduler
from leaderboard.boards import Board
from leaderboard.settings import Settings
from tests.factories import win
from tests.services import PostgresServer

BOARD = Board(id="global")
TIMEOUT_S = 1  # statement_timeout; the cut-off is at twice this


def timed_run(scheduler: Scheduler) -> tuple[float, BaseException | None]:
    """run_once on another thread, as the scheduler's own loop does; (seconds it took, what it raised)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            scheduler.run_once()
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(60)
    if thread.is_alive():
        raise AssertionError("the scheduler's run did not end within 60 s on a frozen PostgreSQL")
    return time.monotonic() - started, raised[0] if raised else None


@pytest.mark.slow
def test_a_frozen_postgres_cannot_hang_the_scheduler(config: Settings) -> None:
    with PostgresServer() as server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            migrate(conn)
            pg_sink.write_batch(conn, [Canonical(0, 0, win("ann"))], [BOARD])
        cfg = replace(config, database_url=server.url, scheduler_pg_timeout_s=TIMEOUT_S)
        scheduler = Scheduler(cfg, [BOARD])
        scheduler.cutoff.start()
        try:
            took, error = timed_run(scheduler)
            assert error is None  # folds the checkpoint with the server up
            assert scheduler.runs == 1
            server.freeze()
            try:
                took, error = timed_run(scheduler)  # a call in flight: cut off by the watcher
                assert isinstance(error, psycopg.OperationalError), error
                assert 2 * TIMEOUT_S <= took < 2 * TIMEOUT_S + 3, took
                assert scheduler.cutoff.cuts == 1
                took, error = timed_run(scheduler)  # a new connection: bounded by connect_timeout
                assert isinstance(error, psycopg.OperationalError), error
                assert took < 5 + 3, took
            finally:
                server.thaw()
            with psycopg.connect(server.url, autocommit=True) as conn:
                pg_sink.write_batch(conn, [Canonical(0, 1, win("bob"))], [BOARD])
            took, error = timed_run(scheduler)
            assert error is None
            assert scheduler.runs == 2
            with psycopg.connect(server.url) as conn:
                assert conn.execute(
                    "SELECT kafka_offset FROM checkpoint_positions WHERE board = 'global'"
                ).fetchall() == [(1,)]
        finally:
            scheduler.stop()


def test_the_cutoff_times_each_marked_stretch_of_work_not_the_whole_run(config: Settings) -> None:
    """A statement that outlives the bound is cut; one that lasts as long, but in stretches the owner marks
    as new work, is not (the watcher samples, so back-to-back work looks like one stretch unless marked)."""
    bound = 2.0
    with psycopg.connect(config.database_url, autocommit=True) as conn:
        cutoff = Cutoff(lambda: conn, bound)
        cutoff.start()
        try:
            stop = threading.Event()

            def marking() -> None:
                while not stop.wait(0.2):
                    cutoff.mark()

            marker = threading.Thread(target=marking, daemon=True)
            marker.start()
            try:
                started = time.monotonic()
                conn.execute("SELECT pg_sleep(%s)", (2 * bound,))
            finally:
                stop.set()
                marker.join()
            assert time.monotonic() - started >= 2 * bound
            assert cutoff.cuts == 0
            # The connection stayed in its transaction: the new work is marked, as the scheduler marks each
            # run and step; unmarked, the bound would count from the last mark inside the first statement.
            started = time.monotonic()
            cutoff.mark()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT pg_sleep(%s)", (4 * bound,))
            took = time.monotonic() - started
            assert bound <= took < 2 * bound + 1, took
            assert cutoff.cuts == 1
        finally:
            cutoff.stop()
