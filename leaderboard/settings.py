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
    database_url: str = "postgresql://leaderboard:leaderboard@127.0.0.1:5432/leaderboard"
    topic: str = "match-won.v1"
    dlq_topic: str = "match-won.v1.dlq"
    period_closed_topic: str = "period-closed.v1"
    consumer_group: str = "leaderboard"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    consumer_metrics_port: int = 9400
    """Consumer /metrics, /healthz, /readyz; 0 picks a free port (several consumers on one host)."""
    boards_file: Path | None = None
    ingest_token: str = field(default="", repr=False)
    """Bearer token that POST /v1/scores requires; empty disables ingest (503)."""
    batch_size: int = 5000
    batch_timeout_ms: int = 25
    log_level: str = "INFO"
    auto_close_periods: bool = True
    """Consumers close due periods (end + grace) once a minute; off for replays of historic streams."""
    event_retention_months: int = 13
    """`leaderboard archive` moves months of the event log older than this many whole months to files."""

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka settings shared by producers, consumers and admin clients.

        Their own log messages go through Python logging (logger ``librdkafka``): JSON lines in services.
        """
        conf: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap, "logger": LIBRDKAFKA}
        conf.update(parse_kv(self.kafka_config, "LEADERBOARD_KAFKA_CONFIG"))
        return conf


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
        elif name == "consumer_metrics_port":
            values[name] = _int(var, text, 0, 65535)
        elif name == "batch_size":
            values[name] = _int(var, text, 1, 100_000)
        elif name == "event_retention_months":
            values[name] = _int(var, text, 1, 360)
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
        elif name == "auto_close_periods":
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
