"""The write path on a real local Redis Cluster (3 masters + 3 replicas, `stack.sh up redis-cluster`).

`consume`, recovery, `rebuild` and `close-period` with LEADERBOARD_REDIS_CLUSTER=true; then a master SIGKILLed
mid-stream: the writes it had not replicated are lost with it, the consumer notices its boards fell below what
it had applied, repairs them from PostgreSQL, and the boards end equal to an independent fold of what was
published. The API answers 200 or a 503 problem document throughout, never a 500.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest
import redis
from fastapi.testclient import TestClient
from redis.cluster import RedisCluster

from leaderboard import boards as boards_mod
from leaderboard import scoring
from leaderboard.keys import Keys
from leaderboard.redis_client import FAILURES, SyncClient, sync_client
from leaderboard.settings import Settings
from query_api.app import create_app
from tests.procs import ConsumerProcess, caught_up, leaderboard_cli, wait_until
from tests.test_consumer import produce_stream
from tests.test_redis_cluster import PROBLEM, Cluster, started

pytestmark = pytest.mark.slow
BALLAST_BYTES = 32 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with started(tmp_path_factory) as c:
        yield c


def board(client: SyncClient, config: Settings, period: str, name: str = "global") -> dict[str, int]:
    keys = Keys(config.redis_prefix)
    gen = int(cast("bytes | None", client.hget(keys.meta(name), "active")) or 0)
    rows = cast(
        "list[tuple[bytes, float]]", client.zrange(keys.board(name, gen, period), 0, -1, withscores=True)
    )
    return {m.decode(): scoring.points_of(s) for m, s in rows}


def names(client: SyncClient, config: Settings) -> dict[str, str]:
    raw = cast("dict[bytes, bytes]", client.hgetall(Keys(config.redis_prefix).names()))
    return {k.decode(): v.decode() for k, v in raw.items()}


def on(cluster: Cluster, config: Settings) -> Settings:
    return replace(config, redis_url=cluster.url, redis_cluster=True)


def drop_prefix(rc: RedisCluster, config: Settings) -> None:
    for key in list(rc.scan_iter(match=f"{config.redis_prefix}*", count=1000)):
        rc.delete(key)
    for key in list(rc.scan_iter(match=f"{{{config.redis_prefix}*", count=1000)):
        rc.delete(key)


def test_consume_recovery_and_rebuild_on_a_cluster(
    cluster: Cluster, config: Settings, tmp_path: Path
) -> None:
    cfg = on(cluster, config)
    rc = sync_client(cfg)
    assert isinstance(rc, RedisCluster)
    truth, _, _ = produce_stream(config, 1500, seed=71)
    consumer = ConsumerProcess(cfg, tmp_path, LEADERBOARD_BATCH_SIZE="300")
    try:
        consumer.wait_ready()
        wait_until(lambda: caught_up(config), 90, "consumed on the cluster")
        assert board(rc, cfg, "all_time") == truth
        assert names(rc, cfg) == {p: f"Name {p}" for p in truth}
        # Redis loses everything: the running consumer rebuilds the boards and the names by itself.
        drop_prefix(rc, cfg)
        more, _, _ = produce_stream(config, 500, seed=72)
        want = dict(Counter(truth) + Counter(more))
        wait_until(lambda: board(rc, cfg, "all_time") == want, 90, "boards rebuilt on the cluster")
        wait_until(lambda: caught_up(config), 60, "caught up after the rebuild")
        assert names(rc, cfg) == {p: f"Name {p}" for p in want}
        for source in ("postgres", "kafka"):
            out = leaderboard_cli(cfg, "rebuild", "--from", source, timeout=180)
            assert out.returncode == 0, out.stderr[-2000:]
            assert board(rc, cfg, "all_time") == want
            assert board(rc, cfg, "monthly:2026-11") == want
        out = leaderboard_cli(cfg, "verify")
        assert out.returncode == 0, out.stdout + out.stderr[-2000:]
        # Closing a period stores its standings and mirrors it into the board's closed set on the cluster.
        out = leaderboard_cli(cfg, "close-period", "--period", "monthly:2026-11")
        assert out.returncode == 0, out.stdout + out.stderr[-2000:]
        assert b"monthly:2026-11" in cast("set[bytes]", rc.smembers(Keys(cfg.redis_prefix).closed("global")))
    finally:
        consumer.stop()
        rc.close()


def _master_and_replica(rc: RedisCluster, key: str) -> tuple[int, int, int, int]:
    """(master port, master pid, replica port, replica pid) of ``key``'s slot."""
    node = rc.get_node_from_key(key)  # type: ignore[no-untyped-call]
    assert node is not None
    info = rc.execute_command("INFO", "server", target_nodes=node)  # type: ignore[no-untyped-call]
    node_id = rc.execute_command("CLUSTER", "MYID", target_nodes=node)  # type: ignore[no-untyped-call]
    replicas = rc.execute_command("CLUSTER", "REPLICAS", node_id, target_nodes=node)  # type: ignore[no-untyped-call]
    pid = int(info["process_id"])
    assert len(replicas) == 1, replicas
    port = int(replicas[0].decode().split()[1].split(":")[1].split("@")[0])
    with redis.Redis(port=port) as replica:
        rpid = int(replica.info("server")["process_id"])
    return int(node.port), pid, port, rpid


