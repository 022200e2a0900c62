"""The clients a Processor works through, made in one place so a test can build a Processor without the CLI.

``Clients.for_settings`` makes the production ones; a test passes its own (same servers, other settings, or
a connection to a private server for fault injection). The processor still decides every bound: statement
timeouts and socket timeouts are part of what is made here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Consumer
from psycopg.conninfo import make_conninfo

from consumers.bounded import TransactionalProducer
from leaderboard.redis_client import SyncClient, sync_client
from leaderboard.settings import Settings

# PostgreSQL: a server that answers nothing (frozen, partitioned) is cut off by TCP keepalives and
# tcp_user_timeout (ms) as well as by the processor's watchdog.
_PG_CONNECT_S = 3
_PG_TCP = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
_REDIS_TIMEOUT_S = 5.0
_REDIS_CONNECT_S = 3.0
_INIT_TIMEOUT_S = 10.0


@dataclass
class Clients:
    """What the batch loop talks to. Factories where the processor replaces a broken client."""

    consumer: Consumer
    redis: SyncClient
    """One node, or redis-py's cluster client when LEADERBOARD_REDIS_CLUSTER=true."""
    new_producer: Callable[[], TransactionalProducer]
    """A fresh transactional producer (called again after a stuck or fenced one)."""
    connect_pg: Callable[[], psycopg.Connection]
    """A new autocommit connection (called again after a broken one)."""

    @classmethod
    def for_settings(cls, config: Settings) -> Clients:
        # One transactional.id per process, reused by every replacement producer: a new producer's
        # InitProducerId then fences the one it replaces and aborts its open transaction at once. With a fresh
        # id each time, the replaced producer's pending offsets (KIP-447) blocked its partitions until the
        # coordinator timed that transaction out, which after a broker restart was seen not to happen for
        # minutes (every member owning partitions, fetching nothing: UNSTABLE_OFFSET_COMMIT).
        transactional_id = f"{config.consumer_group}-{uuid.uuid4().hex}"
        return cls(
            consumer=new_consumer(config),
            redis=sync_client(config, socket_timeout=_REDIS_TIMEOUT_S, connect_timeout=_REDIS_CONNECT_S),
            new_producer=lambda: new_producer(config, transactional_id),
            connect_pg=lambda: connect_pg(config.database_url),
        )


def new_consumer(config: Settings) -> Consumer:
    return Consumer(consumer_settings(config))


def consumer_settings(config: Settings) -> dict[str, Any]:
    """The group member's librdkafka settings."""
    return {
        **config.kafka_common(),
        "group.id": config.consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "isolation.level": "read_committed",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 250,  # members hear of rebalances sooner, for tiny requests
        # A member whose loop stops polling leaves the group after this and its partitions move on.
        # Batches are bounded by seconds; a board rebuild polls through its progress callback.
        "max.poll.interval.ms": 300_000,
        "fetch.wait.max.ms": 50,
    }


def new_producer(config: Settings, transactional_id: str) -> TransactionalProducer:
    return TransactionalProducer(
        {
            **config.kafka_common(),
            "transactional.id": transactional_id,
            "linger.ms": 5,
            # A SIGKILLed member leaves its open transaction behind; its offsets block the partitions
            # (KIP-447) until the broker aborts it, so keep this short: batches commit in milliseconds.
            "transaction.timeout.ms": 10_000,
        },
        _INIT_TIMEOUT_S,
    )


def connect_pg(database_url: str) -> psycopg.Connection:
    conninfo = make_conninfo(database_url, connect_timeout=_PG_CONNECT_S, **_PG_TCP)
    return psycopg.connect(conninfo, autocommit=True)
