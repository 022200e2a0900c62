"""The read API on a real local Redis Cluster (3 masters + 3 replicas) of `stack.sh up redis-cluster`.

Boards are written into the cluster with plain commands in the key layout (leaderboard.keys) and the same
boards into the single shared Redis; both apps must give the same bodies, and the answers are checked
against the standings the test wrote. Then the master owning the board's slot is SIGKILLed: every answer
is a 200 or a 503 problem document (never a 500) until its replica is promoted, then 200 again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from redis.cluster import RedisCluster

from leaderboard import periods, scoring
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.net import free_cluster_block
from leaderboard.redis_client import SyncClient, sync_client
from leaderboard.settings import Settings
from query_api.app import create_app

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
STACK_SH = REPO / "deploy" / "stack.sh"
BOARDS = (Board(id="global"), Board(id="weekly_only"))
PERIOD = periods.ALL_TIME
PROBLEM = "application/problem+json"
# player -> (points, tie-break units); p2/p3 tie on points (p3 reached them first), p5 alone at the bottom
PLAYERS = {"p1": (50, 10), "p2": (30, 20), "p3": (30, 5), "p4": (20, 1), "p5": (10, 3)}
NAMES = {"p1": "Ada", "p3": "Cy"}


def untyped(client: RedisCluster | redis.Redis) -> Any:
    """redis-py leaves RedisCluster's node methods and execute_command unannotated: calls to them go
    through here."""
    return client


@dataclass
class Cluster:
    base_port: int
    stack_dir: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.base_port}/0"

    def stack(self, cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(STACK_SH), cmd, "redis-cluster"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with started(tmp_path_factory) as c:
        yield c


@contextmanager
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A private cluster on free ports (also for tests/test_redis_cluster_writes.py), stopped afterwards."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server/redis-cli not installed (apt-get install redis-server redis-tools)")
    stack_dir = tmp_path_factory.mktemp("rc-stack")
    base = free_cluster_block(6)
    env = {**os.environ, "LEADERBOARD_STACK_DIR": str(stack_dir), "REDIS_CLUSTER_PORT": str(base)}
    c = Cluster(base, stack_dir, env)
    try:  # `down` also after an `up` that timed out: its nodes already run, detached from the script
        up = c.stack("up")
        assert up.returncode == 0, up.stderr + up.stdout
        yield c
    finally:
        down = c.stack("down")
        assert down.returncode == 0, down.stderr
        shutil.rmtree(stack_dir, ignore_errors=True)


def write_boards(client: SyncClient, keys: Keys) -> None:
    """Generation 1 active for every board, the board-period's sorted set, stats, periods set and names."""
    for board in BOARDS:
        client.hset(keys.meta(board.id), mapping={"active": 1, "writing": 1})
        packed = {p: scoring.pack(pts, scoring.tiebreak(tb)) for p, (pts, tb) in PLAYERS.items()}
        client.zadd(keys.board(board.id, 1, PERIOD), dict(packed))
        client.hset(keys.stats(board.id, 1, PERIOD), mapping={"events": 9, "updated_ms": 1_764_000_000_000})
        client.sadd(keys.periods(board.id, 1), PERIOD)
    for player, name in NAMES.items():
        client.hset(keys.names(), player, name)


REQUESTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/leaderboards/global/entries?period=all_time&limit=10", None),
    ("GET", "/v1/leaderboards/global/entries?period=all_time&offset=1&limit=2", None),
    ("GET", "/v1/leaderboards/global/players/p3?period=all_time", None),
    ("GET", "/v1/leaderboards/global/players/p4/around?period=all_time&radius=1", None),
    ("GET", "/v1/leaderboards/global/players?period=all_time&min_score=20&max_score=30", None),
    (
        "POST",
        "/v1/leaderboards/global/players:lookup?period=all_time",
        {"player_ids": ["p5", "nobody", "p1"]},
    ),
    ("GET", "/v1/leaderboards/global/stats?period=all_time", None),
    ("GET", "/v1/leaderboards/weekly_only/players/p1?period=all_time", None),
]


def answers(client: TestClient) -> list[tuple[int, Any]]:
    out = []
    for method, url, body in REQUESTS:
        resp = client.request(method, url, json=body)
        out.append((resp.status_code, resp.json()))
    return out


