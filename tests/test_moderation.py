"""Moderation actions against the real PostgreSQL and Kafka: durable, idempotent, audited, published.

Events are written straight into the event log (the consumer's job is not under test here); actions go
through the one submission path (leaderboard.moderation.service) and the ``leaderboard moderate`` CLI.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis

from consumers.migrate import migrate
from consumers.moderation_apply import Recomputer, sync
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.moderation import publish, rules, service, store
from leaderboard.settings import Settings
from schemas import moderation as m
from tests.procs import leaderboard_cli, read_topic

BOARDS = frozenset({"global", "monthly"})
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def db(pg: psycopg.Connection) -> psycopg.Connection:
    migrate(pg)
    return pg


def add_events(pg: psycopg.Connection, rows: list[tuple[str, str, str, datetime, str | None]]) -> None:
    """(event_id, match_id, player_id, occurred_at, display_name) into the log with their claims in
    event_ids (one row per stored event, as consumers.pg_sink writes them), and the players' names."""
    with pg.cursor() as cur:
        for at in {row[3] for row in rows}:  # the log is partitioned by month (made on demand)
            cur.execute("SELECT ensure_event_partition(%s)", (at,))
        for offset, (eid, match, player, at, name) in enumerate(rows):
            cur.execute(
                "INSERT INTO events (event_id, match_id, player_id, game, points, occurred_at, display_name,"
                " kafka_partition, kafka_offset) VALUES (%s, %s, %s, 'chess', 1, %s, %s, 0, %s)",
                (eid, match, player, at, name, offset),
            )
            cur.execute(
                "INSERT INTO event_ids (event_id, kafka_partition, kafka_offset) VALUES (%s, 0, %s)",
                (eid, offset),
            )
            if name is not None:
                cur.execute(
                    "INSERT INTO players (player_id, display_name, updated_at) VALUES (%s, %s, %s)"
                    " ON CONFLICT (player_id) DO UPDATE SET display_name = EXCLUDED.display_name",
                    (player, name, at),
                )


def event(player: str, day: int, name: str | None = None, match: str | None = None) -> tuple[Any, ...]:
    return (str(uuid.uuid4()), match or f"m-{uuid.uuid4().hex[:6]}", player, T0.replace(day=day), name)


def action(kind: str, **fields: Any) -> m.AnyAction:
    return m.validate(
        {
            "kind": kind,
            "action_id": fields.pop("action_id", str(uuid.uuid4())),
            "actor": "test",
            "reason": fields.pop("reason", "because"),
            "at": m.utc_text(datetime.now(UTC)),
            **fields,
        }
    )


def submit(config: Settings, act: m.AnyAction) -> service.Outcome:
    return service.submit(config, act, BOARDS)


def exclusions(pg: psycopg.Connection) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for r in pg.execute("SELECT player_id, board FROM moderation_exclusions")}


def test_same_action_twice_is_one_row_and_one_effect(config: Settings, db: psycopg.Connection) -> None:
    add_events(db, [event("alice", 2)])
    ban = action("exclude", player_id="alice", boards=["global"])
    first, again = submit(config, ban), submit(config, ban)
    assert (first.recorded.duplicate, again.recorded.duplicate) == (False, True)
    assert first.recorded.seq == again.recorded.seq
    assert db.execute("SELECT count(*) FROM moderation_actions").fetchone() == (1,)
    assert exclusions(db) == {("alice", "global")}
    # Also when a retry let the clock fill `at` again: the action_id decides.
    retry = m.validate({**m.to_builtins(ban), "at": "2026-11-30T00:00:00Z"})
    assert submit(config, retry).recorded.duplicate
    # The same id for a different action is refused, and changes nothing.
    with pytest.raises(rules.Refused) as refused:
        submit(config, m.validate({**m.to_builtins(ban), "boards": ["monthly"]}))
    assert refused.value.code == "action-id-reused"
    assert exclusions(db) == {("alice", "global")}
    assert db.execute("SELECT count(*) FROM moderation_actions").fetchone() == (1,)


