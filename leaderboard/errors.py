"""Errors the CLI prints as one line, and the one place that maps any failure to that line and an exit code.

Every message leaves through :func:`redact`: passwords in URLs and secret values of the settings never reach
the terminal, whichever library wrote the message.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote, urlsplit, urlunsplit

EXIT_FAILED: Final = 1
"""The command ran and found a problem (verify: boards differ)."""
EXIT_CONFIG: Final = 2
"""Usage or configuration error: a setting, a file, an argument, credentials the service refused."""
EXIT_UNAVAILABLE: Final = 3
"""A service did not answer (down, wrong host or port, timed out)."""
EXIT_INTERNAL: Final = 4
"""Anything else: a bug or an error nobody mapped; the line says how to see the traceback."""
MASK: Final = "***"
DEBUG_HINT: Final = "set LEADERBOARD_LOG_LEVEL=DEBUG for the traceback"


class UserError(Exception):
    """Bad input or an unmet precondition the user can fix; the CLI exits 2 with the message."""

    exit_code: int = EXIT_CONFIG


class ServiceError(UserError):
    """A service is unreachable or refused us; the message names it, the setting and what to do."""

    def __init__(self, message: str, *, unavailable: bool) -> None:
        super().__init__(message)
        self.exit_code = EXIT_UNAVAILABLE if unavailable else EXIT_CONFIG


_QUERY_PASSWORD = re.compile(r"[?&]password=([^&#\s]+)", re.IGNORECASE)
"""libpq and redis-py also take the password as a query parameter."""


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``; anything unparsable is returned unchanged."""
    url = _QUERY_PASSWORD.sub(lambda m: m.group(0).replace(m.group(1), MASK), url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return re.sub(r"(//[^:/@]*:)[^@/]*@", rf"\1{MASK}@", url)
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def url_secrets(url: str) -> list[str]:
    """The password of ``url`` as written and percent-decoded (libraries print either form).

    A password equal to the user name (local development defaults) is no secret: the user name is shown in
    messages anyway, and masking it would mangle every mention of the user.
    """
    found = [m.group(1) for m in _QUERY_PASSWORD.finditer(url)]
    match = re.search(r"//([^:/@]*):([^@/]*)@", url)
    if match and match.group(2) and match.group(2) != match.group(1):
        found.append(match.group(2))
    return [form for raw in found for form in (raw, unquote(raw))]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every URL password and every one of ``secrets`` masked."""
    text = re.sub(r"(://[^:/@\s'\"]*:)[^@\s]+@", rf"\1{MASK}@", text)
    text = re.sub(r"(password=)[^&\s'\"]+", rf"\1{MASK}", text, flags=re.IGNORECASE)
    for secret in sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def one_line(text: str, limit: int = 400) -> str:
    """Whitespace (newlines, tabs) collapsed; long messages cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def explain(exc: BaseException) -> tuple[int, str]:
    """(exit code, one readable line) for any exception a command let through. Not yet redacted."""
    # Imported here: the CLI pays for these libraries only when something failed.
    import confluent_kafka  # noqa: PLC0415
    import psycopg  # noqa: PLC0415
    import redis  # noqa: PLC0415

    from leaderboard.boards import BoardsError  # noqa: PLC0415
    from leaderboard.settings import SettingsError  # noqa: PLC0415

    if isinstance(exc, UserError):
        return exc.exit_code, str(exc)
    if isinstance(exc, SettingsError | BoardsError):
        return EXIT_CONFIG, str(exc)
    if isinstance(exc, psycopg.Error):
        return postgres_problem(exc)
    if isinstance(exc, redis.RedisError):
        return redis_problem(exc)
    if isinstance(exc, confluent_kafka.KafkaException):
        return kafka_problem(exc)
    if isinstance(exc, UnicodeDecodeError):
        return EXIT_CONFIG, f"input is not UTF-8 ({exc.reason} at byte {exc.start}): save it as UTF-8"
    if isinstance(exc, tomllib.TOMLDecodeError):
        return EXIT_CONFIG, f"invalid TOML: {exc}"
    if isinstance(exc, ConnectionError | TimeoutError):
        return EXIT_UNAVAILABLE, f"connection failed: {exc}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_CONFIG, f"{where}{exc.strerror or exc}"
    return EXIT_INTERNAL, f"unexpected {type(exc).__name__}: {one_line(str(exc), 200)} ({DEBUG_HINT})"


_PG_AUTH = ("28P01", "28000")  # invalid_password, invalid_authorization_specification


def postgres_problem(exc: BaseException) -> tuple[int, str]:
    """PostgreSQL errors: refused credentials and missing databases are configuration, the rest outages."""
    import psycopg  # noqa: PLC0415

    text = one_line(str(exc)).removeprefix("connection failed: ")
    sqlstate = getattr(exc, "sqlstate", None)
    lowered = text.lower()
    if (
        sqlstate in _PG_AUTH
        or "password authentication failed" in lowered
        or "no password supplied" in lowered
    ):
        return EXIT_CONFIG, (
            f"PostgreSQL refused the credentials in LEADERBOARD_DATABASE_URL ({text}): "
            "check the user name and password"
        )
    if sqlstate == "3D000" or ("database" in lowered and "does not exist" in lowered):
        return EXIT_CONFIG, f"PostgreSQL: {text}: check the database name in LEADERBOARD_DATABASE_URL"
    if sqlstate == "42P01":  # undefined_table
        return EXIT_CONFIG, f"PostgreSQL: {text}: the schema is not migrated; run `leaderboard migrate`"
    if sqlstate == "42501":  # insufficient_privilege
        return EXIT_CONFIG, f"PostgreSQL: {text}: grant the user of LEADERBOARD_DATABASE_URL the privilege"
    if isinstance(exc, psycopg.OperationalError):
        return EXIT_UNAVAILABLE, (
            f"PostgreSQL not reachable ({text}): is it running? "
            "check host and port in LEADERBOARD_DATABASE_URL"
        )
    return EXIT_INTERNAL, f"PostgreSQL error: {text} ({DEBUG_HINT})"


def redis_problem(exc: BaseException) -> tuple[int, str]:
    """Redis errors: authentication and database index are configuration, connection failures outages."""
    import redis  # noqa: PLC0415

    text = one_line(str(exc))
    lowered = text.lower()
    auth = (redis.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError)
    if (
        isinstance(exc, auth)
        or "noauth" in lowered
        or "wrongpass" in lowered
        or "invalid password" in lowered
    ):
        return EXIT_CONFIG, (
            f"Redis refused the credentials in LEADERBOARD_REDIS_URL ({text}): check the password"
        )
    if "db index is out of range" in lowered or "invalid db index" in lowered:
        return EXIT_CONFIG, (
            f"Redis: {text}: the database number at the end of LEADERBOARD_REDIS_URL "
            "must be below the server's 'databases' setting (16 by default)"
        )
    if isinstance(exc, redis.exceptions.NoPermissionError) or "noperm" in lowered:
        return EXIT_CONFIG, f"Redis: {text}: the ACL user of LEADERBOARD_REDIS_URL lacks a permission"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return EXIT_UNAVAILABLE, (
            f"Redis not reachable ({text}): is it running? check host and port in LEADERBOARD_REDIS_URL"
        )
    # BUSY loading, OOM, READONLY replica...: the server's state, which an operator has to fix.
    return EXIT_UNAVAILABLE, f"Redis error: {text}"


def kafka_problem(exc: BaseException) -> tuple[int, str]:
    """librdkafka errors: invalid settings and failed authentication are configuration, the rest outages."""
    from confluent_kafka import KafkaError  # noqa: PLC0415

    err = exc.args[0] if exc.args else None
    if not isinstance(err, KafkaError):
        return EXIT_UNAVAILABLE, f"Kafka error: {one_line(str(exc))}"
    text = one_line(err.str())
    code = err.code()
    if code in (KafkaError._INVALID_ARG, KafkaError._NOT_IMPLEMENTED, KafkaError._UNKNOWN_PROTOCOL):
        return EXIT_CONFIG, (
            f"Kafka client settings rejected ({text}): check LEADERBOARD_KAFKA_CONFIG "
            "and LEADERBOARD_KAFKA_CONFIG_FILE"
        )
    if code in (
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    ):
        return EXIT_CONFIG, (
            f"Kafka refused our credentials or permissions ({text}): check the SASL/TLS settings in "
            "LEADERBOARD_KAFKA_CONFIG / LEADERBOARD_KAFKA_CONFIG_FILE and the broker's ACLs"
        )
    return EXIT_UNAVAILABLE, (
        f"Kafka not reachable ({text}): is the broker running? check LEADERBOARD_KAFKA_BOOTSTRAP"
    )
