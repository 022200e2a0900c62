"""close-period against the real consumer, Kafka, Redis and PostgreSQL: final standings equal the live board,
one period-closed event per period, late events dead-lettered, Redis keys given their retention."""

from __future__ import annotations

import random
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import orjson
import psycopg
import pytest
import redis
from confluent_kafka import Producer

from consumers.announce import new_producer
from consumers.closing import close_one, run_closes
from consumers.due import expire_at
from leaderboard import boards as boards_mod
from leaderboard import periods, scoring
from leaderboard.keys import Keys
from leaderboard.settings import Settings
from tests.procs import ConsumerProcess, caught_up, dumps, leaderboard_cli, read_topic, wait_until

OCT = "monthly:2026-10"
# A long grace keeps the real clock from making these periods due (a consumer that closes periods on its own
# schedule then leaves them to the test); --now in 2027 makes October and early November due.
GRACE_S = 60 * 86400
NOW = "2027-01-01T00:00:00Z"
BOARDS_TOML = f"""
[[board]]
id = "global"
periods = ["all_time", "monthly", "daily"]
grace_seconds = {GRACE_S}
reward_top = 5
"""


def event(player: str, at: str, points: int, name: str | None = None) -> tuple[bytes, bytes]:
    body: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "match_id": f"m-{uuid.uuid4().hex[:8]}",
        "player_id": player,
        "game": "chess",
        "points": points,
        "occurred_at": at,
    }
    if name is not None:
        body["display_name"] = name
    return player.encode(), dumps(body)


