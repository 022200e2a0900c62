"""All configuration, read from ``LEADERBOARD_*`` environment variables once, with local defaults.

Nothing is read at import time: call :func:`load` in an entry point (tests pass their own mapping).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from leaderboard.logs import LIBRDKAFKA


class SettingsError(ValueError):
    """One readable line naming the variable and what is wrong with it."""


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_config: str = ""
    """Extra librdkafka settings for every client, 'key=value,key=value' (TLS/SASL pass through here)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "lb"
    redis_cluster: bool = False
    """LEADERBOARD_REDIS_URL names any node of a Redis Cluster (leaderboard/redis_client.py)."""
    database_url: str = "postgresql://leaderboard:leaderboard@127.0.0.1:5432/leaderboard"
    topic: str = "match-won.v1"
    dlq_topic: str = "match-won.v1.dlq"
    period_closed_topic: str = "period-closed.v1"
    consumer_group: str = "leaderboard"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # --- read API limits (query_api/limits.py, query_api/snapshots.py); ranges in _API_LIMITS ---
    api_max_header_bytes: int = 32_768
    """Request line + headers larger than this: 431, connection closed (before any parsing of the rest)."""
    api_max_body_bytes: int = 2_097_152
    """Request bodies larger than this: 413 without reading them (2 MiB = ingest's own cap)."""
    api_header_timeout_s: int = 5
    """A request's headers (or a new connection's first request) must arrive within this: else closed."""
    api_keep_alive_s: int = 5
    """Idle keep-alive connections are closed after this (uvicorn timeout_keep_alive)."""
    api_max_connections: int = 1000
    """Open connections per worker; beyond: 503 problem document, connection closed."""
    api_max_connections_per_client: int = 100
    """Open connections per client IP per worker; beyond: 429 (behind a proxy: as api_max_connections)."""
    api_pg_connect_timeout_s: int = 2
    """Connecting to PostgreSQL (or waiting for a pooled connection) for snapshot reads."""
    api_pg_statement_timeout_ms: int = 2000
    """Each PostgreSQL read of the API (server-side statement_timeout and a client-side bound): else 503."""
    api_negative_cache_s: int = 5
    """How long 'this ended period has no snapshot' is remembered (0: ask PostgreSQL every time)."""
    # --- end of read API limits ---
    consumer_metrics_port: int = 9400
    """Consumer /metrics, /healthz, /readyz; 0 picks a free port (several consumers on one host)."""
    boards_file: Path | None = None
    ingest_token: str = field(default="", repr=False)
    """Bearer token that POST /v1/scores requires; empty disables ingest (503)."""
    batch_size: int = 5000
    batch_timeout_ms: int = 25
    log_level: str = "INFO"
    max_future_skew_s: int = 300
    """How far occurred_at may lie after the record's broker timestamp; later events are dead-lettered
    with reason ``future`` (the broker's clock, so a replay decides the same)."""
    auto_close_periods: bool = True
    """Consumers close due periods (end + grace) once a minute; off for replays of historic streams."""

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka settings shared by producers, consumers and admin clients.

        Their own log messages go through Python logging (logger ``librdkafka``): JSON lines in services.
        """
        conf: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap, "logger": LIBRDKAFKA}
        conf.update(parse_kv(self.kafka_config, "LEADERBOARD_KAFKA_CONFIG"))
        return conf


_API_LIMITS: dict[str, tuple[int, int]] = {
    "api_max_header_bytes": (1024, 1_048_576),
    "api_max_body_bytes": (1024, 67_108_864),
    "api_header_timeout_s": (1, 300),
    "api_keep_alive_s": (1, 300),
    "api_max_connections": (1, 1_000_000),
    "api_max_connections_per_client": (1, 1_000_000),
    "api_pg_connect_timeout_s": (1, 60),
    "api_pg_statement_timeout_ms": (100, 600_000),
    "api_negative_cache_s": (0, 3600),
}
"""Read API limits: setting -> accepted [low, high]."""

_ENV = {f.name: f"LEADERBOARD_{f.name.upper()}" for f in fields(Settings)}
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def parse_kv(text: str, var: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{var}: expected key=value pairs separated by commas, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _int(var: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r}: expected an integer") from None
    if not low <= value <= high:
        raise SettingsError(f"{var}={raw!r}: expected an integer in [{low}, {high}]")
    return value


def _url(var: str, raw: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in schemes or (not parts.hostname and not parts.path):
        raise SettingsError(
            f"{var}={raw!r}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}"
        )
    return raw


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment (or ``env``); raises SettingsError with one readable line."""
    source = os.environ if env is None else env
    raw = {name: source[var] for name, var in _ENV.items() if source.get(var, "") != ""}
    values: dict[str, object] = {}
    for name, text in raw.items():
        var = _ENV[name]
        if name in ("api_port",):
            values[name] = _int(var, text, 1, 65535)
        elif name in _API_LIMITS:
            values[name] = _int(var, text, *_API_LIMITS[name])
        elif name == "consumer_metrics_port":
            values[name] = _int(var, text, 0, 65535)
        elif name == "batch_size":
            values[name] = _int(var, text, 1, 100_000)
        elif name == "max_future_skew_s":
            values[name] = _int(var, text, 0, 366 * 86_400)
        elif name == "batch_timeout_ms":
            values[name] = _int(var, text, 1, 60_000)
        elif name == "redis_url":
            values[name] = _url(var, text, ("redis", "rediss", "unix"))
        elif name == "database_url":
            values[name] = _url(var, text, ("postgresql", "postgres"))
        elif name == "boards_file":
            path = Path(text)
            if not path.is_file():
                raise SettingsError(f"{var}={text!r}: no such file")
            values[name] = path
        elif name in ("topic", "dlq_topic", "period_closed_topic", "consumer_group", "redis_prefix"):
            if not _NAME.match(text):
                raise SettingsError(f"{var}={text!r}: use letters, digits, '.', '_' or '-'")
            values[name] = text
        elif name == "log_level":
            if text.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
                raise SettingsError(f"{var}={text!r}: expected DEBUG, INFO, WARNING or ERROR")
            values[name] = text.upper()
        elif name in ("auto_close_periods", "redis_cluster"):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise SettingsError(f"{var}={text!r}: expected true or false")
            values[name] = text.lower() in ("true", "1", "yes")
        elif name == "kafka_config":
            parse_kv(text, var)
            values[name] = text
        else:
            values[name] = text
    return Settings(**values)  # type: ignore[arg-type]


def env_names() -> dict[str, str]:
    """Setting name -> environment variable (docs and the compose-file test use it)."""
    return dict(_ENV)