def test_exclude_reinstate_state_and_refusals(config: Settings, db: psycopg.Connection) -> None:
    add_events(db, [event("alice", 2), event("bob", 3)])
    submit(config, action("exclude", player_id="alice", boards=["global"]))
    submit(config, action("exclude", player_id="alice", boards=["global", "monthly"]))  # adds monthly only
    assert exclusions(db) == {("alice", "global"), ("alice", "monthly")}
    codes = {}
    for name, bad in {
        "unknown player": action("exclude", player_id="nobody", boards="all"),
        "unknown board": action("exclude", player_id="bob", boards=["weekly"]),
        "already": action("exclude", player_id="alice", boards=["monthly"]),
        "not excluded": action("reinstate", player_id="bob", boards="all"),
        "not from that board": action("reinstate", player_id="alice", boards=["global", "weekly"]),
    }.items():
        with pytest.raises(rules.Refused) as refused:
            submit(config, bad)
        codes[name] = refused.value.code
    assert codes == {
        "unknown player": "unknown-player",
        "unknown board": "unknown-board",
        "already": "already-excluded",
        "not excluded": "not-excluded",
        "not from that board": "not-excluded",
    }
    assert exclusions(db) == {("alice", "global"), ("alice", "monthly")}  # nothing half-applied
    submit(config, action("exclude", player_id="alice", boards="all"))  # merges into one hold
    assert exclusions(db) == {("alice", rules.EVERY_BOARD)}
    with pytest.raises(rules.Refused):
        submit(config, action("reinstate", player_id="alice", boards=["global"]))
    submit(config, action("reinstate", player_id="alice", boards="all"))
    assert exclusions(db) == set()
    # Five accepted actions, in order; the refused ones left no trace.
    kinds = [e.kind for e in store.listing(db)]
    assert kinds == ["exclude", "exclude", "exclude", "reinstate"]


def test_a_void_by_event_finds_its_player_though_a_recreated_topic_reused_the_position(
    config: Settings, db: psycopg.Connection
) -> None:
    """The log has no key on event_id (migration 0017): events are found through event_ids' position, and
    a recreated topic restarts its offsets, so another month may hold another event at that position."""
    old, new = event("alice", 2), event("bob", 20)
    add_events(db, [old])  # partition 0, offset 0
    add_events(db, [(new[0], new[1], new[2], new[3].replace(month=12), None)])  # again at 0, offset 0
    after = store.last_seq(db)
    submit(config, action("void", event_ids=[old[0]]))
    assert store.affected_players(db, after).players == frozenset({"alice"})
    with pytest.raises(rules.Refused) as refused:
        submit(config, action("void", event_ids=[str(uuid.uuid4())]))
    assert refused.value.code == "unknown-event"


