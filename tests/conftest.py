"""Fixtures: the real Kafka, Redis and PostgreSQL, each test isolated by its own names.

Services come from the LEADERBOARD_* variables (defaults: the local stack of ``make up``). Each test gets its
own topics, consumer group, Redis key prefix and PostgreSQL schema, so tests run in any order and twice.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import replace
from typing import TYPE_CHECKING, cast
from urllib.parse import quote

import psycopg
import pytest
import redis
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from hypothesis import settings as hypothesis_settings

from leaderboard import settings as settings_mod
from leaderboard.probe import unreachable_services
from leaderboard.redis_client import sync_client
from leaderboard.settings import Settings

if TYPE_CHECKING:  # the read-API world is imported by the tests that use it, not by every test run
    from fastapi.testclient import TestClient

    from tests.api_world import World

# No per-example deadline: the suite runs on three workers over two cores beside real servers, so a first
# example that loads a time zone or warms a connection can take 100x its usual time.
# Speed is the benchmarks' job.
hypothesis_settings.register_profile("suite", deadline=None)
hypothesis_settings.load_profile("suite")


def _docker_answers() -> bool:
    try:
        import docker  # noqa: PLC0415 - only where testcontainers may be used

        return bool(docker.from_env(timeout=3).ping())
    except Exception:
        return False


def _containers(stack: ExitStack) -> dict[str, str]:
    """Kafka, Redis and PostgreSQL from testcontainers, as LEADERBOARD_* settings."""
    from testcontainers.kafka import KafkaContainer  # noqa: PLC0415
    from testcontainers.postgres import PostgresContainer  # noqa: PLC0415
    from testcontainers.redis import RedisContainer  # noqa: PLC0415

    kafka = stack.enter_context(KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft())
    redis_c = stack.enter_context(RedisContainer("redis:7"))
    pg = stack.enter_context(
        PostgresContainer("postgres:15", username="leaderboard", password="leaderboard", dbname="leaderboard")
    )
    return {
        "LEADERBOARD_KAFKA_BOOTSTRAP": kafka.get_bootstrap_server(),
        "LEADERBOARD_REDIS_URL": f"redis://{redis_c.get_container_host_ip()}:{redis_c.get_exposed_port(6379)}/0",
        "LEADERBOARD_DATABASE_URL": pg.get_connection_url(driver=None),
    }


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests (``slow``) first, otherwise in file order. ``make test`` runs the suite on pytest-xdist
    workers, one test module at a time per worker (``--dist loadfile --no-loadscope-reorder``, so a
    module-scoped fixture is set up once): the modules holding long tests start first and overlap the short
    ones instead of one of them ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def base_settings() -> Iterator[Settings]:
    """The services under test: LEADERBOARD_* variables, else the local stack (`make up`), else containers
    where a Docker engine answers; otherwise the run stops with one line saying what to do."""
    with ExitStack() as stack:
        yield _services(stack)


def _services(stack: ExitStack) -> Settings:
    config = settings_mod.load()
    missing = unreachable_services(config)
    if missing and _docker_answers():
        os.environ.update(_containers(stack))
        config = settings_mod.load()
        missing = unreachable_services(config)
    if missing:
        pytest.exit(
            f"{', '.join(missing)} not reachable: run `make up` first (or set LEADERBOARD_* variables)", 3
        )
    return config


@pytest.fixture(scope="session")
def admin(base_settings: Settings) -> AdminClient:
    return AdminClient(base_settings.kafka_common())


APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
"""As deploy/stack.sh makes match-won: records carry the broker's clock (`future` is dated against it)."""


