"""verify's comparison against real Redis and PostgreSQL: a board rebuilt from the checkpoint compares equal,
and every kind of difference is reported (wrong score, missing member, member PostgreSQL does not know)."""

from __future__ import annotations

import random

import psycopg
import pytest
import redis

from consumers import checkpoints, pg_sink
from consumers.compare import differences
from consumers.generations import Generations, rebuild_from_checkpoint
from consumers.lease import Lease
from consumers.migrate import migrate
from consumers.plan import Canonical
from consumers.redis_sink import RedisSink
from leaderboard import scoring
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.settings import Settings
from tests.procs import zscores
from tests.test_checkpoints import _records

BOARD = Board(id="global")


def _load(pg: psycopg.Connection, records: list[Canonical]) -> None:
    for i in range(0, len(records), 500):
        pg_sink.write_batch(pg, records[i : i + 500], (BOARD,))


def test_verify_reports_each_kind_of_difference(
    config: Settings, redis_client: redis.Redis, pg: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(pg)
    keys = Keys(config.redis_prefix)
    rnd = random.Random(5)
    _load(pg, _records(rnd, 3000, partitions=3))
    gens = Generations(redis_client, keys, (BOARD,))
    lease = Lease.take(redis_client, keys.lock(BOARD.id))
    assert lease is not None
    with lease:
        gen, written = rebuild_from_checkpoint(
            gens, RedisSink(redis_client, keys, (BOARD,)), pg, BOARD, lease
        )
    assert written.entries > 30
    lines, compared = differences(redis_client, pg, keys, BOARD, None)
    assert lines == []
    assert compared == len(checkpoints.periods_of(pg, BOARD.id)) > 3

    zkey = keys.board(BOARD.id, gen, "all_time")
    top = zscores(redis_client, zkey, reverse=True)
    (first, score), (second, _) = top[0], top[1]
    redis_client.zadd(zkey, {first: score + scoring.TIME_SPAN})  # one point too many
    redis_client.zrem(zkey, second)
    redis_client.zadd(zkey, {"ghost": scoring.pack(3, 0)})
    monkeypatch.setattr(checkpoints, "CHUNK", 7)  # many small chunks: differences across chunk borders
    monkeypatch.setattr(checkpoints, "ENTRIES", 7)
    lines, _ = differences(redis_client, pg, keys, BOARD, "all_time")
    text = "\n".join(lines)
    assert len(lines) == 3, text
    assert f"global all_time {first.decode()}: Redis" in text
    assert f"global all_time {second.decode()}: missing in Redis" in text
    assert "global all_time ghost: in Redis (3), not in PostgreSQL" in text