def test_voids_and_unvoid(config: Settings, db: psycopg.Connection) -> None:
    e1, e2, e3 = event("alice", 2), event("alice", 5, match="bugged"), event("bob", 6, match="bugged")
    add_events(db, [e1, e2, e3])
    by_event = submit(config, action("void", event_ids=[e1[0]])).recorded
    by_match = submit(config, action("void", match_ids=["bugged"])).recorded
    window = submit(
        config,
        action(
            "void", player_id="alice", **{"from": "2026-11-04T00:00:00Z", "until": "2026-11-10T00:00:00Z"}
        ),
    ).recorded
    assert db.execute("SELECT event_id::text FROM moderation_void_events").fetchall() == [(e1[0],)]
    assert db.execute("SELECT match_id FROM moderation_void_matches").fetchall() == [("bugged",)]
    refusals = {
        "unknown-event": action("void", event_ids=[str(uuid.uuid4())]),
        "unknown-match": action("void", match_ids=["never-played"]),
        "overlapping-window": action(
            "void", player_id="alice", **{"from": "2026-11-09T00:00:00Z", "until": "2026-11-12T00:00:00Z"}
        ),
        "unknown-action": action("unvoid", target=str(uuid.uuid4())),
    }
    for code, bad in refusals.items():
        with pytest.raises(rules.Refused) as refused:
            submit(config, bad)
        assert refused.value.code == code
    # A window that only touches the other one ([from, until) is half-open) is fine.
    submit(
        config,
        action(
            "void", player_id="alice", **{"from": "2026-11-10T00:00:00Z", "until": "2026-11-11T00:00:00Z"}
        ),
    )
    submit(config, action("unvoid", target=by_match.action_id))
    assert db.execute("SELECT count(*) FROM moderation_void_matches").fetchone() == (0,)
    with pytest.raises(rules.Refused) as again:
        submit(config, action("unvoid", target=by_match.action_id))
    assert again.value.code == "already-unvoided"
    exclude = submit(config, action("exclude", player_id="bob", boards="all")).recorded
    with pytest.raises(rules.Refused) as not_void:
        submit(config, action("unvoid", target=exclude.action_id))
    assert not_void.value.code == "not-a-void"
    listed = {e.action_id: e for e in store.listing(db)}
    assert listed[by_match.action_id].reversed_by is not None
    assert listed[by_event.action_id].reversed_by is None
    assert listed[window.action_id].record["from"] == "2026-11-04T00:00:00Z"


def test_erase_leaves_no_row_naming_the_player(config: Settings, db: psycopg.Connection) -> None:
    secret = "alice-the-erased"
    name = "Alice Erasedname"
    mine = [event(secret, 2, name), event(secret, 3, name), event(secret, 4)]
    add_events(db, [*mine, event("bob", 3, "Bob")])
    db.execute("INSERT INTO closed_periods (board, period, players) VALUES ('global', '2026-10', 2)")
    db.execute(
        "INSERT INTO period_standings VALUES ('global', '2026-10', 1, 1, %s, 9, now()),"
        " ('global', '2026-10', 2, 2, 'bob', 5, now())",
        (secret,),
    )
    submit(config, action("exclude", player_id=secret, boards="all"))
    submit(
        config,
        action("void", player_id=secret, **{"from": "2026-11-01T00:00:00Z", "until": "2026-11-03T00:00:00Z"}),
    )
    erase = action("erase", player_id=secret)
    assert submit(config, erase).unpublished == 0
    # Until a consumer has dropped the id from Redis, one row keeps it (for that), and nothing else.
    assert db.execute("SELECT player_id FROM moderation_redis_erase").fetchall() == [(secret,)]
    consumer_step(config, db)
    dump = dump_schema(config)
    assert secret not in dump
    assert name not in dump
    assert "Bob" in dump
    assert "bob" in dump
    [(pseudonym,)] = db.execute("SELECT pseudonym FROM moderation_erasures").fetchall()
    assert pseudonym.startswith(store.PSEUDONYM_PREFIX)
    # The player's rows are the pseudonym's now: the log stays complete, the names are gone.
    assert db.execute(
        "SELECT count(*), count(display_name) FROM events WHERE player_id = %s", (pseudonym,)
    ).fetchone() == (3, 0)
    assert db.execute("SELECT display_name FROM players WHERE player_id = %s", (pseudonym,)).fetchone() == (
        None,
    )
    assert db.execute("SELECT player_id FROM period_standings WHERE rank = 1").fetchone() == (pseudonym,)
    assert exclusions(db) == {(pseudonym, rules.EVERY_BOARD)}
    assert {e.record["player_id"] for e in store.listing(db)} == {pseudonym}
    # The same erasure again is the same action (nothing more); another one finds no such player.
    assert submit(config, erase).recorded.duplicate
    with pytest.raises(rules.Refused) as unknown:
        submit(config, action("erase", player_id=secret))
    assert unknown.value.code == "unknown-player"
    assert secret not in dump_schema(config)
    # Only the digest links (until the horizon), and forgetting it removes that link too.
    assert db.execute("SELECT id_digest FROM moderation_erasures").fetchone() == (store.digest(secret),)
    assert store.forget_digests(db, datetime(2099, 1, 1, tzinfo=UTC)) == 1
    assert db.execute("SELECT id_digest FROM moderation_erasures").fetchone() == (None,)