def publish(config: Settings, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({**config.kafka_common(), "enable.idempotence": True, "linger.ms": 5})
    for key, value in records:
        producer.produce(config.topic, value, key)
    assert producer.flush(30) == 0


def october_and_november(seed: int) -> list[tuple[bytes, bytes]]:
    """Random wins over both months, plus ties: equal points, and equal packed scores (same instants)."""
    rnd = random.Random(seed)
    out = []
    for _ in range(800):
        player = f"p{min(int(rnd.paretovariate(1.1)), 60):02d}"
        month, last = rnd.choice([(10, 31), (11, 28)])
        at = f"2026-{month}-{rnd.randint(1, last):02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00Z"
        out.append(event(player, at, rnd.randint(1, 5), f"Name {player}"))
    for twin in ("tie-a", "tie-b", "tie-c"):  # identical packed scores: Redis orders them by member, desc
        out.append(event(twin, "2026-10-20T12:00:00Z", 40))
        out.append(event(twin, "2026-10-21T12:00:00Z", 40))
    return out


@pytest.fixture
def cfg(config: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "boards.toml"
    path.write_text(BOARDS_TOML, encoding="utf-8")
    return replace(config, boards_file=path)


@pytest.fixture
def consumer(cfg: Settings, tmp_path: Path) -> Iterator[ConsumerProcess]:
    publish(cfg, october_and_november(seed=7))
    proc = ConsumerProcess(cfg, tmp_path)
    try:
        try:
            proc.wait_ready(90)
            wait_until(lambda: caught_up(cfg), 120, "consumer to commit every offset")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nconsumer log:\n{proc.tail()}") from None
        yield proc
    finally:
        assert proc.stop() == 0


def cli(cfg: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return leaderboard_cli(cfg, "close-period", *args, timeout=120)


def live(client: redis.Redis, cfg: Settings, period: str) -> list[tuple[str, int]]:
    """The live board in Redis order (ZREVRANGE): (player, packed score)."""
    keys = Keys(cfg.redis_prefix)
    gen = int(client.hget(keys.meta("global"), "active") or 0)
    rows = cast(
        "list[tuple[bytes, float]]",
        client.zrevrange(keys.board("global", gen, period), 0, -1, withscores=True),
    )
    return [(m.decode(), int(s)) for m, s in rows]


def competition_ranks(points: list[int]) -> list[int]:
    return [1 + sum(1 for q in points if q > p) for p in points]


def announcements(cfg: Settings) -> list[dict[str, object]]:
    out = []
    for key, value, _ in read_topic(cfg, cfg.period_closed_topic):
        doc = orjson.loads(value or b"{}")
        assert key == f"{doc['board']}/{doc['period']}".encode()
        out.append(doc)
    return out


def test_closing_october_snapshots_the_live_board_announces_once_and_refuses_late_events(
    cfg: Settings, consumer: ConsumerProcess, redis_client: redis.Redis, pg: psycopg.Connection
) -> None:
    before = live(redis_client, cfg, OCT)
    before_all_time = live(redis_client, cfg, "all_time")
    assert len(before) > 20
    tied = [p for p, s in before if p.startswith("tie-")]
    assert tied == ["tie-c", "tie-b", "tie-a"]  # equal packed scores: member descending

    done = cli(cfg, "--period", OCT, "--now", NOW)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["global", OCT]
    assert "closed, " in done.stderr

    rows = pg.execute(
        "SELECT rank, position, player_id, score, reached_at FROM period_standings"
        " WHERE board = 'global' AND period = %s ORDER BY position",
        (OCT,),
    ).fetchall()
    assert [(p, s) for _, _, p, s, _ in rows] == [(p, scoring.points_of(s)) for p, s in before]
    assert [r for r, *_ in rows] == competition_ranks([scoring.points_of(s) for _, s in before])
    assert [pos for _, pos, *_ in rows] == list(range(1, len(before) + 1))
    origin = periods.bounds(OCT, ZoneInfo("UTC"))
    assert origin is not None
    assert all(origin[0] <= reached < origin[1] for *_, reached in rows)
    head = pg.execute(
        "SELECT players, announced_at FROM closed_periods WHERE board = 'global' AND period = %s", (OCT,)
    ).fetchone()
    assert head is not None
    assert head[0] == len(before)
    assert head[1] is not None

    docs = [d for d in announcements(cfg) if d["period"] == OCT]
    assert len(docs) == 1
    doc = docs[0]
    assert (doc["board"], doc["players"]) == ("global", len(before))
    assert (doc["start"], doc["end"]) == ("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")
    top = cast("list[dict[str, object]]", doc["top"])
    assert [(t["rank"], t["player_id"], t["score"]) for t in top] == [(r, p, s) for r, _, p, s, _ in rows[:5]]
    assert all(t["display_name"] in (f"Name {t['player_id']}", None) for t in top)

    # Redis: mirrored as closed, and the period's keys expire retention_days after its end.
    keys = Keys(cfg.redis_prefix)
    gen = int(redis_client.hget(keys.meta("global"), "active") or 0)
    assert redis_client.sismember(keys.closed("global"), OCT)
    board = boards_mod.load(cfg.boards_file)[0]
    when = int(expire_at(board, OCT).timestamp())
    for key in (
        keys.board("global", gen, OCT),
        keys.watermark("global", gen, OCT),
        keys.stats("global", gen, OCT),
    ):
        assert redis_client.expiretime(key) == when, key
    assert redis_client.ttl(keys.board("global", gen, "monthly:2026-11")) == -1

    # A rebuild (the same path as Redis-loss recovery) loads the open periods only: October is left to its
    # stored standings (the API's snapshot path), still marked closed in Redis; November is back whole.
    before_nov = live(redis_client, cfg, "monthly:2026-11")
    redis_client.delete(keys.closed("global"))  # Redis lost the closed set too: the rebuild restores it
    rebuilt = leaderboard_cli(cfg, "rebuild", "--from", "postgres", timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stderr
    new_gen = int(redis_client.hget(keys.meta("global"), "active") or 0)
    assert new_gen > gen
    assert redis_client.exists(keys.board("global", new_gen, OCT), keys.stats("global", new_gen, OCT)) == 0
    assert not redis_client.sismember(keys.periods("global", new_gen), OCT)
    assert redis_client.sismember(keys.closed("global"), OCT)
    assert live(redis_client, cfg, "monthly:2026-11") == before_nov
    assert len(before_nov) > 0

    # A second run closes nothing and announces nothing again.
    again = cli(cfg, "--period", OCT, "--now", NOW)
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""
    assert len([d for d in announcements(cfg) if d["period"] == OCT]) == 1

    # A late October win is dead-lettered as period_closed; the boards do not move.
    late_key, late_value = event(before[0][0], "2026-10-31T23:59:00Z", 5)
    publish(cfg, [(late_key, late_value)])
    wait_until(lambda: caught_up(cfg), 90, "consumer to handle the late event")
    letters = [(v, h) for _, v, h in read_topic(cfg, cfg.dlq_topic) if v == late_value]
    assert len(letters) == 1
    assert letters[0][1]["reason"] == "period_closed"
    assert f"global/{OCT}" in letters[0][1]["detail"]
    assert live(redis_client, cfg, OCT) == []  # not re-created in Redis by the late win either
    after = pg.execute(
        "SELECT player_id, score FROM period_standings WHERE board = 'global' AND period = %s"
        " ORDER BY position",
        (OCT,),
    ).fetchall()
    assert [(p, s) for p, s in after] == [(p, scoring.points_of(s)) for p, s in before]
    assert live(redis_client, cfg, "all_time") == before_all_time
    stored = pg.execute("SELECT count(*) FROM events WHERE occurred_at = '2026-10-31T23:59:00Z'").fetchone()
    assert stored == (0,)


def test_the_schedule_closes_every_due_period_once_and_reannounces_an_interrupted_close(
    cfg: Settings, consumer: ConsumerProcess, redis_client: redis.Redis, pg: psycopg.Connection
) -> None:
    boards = boards_mod.load(cfg.boards_file)
    now = datetime(2027, 1, 1, tzinfo=UTC)

    dry = cli(cfg, "--dry-run", "--now", NOW)
    assert dry.returncode == 0, dry.stderr
    assert f"would close global {OCT}" in dry.stdout
    assert "would close global monthly:2026-11" not in dry.stdout  # end + 60 days grace is after NOW
    assert pg.execute("SELECT count(*) FROM closed_periods").fetchone() == (0,)

    # A close that committed but died before publishing: the next run announces it.
    assert close_one(pg, boards[0], "daily:2026-11-02") is not None
    assert announcements(cfg) == []

    producer = new_producer(cfg)
    first, _ = run_closes(pg, redis_client, producer, cfg, boards, now=now)
    assert (("global", OCT)) in first
    assert ("global", "daily:2026-10-31") in first
    assert ("global", "daily:2026-11-01") in first
    assert ("global", "daily:2026-11-02") not in first  # closed before, only announced now
    assert not any(p in ("all_time", "monthly:2026-11") for _, p in first)
    assert all(not p.startswith("daily:2026-11-") or p <= "daily:2026-11-02" for _, p in first)

    docs = announcements(cfg)
    closed = {str(r[0]) for r in pg.execute("SELECT period FROM closed_periods")}
    assert sorted(str(d["period"]) for d in docs) == sorted(closed)
    assert pg.execute("SELECT count(*) FROM closed_periods WHERE announced_at IS NULL").fetchone() == (0,)

    assert run_closes(pg, redis_client, producer, cfg, boards, now=now) == ([], 0)
    assert len(announcements(cfg)) == len(docs)

    listing = cli(cfg, "--list")
    assert listing.returncode == 0, listing.stderr
    assert f"global           {OCT}" in listing.stdout
    assert "no (will be retried)" not in listing.stdout


def test_a_period_that_is_not_due_is_refused_with_one_line(cfg: Settings, pg: psycopg.Connection) -> None:
    del pg  # migrations are not needed to refuse
    res = cli(cfg, "--period", "monthly:2026-11", "--now", "2026-12-01T00:00:00Z")
    assert res.returncode == 2
    assert "not due until 2027-01-30T00:00:00Z" in res.stderr
    assert "Traceback" not in res.stderr
    for bad in (["--period", "all_time"], ["--period", "monthly:2026-13"], ["--now", "yesterday"]):
        res = cli(cfg, *bad)
        assert res.returncode == 2, bad
        assert len(res.stderr.strip().splitlines()) == 1
        assert "Traceback" not in res.stderr
