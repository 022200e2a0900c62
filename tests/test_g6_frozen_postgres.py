"""G6 liveness under a frozen PostgreSQL (issue 12, item 3), beside tests/test_g6_liveness.py.

Under a steady load from a producer thread a private PostgreSQL is frozen (SIGSTOP, every process) for 30 s:
the consumer reports not-ready and a postgres sink error within 15 s, commits nothing meanwhile, and resumes
by itself after SIGCONT. Nothing is lost or doubled.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from leaderboard.settings import Settings
from tests.procs import ConsumerProcess, caught_up, committed, wait_until
from tests.services import PostgresServer
from tests.test_g6_liveness import Load, assert_stored_once

FREEZE_S = 30.0
NOT_READY_WITHIN_S = 15.0


@pytest.mark.slow
def test_frozen_postgres_is_reported_within_15_s_and_survived(config: Settings, tmp_path: Path) -> None:
    with PostgresServer() as pgs:
        cfg = replace(config, database_url=pgs.url)
        member = ConsumerProcess(cfg, tmp_path, LEADERBOARD_BATCH_SIZE="200")
        load = Load(cfg, seed=9)
        try:
            member.wait_ready()
            load.start()
            mark = time.time()
            wait_until(
                lambda: member.metric("leaderboard_consumer_last_commit_timestamp_seconds") > mark,
                30,
                "the consumer committing under load",
            )
            pgs.freeze()
            frozen_at = time.monotonic()
            try:
                wait_until(lambda: member.get("/readyz")[0] == 503, NOT_READY_WITHIN_S, "not-ready", 0.2)
                not_ready_after = time.monotonic() - frozen_at
                wait_until(
                    lambda: member.metric("leaderboard_consumer_sink_errors_total", '{sink="postgres"}') >= 1,
                    NOT_READY_WITHIN_S - (time.monotonic() - frozen_at),
                    "a postgres sink error",
                    0.2,
                )
                assert member.metric("leaderboard_consumer_ready") == 0
                error_after = time.monotonic() - frozen_at
                print(f"not ready {not_ready_after:.1f} s, sink error {error_after:.1f} s after SIGSTOP")
                offsets = committed(cfg)
                time.sleep(max(0.0, FREEZE_S - (time.monotonic() - frozen_at)))
                assert committed(cfg) == offsets, "offsets moved while PostgreSQL was frozen"
                assert member.alive()
            finally:
                pgs.thaw()
            thawed_at = time.monotonic()
            wait_until(lambda: member.get("/readyz")[0] == 200, 60, "ready again after SIGCONT")
            print(f"ready again {time.monotonic() - thawed_at:.1f} s after SIGCONT")
            truth = load.finish()
            wait_until(lambda: caught_up(cfg), 90, "the consumer to catch up")
            assert_stored_once(cfg, truth, len(load.points))
        finally:
            load.stop_flag.set()
            member.stop()