def consumer_step(config: Settings, db: psycopg.Connection) -> None:
    """What a live consumer does with new actions (consumers/moderation_apply.sync), on the real Redis."""
    with redis.Redis.from_url(config.redis_url) as client:
        sync(db, Recomputer(client, Keys(config.redis_prefix), [Board(id="global")]), None)


def dump_schema(config: Settings) -> str:
    """Every row of every table in the test's schema, as text (what pg_dump --data-only would show)."""
    with psycopg.connect(config.database_url, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
            )
        ]
        assert {"events", "players", "period_standings", "moderation_actions"} <= set(tables)
        return "\n".join(str(row) for t in tables for row in conn.execute(f"SELECT * FROM {t}"))


def test_published_once_per_action_with_its_key(config: Settings, db: psycopg.Connection) -> None:
    add_events(db, [event("carol", 2)])
    ban = action("exclude", player_id="carol", boards="all")
    submit(config, ban)
    submit(config, ban)  # a duplicate publishes nothing new
    void = submit(
        config,
        action(
            "void", player_id="carol", **{"from": "2026-11-01T00:00:00Z", "until": "2026-11-02T00:00:00Z"}
        ),
    )
    undo = submit(config, action("unvoid", target=void.recorded.action_id))
    assert undo.unpublished == 0
    records = read_topic(config, config.moderation_topic)
    decoded = [(key, m.decode(value or b"")) for key, value, _ in records]
    assert [a.kind for _, a in decoded if not isinstance(a, m.Invalid)] == ["exclude", "void", "unvoid"]
    assert all(key == b"carol" for key, _ in decoded)  # the unvoid follows its void's key
    assert decoded[0][1] == ban
    assert db.execute("SELECT count(*) FROM moderation_outbox").fetchone() == (0,)


def test_kafka_away_keeps_the_action_durable_and_pending(config: Settings, db: psycopg.Connection) -> None:
    """The action is stored before publishing: with the broker unreachable it stays in the outbox, and a
    republish later sends it (once per republish; readers de-duplicate by action_id)."""
    add_events(db, [event("dave", 2)])
    away = replace(config, kafka_bootstrap="127.0.0.1:1")
    ban = action("exclude", player_id="dave", boards="all")
    with service.connect(away) as conn:
        store.record(conn, ban, BOARDS, horizon=timedelta(0))
        assert publish.publish_pending(away, conn, timeout=1.0) == 1
    assert exclusions(db) == {("dave", "*")}
    assert service.republish(config) == 0
    assert service.republish(config) == 0  # nothing left to send
    [(key, value, _)] = read_topic(config, config.moderation_topic)
    assert (key, m.decode(value or b"")) == (b"dave", ban)


