"""Is the stack there? One TCP connect per service, for friendly errors before real work starts."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from leaderboard.settings import Settings


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def unreachable_services(config: Settings) -> list[str]:
    """Names of the services in ``config`` (Kafka, Redis, PostgreSQL) that do not accept a connection."""
    host, _, port = config.kafka_bootstrap.split(",")[0].rpartition(":")
    redis_url, pg_url = urlsplit(config.redis_url), urlsplit(config.database_url)
    return [
        name
        for name, h, p in (
            ("Kafka", host, int(port)),
            ("Redis", redis_url.hostname or "127.0.0.1", redis_url.port or 6379),
            ("PostgreSQL", pg_url.hostname or "127.0.0.1", pg_url.port or 5432),
        )
        if not reachable(h, p)
    ]
