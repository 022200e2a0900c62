"""Is the stack there, and does it let us in? Bounded checks before a command starts real work.

:func:`unreachable_services` only tries a TCP connect (tests use it to find the stack). :func:`require`
logs in to each service a command needs (Kafka metadata, Redis PING, a PostgreSQL connection), all at once
and each within a few seconds, and raises one :class:`ServiceError` line naming every failure and why.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

from leaderboard.errors import (
    EXIT_UNAVAILABLE,
    ServiceError,
    kafka_problem,
    one_line,
    postgres_problem,
    redis_problem,
)
from leaderboard.settings import Settings

CONNECT_TIMEOUT_S: Final = 3.0
"""TCP connect and PostgreSQL/Redis log-in bound per service."""
KAFKA_METADATA_TIMEOUT_S: Final = 5.0
"""A broker that accepts TCP must answer a metadata request (after TLS/SASL) within this."""


class Service(StrEnum):
    KAFKA = "Kafka"
    REDIS = "Redis"
    POSTGRES = "PostgreSQL"


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _kafka_hosts(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not port.isdigit():
            host, port = item.strip(), "9092"
        out.append((host.strip("[]"), int(port)))
    return out


def unreachable_services(config: Settings) -> list[str]:
    """Names of the services in ``config`` (Kafka, Redis, PostgreSQL) that do not accept a connection."""
    host, port = _kafka_hosts(config.kafka_bootstrap)[0]
    redis_url, pg_url = urlsplit(config.redis_url), urlsplit(config.database_url)
    return [
        name
        for name, h, p in (
            ("Kafka", host, port),
            ("Redis", redis_url.hostname or "127.0.0.1", redis_url.port or 6379),
            ("PostgreSQL", pg_url.hostname or "127.0.0.1", pg_url.port or 5432),
        )
        if not reachable(h, p)
    ]


def check_kafka(config: Settings) -> None:
    """A bootstrap server accepts TCP and answers a metadata request (so TLS/SASL settings work)."""
    from confluent_kafka import KafkaError, KafkaException  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    hosts = _kafka_hosts(config.kafka_bootstrap)
    if not any(reachable(h, p, CONNECT_TIMEOUT_S) for h, p in hosts):
        raise ServiceError(
            f"Kafka not reachable at {config.kafka_bootstrap} (no bootstrap server accepts a connection): "
            "is the broker running? check LEADERBOARD_KAFKA_BOOTSTRAP",
            unavailable=True,
        )
    errors: list[KafkaError] = []
    quiet = logging.getLogger("leaderboard.probe.librdkafka")
    quiet.propagate = False  # the failure is reported once, below, not as a stream of librdkafka lines
    quiet.addHandler(logging.NullHandler())
    conf = {**config.kafka_common(), "logger": quiet, "error_cb": errors.append}
    try:
        admin = AdminClient(conf)
        admin.list_topics(timeout=KAFKA_METADATA_TIMEOUT_S)
    except KafkaException as exc:
        # The metadata call only says "timed out"; the error callback knows why (e.g. SASL failed).
        cause = next((e for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN), None)
        code, line = kafka_problem(KafkaException(cause) if cause is not None else exc)
        if code == EXIT_UNAVAILABLE:
            # TCP works, so the usual cause is a protocol mismatch (TLS or SASL on one side only).
            detail = one_line((cause or exc.args[0]).str() if (cause or exc.args) else str(exc))
            line = (
                f"Kafka at {config.kafka_bootstrap} accepts connections but gave no metadata within "
                f"{KAFKA_METADATA_TIMEOUT_S:.0f} s ({detail}): check that LEADERBOARD_KAFKA_BOOTSTRAP names "
                "a healthy broker and that security.protocol and the TLS/SASL settings in "
                "LEADERBOARD_KAFKA_CONFIG / LEADERBOARD_KAFKA_CONFIG_FILE match it"
            )
        raise ServiceError(line, unavailable=code == EXIT_UNAVAILABLE) from None


def check_redis(config: Settings) -> None:
    """Redis answers PING after AUTH and SELECT (wrong password and database index fail here)."""
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(
        config.redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        code, line = redis_problem(exc)
        raise ServiceError(line, unavailable=code == EXIT_UNAVAILABLE) from None
    finally:
        client.close()


def check_postgres(config: Settings) -> None:
    """PostgreSQL accepts our credentials for the database."""
    import psycopg  # noqa: PLC0415

    try:
        psycopg.connect(config.database_url, connect_timeout=int(CONNECT_TIMEOUT_S)).close()
    except psycopg.Error as exc:
        code, line = postgres_problem(exc)
        raise ServiceError(line, unavailable=code == EXIT_UNAVAILABLE) from None


CHECKS: Final[dict[Service, Callable[[Settings], None]]] = {
    Service.KAFKA: check_kafka,
    Service.REDIS: check_redis,
    Service.POSTGRES: check_postgres,
}


def require(config: Settings, services: Iterable[Service]) -> None:
    """Check ``services`` in parallel; raise one ServiceError naming every failure (outages first)."""
    wanted = [s for s in Service if s in set(services)]
    if not wanted:
        return
    with ThreadPoolExecutor(len(wanted)) as pool:
        futures = [pool.submit(CHECKS[s], config) for s in wanted]
    failures: list[ServiceError] = []
    for future in futures:
        exc = future.exception()
        if isinstance(exc, ServiceError):
            failures.append(exc)
        elif exc is not None:
            failures.append(ServiceError(one_line(f"{type(exc).__name__}: {exc}"), unavailable=True))
    if failures:
        failures.sort(key=lambda f: f.exit_code != EXIT_UNAVAILABLE)
        error = ServiceError("; ".join(str(f) for f in failures), unavailable=True)
        error.exit_code = failures[0].exit_code
        raise error
