"""G5: Redis loses everything (FLUSHALL, or a restart with no data) mid-stream. The consumer notices and
rebuilds from PostgreSQL by itself; within the bound every board equals the truth and verify exits 0.

On a Redis Cluster (LEADERBOARD_REDIS_CLUSTER=true, `make test-cluster`): FLUSHALL on every master of the
cluster under test (the cluster run is one process, so no other test's keys are there to lose). A restart
with no data is a single node's case: a cluster's master restarted empty is the failover test's
(tests/test_redis_cluster_writes.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from leaderboard import settings as settings_mod
from leaderboard.redis_client import sync_client
from leaderboard.settings import Settings
from tests.conftest import env_of
from tests.procs import ConsumerProcess, caught_up, wait_until
from tests.services import RedisServer
from tests.test_consumer import board, produce_stream

RECOVERY_BOUND_S = 60


CLUSTER = settings_mod.load().redis_cluster


@pytest.fixture
def own_redis(config: Settings) -> Iterator[tuple[Settings, RedisServer | None]]:
    """A private single node; on a cluster run, the cluster under test."""
    if config.redis_cluster:
        yield config, None
        return
    with RedisServer() as rs:
        rs.start()
        yield replace(config, redis_url=rs.url), rs


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flushall"] if CLUSTER else ["flushall", "restart-empty"])
def test_redis_wiped_is_rebuilt_from_postgres_without_an_operator(
    own_redis: tuple[Settings, RedisServer | None], how: str, tmp_path: Path
) -> None:
    config, rs = own_redis
    # Produce, start, catch up: test_consumer's restart test opens alike; each fault test states its own.
    truth, _, _ = produce_stream(config, 2000, seed=51)
    consumer = ConsumerProcess(config, tmp_path, LEADERBOARD_BATCH_SIZE="500")
    try:
        consumer.wait_ready()
        wait_until(lambda: caught_up(config), 60, "first part consumed")
        client = sync_client(config)
        assert board(client, config, "all_time") == truth
        if how == "flushall":
            client.flushall()  # on a cluster: every master (redis-py sends it to all primaries)
        else:
            assert rs is not None
            rs.stop()
            shutil.rmtree(rs.dir / "appendonlydir", ignore_errors=True)
            rs.start()
        wiped_at = time.monotonic()
        more, _, _ = produce_stream(config, 2000, seed=52)
        expected = Counter(truth)
        expected.update(more)
        wait_until(
            lambda: board(client, config, "all_time") == dict(expected),
            RECOVERY_BOUND_S,
            "boards equal the truth",
        )
        recovered_in = time.monotonic() - wiped_at
        assert board(client, config, "monthly:2026-11") == dict(expected)
        assert consumer.metric("leaderboard_consumer_redis_recoveries_total") >= 1
        wait_until(lambda: caught_up(config), 60, "consumer caught up")
        verify = subprocess.run(
            [sys.executable, "-m", "leaderboard.cli", "verify"],
            env=env_of(config),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        print(f"recovered {how} in {recovered_in:.1f} s")
        client.close()
    finally:
        consumer.stop()
