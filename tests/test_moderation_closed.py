"""M5: closed periods and moderation, against the real PostgreSQL, Redis and Kafka.

A close leaves out the players held at that moment; holds that start or end later change nothing. A void
that changes a closed month corrects it: the previous standings are kept as version 1, version 2 is served
with ``corrected_at``, and exactly one period-corrected event carries who moved (old and new rank, score).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import redis

from consumers import closing, pg_sink
from consumers.announce import new_producer
from consumers.migrate import migrate
from consumers.plan import Canonical
from leaderboard.boards import Board
from leaderboard.moderation import service
from leaderboard.periods import PeriodKind
from leaderboard.settings import Settings
from schemas import moderation as m
from schemas.model import MatchWon
from tests.procs import ApiProcess, leaderboard_cli, read_topic

BOARD = Board(id="global", periods=(PeriodKind.MONTHLY,))
NOW = datetime.now(UTC)
LAST_MONTH = (NOW.replace(day=1) - timedelta(days=1)).replace(
    day=3, hour=12, minute=0, second=0, microsecond=0
)
PERIOD = f"monthly:{LAST_MONTH.strftime('%Y-%m')}"


def win(player: str, points: int, match: str, hour: int) -> MatchWon:
    return MatchWon(
        event_id=str(uuid.uuid4()),
        match_id=match,
        player_id=player,
        game="chess",
        points=points,
        occurred_at=LAST_MONTH + timedelta(hours=hour),
    )


def act(
    config: Settings, kind: str, allowed: frozenset[str] = frozenset({BOARD.id}), **fields: object
) -> m.AnyAction:
    doc = {
        "kind": kind,
        "action_id": str(uuid.uuid4()),
        "actor": "ops",
        "reason": "test",
        "at": m.utc_text(datetime.now(UTC)),
        **fields,
    }
    action = m.validate(doc)
    service.submit(config, action, allowed)
    return action


def close(config: Settings, conn: psycopg.Connection, client: redis.Redis) -> list[tuple[str, str]]:
    producer = new_producer(config)
    warnings: list[str] = []
    done, failed = closing.run_closes(
        conn,
        client,
        producer,
        config,
        [BOARD],
        now=NOW,
        only=(BOARD.id, PERIOD),
        lookback=None,
        report=print,
        warn=warnings.append,
    )
    assert (failed, warnings) == (0, [])
    return done


def standings(
    conn: psycopg.Connection, table: str = "period_standings", version: int | None = None
) -> list[tuple[object, ...]]:
    where = "" if version is None else f" AND version = {int(version)}"
    return conn.execute(
        f"SELECT rank, player_id, score FROM {table} WHERE board = 'global' AND period = %s{where}"
        " ORDER BY position",
        (PERIOD,),
    ).fetchall()


def test_close_leaves_held_out_and_a_later_void_is_one_versioned_correction(
    config: Settings, pg: psycopg.Connection, redis_client: redis.Redis, tmp_path: Path
) -> None:
    migrate(pg)
    wins = [
        win("ann", 6, "m-bugged", 1),
        win("ann", 4, "m1", 2),
        win("bob", 7, "m2", 3),
        win("cid", 5, "m3", 4),
        win("hal", 20, "m4", 5),
        win("zed", 3, "m5", 6),
    ]
    pg_sink.write_batch(pg, [Canonical(0, i, e) for i, e in enumerate(wins)], [BOARD])
    act(config, "exclude", player_id="hal", boards="all")
    act(
        config, "exclude", frozenset({BOARD.id, "other"}), player_id="zed", boards=["other"]
    )  # not this board
    assert close(config, pg, redis_client) == [(BOARD.id, PERIOD)]
    v1 = [(1, "ann", 10), (2, "bob", 7), (3, "cid", 5), (4, "zed", 3)]
    assert standings(pg) == v1  # hal was held at the close
    # A hold that ends after the close changes nothing: no correction, no event.
    act(config, "reinstate", player_id="hal", boards="all")
    close(config, pg, redis_client)
    assert standings(pg) == v1
    assert pg.execute("SELECT version, corrected_at FROM closed_periods").fetchone() == (1, None)
    # A void does: version 2 is served, version 1 kept, one event with the diff.
    act(config, "void", match_ids=["m-bugged"])
    close(config, pg, redis_client)
    assert standings(pg) == [(1, "bob", 7), (2, "cid", 5), (3, "ann", 4), (4, "zed", 3)]
    assert standings(pg, "period_standings_history", 1) == v1
    version, corrected_at = pg.execute("SELECT version, corrected_at FROM closed_periods").fetchone() or (
        0,
        0,
    )
    assert version == 2
    assert corrected_at is not None
    close(config, pg, redis_client)  # nothing new: no second correction
    events = [orjson.loads(v or b"") for _, v, _ in read_topic(config, config.period_corrected_topic)]
    assert len(events) == 1
    [doc] = events
    assert (doc["board"], doc["period"], doc["version"], doc["previous_version"]) == ("global", PERIOD, 2, 1)
    assert doc["moves"] == [
        {"player_id": "bob", "old_rank": 2, "new_rank": 1, "old_score": 7, "new_score": 7},
        {"player_id": "cid", "old_rank": 3, "new_rank": 2, "old_score": 5, "new_score": 5},
        {"player_id": "ann", "old_rank": 1, "new_rank": 3, "old_score": 10, "new_score": 4},
    ]
    # The API serves the corrected standings and says so (it needs the live boards in Redis first).
    built = leaderboard_cli(config, "rebuild", "--from", "postgres")
    assert built.returncode == 0, built.stderr
    api = ApiProcess(config, tmp_path)
    try:
        api.wait_ready()
        status, body = api.get(f"/v1/leaderboards/global/entries?period={PERIOD}")
        assert status == 200, body
        assert [e["player_id"] for e in orjson.loads(body)["entries"]] == ["bob", "cid", "ann", "zed"]
        status, body = api.get("/v1/leaderboards/global/periods")
        assert status == 200, body
        [listed] = [p for p in orjson.loads(body)["closed"] if p["period"] == PERIOD]
        assert listed["version"] == 2
        assert listed["corrected_at"] is not None
    finally:
        api.stop()
