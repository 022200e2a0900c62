"""Versioned schema migrations: plain SQL files applied in order at start, once, under an advisory lock.

The lock is per schema (the objects migrations create all live in the connection's schema), so migrators of
different schemas, e.g. isolated test schemas, do not queue behind each other.
"""

from __future__ import annotations

import argparse
import logging
from importlib import resources

import psycopg

from leaderboard.settings import Settings

HELP = "apply PostgreSQL schema migrations (the consumer also does this at start)"
_LOCK_CLASS = 0x1EAD  # advisory lock (class, hashtext(schema)): one migrator per schema at a time
log = logging.getLogger(__name__)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped, in order."""
    files = sorted(
        (f for f in resources.files("consumers").joinpath("migrations").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    return [(int(f.name.split("_", 1)[0]), f.name, f.read_text(encoding="utf-8")) for f in files]


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply pending migrations in one transaction each; returns the names applied."""
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (_LOCK_CLASS,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            conn.execute(sql.encode())
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied.append(name)
    for name in applied:
        log.info("migration applied", extra={"migration": name})
    return applied


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(config: Settings, args: argparse.Namespace) -> int:
    del args
    with psycopg.connect(config.database_url, connect_timeout=5) as conn:
        names = migrate(conn)
    print(f"applied {len(names)} migration(s): {', '.join(names) or 'none pending'}")
    return 0
