"""Read latency of a board of one shard and of N shards (leaderboard.shards), on a private Redis.

    .venv/bin/python bench/shard_reads.py                      # one redis-server, 1,000,000 players
    .venv/bin/python bench/shard_reads.py --cluster            # a private 3+3 Redis Cluster (stack.sh)
    .venv/bin/python bench/shard_reads.py --players 100000 --runs 1 --reads 200   # quick

The board's all-time period holds ``--players`` players with random points and tie-breaks, written straight
into each shard's sorted set (the layout RedisSink writes). Per run and operation, ``--reads`` sequential
reads of random players, each timed from the client: top-10, a player's rank (with percentile: the
``player`` read), the 11 rows around a player. ``shards = 1`` is measured twice: through the production read
script (one EVALSHA, what the API does) and through leaderboard.shard_reads (pipelined rounds, as a sharded
board reads). Prints medians over ``--runs`` runs of each run's median and p99 (ms), as markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from leaderboard import scoring, shards  # noqa: E402
from leaderboard.boards import Board  # noqa: E402
from leaderboard.keys import Keys  # noqa: E402
from leaderboard.net import free_cluster_block  # noqa: E402
from leaderboard.redis_client import SyncClient  # noqa: E402
from leaderboard.shard_reads import ShardedReads  # noqa: E402
from query_api.store import script_text  # noqa: E402
from tests.services import RedisServer  # noqa: E402
from tests.test_redis_cluster import Cluster  # noqa: E402

PERIOD = "all_time"
KEYS = Keys("benchshard")


@contextlib.contextmanager
def private_redis(cluster: bool) -> Iterator[SyncClient]:
    """A redis-server, or a 3+3 cluster from deploy/stack.sh in a temp stack dir; stopped afterwards."""
    if not cluster:
        with RedisServer() as server:
            server.start()
            import redis  # noqa: PLC0415

            client = redis.Redis.from_url(server.url, socket_timeout=60)
            try:
                yield client
            finally:
                client.close()
        return
    from redis.cluster import RedisCluster  # noqa: PLC0415

    stack = Path(tempfile.mkdtemp(prefix="bench-rc-"))
    base = free_cluster_block(6)
    nodes = Cluster(
        base, stack, {**os.environ, "LEADERBOARD_STACK_DIR": str(stack), "REDIS_CLUSTER_PORT": str(base)}
    )
    try:  # a failed start may leave some nodes running: always stop them
        up = nodes.stack("up")
        if up.returncode != 0:
            raise RuntimeError(f"stack.sh up redis-cluster failed: {up.stderr.strip()}")
        rc = RedisCluster.from_url(nodes.url, socket_timeout=60)
        yield rc
        rc.close()
    finally:
        nodes.stack("down")
        shutil.rmtree(stack, ignore_errors=True)


def load(client: SyncClient, board: Board, players: int, seed: int) -> None:
    """Every player on the board's all-time period, each in its shard's sorted set (generation 1)."""
    rng = random.Random(seed)
    parts = shards.parts(board)
    for part in parts:
        client.hset(KEYS.meta(part.id), mapping={"active": 1, "writing": 1})
    for lo in range(0, players, 20_000):
        by_shard: list[dict[str, int]] = [{} for _ in parts]
        for i in range(lo, min(players, lo + 20_000)):
            player = f"p{i}"
            packed = scoring.pack(rng.randint(1, 50_000), rng.randrange(scoring.TIME_SPAN))
            by_shard[shards.shard_of(player, board.shards)][player] = packed
        pipe = client.pipeline(transaction=False)
        for part, members in zip(parts, by_shard, strict=True):
            if members:
                pipe.zadd(KEYS.board(part.id, 1, PERIOD), members)
        pipe.execute()


def timed(op: Callable[[str], object], players: int, reads: int, seed: int) -> tuple[float, float]:
    """Median and p99 latency (ms) of ``reads`` calls on random players."""
    rng = random.Random(seed)
    samples = []
    for _ in range(reads):
        player = f"p{rng.randrange(players)}"
        t0 = time.perf_counter()
        op(player)
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def script_ops(client: SyncClient, board: Board) -> dict[str, Callable[[str], object]]:
    """The production read scripts on an unsharded board (as query_api.store calls them, without names)."""
    keys = [KEYS.meta(board.id), KEYS.board(board.id, 1, PERIOD), KEYS.stats(board.id, 1, PERIOD)]
    keys.append(KEYS.periods(board.id, 1))
    top, player, around = (client.register_script(script_text(n)) for n in ("top", "player", "around"))

    def check(reply: object) -> object:
        doc = json.loads(reply)  # type: ignore[arg-type]
        if doc["s"] != "ok":
            raise RuntimeError(f"read script answered {doc['s']}")
        return doc

    return {
        "top-10": lambda _: check(top(keys=keys, args=[1, 0, 10])),
        "rank": lambda p: check(player(keys=keys, args=[1, p])),
        "around (r=5)": lambda p: check(around(keys=keys, args=[1, p, 5])),
    }


def sharded_ops(client: SyncClient, board: Board) -> dict[str, Callable[[str], object]]:
    reads = ShardedReads(client, KEYS, board)

    def need(x: object) -> object:
        if x is None:
            raise RuntimeError("player missing from the board")
        return x

    return {
        "top-10": lambda _: reads.top(PERIOD, 0, 10),
        "rank": lambda p: need(reads.player(PERIOD, p)),
        "around (r=5)": lambda p: need(reads.around(PERIOD, p, 5)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, default=1_000_000)
    parser.add_argument("--shards", default="1,3", help="comma-separated shard counts")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reads", type=int, default=2000, help="reads per operation and run")
    parser.add_argument("--cluster", action="store_true", help="a private 3+3 Redis Cluster, not one node")
    args = parser.parse_args()
    counts = [int(n) for n in args.shards.split(",")]
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    with private_redis(args.cluster) as client:
        variants: list[tuple[str, Callable[[], dict[str, Callable[[str], object]]]]] = []
        for n in counts:
            board = Board(id=f"b{n}", shards=n)
            t0 = time.perf_counter()
            load(client, board, args.players, seed=n)
            print(
                f"loaded shards={n}: {args.players} players in {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
            if n == 1:
                variants.append(("shards = 1, read script", functools.partial(script_ops, client, board)))
            variants.append((f"shards = {n}, shard_reads", functools.partial(sharded_ops, client, board)))
        for run in range(args.runs):
            for label, make in variants:
                for op, fn in make().items():
                    got = timed(fn, args.players, args.reads, seed=run)
                    results.setdefault(label, {}).setdefault(op, []).append(got)
    where = "private 3+3 Redis Cluster" if args.cluster else "private redis-server"
    print(
        f"\n{where}, {args.players:,} players, {args.reads} reads per operation, medians of {args.runs} runs"
    )
    ops = ["top-10", "rank", "around (r=5)"]
    print("\n| board | " + " | ".join(f"{o} p50 / p99 ms" for o in ops) + " |")
    print("|---|" + "---|" * len(ops))
    for label, per in results.items():
        cells = []
        for o in ops:
            runs = per[o]
            cells.append(
                f"{statistics.median(r[0] for r in runs):.3f} / {statistics.median(r[1] for r in runs):.3f}"
            )
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