def on_the_cluster(config: Settings, cluster: Cluster) -> tuple[Settings, RedisCluster]:
    """The test's settings pointed at the cluster, and the app's own (sync) client for it."""
    on_cluster = replace(config, redis_url=cluster.url, redis_cluster=True)
    rc = sync_client(on_cluster)
    assert isinstance(rc, RedisCluster)
    return on_cluster, rc


def test_read_api_on_a_cluster_matches_a_single_node(cluster: Cluster, config: Settings) -> None:
    on_cluster, rc = on_the_cluster(config, cluster)
    keys = Keys(config.redis_prefix)
    write_boards(rc, keys)
    single = redis.Redis.from_url(config.redis_url)
    write_boards(single, keys)
    # The board and the names hash are on different slots: a script reading both would be refused.
    assert untyped(rc).keyslot(keys.meta("global")) != untyped(rc).keyslot(keys.names())
    with TestClient(create_app(on_cluster, BOARDS)) as api:
        got = answers(api)
    with TestClient(create_app(config, BOARDS)) as api:
        want = answers(api)
    single.close()
    rc.close()
    assert [s for s, _ in got] == [200] * len(REQUESTS), got
    assert got == want
    top, page, player, around, score_range, lookup, stats, _ = (doc for _, doc in got)
    order = [(e["rank"], e["player_id"], e["score"], e["display_name"]) for e in top["entries"]]
    assert order == [(1, "p1", 50, "Ada"), (2, "p3", 30, "Cy"), (2, "p2", 30, None), (4, "p4", 20, None),
                     (5, "p5", 10, None)]  # fmt: skip
    assert [e["player_id"] for e in page["entries"]] == ["p3", "p2"]
    assert (player["rank"], player["score"], player["display_name"], player["total"]) == (2, 30, "Cy", 5)
    assert [e["player_id"] for e in around["entries"]] == ["p2", "p4", "p5"]
    assert [e["player_id"] for e in score_range["entries"]] == ["p3", "p2", "p4"]
    assert [e["player_id"] for e in lookup["entries"]] == ["p1", "p5"]
    assert lookup["absent"] == ["nobody"]
    assert (stats["players"], stats["top_score"], stats["events"]) == (5, 50, 9)


def test_a_generation_flip_on_the_cluster_is_followed(cluster: Cluster, config: Settings) -> None:
    """The store names generation 1's keys; after a flip to 2 the script says stale and it follows."""
    on_cluster, rc = on_the_cluster(config, cluster)
    keys = Keys(config.redis_prefix)
    write_boards(rc, keys)
    url = "/v1/leaderboards/global/entries?period=all_time&limit=10"
    with TestClient(create_app(on_cluster, BOARDS)) as api:
        assert api.get("/readyz").status_code == 200
        assert [e["player_id"] for e in api.get(url).json()["entries"]] == ["p1", "p3", "p2", "p4", "p5"]
        rc.zadd(keys.board("global", 2, PERIOD), {"solo": scoring.pack(7, scoring.tiebreak(1))})
        rc.sadd(keys.periods("global", 2), PERIOD)
        rc.hset(keys.meta("global"), mapping={"active": 2, "writing": 2})
        doc = api.get(url).json()
        assert [(e["player_id"], e["score"]) for e in doc["entries"]] == [("solo", 7)]
        rc.hdel(keys.meta("global"), "active")
        gone = api.get(url)
        assert gone.status_code == 503
        assert gone.json()["type"] == "/problems/board-rebuilding"
    rc.close()


def _owner(rc: RedisCluster, key: str) -> tuple[int, int]:
    """(port, pid) of the master that owns ``key``'s slot."""
    node = untyped(rc).get_node_from_key(key)
    assert node is not None
    pid = int(untyped(rc).execute_command("INFO", "server", target_nodes=node)["process_id"])
    return int(node.port), pid


