"""Shipped migrations against the real PostgreSQL: a fresh schema gets all of them in version order, and a
schema that already has a later one (moderation 0012 merged after board kinds 0013 shipped) gets the
missing one applied, so both orders of deployment end with the same schema."""

from __future__ import annotations

import psycopg

from consumers.migrate import migrate, migrations


def columns(conn: psycopg.Connection) -> set[tuple[str, str]]:
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
    ).fetchall()
    return {(str(t), str(c)) for t, c in rows}


def test_a_fresh_schema_gets_every_migration_in_version_order(pg: psycopg.Connection) -> None:
    shipped = migrations()
    versions = [v for v, _, _ in shipped]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert migrate(pg) == [name for _, name, _ in shipped]
    assert migrate(pg) == []
    have = columns(pg)
    assert {("events", "score"), ("standings_checkpoint", "last_us")} <= have  # 0013
    assert {("checkpoint_boards", "moderation_seq"), ("period_held", "player_id")} <= have  # 0012


def test_a_schema_past_0013_without_0012_gets_0012_and_ends_as_a_fresh_one(pg: psycopg.Connection) -> None:
    with pg.transaction():
        pg.execute(
            "CREATE TABLE schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in migrations():
            if version != 12:
                pg.execute(sql.encode())
                pg.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
    assert ("checkpoint_boards", "moderation_seq") not in columns(pg)
    assert migrate(pg) == ["0012_moderation_boards.sql"]
    out_of_order = columns(pg)
    home = str(pg.execute("SELECT current_schema()").fetchone()[0])  # type: ignore[index]
    other = f"{home}_fresh"
    pg.execute(f'CREATE SCHEMA "{other}"')
    try:
        pg.execute(f'SET search_path TO "{other}"')
        migrate(pg)
        assert columns(pg) == out_of_order
    finally:
        pg.execute(f'SET search_path TO "{home}"')
        pg.execute(f'DROP SCHEMA "{other}" CASCADE')
