"""The rebuild lock against real Redis: it renews itself, only its holder can renew or release it, and a
lost lock makes the job's next check raise."""

from __future__ import annotations

import time

import psycopg
import pytest
import redis

from consumers.generations import Generations, rebuild_from_checkpoint
from consumers.lease import Lease, LockLost
from consumers.migrate import migrate
from consumers.redis_sink import RedisSink
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.settings import Settings
from tests.procs import wait_until


def taken(config: Settings, client: redis.Redis) -> tuple[str, Lease]:
    """The test's lock key and a 600 ms lease on it (renewed in the background while held)."""
    key = f"{config.redis_prefix}:lock"
    lease = Lease.take(client, key, lease_ms=600)
    assert lease is not None
    return key, lease


def test_a_lease_renews_itself_and_only_its_holder_releases_it(
    config: Settings, redis_client: redis.Redis
) -> None:
    key, lease = taken(config, redis_client)
    try:
        assert Lease.take(redis_client, key, lease_ms=600) is None
        time.sleep(1.5)  # more than two leases: only renewals keep it
        assert redis_client.get(key) == lease.token.encode()
        lease.check()
    finally:
        lease.release()
    assert not redis_client.exists(key)


def test_a_lost_lease_stops_the_job_and_leaves_the_new_holder_alone(
    config: Settings, redis_client: redis.Redis
) -> None:
    key, lease = taken(config, redis_client)
    redis_client.set(key, "someone-else", px=60_000)  # the lease lapsed and another process took over

    def raises() -> bool:
        try:
            lease.check()
        except LockLost:
            return True
        return False

    wait_until(raises, 5, "the lease to notice it lost the lock")
    with pytest.raises(LockLost, match="taken over or expired"):
        lease.check()
    lease.release()
    assert redis_client.get(key) == b"someone-else"


def test_a_rebuild_whose_lock_was_lost_stops_before_it_flips(
    config: Settings, redis_client: redis.Redis, pg: psycopg.Connection
) -> None:
    migrate(pg)
    boards = (Board(id="global"),)
    keys = Keys(config.redis_prefix)
    gens = Generations(redis_client, keys, boards)
    lease = Lease.take(redis_client, keys.lock("global"), lease_ms=300)  # renews every 0.1 s
    assert lease is not None
    assert gens.lease("global") is None  # the same lock the rebuild paths take
    redis_client.set(keys.lock("global"), "someone-else", px=60_000)
    time.sleep(0.5)
    with pytest.raises(LockLost):
        rebuild_from_checkpoint(gens, RedisSink(redis_client, keys, boards), pg, boards[0], lease)
    assert redis_client.hget(keys.meta("global"), "active") is None  # nothing flipped
    lease.release()