def _replicated(rc: RedisCluster, deadline_s: float) -> None:
    """Wait until every replica has every write of its master (replication is asynchronous)."""
    end = time.monotonic() + deadline_s
    while True:
        lag = []
        for node in untyped(rc).get_primaries():
            info = untyped(rc).execute_command("INFO", "replication", target_nodes=node)
            offsets = [
                int(v["offset"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
            ]
            if not offsets or min(offsets) < int(info["master_repl_offset"]):
                lag.append(node.port)
        if not lag:
            return
        if time.monotonic() > end:
            raise TimeoutError(f"replicas of masters {lag} not caught up after {deadline_s} s")
        time.sleep(0.05)


def test_master_sigkill_answers_503_until_the_replica_takes_over(cluster: Cluster, config: Settings) -> None:
    on_cluster, rc = on_the_cluster(config, cluster)
    keys = Keys(config.redis_prefix)
    write_boards(rc, keys)
    _replicated(rc, 10)
    _, pid = _owner(rc, keys.meta("global"))
    url = "/v1/leaderboards/global/entries?period=all_time&limit=3"
    statuses: list[int] = []
    with TestClient(create_app(on_cluster, BOARDS)) as api:
        assert api.get(url).status_code == 200
        os.kill(pid, signal.SIGKILL)
        recovered_at = None
        end = time.monotonic() + 30
        while time.monotonic() < end:
            resp = api.get(url)
            statuses.append(resp.status_code)
            if resp.status_code == 503:
                assert resp.headers["content-type"] == PROBLEM
                doc = resp.json()
                assert doc["type"] == "/problems/redis-unavailable", doc
                assert doc["status"] == 503
                assert resp.headers["retry-after"]
            else:
                assert resp.status_code == 200, resp.text
                if 503 in statuses:
                    recovered_at = len(statuses)
                    assert [e["player_id"] for e in resp.json()["entries"]] == ["p1", "p3", "p2"]
                    break
            time.sleep(0.1)
        assert recovered_at is not None, f"no recovery within 30 s: {statuses[-10:]}"
    rc.close()
    assert set(statuses) <= {200, 503}
    assert statuses.count(503) >= 1


def test_a_slot_without_any_node_answers_503_on_every_board(cluster: Cluster, config: Settings) -> None:
    """Master and replicas of one slot SIGKILLed: the cluster goes down (CLUSTERDOWN from the survivors).

    Last test of the module: it leaves the cluster failed (the fixture then stops what is left).
    """
    on_cluster, rc = on_the_cluster(config, cluster)
    keys = Keys(config.redis_prefix)
    victim = untyped(rc).get_node_from_key(keys.meta("global"))
    assert victim is not None
    other_id = next(
        f"b{i}" for i in range(100) if untyped(rc).get_node_from_key(keys.meta(f"b{i}")).port != victim.port
    )
    boards = (*BOARDS, Board(id=other_id))
    for board in boards:
        rc.hset(keys.meta(board.id), mapping={"active": 1, "writing": 1})
        rc.zadd(keys.board(board.id, 1, PERIOD), {"p1": scoring.pack(1, scoring.tiebreak(1))})
    survivor = next(n for n in untyped(rc).get_primaries() if n.port != victim.port)
    node_id = untyped(rc).execute_command("CLUSTER", "MYID", target_nodes=victim)
    replicas = untyped(rc).execute_command("CLUSTER", "REPLICAS", node_id, target_nodes=victim)
    ports = [int(victim.port)] + [int(line.split()[1].split(":")[1].split("@")[0]) for line in replicas]
    pids = [int(redis.Redis(port=p).info("server")["process_id"]) for p in ports]
    urls = [f"/v1/leaderboards/{b}/entries?period=all_time&limit=3" for b in ("global", other_id)]
    with TestClient(create_app(on_cluster, boards)) as api:
        assert [api.get(u).status_code for u in urls] == [200, 200]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        check = redis.Redis(port=int(survivor.port), socket_timeout=2)
        end = time.monotonic() + 20
        while b"cluster_state:fail" not in untyped(check).execute_command("CLUSTER", "INFO"):
            if time.monotonic() > end:
                raise TimeoutError("the cluster did not notice the lost slot within 20 s")
            time.sleep(0.1)
        check.close()
        for u in urls * 3:
            resp = api.get(u)
            assert resp.status_code == 503, resp.text
            assert resp.headers["content-type"] == PROBLEM
            assert resp.json()["type"] == "/problems/redis-unavailable"
        ready = api.get("/readyz")
        assert ready.status_code == 503, ready.text
    rc.close()
