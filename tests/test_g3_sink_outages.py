"""G3: Redis, then PostgreSQL, stopped mid-stream for longer than the watchdog's stall bound. The consumer
reports not-ready, commits nothing, backs off, resumes by itself, and the boards still equal the truth.

On a cluster run (LEADERBOARD_REDIS_CLUSTER=true) "Redis" is a private 3+3 Redis Cluster, every node of it
stopped and started again (`deploy/stack.sh down|up redis-cluster`, data kept)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from consumers.watchdog import STALL_AFTER_S
from leaderboard.redis_client import sync_client
from leaderboard.settings import Settings
from tests.procs import ConsumerProcess, caught_up, committed, wait_until
from tests.services import PostgresServer, RedisServer
from tests.test_consumer import board, produce_stream
from tests.test_redis_cluster import Cluster, started

MAX_ATTEMPTS = 20
"""Failed attempts a consumer may make while its batch waits out the stall bound: backing off (0.2 s
doubling to 5 s) it makes about 8; one retrying without a pause would make hundreds."""


class WholeCluster:
    """A private Redis Cluster stopped and started as one server (every node; data and slots kept)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def stop(self) -> None:
        down = self.cluster.stack("down")
        assert down.returncode == 0, down.stderr

    def start(self) -> None:
        up = self.cluster.stack("up")
        assert up.returncode == 0, up.stderr + up.stdout


@pytest.fixture
def own_sinks(
    config: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, RedisServer | WholeCluster, PostgresServer]]:
    if config.redis_cluster:
        with started(tmp_path_factory) as c, PostgresServer() as pgs:
            pgs.start()
            yield replace(config, redis_url=c.url, database_url=pgs.url), WholeCluster(c), pgs
        return
    with RedisServer() as rs, PostgresServer() as pgs:
        rs.start()
        pgs.start()
        yield replace(config, redis_url=rs.url, database_url=pgs.url), rs, pgs


@pytest.mark.slow
@pytest.mark.parametrize("sink", ["redis", "postgres"])
def test_sink_outage_pauses_commits_and_recovers_without_loss(
    own_sinks: tuple[Settings, RedisServer | WholeCluster, PostgresServer], sink: str, tmp_path: Path
) -> None:
    config, rs, pgs = own_sinks
    server = rs if sink == "redis" else pgs
    truth, _, _ = produce_stream(config, 1500, seed=21)
    consumer = ConsumerProcess(config, tmp_path, LEADERBOARD_BATCH_SIZE="300")
    try:
        consumer.wait_ready()
        wait_until(lambda: caught_up(config), 60, "first part consumed")
        server.stop()
        more, _, _ = produce_stream(config, 1500, seed=22)
        wait_until(lambda: consumer.get("/readyz")[0] == 503, 30, "consumer to report not-ready")
        errors = f'{{sink="{sink}"}}'
        first = consumer.metric("leaderboard_consumer_sink_errors_total", errors)
        assert first >= 1
        assert consumer.metric("leaderboard_consumer_ready") == 0
        frozen = committed(config)
        # The outage lasts until the watchdog counts the waiting batch as stalled (STALL_AFTER_S), so the
        # consumer rides out a long outage: retried, backed off, and still committing nothing.
        wait_until(
            lambda: consumer.metric("leaderboard_consumer_stalls_total") >= 1,
            STALL_AFTER_S + 15,
            "the watchdog to count the batch waiting on the sink as stalled",
        )
        attempts = consumer.metric("leaderboard_consumer_sink_errors_total", errors)
        assert first + 3 <= attempts <= MAX_ATTEMPTS, f"{attempts:.0f} failed attempts: retried with backoff?"
        assert committed(config) == frozen, "offsets moved while a sink was down"
        assert consumer.alive()
        server.start()
        wait_until(lambda: caught_up(config), 90, "consumer to resume and catch up")
        wait_until(lambda: consumer.get("/readyz")[0] == 200, 30, "consumer ready again")
        expected = Counter(truth)
        expected.update(more)
        client = sync_client(config)
        assert board(client, config, "all_time") == dict(expected)
        assert board(client, config, "monthly:2026-11") == dict(expected)
        client.close()
    finally:
        consumer.stop()


@pytest.mark.slow
def test_a_member_leaving_during_an_outage_hands_over_without_loss(
    own_sinks: tuple[Settings, RedisServer | WholeCluster, PostgresServer], tmp_path: Path
) -> None:
    """Partitions handed to a paused consumer stay paused and nothing is skipped (G3 with a rebalance)."""
    config, rs, _ = own_sinks
    truth, _, _ = produce_stream(config, 1500, seed=31)
    first = ConsumerProcess(config, tmp_path, "first", LEADERBOARD_BATCH_SIZE="300")
    second = ConsumerProcess(config, tmp_path, "second", LEADERBOARD_BATCH_SIZE="300")
    try:
        first.wait_ready()
        second.wait_ready()
        wait_until(lambda: caught_up(config), 60, "first part consumed")
        wait_until(
            lambda: (
                first.metric("leaderboard_consumer_assigned_partitions") > 0
                and second.metric("leaderboard_consumer_assigned_partitions") > 0
            ),
            60,
            "both members to own partitions",
        )
        rs.stop()
        more, _, _ = produce_stream(config, 1500, seed=32)
        wait_until(lambda: first.get("/readyz")[0] == 503, 30, "first consumer to report not-ready")
        wait_until(lambda: second.get("/readyz")[0] == 503, 30, "second consumer to report not-ready")
        frozen = committed(config)
        assert second.stop() == 0, "a member stopping during an outage must still leave cleanly"
        wait_until(
            lambda: first.metric("leaderboard_consumer_assigned_partitions") == 12, 60, "hand-over to first"
        )
        # The paused consumer retries with its new partitions (one more failed attempt) and commits nothing.
        handed = first.metric("leaderboard_consumer_sink_errors_total", '{sink="redis"}')
        wait_until(
            lambda: first.metric("leaderboard_consumer_sink_errors_total", '{sink="redis"}') > handed,
            30,
            "first consumer to retry its batch after the hand-over",
        )
        assert committed(config) == frozen, "offsets moved while Redis was down"
        rs.start()
        wait_until(lambda: caught_up(config), 90, "consumer to resume and catch up")
        expected = Counter(truth)
        expected.update(more)
        client = sync_client(config)
        assert board(client, config, "all_time") == dict(expected)
        client.close()
    finally:
        first.stop()
        second.stop()
