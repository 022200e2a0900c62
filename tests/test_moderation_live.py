"""M1 and M4 end to end: the live consumer process, Kafka, Redis and PostgreSQL, the operator's commands.

M1: within 2 s of ``moderate exclude`` returning the player is on no board, the others close up; it stays
so for their later events, after ``rebuild --from postgres``, ``rebuild --from kafka``, a Redis FLUSHALL
(private server) and an offset reset to earliest; reinstate gives exactly what all their events give,
including those of the hold; verify agrees throughout. M4: after ``moderate erase`` neither the Redis
keyspace nor any PostgreSQL table holds the id or the display name.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import redis
from confluent_kafka import Producer

from consumers.migrate import migrate
from leaderboard.settings import Settings
from tests.procs import (
    ConsumerProcess,
    caught_up,
    dumps,
    leaderboard_cli,
    read_topic,
    reset_offsets_to_earliest,
    wait_until,
)
from tests.services import RedisServer
from tests.test_consumer import board
from tests.test_moderation import dump_schema

VISIBLE_S = 2.0
"""M1: the bound between the command returning and no read showing the player."""
NOW = datetime.now(UTC)
MONTH = f"monthly:{(NOW - timedelta(hours=1)).strftime('%Y-%m')}"


class Stream:
    """Wins published with a plain client (key = player), and the truth per player."""

    def __init__(self, config: Settings, seed: int) -> None:
        self.config = config
        self.rnd = random.Random(seed)
        self.producer = Producer({**config.kafka_common(), "enable.idempotence": True, "linger.ms": 5})
        self.events: list[dict[str, object]] = []

    def send(self, n: int, players: list[str]) -> None:
        for _ in range(n):
            player = self.rnd.choice(players)
            doc: dict[str, object] = {
                "event_id": str(uuid.uuid4()),
                "match_id": f"m{self.rnd.randrange(40)}",
                "player_id": player,
                "game": "chess",
                "points": self.rnd.randint(1, 9),
                # this month, so the monthly board stays open; at least 10 minutes before now
                "occurred_at": (NOW - timedelta(minutes=10 + self.rnd.randrange(50))).isoformat(),
                "display_name": f"Name of {player}",
            }
            self.events.append(doc)
            self.producer.produce(self.config.topic, dumps(doc), player.encode())
        assert self.producer.flush(30) == 0

    def truth(
        self, *, without: frozenset[str] = frozenset(), void: frozenset[str] = frozenset()
    ) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for e in self.events:
            if e["player_id"] not in without and e["match_id"] not in void:
                out[str(e["player_id"])] += int(str(e["points"]))
        return dict(out)


@pytest.fixture
def own_redis(config: Settings, pg: psycopg.Connection) -> Iterator[Settings]:
    migrate(pg)
    with RedisServer() as rs:
        rs.start()
        yield replace(config, redis_url=rs.url)


def moderate(config: Settings, *args: str) -> float:
    """Run ``leaderboard moderate ...``; returns the monotonic time it returned (exit 0 required)."""
    out = leaderboard_cli(config, "moderate", *args, timeout=60)
    assert out.returncode == 0, out.stderr
    return time.monotonic()


def run(config: Settings, *args: str) -> None:
    out = leaderboard_cli(config, *args, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr


def boards_equal(client: redis.Redis, config: Settings, want: dict[str, int]) -> bool:
    return all(board(client, config, period) == want for period in ("all_time", MONTH))


def wait_boards(
    client: redis.Redis, config: Settings, want: dict[str, int], bound: float, what: str
) -> float:
    started = time.monotonic()
    wait_until(lambda: boards_equal(client, config, want), bound, what, interval=0.05)
    return time.monotonic() - started


@pytest.mark.slow
def test_exclude_holds_on_every_path_reinstate_restores_and_erase_leaves_no_trace(
    own_redis: Settings, tmp_path: Path
) -> None:
    config = own_redis
    players = [f"pl-{i}" for i in range(15)] + ["cheat"]
    stream = Stream(config, seed=7)
    stream.send(400, players)
    client = redis.Redis.from_url(config.redis_url)
    consumer = ConsumerProcess(config, tmp_path, LEADERBOARD_BATCH_SIZE="200")
    try:
        consumer.wait_ready()
        wait_until(lambda: caught_up(config), 60, "first part consumed")
        wait_boards(client, config, stream.truth(), 10, "boards equal the truth")

        returned = moderate(config, "exclude", "cheat", "--reason", "aimbot")
        held = stream.truth(without=frozenset({"cheat"}))
        wait_until(lambda: boards_equal(client, config, held), VISIBLE_S, "cheat off every board", 0.02)
        took = time.monotonic() - returned
        assert took <= VISIBLE_S
        # Later events of the held player are stored, never shown.
        stream.send(200, players)
        wait_until(lambda: caught_up(config), 60, "second part consumed")
        held = stream.truth(without=frozenset({"cheat"}))
        wait_boards(client, config, held, 10, "held boards with the later events")
        run(config, "verify")

        run(config, "rebuild", "--from", "postgres")
        assert boards_equal(client, config, held)
        run(config, "rebuild", "--from", "kafka")
        assert boards_equal(client, config, held)
        client.flushall()
        wait_boards(client, config, held, 60, "boards recovered after FLUSHALL")
        consumer.stop()
        reset_offsets_to_earliest(config)
        consumer = ConsumerProcess(config, tmp_path, name="consumer-2", LEADERBOARD_BATCH_SIZE="200")
        consumer.wait_ready()
        wait_until(lambda: caught_up(config), 60, "replayed from earliest")
        assert boards_equal(client, config, held)
        run(config, "verify")

        # Reinstate: exactly what all of the player's events give, those of the hold included.
        returned = moderate(config, "reinstate", "cheat", "--reason", "appeal granted")
        wait_until(lambda: boards_equal(client, config, stream.truth()), VISIBLE_S, "cheat back", 0.02)
        # Void a match: its points leave every board.
        moderate(config, "void", "--match", "m3", "--reason", "bugged map")
        voided = stream.truth(void=frozenset({"m3"}))
        wait_until(lambda: boards_equal(client, config, voided), VISIBLE_S, "m3 voided", 0.02)
        run(config, "verify")

        # Erase: nothing in Redis or PostgreSQL names the player afterwards.
        moderate(config, "erase", "pl-3", "--reason", "erasure request")
        gone = stream.truth(without=frozenset({"pl-3"}), void=frozenset({"m3"}))
        wait_until(lambda: boards_equal(client, config, gone), VISIBLE_S, "pl-3 erased from the boards", 0.02)
        wait_until(lambda: "pl-3" not in dump_schema(config), 10, "the last row naming pl-3 dropped")

        def redis_mentions(text: bytes) -> bool:
            for key in client.scan_iter(count=1000):
                kind = client.type(key)
                if text in key:
                    return True
                if kind == b"zset" and any(text in m for m, _ in client.zscan_iter(key)):
                    return True
                if kind == b"hash" and any(text in k or text in v for k, v in client.hgetall(key).items()):
                    return True
            return False

        assert not redis_mentions(b"pl-3")
        assert not redis_mentions(b"Name of pl-3")
        assert "Name of pl-3" not in dump_schema(config)
        assert redis_mentions(b"Name of pl-4")  # the scan finds names that are there
        # A late event of the erased id (still inside the erasure horizon) counts nowhere, names no one.
        late = {
            "event_id": str(uuid.uuid4()),
            "match_id": "late",
            "player_id": "pl-3",
            "game": "chess",
            "points": 5,
            "occurred_at": (NOW - timedelta(minutes=5)).isoformat(),
            "display_name": "Name of pl-3",
        }
        stream.producer.produce(config.topic, dumps(late), b"pl-3")
        assert stream.producer.flush(30) == 0
        wait_until(lambda: caught_up(config), 60, "late event consumed")
        assert boards_equal(client, config, gone)
        assert "pl-3" not in dump_schema(config)
        assert not redis_mentions(b"pl-3")
        run(config, "verify")
        print(f"exclude invisible after {took:.3f} s")
    finally:
        consumer.stop()
        client.close()


@pytest.mark.slow
def test_actions_sent_twice_racing_a_rebalance_and_a_sigkill_count_once(
    config: Settings, pg: psycopg.Connection, tmp_path: Path
) -> None:
    """M3: the same actions submitted twice and published twice, while one member is SIGKILLed and another
    joins mid-stream: each counts once (one audit row each, boards equal the truth)."""
    migrate(pg)
    players = [f"pl-{i}" for i in range(12)] + ["cheat"]
    stream = Stream(config, seed=11)
    stream.send(300, players)
    client = redis.Redis.from_url(config.redis_url)
    a = ConsumerProcess(config, tmp_path, name="a", LEADERBOARD_BATCH_SIZE="50")
    b = ConsumerProcess(config, tmp_path, name="b", LEADERBOARD_BATCH_SIZE="50")
    c: ConsumerProcess | None = None
    try:
        a.wait_ready()
        b.wait_ready()
        wait_until(lambda: caught_up(config), 60, "first part consumed")
        ban, void = str(uuid.uuid4()), str(uuid.uuid4())
        for _ in range(2):  # a retry of an action whose outcome was not seen: same id, counts once
            moderate(config, "exclude", "cheat", "--reason", "aimbot", "--action-id", ban)
            moderate(config, "void", "--match", "m5", "--reason", "bugged", "--action-id", void)
        # ... and every record published a second time.
        records = read_topic(config, config.moderation_topic)
        assert len(records) == 2
        stream.producer.produce(config.moderation_topic, records[0][1], records[0][0])
        stream.producer.produce(config.moderation_topic, records[1][1], records[1][0])
        stream.send(150, players)
        b.kill()  # SIGKILL mid-stream: its partitions go to the others after the session timeout
        c = ConsumerProcess(config, tmp_path, name="c", LEADERBOARD_BATCH_SIZE="50")  # a rebalance too
        stream.send(150, players)
        c.wait_ready()
        moderate(config, "exclude", "cheat", "--reason", "aimbot", "--action-id", ban)  # a third time
        wait_until(lambda: caught_up(config), 90, "all consumed after the kill")
        want = stream.truth(without=frozenset({"cheat"}), void=frozenset({"m5"}))
        wait_boards(client, config, want, 10, "boards equal the truth")
        assert pg.execute(
            "SELECT kind, count(*) FROM moderation_actions GROUP BY kind ORDER BY kind"
        ).fetchall() == [
            ("exclude", 1),
            ("void", 1),
        ]
        run(config, "verify")
    finally:
        for member in (a, b, c):
            if member is not None:
                member.stop()
        client.close()