def run_cli(config: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return leaderboard_cli(config, "moderate", *args, timeout=60)


def test_cli_actions_list_and_one_line_errors(config: Settings, db: psycopg.Connection) -> None:
    e1 = event("erin", 2, "Erin")
    add_events(db, [e1])
    done = run_cli(config, "exclude", "erin", "--reason", "smurfing")
    assert done.returncode == 0, done.stderr
    ban_id = done.stdout.strip()
    assert str(uuid.UUID(ban_id)) == ban_id
    again = run_cli(config, "exclude", "erin", "--reason", "smurfing", "--action-id", ban_id)
    assert (again.returncode, again.stdout.strip()) == (0, ban_id)
    void = run_cli(config, "void", "--event", e1[0], "--reason", "bugged")
    assert void.returncode == 0, void.stderr
    assert run_cli(config, "unvoid", void.stdout.strip()).returncode == 0
    listed = run_cli(config, "list", "--player", "erin")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["kind"], r["action_id"], r["published"]) for r in rows] == [("exclude", ban_id, True)]
    everything = [json.loads(line) for line in run_cli(config, "list").stdout.splitlines()]
    assert [r["kind"] for r in everything] == ["exclude", "void", "unvoid"]
    assert everything[1]["reversed_by"] == everything[2]["action_id"]
    refusals = [
        ["exclude", "erin"],  # no reason (argparse)
        ["exclude", "erin", "--reason", ""],
        ["exclude", "erin", "--reason", "two\nlines"],
        ["exclude", "ghost", "--reason", "x"],
        ["exclude", "erin", "--board", "nope", "--reason", "x"],
        ["void", "--event", "not-a-uuid", "--reason", "x"],
        ["void", "--event", str(uuid.uuid4()), "--reason", "x"],
        ["void", "--player", "erin", "--from", "2026-11-02T00:00:00Z", "--reason", "x"],
        [
            "void",
            "--player",
            "erin",
            "--from",
            "2026-11-03T00:00:00Z",
            "--until",
            "2026-11-02T00:00:00Z",
            "--reason",
            "x",
        ],
        ["void", "--match", "m", "--from", "2026-11-03T00:00:00Z", "--reason", "x"],
        ["unvoid", str(uuid.uuid4())],
        ["reinstate", "erin", "--board", "global"],  # excluded from all boards
        ["list", "--limit", "0"],
        ["list", "--player", "a\x01b"],
    ]
    # Each refusal is its own process and writes nothing (the listing below shows it): run them side by side.
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda argv: run_cli(config, *argv), refusals))
    for bad, out in zip(refusals, outcomes, strict=True):
        assert out.returncode == 2, (bad, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        assert out.stdout == ""
        if bad[0] != "exclude" or len(bad) > 2:
            assert len(out.stderr.strip().splitlines()) == 1, (bad, out.stderr)
    assert [r["kind"] for r in map(json.loads, run_cli(config, "list").stdout.splitlines())] == [
        "exclude",
        "void",
        "unvoid",
    ]
    erase = run_cli(config, "erase", "erin")
    assert erase.returncode == 0, erase.stderr
    kept = run_cli(config, "forget-digests")  # the horizon (7 days) has not passed: the digest stays
    assert (kept.returncode, kept.stdout) == (0, "0 digest(s) cleared\n")
    consumer_step(config, db)
    assert "erin" not in dump_schema(config)
    assert "Erin" not in dump_schema(config)


def test_cli_without_postgres_is_one_line(config: Settings) -> None:
    down = replace(config, database_url="postgresql://nobody@127.0.0.1:1/none")
    out = leaderboard_cli(down, "moderate", "list", timeout=60)
    assert out.returncode == 3  # unreachable, as every command reports it (leaderboard/errors.py)
    assert len(out.stderr.strip().splitlines()) == 1
    assert "PostgreSQL not reachable" in out.stderr
    assert "LEADERBOARD_DATABASE_URL" in out.stderr


def test_tables_missing_is_one_line(config: Settings) -> None:
    out = leaderboard_cli(config, "moderate", "list", timeout=60)
    assert out.returncode == 2, out.stderr
    assert "leaderboard migrate" in out.stderr, out.stderr


def test_racing_submissions_of_one_action_count_once(config: Settings, db: psycopg.Connection) -> None:
    """Eight clients send the same action at once (a retrying fleet): one row, one effect, one record."""
    add_events(db, [event("frank", 2)])
    ban = action("exclude", player_id="frank", boards=["global"])
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: submit(config, ban), range(8)))
    assert sorted(o.recorded.duplicate for o in outcomes) == [False] + [True] * 7
    assert len({o.recorded.seq for o in outcomes}) == 1
    assert db.execute("SELECT count(*) FROM moderation_actions").fetchone() == (1,)
    assert exclusions(db) == {("frank", "global")}
    # Each submission also flushes the outbox, so the record may be sent more than once: readers
    # de-duplicate by action_id, and every copy is the same action.
    copies = [m.decode(v or b"") for _, v, _ in read_topic(config, config.moderation_topic)]
    assert copies
    assert all(c == ban for c in copies)
