"""Display names: PostgreSQL decides (latest win by occurred_at, ties by Kafka position), Redis copies.

Issue 14, defect 2: a win at 10:00 named "New", then a late win at 09:00 named "Old" in a later batch.
PostgreSQL kept "New", Redis showed "Old" (the sink wrote each batch's latest name unconditionally).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
import redis
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers import pg_sink
from consumers.clients import Clients
from consumers.metrics import ConsumerMetrics
from consumers.migrate import migrate
from consumers.plan import Canonical
from consumers.processor import Processor
from consumers.redis_sink import RedisSink
from leaderboard import boards as boards_mod
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.settings import Settings
from query_api.app import create_app
from tests.factories import win
from tests.procs import leaderboard_cli

Version = tuple[datetime, int, int]
"""(occurred_at, partition, offset): the order of the rule."""


def latest(records: Iterable[Canonical]) -> dict[str, str]:
    """The rule, stated directly: each player's name from their greatest (occurred_at, partition, offset)."""
    best: dict[str, tuple[Version, str]] = {}
    for rec in records:
        name = rec.event.display_name
        if name is None:
            continue
        version = (rec.event.occurred_at, rec.partition, rec.offset)
        cur = best.get(rec.event.player_id)
        if cur is None or version > cur[0]:
            best[rec.event.player_id] = (version, name)
    return {p: name for p, (_, name) in best.items()}


def guarded(batches: Sequence[Sequence[Canonical]]) -> dict[str, str]:
    """What the players upsert does, batch after batch: the batch's latest per player replaces the stored
    row only if its version is greater than the STORED version (the row keeps its own position)."""
    stored: dict[str, tuple[Version, str]] = {}
    for batch in batches:
        for player, (version, name) in _versions(batch).items():
            if player not in stored or stored[player][0] < version:
                stored[player] = (version, name)
    return {p: name for p, (_, name) in stored.items()}


def _versions(batch: Sequence[Canonical]) -> dict[str, tuple[Version, str]]:
    out: dict[str, tuple[Version, str]] = {}
    for rec in batch:
        if rec.event.display_name is not None:
            version = (rec.event.occurred_at, rec.partition, rec.offset)
            if rec.event.player_id not in out or out[rec.event.player_id][0] < version:
                out[rec.event.player_id] = (version, rec.event.display_name)
    return out


BASE = datetime(2026, 11, 28, 10, tzinfo=UTC)


def stream(spec: list[tuple[int, int, int, int]]) -> list[Canonical]:
    """Records from (player, minute, partition, name) tuples; offsets ascend per partition."""
    offsets: dict[int, int] = {}
    out = []
    for player, minute, partition, name in spec:
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        at = BASE + timedelta(minutes=minute)
        out.append(Canonical(partition, offset, win(f"p{player}", at, display_name=f"n{name}")))
    return out


