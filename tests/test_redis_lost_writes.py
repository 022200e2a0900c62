"""Redis losing writes it had acknowledged (a restart from an older AOF, a failover to a replica that had not
received them) is noticed by the next live batch, against the real Redis: RedisSink.apply raises RedisBehind
once the batch is applied, for the boards and for the names hash (its own slot on a cluster)."""

from __future__ import annotations

import random
from typing import cast

import pytest
import redis

from consumers.plan import Canonical
from consumers.redis_sink import RedisBehind, RedisSink
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.settings import Settings
from tests.factories import win

BOARDS = [Board(id="global")]


def batch(start: int, n: int = 10, partition: int = 0) -> list[Canonical]:
    return [Canonical(partition, start + i, win(f"p{(start + i) % 7}", points=1 + i % 3)) for i in range(n)]


def snapshot(client: redis.Redis, prefix: str) -> dict[bytes, bytes]:
    keys = list(client.scan_iter(match=f"{prefix}:*")) + list(client.scan_iter(match=f"{{{prefix}:*"))
    return {k: cast("bytes", client.dump(k)) for k in keys}


def restore(client: redis.Redis, prefix: str, state: dict[bytes, bytes]) -> None:
    """Redis as it was at ``state``: what a restart from an AOF that lacked the later writes gives."""
    for key in snapshot(client, prefix):
        client.delete(key)
    for key, dumped in state.items():
        client.restore(key, 0, dumped)


def test_a_live_batch_after_lost_writes_reports_the_boards_and_the_names(
    config: Settings, redis_client: redis.Redis
) -> None:
    keys = Keys(config.redis_prefix)
    redis_client.hset(keys.meta("global"), mapping={"active": 1, "writing": 1})
    sink = RedisSink(redis_client, keys, BOARDS)
    sink.apply(batch(0), names={"p1": "Ann"})
    before = snapshot(redis_client, config.redis_prefix)
    sink.apply(batch(10), names={"p2": "Bob"})
    restore(redis_client, config.redis_prefix, before)
    with pytest.raises(RedisBehind) as lost:
        sink.apply(batch(20))
    assert (lost.value.boards, lost.value.names) == (["global"], True)
    # The batch itself was applied before the report: the caller repairs, forgets, and retries it.
    sink.forget()
    assert sink.apply(batch(20)) == 0  # already applied: skipped by the watermarks


def test_lost_names_alone_are_reported(config: Settings, redis_client: redis.Redis) -> None:
    keys = Keys(config.redis_prefix)
    redis_client.hset(keys.meta("global"), mapping={"active": 1, "writing": 1})
    sink = RedisSink(redis_client, keys, BOARDS)
    sink.apply(batch(0), names={"p1": "Ann"})
    redis_client.delete(keys.names(), keys.names_position())  # the names' node restarted empty
    with pytest.raises(RedisBehind) as lost:
        sink.apply(batch(10))
    assert (lost.value.boards, lost.value.names) == ([], True)


def test_replays_and_other_partitions_are_no_loss(config: Settings, redis_client: redis.Redis) -> None:
    """Replays of earlier batches in any order, and batches of other partitions, never look like a loss."""
    keys = Keys(config.redis_prefix)
    redis_client.hset(keys.meta("global"), mapping={"active": 1, "writing": 1})
    sink = RedisSink(redis_client, keys, BOARDS)
    batches = [batch(10 * i, partition=i % 3) for i in range(12)]
    for b in batches:
        sink.apply(b, names={b[0].event.player_id: f"N{b[0].offset}"})
    rnd = random.Random(17)
    for b in rnd.sample(batches, len(batches)):
        sink.apply(b, names={b[-1].event.player_id: f"M{b[-1].offset}"})
    assert sink.seen == {0: 99, 1: 109, 2: 119}
