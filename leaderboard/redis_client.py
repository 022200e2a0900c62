"""The one place Redis clients are built: one node, or a Redis Cluster when LEADERBOARD_REDIS_CLUSTER=true.

On a cluster, LEADERBOARD_REDIS_URL names any node; redis-py's cluster client discovers the others and routes
every command (and EVALSHA, by its first key) to the master of the key's slot. Every call is bounded: connect
and socket timeouts here, and a small bounded retry so a failover (MOVED, connection refused while a replica
is promoted) is retried a few times and then raised, never waited out indefinitely.
"""

from __future__ import annotations

import contextlib
from typing import TypeAlias

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from leaderboard.settings import Settings

SyncClient: TypeAlias = redis.Redis | RedisCluster
AsyncClient: TypeAlias = aioredis.Redis | AsyncRedisCluster
SyncPipeline: TypeAlias = redis.client.Pipeline | ClusterPipeline

FAILURES: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, TimeoutError)
"""What a Redis call may raise when the server or cluster cannot answer: connection and timeout errors,
MOVED/ASK after a failover, CLUSTERDOWN, TRYAGAIN, a slot with no master, a script refused for a non-local
key. RedisClusterException (slot not covered, no node reachable) is not a RedisError."""

_RETRIES = 2
"""Retries of one command after a connection or cluster error (then the caller sees the error)."""


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=0.5, base=0.05)


def sync_client(config: Settings, *, socket_timeout: float = 10, connect_timeout: float = 3) -> SyncClient:
    """A blocking client (CLI tools, the consumer)."""
    if config.redis_cluster:
        return RedisCluster.from_url(
            config.redis_url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(_backoff(), _RETRIES),
        )
    return redis.Redis.from_url(
        config.redis_url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout
    )


def recover(client: SyncClient) -> None:
    """After a failed call: on a cluster, refresh the slot map and make a primary that answers the default
    node. redis-py's cluster pipeline asks its default node for the keys of an EVAL (COMMAND GETKEYS) and
    never replaces that node when it died, so without this a pipeline fails for good once the node named by
    LEADERBOARD_REDIS_URL is gone, though its replica took over. Each step is bounded by the socket timeouts;
    a no-op on one node."""
    if not isinstance(client, RedisCluster):
        return
    with contextlib.suppress(*FAILURES):
        client.nodes_manager.initialize()
    for node in client.get_primaries():  # type: ignore[no-untyped-call]
        try:
            client.ping(target_nodes=node)
        except FAILURES:
            continue
        client.replace_default_node(node)
        return


def async_client(
    config: Settings,
    *,
    max_connections: int,
    pool_timeout: float = 5,
    socket_timeout: float = 5,
    connect_timeout: float = 2,
) -> AsyncClient:
    """An asyncio client (the read API). ``max_connections``: per node on a cluster, in all on one node,
    where waiting for a free connection is bounded by ``pool_timeout``."""
    if config.redis_cluster:
        return AsyncRedisCluster.from_url(
            config.redis_url,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=AsyncRetry(_backoff(), _RETRIES),
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        config.redis_url,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
    )
    return aioredis.Redis.from_pool(pool)  # closing the client closes the pool