def _promoted(cluster: Cluster, survivor: int, replica: int, timeout: float) -> float:
    """Seconds until a surviving master sees ``replica`` as a master; on timeout the cluster's view and the
    replica's log say why."""
    started = time.monotonic()
    with redis.Redis(port=survivor, socket_timeout=2) as r:
        while True:
            view = cast("bytes", r.execute_command("CLUSTER", "NODES")).decode()
            line = next(ln for ln in view.splitlines() if f":{replica}@" in ln)
            if "master" in line.split()[2] and "fail" not in line.split()[2]:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                log = cluster.stack_dir / "logs" / f"redis-cluster-{replica}.log"
                raise AssertionError(
                    f"replica {replica} not promoted in {timeout} s:\n{view}\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.1)


def equal(rc: RedisCluster, config: Settings, truth: dict[str, int]) -> bool:
    """The board equals the truth; False while the cluster cannot answer (a slot without a master)."""
    try:
        return board(rc, config, "all_time") == truth
    except FAILURES:
        return False


def _positions(rc: RedisCluster, config: Settings) -> int:
    """The sum of the live generation's positions of the global board (what the master holds now)."""
    keys = Keys(config.redis_prefix)
    gen = int(rc.hget(keys.meta("global"), "active") or 0)
    return sum(int(v) for v in rc.hgetall(keys.position("global", gen)).values())


def test_a_master_killed_mid_stream_loses_writes_that_the_consumer_repairs(
    cluster: Cluster, config: Settings, tmp_path: Path
) -> None:
    """The replica of the board's master is stopped first, so the master acknowledges writes it never
    replicates (what asynchronous replication risks, made certain); then the master is SIGKILLed and the
    replica resumed and promoted with the older data. The consumer must notice and rebuild."""
    cfg = on(cluster, config)
    rc = sync_client(cfg)
    assert isinstance(rc, RedisCluster)
    keys = Keys(config.redis_prefix)
    truth, _, _ = produce_stream(config, 12_000, seed=73)
    port, master, replica_port, replica = _master_and_replica(rc, keys.meta("global"))
    primaries = rc.get_primaries()  # type: ignore[no-untyped-call]
    survivor = next(int(n.port) for n in primaries if int(n.port) != port)
    # The consumer is pointed at the very node that dies (the hard case for redis-py: its default node).
    via_victim = replace(cfg, redis_url=f"redis://127.0.0.1:{port}/0")
    consumer = ConsumerProcess(via_victim, tmp_path, LEADERBOARD_BATCH_SIZE="100")
    statuses: Counter[int] = Counter()
    bad: list[str] = []
    done = threading.Event()

    def poll_api() -> None:
        boards = boards_mod.load(cfg.boards_file)
        with TestClient(create_app(cfg, boards)) as api:
            while not done.is_set():
                resp = api.get("/v1/leaderboards/global/entries?period=all_time&limit=5")
                statuses[resp.status_code] += 1
                if resp.status_code == 503:
                    if resp.headers["content-type"] != PROBLEM or resp.json()["status"] != 503:
                        bad.append(resp.text)
                elif resp.status_code != 200:
                    bad.append(f"{resp.status_code} {resp.text}")
                time.sleep(0.05)

    poller = threading.Thread(target=poll_api, daemon=True)
    try:
        consumer.wait_ready()
        wait_until(lambda: _positions(rc, cfg) > 0, 60, "the first batches applied")
        poller.start()
        os.kill(replica, signal.SIGSTOP)
        try:
            # A stopped replica's socket buffers still take megabytes of the replication stream: fill them
            # (a key of the board's slot), so the writes after it stay in the master's memory only.
            rc.set(f"{keys.base('global')}:ballast", b"x" * BALLAST_BYTES)
            before = _positions(rc, cfg)
            wait_until(lambda: _positions(rc, cfg) > before + 500, 30, "writes the replica never receives")
            assert not caught_up(config), "the stream ended before the failover: nothing mid-stream"
            os.kill(master, signal.SIGKILL)
        finally:
            os.kill(replica, signal.SIGCONT)
        killed_at = time.monotonic()
        promoted_in = _promoted(cluster, survivor, replica_port, 30)
        wait_until(lambda: equal(rc, cfg, truth), 120, "boards equal the truth after the failover")
        wait_until(lambda: caught_up(config), 60, "caught up after the failover")
        repaired_in = time.monotonic() - killed_at
        assert board(rc, cfg, "monthly:2026-11") == truth
        got = names(rc, cfg)
        assert got == {p: f"Name {p}" for p in truth}, sorted(
            set(got.items()) ^ {(p, f"Name {p}") for p in truth}
        )[:5]
        assert consumer.metric("leaderboard_consumer_redis_recoveries_total") >= 1
        assert "Redis lost acknowledged writes" in consumer.log_path.read_text()
        print(
            f"master {port} SIGKILLed: replica promoted in {promoted_in:.1f} s, boards equal the truth "
            f"{repaired_in:.1f} s after the kill; API answers {dict(statuses)}"
        )
    finally:
        done.set()
        if poller.is_alive():
            poller.join(10)
        consumer.stop()
        rc.close()
    assert not bad, bad[:3]
    assert statuses[503] >= 1, statuses
    assert statuses[200] >= 1, statuses
