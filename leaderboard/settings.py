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

from leaderboard.errors import mask_url, url_secrets
from leaderboard.logs import LIBRDKAFKA


class SettingsError(ValueError):
    """One readable line naming the variable and what is wrong with it."""


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_config: str = field(default="", repr=False)
    """Extra librdkafka settings for every client, 'key=value,key=value' (TLS/SASL pass through here)."""
    kafka_config_file: Path | None = None
    """librdkafka settings in properties format (key=value lines, # comments): values may hold commas.
    The inline ``kafka_config`` wins over the file for a key set in both."""
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    redis_prefix: str = "lb"
    redis_cluster: bool = False
    """LEADERBOARD_REDIS_URL names any node of a Redis Cluster (leaderboard/redis_client.py)."""
    database_url: str = field(
        default="postgresql://leaderboard:leaderboard@127.0.0.1:5432/leaderboard", repr=False
    )
    topic: str = "match-won.v1"
    dlq_topic: str = "match-won.v1.dlq"
    period_closed_topic: str = "period-closed.v1"
    moderation_topic: str = "moderation.v1"
    """Moderation actions (schemas/moderation.v1.json), published after PostgreSQL holds them."""
    period_corrected_topic: str = "period-corrected.v1"
    """Corrections of closed periods' standings (moderation after the close): who moved, old and new."""
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
    admin_token: str = field(default="", repr=False)
    """Bearer token of the /v1/admin routes (moderation); empty: those routes answer 404, never open."""
    batch_size: int = 5000
    batch_timeout_ms: int = 25
    log_level: str = "INFO"
    max_future_skew_s: int = 300
    """How far occurred_at may lie after the record's broker timestamp; later events are dead-lettered
    with reason ``future`` (the broker's clock, so a replay decides the same)."""
    erasure_horizon_s: int = 604_800
    """How long Kafka may still hold an erased player's raw records (the longest retention of the match-won,
    dead-letter and moderation topics; Kafka's default is 7 days): their digest is kept that long."""
    auto_close_periods: bool = True
    """Consumers close due periods (end + grace) on a scheduler thread; off when replaying history."""
    close_lookback_s: int = 2 * 86400
    """The scheduler never closes on its own a period that ended longer ago than this (by the group's recorded
    clock); older periods need an operator's ``close-period --period``. A backdated win cannot close them."""
    close_interval_s: int = 60
    """How often the scheduler folds the checkpoints and closes due periods."""
    rebuild_deadline_s: int = 3600
    """``leaderboard rebuild`` stops (exit 2, one line; boards not yet flipped keep their live generation)
    once it has run this long, whatever it is waiting for: the process enforces it with a timer signal."""
    scheduler_pg_timeout_s: int = 300
    """Bound on each PostgreSQL statement of the scheduler (server-side statement_timeout); a statement or
    transaction on its connection that outlives twice this (a frozen server enforces nothing) is cut off by
    the scheduler's own watcher and the run retried on a new connection."""
    event_retention_months: int = 13
    """`leaderboard archive` moves months of the event log older than this many whole months to files."""
    stack_dir: Path = Path(".stack")
    """Where deploy/stack.sh keeps the local services' data and logs; ``leaderboard demo`` logs there too."""
    kafka_file_settings: tuple[tuple[str, str], ...] = field(default=(), repr=False, metadata={"env": False})
    """What ``load`` read from ``kafka_config_file`` (not an environment variable of its own)."""

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka settings shared by producers, consumers and admin clients.

        Their own log messages go through Python logging (logger ``librdkafka``): JSON lines in services.
        """
        conf: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap, "logger": LIBRDKAFKA}
        conf.update(self.kafka_file_settings)
        conf.update(parse_kv(self.kafka_config, "LEADERBOARD_KAFKA_CONFIG"))
        return conf


PRODUCER_DEFAULTS: dict[str, str | int] = {
    "enable.idempotence": "true",  # broker de-duplicates producer retries: no doubles, order kept
    "acks": "all",
    "compression.type": "lz4",  # cheapest CPU per byte saved on small JSON records
    "linger.ms": 10,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "message.timeout.ms": 120_000,
    # Kafka's canonical (Java) key hash: a player lands on the same partition whichever client sends.
    "partitioner": "murmur2_random",
}
"""Every producer of the product (SDK, ingest, moderation, benchmarks): durable, ordered, idempotent."""


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

_ENV = {f.name: f"LEADERBOARD_{f.name.upper()}" for f in fields(Settings) if f.metadata.get("env", True)}
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:(\d{1,5}))?$")
_SECRET_KEY = re.compile(
    r"password|secret|token|(^|\.)key(\.pem)?$|credentials|oauthbearer\.config", re.IGNORECASE
)
"""librdkafka keys whose values are secrets (sasl.password, ssl.key.password, ssl.key.pem, ...)."""
_SECRET_VAR = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)


def parse_kv(text: str, var: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, item in enumerate(filter(None, (part.strip() for part in text.split(","))), 1):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # The item is not shown: it may be the tail of a password that held a comma.
            raise SettingsError(
                f"{var}: item {number} is not key=value (items are separated by commas; "
                "a value holding a comma goes in LEADERBOARD_KAFKA_CONFIG_FILE)"
            )
        out[key.strip()] = value.strip()
    return out


def parse_properties(text: str, var: str) -> dict[str, str]:
    """librdkafka's properties format: ``key=value`` lines; blank lines and ``#`` comments are skipped.

    Everything after the first ``=`` is the value (commas, ``=`` and ``#`` included), stripped of
    surrounding whitespace.
    """
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        if not sep or not key.strip() or any(c.isspace() for c in key.strip()):
            raise SettingsError(f"{var}: line {number}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def _read_properties(var: str, text: str) -> tuple[tuple[str, str], ...]:
    path = Path(text)
    try:
        content = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{var}={text!r}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise SettingsError(f"{var}={text!r}: cannot read it ({exc.strerror or exc})") from None
    return tuple(parse_properties(content, var).items())


def _check_librdkafka(conf: Mapping[str, str], secrets: list[str]) -> None:
    """Let librdkafka itself judge the extra settings (unknown keys, bad values, missing files), once."""
    import logging  # noqa: PLC0415

    from confluent_kafka import KafkaException, Producer  # noqa: PLC0415

    quiet = logging.getLogger("leaderboard.settings.librdkafka-check")
    quiet.disabled = True  # warnings such as "consumer property ignored by a producer" are no errors
    try:
        Producer({**conf, "logger": quiet})
    except KafkaException as exc:
        from leaderboard.errors import redact  # noqa: PLC0415

        detail = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        raise SettingsError(
            "LEADERBOARD_KAFKA_CONFIG / LEADERBOARD_KAFKA_CONFIG_FILE: librdkafka rejects them: "
            + redact(detail, secrets)
        ) from None


def secrets_in(env: Mapping[str, str] | None = None) -> list[str]:
    """Every secret value the settings in ``env`` hold: URL passwords, tokens, librdkafka secrets.

    Works on the raw environment (also when :func:`load` fails), so error messages can be redacted.
    """
    source = os.environ if env is None else env
    found: list[str] = []
    for var, value in source.items():
        if not var.startswith("LEADERBOARD_") or not value:
            continue
        found += url_secrets(value)
        if _SECRET_VAR.search(var):
            found.append(value)
    conf = dict(_kv_lenient(source.get("LEADERBOARD_KAFKA_CONFIG", "").split(",")))
    file_name = source.get("LEADERBOARD_KAFKA_CONFIG_FILE", "")
    if file_name:
        try:
            lines = Path(file_name).read_bytes().decode("utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        conf.update(_kv_lenient(lines))
    found += [v for k, v in conf.items() if _SECRET_KEY.search(k) and v]
    return found


def _kv_lenient(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.strip().partition("=")
        if sep and not key.startswith("#"):
            out.append((key.strip(), value.strip()))
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
    """A URL with one of ``schemes`` and a valid port; messages show it with the password masked."""
    shown = mask_url(raw)
    try:
        parts = urlsplit(raw)
        _ = parts.port  # raises ValueError for a port that is no number in range
    except ValueError as exc:
        raise SettingsError(f"{var}={shown!r}: {exc}") from None
    if parts.scheme not in schemes or (not parts.hostname and not parts.path):
        raise SettingsError(
            f"{var}={shown!r}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}"
        )
    return raw


def _redis_url(var: str, raw: str) -> str:
    url = _url(var, raw, ("redis", "rediss", "unix"))
    parts = urlsplit(url)
    db = parts.path.strip("/") if parts.scheme != "unix" else ""
    if db and not db.isdigit():
        raise SettingsError(f"{var}={mask_url(raw)!r}: the path must be a database number, e.g. /0")
    return url


def _bootstrap(var: str, raw: str) -> str:
    for item in raw.split(","):
        match = _HOST_PORT.match(item.strip())
        if not match or (match.group(3) is not None and not 1 <= int(match.group(3)) <= 65535):
            raise SettingsError(f"{var}={raw!r}: expected host:port[,host:port...], e.g. 127.0.0.1:9092")
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
        elif name == "erasure_horizon_s":
            values[name] = _int(var, text, 0, 10 * 366 * 86_400)
        elif name == "max_future_skew_s":
            values[name] = _int(var, text, 0, 366 * 86_400)
        elif name == "close_lookback_s":
            values[name] = _int(var, text, 0, 10 * 365 * 86400)
        elif name in {"close_interval_s", "scheduler_pg_timeout_s"}:
            values[name] = _int(var, text, 1, 86400)
        elif name == "rebuild_deadline_s":
            values[name] = _int(var, text, 1, 7 * 86400)
        elif name == "event_retention_months":
            values[name] = _int(var, text, 1, 360)
        elif name == "batch_timeout_ms":
            values[name] = _int(var, text, 1, 60_000)
        elif name == "redis_url":
            values[name] = _redis_url(var, text)
        elif name == "kafka_bootstrap":
            values[name] = _bootstrap(var, text)
        elif name == "kafka_config_file":
            values[name] = Path(text)
            values["kafka_file_settings"] = _read_properties(var, text)
        elif name == "stack_dir":
            values[name] = Path(text)
        elif name == "database_url":
            values[name] = _url(var, text, ("postgresql", "postgres"))
        elif name == "boards_file":
            path = Path(text)
            if not path.is_file():
                raise SettingsError(f"{var}={text!r}: no such file")
            values[name] = path
        elif name in (
            "topic",
            "dlq_topic",
            "period_closed_topic",
            "moderation_topic",
            "period_corrected_topic",
            "consumer_group",
            "redis_prefix",
        ):
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
    config = Settings(**values)  # type: ignore[arg-type]
    if config.kafka_config or config.kafka_file_settings:
        extra = config.kafka_common()
        del extra["logger"], extra["bootstrap.servers"]  # no broker contact: only the settings are judged
        _check_librdkafka(extra, secrets_in(source))
    return config


def env_names() -> dict[str, str]:
    """Setting name -> environment variable (docs and the compose-file test use it)."""
    return dict(_ENV)


def to_env(config: Settings) -> dict[str, str]:
    """The LEADERBOARD_* variables that make a child process (``leaderboard ...``) load exactly ``config``."""
    return {var: "" if (value := getattr(config, name)) is None else str(value) for name, var in _ENV.items()}