def create_topics(admin: AdminClient, partitions: dict[str, int]) -> None:
    futures = admin.create_topics(
        [
            NewTopic(t, num_partitions=n, replication_factor=1, config=APPEND_TIME)
            for t, n in partitions.items()
        ]
    )
    for future in futures.values():
        future.result(timeout=30)
    # The controller has accepted them; the broker's metadata may not list them yet (a reader right after this
    # saw "topic not found"). Wait until every topic and partition has a leader; raise on timeout.
    deadline = time.monotonic() + 30
    while True:
        meta = admin.list_topics(timeout=10).topics
        if all(
            t in meta
            and meta[t].error is None
            and len(meta[t].partitions) == n
            and all(p.leader >= 0 for p in meta[t].partitions.values())
            for t, n in partitions.items()
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not in the broker's metadata after 30 s: {sorted(partitions)}")
        time.sleep(0.05)


def delete_topics(admin: AdminClient, topics: list[str]) -> None:
    for future in admin.delete_topics(topics).values():
        with suppress(Exception):
            future.result(timeout=30)


@contextmanager
def isolated(
    base_settings: Settings, admin: AdminClient, partitions: tuple[int, int, int]
) -> Iterator[Settings]:
    """Settings with their own topics (main, DLQ, period-closed: ``partitions``), consumer group, Redis key
    prefix and PostgreSQL schema; all of it removed afterwards."""
    tag = uuid.uuid4().hex[:10]
    schema = f"t_{tag}"
    with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base_settings.database_url else "?"
    db_url = f"{base_settings.database_url}{sep}options={quote(f'-csearch_path={schema}')}"
    cfg = replace(
        base_settings,
        topic=f"match-won-{tag}",
        dlq_topic=f"match-won-{tag}.dlq",
        period_closed_topic=f"period-closed-{tag}",
        moderation_topic=f"moderation-{tag}",
        period_corrected_topic=f"period-corrected-{tag}",
        consumer_group=f"lb-{tag}",
        redis_prefix=f"t{tag}",
        database_url=db_url,
        consumer_metrics_port=0,
        auto_close_periods=False,  # tests replay historic timestamps; test_close_period turns it on
    )
    topics = [
        cfg.topic,
        cfg.dlq_topic,
        cfg.period_closed_topic,
        cfg.moderation_topic,
        cfg.period_corrected_topic,
    ]
    try:
        create_topics(admin, dict(zip(topics, (*partitions, partitions[-1], partitions[-1]), strict=True)))
        yield cfg
    finally:
        delete_topics(admin, topics)
        with sync_client(base_settings) as r:  # one node, or every master of a cluster
            keys = [
                k
                for m in (f"{cfg.redis_prefix}:*", f"{{{cfg.redis_prefix}:*")
                for k in r.scan_iter(match=m, count=1000)
            ]
            for i in range(0, len(keys), 500):
                r.unlink(*keys[i : i + 500])
        with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def config(base_settings: Settings, admin: AdminClient) -> Iterator[Settings]:
    """Settings for one test: its own topics (12/3/3/3 partitions), group, Redis prefix and PG schema."""
    with isolated(base_settings, admin, (12, 3, 3)) as cfg:
        yield cfg


@pytest.fixture
def redis_client(config: Settings) -> Iterator[redis.Redis]:
    """The Redis under test; with LEADERBOARD_REDIS_CLUSTER=true a RedisCluster (same commands, routed by key:
    what the tests that run on a cluster use, see `make test-cluster`)."""
    client = cast("redis.Redis", sync_client(config))
    yield client
    client.close()


@pytest.fixture
def pg(config: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(config.database_url, autocommit=True) as conn:
        yield conn


def env_of(config: Settings) -> dict[str, str]:
    """The environment that makes a child process (`leaderboard ...`) use these settings."""
    return {**os.environ, **settings_mod.to_env(config)}


@pytest.fixture
def world(config: Settings, redis_client: redis.Redis, pg: psycopg.Connection) -> World:
    """The read API's boards for one test (tests/api_world.py): migrated schema, every board active."""
    from tests.api_world import make_world  # noqa: PLC0415 - see TYPE_CHECKING above

    return make_world(config, redis_client, pg)


@pytest.fixture
def api(world: World) -> Iterator[TestClient]:
    """The read app over ``world``, its lifespan running."""
    from tests.api_world import serving  # noqa: PLC0415 - see TYPE_CHECKING above

    with serving(world.config) as client:
        yield client