@settings(max_examples=300, deadline=None)
@given(
    spec=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2), st.integers(0, 9)), max_size=30
    ),
    cuts=st.lists(st.integers(0, 30), max_size=6),
    seed=st.integers(0, 2**32),
)
def test_the_rule_ends_at_the_same_names_whatever_the_batching_order_or_replays(
    spec: list[tuple[int, int, int, int]], cuts: list[int], seed: int
) -> None:
    """Pure: equal instants on purpose (4 minutes), batches applied in any order, some replayed."""
    records = stream(spec)
    bounds = sorted({0, len(records), *(c for c in cuts if c <= len(records))})
    batches = [records[a:b] for a, b in itertools.pairwise(bounds)]
    rnd = random.Random(seed)
    rnd.shuffle(batches)
    replayed = batches + rnd.sample(batches, k=len(batches) // 2)
    assert guarded(replayed) == latest(records)


# -- against the real PostgreSQL and Redis -------------------------------------------------------------

BOARDS = [Board(id="global")]


def redis_names(client: redis.Redis, keys: Keys) -> dict[str, str]:
    raw: dict[bytes, bytes] = client.hgetall(keys.names())  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def pg_names(pg: psycopg.Connection) -> dict[str, str]:
    rows = pg.execute("SELECT player_id, display_name FROM players WHERE display_name IS NOT NULL").fetchall()
    return {str(p): str(n) for p, n in rows}


def test_batches_in_any_order_leave_the_same_names_in_postgres_and_redis(
    config: Settings, pg: psycopg.Connection, redis_client: redis.Redis
) -> None:
    """Random streams with equal instants across partitions, cut into batches written in shuffled order
    through both sinks (late batches, replays): both copies equal the rule, and replays change nothing."""
    migrate(pg)
    keys = Keys(config.redis_prefix)
    redis_client.hset(keys.meta("global"), mapping={"active": 1, "writing": 1})
    sink = RedisSink(redis_client, keys, BOARDS)
    rnd = random.Random(14)
    want: dict[str, str] = {}
    for round_ in range(6):
        players = range(10 * round_, 10 * round_ + 6)  # fresh players and partitions each round
        spec = [(rnd.choice(players), rnd.randrange(4), rnd.randrange(3), rnd.randrange(9)) for _ in "x" * 60]
        records = [Canonical(r.partition + 3 * round_, r.offset, r.event) for r in stream(spec)]
        bounds = sorted({0, len(records), *rnd.sample(range(1, len(records)), 5)})
        batches = [records[a:b] for a, b in itertools.pairwise(bounds)]
        rnd.shuffle(batches)
        for batch in batches:
            out = pg_sink.write_batch(pg, batch, BOARDS)
            sink.apply(out.canonical, names=out.names)
        want.update(latest(records))
        assert pg_names(pg) == want
        assert redis_names(redis_client, keys) == want
        for batch in batches:  # a replay (rewind, rebuild --from kafka) changes no name
            assert pg_sink.write_batch(pg, batch, BOARDS).names == {}


def _publish(config: Settings, player: str, at: datetime, name: str) -> None:
    producer = Producer({**config.kafka_common(), "enable.idempotence": True})
    body = msgspec.json.encode(win(player, at, 3, display_name=name))
    producer.produce(config.topic, body, player.encode())
    assert producer.flush(30) == 0


def _consume(config: Settings) -> None:
    processor = Processor(
        config, boards_mod.load(config.boards_file), ConsumerMetrics(), Clients.for_settings(config)
    )
    processor.run(until_caught_up=True, timeout_s=60)


def test_a_late_older_rename_does_not_win_in_redis_or_the_api(
    config: Settings, pg: psycopg.Connection, redis_client: redis.Redis
) -> None:
    """The issue's case through the real consumer: "New" at 10:00 first, "Old" at 09:00 in a later batch.
    Then the boards are lost and rebuilt (recovery) and rebuilt by an operator: still "New" everywhere."""
    keys = Keys(config.redis_prefix)
    now = datetime.now(UTC).replace(microsecond=0)
    _publish(config, "ann", now - timedelta(hours=1), "New")
    _consume(config)
    _publish(config, "ann", now - timedelta(hours=2), "Old")
    _consume(config)
    assert pg_names(pg) == {"ann": "New"}
    assert redis_names(redis_client, keys) == {"ann": "New"}
    boards = boards_mod.load(config.boards_file)
    with TestClient(create_app(config, boards)) as api:
        resp = api.get("/v1/leaderboards/global/players/ann")
        assert resp.status_code == 200, resp.text
        assert (resp.json()["display_name"], resp.json()["score"]) == ("New", 6)
    # Redis loses everything: the consumer's recovery rebuilds the boards and copies the names back.
    redis_client.delete(*redis_client.keys(f"{config.redis_prefix}:*"))
    _consume(config)
    assert redis_names(redis_client, keys) == {"ann": "New"}
    # An operator's rebuild from the topic replays both wins through PostgreSQL: no name moves.
    out = leaderboard_cli(config, "rebuild", "--from", "kafka", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert pg_names(pg) == {"ann": "New"}
    assert redis_names(redis_client, keys) == {"ann": "New"}
